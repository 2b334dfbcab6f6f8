//! The central PostgreSQL ledger (issue 12, docs/central-ledger.md) through the real binary,
//! against a real server the tests start themselves (tests/it/common/pg.rs): TLS verify-full with
//! a password from a file, the same commands as on SQLite, stations racing for one device,
//! leases, the audit chain under concurrent writers, and the database going away.

use crate::common;
use crate::common::pg::{station_config, PgCluster, PgLedger};
use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs certfab with `config`.
fn certfab_with(config: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CERTFAB_CONFIG")
        .output()
        .expect("run certfab")
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

fn pg(line: &Line) -> (&PgCluster, &common::pg::PgLedger) {
    let (c, l) = line.pg.as_ref().expect("a line on PostgreSQL");
    (c, l)
}

/// A CSR for `name` in `dir`.
fn csr(dir: &Path, name: &str) -> PathBuf {
    openssl_csr(dir, name, "ec:prime256v1", &format!("/CN={name}"), &[])
}

fn issuing_verify(line: &Line, cert: &Path) -> Output {
    openssl_verify(
        &line.file("ca/root.pem"),
        &[&line.file("ca/issuing.pem")],
        &[],
        cert,
    )
}

/// Item 1 and 2: the fixture's server takes TLS only, and a line whose `ledger:` is a
/// `postgresql://` URL issues a certificate that openssl verifies and that the server holds;
/// the password comes from its file and appears in no output.
#[test]
fn item2_issue_on_a_central_ledger_over_verified_tls() {
    let line = Line::on_postgres();
    let (cluster, ledger) = pg(&line);
    // No plain TCP: pg_hba accepts hostssl only.
    let plain = Command::new("psql")
        .args([
            "-X",
            "-At",
            &format!(
                "postgresql://{}@127.0.0.1:{}/{}?sslmode=disable",
                ledger.role, cluster.port, ledger.db
            ),
            "-c",
            "SELECT 1",
        ])
        .env(
            "PGPASSWORD",
            std::fs::read_to_string(&ledger.password_file).unwrap(),
        )
        .output()
        .unwrap();
    assert!(!plain.status.success(), "{}", text(&plain));

    let dir = line.file("work");
    std::fs::create_dir_all(&dir).unwrap();
    let c = csr(&dir, "pg-dev-1");
    let out = line.file("out-1");
    let o = line.certfab(&issue_args("generic-iot", &c, "pg-dev-1", &out));
    assert!(o.status.success(), "{}", text(&o));
    let v = issuing_verify(&line, &out.join("cert.pem"));
    assert!(text(&v).contains("OK"), "{}", text(&v));
    assert_eq!(
        cluster.value(
            &ledger.db,
            "SELECT count(*) FROM certificates WHERE state = 'signed' AND device_id = 'pg-dev-1'"
        ),
        "1"
    );
    let password = std::fs::read_to_string(&ledger.password_file).unwrap();
    assert!(!text(&o).contains(password.trim()));
    // The same command again returns the certificate already issued (exactly once).
    let again = line.certfab(&issue_args(
        "generic-iot",
        &c,
        "pg-dev-1",
        &line.file("out-1b"),
    ));
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(
        std::fs::read(out.join("cert.pem")).unwrap(),
        std::fs::read(line.file("out-1b/cert.pem")).unwrap()
    );
    let v = line.certfab(&["log", "verify"]);
    assert!(v.status.success(), "{}", text(&v));
}

/// Item 2: what the `ledger:` URL refuses, each with the fix, and a server whose certificate
/// does not chain to `sslrootcert` is refused (exit 5) before anything is asked of it.
#[test]
fn item2_ledger_url_refusals_and_tls_verification() {
    let line = Line::on_postgres();
    let (cluster, ledger) = pg(&line);
    let base = std::fs::read_to_string(line.config()).unwrap();
    let write = |name: &str, url: &str, pw: Option<&str>| {
        let mut t = String::new();
        for l in base.lines() {
            if l.starts_with("ledger:") {
                t.push_str(&format!("ledger: \"{url}\"\n"));
                if let Some(pw) = pw {
                    t.push_str(&format!("ledger_password: {pw}\n"));
                }
            } else if !l.starts_with("ledger_password:") {
                t.push_str(l);
                t.push('\n');
            }
        }
        let p = line.file(name);
        std::fs::write(&p, t).unwrap();
        p
    };
    let pwsrc = format!("file:{}", ledger.password_file.display());
    let secret = "s3cr3t-in-url";
    // A password in the URL: refused, not shown.
    let url = ledger.url.replace(
        &format!("{}@", ledger.role),
        &format!("{}:{secret}@", ledger.role),
    );
    let cfg = write("pw-in-url.yaml", &url, Some(&pwsrc));
    let o = certfab_with(&cfg, &["log", "verify"]);
    assert_eq!(code(&o), Some(2), "{}", text(&o));
    assert!(text(&o).contains("ledger_password"), "{}", text(&o));
    assert!(!text(&o).contains(secret), "{}", text(&o));
    // sslmode=require does not check who the server is.
    let cfg = write(
        "require.yaml",
        &ledger.url.replace("sslmode=verify-full", "sslmode=require"),
        Some(&pwsrc),
    );
    let o = certfab_with(&cfg, &["log", "verify"]);
    assert_eq!(code(&o), Some(2), "{}", text(&o));
    assert!(text(&o).contains("verify-full"), "{}", text(&o));
    // A password for a SQLite file is a mistake.
    let cfg = write("sqlite-pw.yaml", "ledger.sqlite", Some(&pwsrc));
    let o = certfab_with(&cfg, &["log", "verify"]);
    assert_eq!(code(&o), Some(2), "{}", text(&o));
    // The wrong trust anchor: the TLS check fails, nothing is read.
    let other_ca = line.file("ca/root.pem");
    let url = ledger.url.replace(
        &format!("sslrootcert={}", cluster.ca.display()),
        &format!("sslrootcert={}", other_ca.display()),
    );
    let cfg = write("wrong-ca.yaml", &url, Some(&pwsrc));
    let o = certfab_with(&cfg, &["log", "verify"]);
    assert_eq!(code(&o), Some(5), "{}", text(&o));
    assert!(
        text(&o).to_lowercase().contains("certificate"),
        "{}",
        text(&o)
    );
    // The host name must be in the server's certificate (verify-full): 127.0.0.2 is not.
    let url = ledger.url.replace("@localhost:", "@127.0.0.2:");
    let cfg = write("wrong-host.yaml", &url, Some(&pwsrc));
    let o = certfab_with(&cfg, &["log", "verify"]);
    assert_eq!(code(&o), Some(5), "{}", text(&o));
    // A wrong password: the login is refused (exit 5), the password file's text is not shown.
    let bad = line.file("bad.pw");
    std::fs::write(&bad, "not-the-password\n").unwrap();
    std::fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let cfg = write(
        "bad-pw.yaml",
        &ledger.url,
        Some(&format!("file:{}", bad.display())),
    );
    let o = certfab_with(&cfg, &["log", "verify"]);
    assert_eq!(code(&o), Some(5), "{}", text(&o));
    assert!(text(&o).contains("refused the login"), "{}", text(&o));
    assert!(!text(&o).contains("not-the-password"), "{}", text(&o));
}

/// Item 3: the commands that read or write a ledger, on the central one: issue, batch, revoke,
/// crl, manifest build, log verify, audit.
#[test]
fn item3_every_command_on_postgres() {
    let line = Line::on_postgres();
    let dir = line.file("work");
    std::fs::create_dir_all(&dir).unwrap();
    for id in ["cmd-1", "cmd-2"] {
        let c = csr(&dir, id);
        ok(&line.certfab(&issue_args(
            "generic-iot",
            &c,
            id,
            &line.file(&format!("out/{id}")),
        )));
    }
    let b = line.host_batch(
        "generic-iot",
        4,
        "bat-{seq}",
        &line.file("batch-out"),
        &["--plain-keys"],
    );
    assert_eq!(b["counts"]["signed"], 4, "{b}");
    ok(&line.certfab(&["revoke", "--device", "cmd-1", "--reason", "keyCompromise"]));
    let crl = line.file("crl.pem");
    let c = ok_json(&line.certfab(&[
        "--json",
        "crl",
        "--profile",
        "generic-iot",
        "--next-update",
        "2d",
        "--out",
        crl.to_str().unwrap(),
    ]));
    assert_eq!(c["crl"]["entries"], 1, "{c}");
    let v = openssl(&[
        "crl",
        "-in",
        crl.to_str().unwrap(),
        "-noout",
        "-verify",
        "-CAfile",
        line.file("ca/issuing.pem").to_str().unwrap(),
    ]);
    assert!(text(&v).contains("verify OK"), "{}", text(&v));
    let batch = b["batch"].as_str().unwrap().to_string();
    let m = line.manifest_build(&[&batch], None, &line.file("manifest.jsonl"));
    assert!(m.status.success(), "{}", text(&m));
    let lines = std::fs::read_to_string(line.file("manifest.jsonl")).unwrap();
    assert!(lines.lines().count() >= 4, "{lines}");
    let v = line.certfab(&["log", "verify"]);
    assert!(v.status.success(), "{}", text(&v));
    let a = line.certfab(&["--json", "audit"]);
    assert!(a.status.success(), "{}", text(&a));
}

/// Item 4: two stations racing for the same device id with different keys: the database
/// decides under the writers' lock, exactly one wins, the other is refused (exit 3); and two
/// stations offered the same key for different devices: one device gets it.
#[test]
fn item4_racing_stations_exactly_one_wins() {
    let line = Line::on_postgres();
    let (cluster, ledger) = pg(&line);
    let a = station_config(&line, "station-a", "station-a", 2, ledger);
    let b = station_config(&line, "station-b", "station-b", 3, ledger);
    let dir = line.file("work");
    std::fs::create_dir_all(&dir).unwrap();
    let rounds = 6;
    let mut handles = Vec::new();
    for i in 0..rounds {
        let id = format!("race-{i}");
        for (cfg, who) in [(&a, "a"), (&b, "b")] {
            let c = csr(&dir, &format!("{id}-{who}"));
            let out = line.file(&format!("race/{id}-{who}"));
            let cfg = cfg.clone();
            let id = id.clone();
            handles.push(std::thread::spawn(move || {
                let o = certfab_with(&cfg, &issue_args("generic-iot", &c, &id, &out));
                (id, out, o)
            }));
        }
    }
    let mut wins = std::collections::BTreeMap::new();
    for h in handles {
        let (id, out, o) = h.join().unwrap();
        match code(&o) {
            Some(0) => {
                let v = issuing_verify(&line, &out.join("cert.pem"));
                assert!(text(&v).contains("OK"), "{}", text(&v));
                *wins.entry(id).or_insert(0) += 1;
            }
            Some(3) => assert!(text(&o).contains(&id), "{}", text(&o)),
            _ => panic!("{id}: {}", text(&o)),
        }
    }
    assert_eq!(wins.len(), rounds, "{wins:?}");
    assert!(wins.values().all(|n| *n == 1), "{wins:?}");
    assert_eq!(
        cluster.value(
            &ledger.db,
            "SELECT count(*) FROM certificates WHERE state = 'signed' AND device_id LIKE 'race-%'"
        ),
        rounds.to_string()
    );
    // One key offered for two devices at once.
    let k = csr(&dir, "shared-key");
    let h: Vec<_> = [("key-x", &a), ("key-y", &b)]
        .into_iter()
        .map(|(id, cfg)| {
            let (k, cfg, out) = (k.clone(), cfg.clone(), line.file(&format!("key/{id}")));
            std::thread::spawn(move || certfab_with(&cfg, &issue_args("generic-iot", &k, id, &out)))
        })
        .collect();
    let codes: Vec<_> = h.into_iter().map(|h| code(&h.join().unwrap())).collect();
    assert_eq!(
        codes.iter().filter(|c| **c == Some(0)).count(),
        1,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| **c == Some(3)).count(),
        1,
        "{codes:?}"
    );
    let v = certfab_with(&a, &["log", "verify"]);
    assert!(v.status.success(), "{}", text(&v));
}

/// Item 4: leases. An intent whose process is gone (its lease unlocked) is burned by the next
/// process that opens the ledger; one whose process still holds its lease is left alone until
/// that process is gone.
#[test]
fn item4_leases_burn_only_dead_processes_intents() {
    let line = Line::on_postgres();
    let (cluster, ledger) = pg(&line);
    let dir = line.file("work");
    std::fs::create_dir_all(&dir).unwrap();
    let c = csr(&dir, "lease-0");
    ok(&line.certfab(&issue_args(
        "generic-iot",
        &c,
        "lease-0",
        &line.file("out/lease-0"),
    )));
    let batch = cluster.value(
        &ledger.db,
        "SELECT batch_id FROM devices WHERE device_id = 'lease-0'",
    );
    // Two processes' leases with an intent each, written as certfab writes them.
    for (lease, dev) in [(901, "dead-dev"), (902, "live-dev")] {
        cluster.sql(
            &ledger.db,
            &format!(
                "INSERT INTO leases (id, station, host, pid, started_at) VALUES ({lease}, 'other', 'h', 1, 't');
                 INSERT INTO devices (profile, device_id, batch_id, state, spki_sha256, serial, key_origin, input_line, updated_at, id_key)
                   VALUES ('generic-iot', '{dev}', '{batch}', 'signing', 'k{lease}', 's{lease}', 'csr', 1, 't', '{dev}');
                 INSERT INTO certificates (issuer_key_id, serial, profile, device_id, batch_id, state, tbs, created_at, spki_sha256, lease)
                   VALUES ('ik', 's{lease}', 'generic-iot', '{dev}', '{batch}', 'intent', '\\x01', 't', 'k{lease}', {lease});"
            ),
        );
    }
    // The live one's process.
    let mut holder = hold_advisory_lock(cluster, ledger, LEASE_LOCK, 902);
    let v = line.certfab(&["log", "verify"]);
    assert!(v.status.success(), "{}", text(&v));
    // A writer opens the ledger: the dead lease's intent is burned, the live one's kept.
    let c = csr(&dir, "lease-1");
    ok(&line.certfab(&issue_args(
        "generic-iot",
        &c,
        "lease-1",
        &line.file("out/lease-1"),
    )));
    let state = |serial: &str| {
        cluster.value(
            &ledger.db,
            &format!("SELECT state FROM certificates WHERE serial = '{serial}'"),
        )
    };
    assert_eq!(state("s901"), "burned");
    assert_eq!(state("s902"), "intent");
    assert_eq!(
        cluster.value(
            &ledger.db,
            "SELECT state FROM devices WHERE device_id = 'dead-dev'"
        ),
        "sign_failed"
    );
    assert_eq!(
        cluster.value(
            &ledger.db,
            "SELECT closed_at IS NOT NULL FROM leases WHERE id = 901"
        ),
        "t"
    );
    let burned = cluster.value(
        &ledger.db,
        "SELECT detail FROM audit WHERE kind = 'serials_burned' ORDER BY seq DESC LIMIT 1",
    );
    assert!(burned.contains("\"lease\":901"), "{burned}");
    // Its process ends (the session's lock goes with it): the next writer burns it.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        cluster.value(
            "postgres",
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 902",
        ) == "0"
    });
    assert!(gone, "the server ended the killed session");
    let c = csr(&dir, "lease-2");
    ok(&line.certfab(&issue_args(
        "generic-iot",
        &c,
        "lease-2",
        &line.file("out/lease-2"),
    )));
    assert_eq!(state("s902"), "burned");
}

/// Item 5: concurrent writers make one chain; an edited or deleted audit row on the server is
/// found by `log verify` (exit 3, naming the event).
#[test]
fn item5_one_chain_under_concurrency_and_tamper_found() {
    let line = Line::on_postgres();
    let (cluster, ledger) = pg(&line);
    let dir = line.file("work");
    std::fs::create_dir_all(&dir).unwrap();
    let cfgs: Vec<PathBuf> = (0..3)
        .map(|i| {
            station_config(
                &line,
                &format!("s{i}"),
                &format!("s{i}"),
                10 + i as u8,
                ledger,
            )
        })
        .collect();
    let mut hs = Vec::new();
    for (i, cfg) in cfgs.iter().enumerate() {
        for j in 0..4 {
            let id = format!("chain-{i}-{j}");
            let c = csr(&dir, &id);
            let (cfg, out) = (cfg.clone(), line.file(&format!("out/{id}")));
            hs.push(std::thread::spawn(move || {
                certfab_with(&cfg, &issue_args("generic-iot", &c, &id, &out))
            }));
        }
    }
    for h in hs {
        let o = h.join().unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    let v = ok_json(&line.certfab(&["--json", "log", "verify"]));
    let stations = v.to_string();
    for s in ["s0", "s1", "s2"] {
        assert!(stations.contains(&format!("\"{s}\"")), "{v}");
    }
    // An edit of an event's content.
    cluster.sql(
        &ledger.db,
        "UPDATE audit SET operator = 'mallory' WHERE seq = 3",
    );
    let o = line.certfab(&["log", "verify"]);
    assert_eq!(code(&o), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("audit event 3: content does not match its hash"),
        "{}",
        text(&o)
    );
    // A deleted event.
    cluster.sql(&ledger.db, "DELETE FROM audit WHERE seq = 2");
    let o = line.certfab(&["log", "verify"]);
    assert_eq!(code(&o), Some(3), "{}", text(&o));
    assert!(text(&o).contains("audit event 2: missing"), "{}", text(&o));
}

/// Item 6 (fail closed): with the server stopped the command stops with exit 5 and the reason,
/// writes no certificate; after the server is back the same command completes, once. And
/// mid-shift (pgops item 4): the server stopped with `pg_ctl stop -m immediate` while a batch
/// signs stops it with exit 5; after the restart the same batch resumes, every device once,
/// no file without its ledger row.
#[test]
fn item6_database_down_fails_closed_then_resumes() {
    let line = Line::on_postgres();
    let (cluster, ledger) = pg(&line);
    let dir = line.file("work");
    std::fs::create_dir_all(&dir).unwrap();
    let c = csr(&dir, "down-1");
    let out = line.file("out/down-1");
    let o = cluster.stop_server("immediate");
    assert!(o.status.success(), "{}", text(&o));
    let o = line.certfab(&issue_args("generic-iot", &c, "down-1", &out));
    assert_eq!(code(&o), Some(5), "{}", text(&o));
    assert!(text(&o).contains("unreachable"), "{}", text(&o));
    assert!(!out.join("cert.pem").exists());
    cluster.start_server();
    let o = line.certfab(&issue_args("generic-iot", &c, "down-1", &out));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        cluster.value(
            &ledger.db,
            "SELECT count(*) FROM certificates WHERE device_id = 'down-1' AND state = 'signed'"
        ),
        "1"
    );
    // Mid-shift: the server stopped (`pg_ctl stop -m immediate`) while a batch signs.
    let n = MID_BATCH;
    let batch_out = line.file("down-batch");
    let child = spawn_batch(&line.config(), n, "down-b-{seq}", &batch_out);
    wait_signed(cluster, &ledger.db, "down-b-%", 10);
    let o = cluster.stop_server("immediate");
    assert!(o.status.success(), "{}", text(&o));
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), Some(5), "{}", text(&o));
    cluster.start_server();
    let o = spawn_batch(&line.config(), n, "down-b-{seq}", &batch_out)
        .wait_with_output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    exactly_once(cluster, &ledger.db, "down-b-%", n, &batch_out);
    let v = line.certfab(&["log", "verify"]);
    assert!(v.status.success(), "{}", text(&v));
}

/// Item 8: the station role docs/central-ledger.md sets up (its grants block applied as
/// written) issues, revokes and builds a manifest, and cannot change or delete audit rows.
#[test]
fn item8_station_role_least_privilege_from_the_docs() {
    let line = Line::on_postgres();
    let (cluster, ledger) = pg(&line);
    let dir = line.file("work");
    std::fs::create_dir_all(&dir).unwrap();
    // The owner's first write creates the schema.
    let c = csr(&dir, "owner-1");
    ok(&line.certfab(&issue_args(
        "generic-iot",
        &c,
        "owner-1",
        &line.file("out/owner-1"),
    )));
    let doc = std::fs::read_to_string(repo().join("docs/central-ledger.md")).unwrap();
    let block = doc
        .split("<!-- station-grants:")
        .nth(1)
        .and_then(|rest| rest.split("```sql\n").nth(1))
        .and_then(|rest| rest.split("\n```").next())
        .expect("the grants block in docs/central-ledger.md");
    let station = cluster.role(ledger, "certfab_station");
    cluster.sql(
        &ledger.db,
        &format!("GRANT CONNECT ON DATABASE {} TO certfab_station", ledger.db),
    );
    cluster.sql(&ledger.db, &format!("SET ROLE {}; {block}", ledger.role));
    let cfg = station_config(&line, "station-role", "line-2", 5, &station);
    let c = csr(&dir, "station-1");
    let o = certfab_with(
        &cfg,
        &issue_args("generic-iot", &c, "station-1", &line.file("out/s1")),
    );
    assert!(o.status.success(), "{}", text(&o));
    ok(&certfab_with(
        &cfg,
        &["revoke", "--device", "owner-1", "--reason", "superseded"],
    ));
    let b = ok_json(&certfab_with(
        &cfg,
        &[
            "--json",
            "batch",
            "--profile",
            "generic-iot",
            "--count",
            "2",
            "--keygen",
            "host",
            "--plain-keys",
            "--id-template",
            "st-{seq}",
            "--out",
            line.file("st-batch").to_str().unwrap(),
        ],
    ));
    let batch = b["batch"].as_str().unwrap().to_string();
    let m = certfab_with(
        &cfg,
        &[
            "--json",
            "manifest",
            "build",
            "--batch",
            &batch,
            "--out",
            line.file("st-manifest.jsonl").to_str().unwrap(),
        ],
    );
    assert!(m.status.success(), "{}", text(&m));
    ok(&certfab_with(&cfg, &["log", "verify"]));
    // The station role itself, over TLS: audit rows cannot be changed or deleted.
    let psql_as_station = |sql: &str| {
        Command::new("psql")
            .args(["-X", "-At", &station.url, "-c", sql])
            .env(
                "PGPASSWORD",
                std::fs::read_to_string(&station.password_file).unwrap(),
            )
            .output()
            .unwrap()
    };
    let n = psql_as_station("SELECT count(*) FROM audit");
    assert!(n.status.success(), "{}", text(&n));
    for sql in [
        "UPDATE audit SET operator = 'mallory' WHERE seq = 1",
        "DELETE FROM audit WHERE seq = 1",
        "DELETE FROM checkpoints",
        "UPDATE certfab_schema SET version = 99",
        "DELETE FROM certificates",
    ] {
        let o = psql_as_station(sql);
        assert!(!o.status.success(), "{sql}: {}", text(&o));
        assert!(
            text(&o).contains("permission denied"),
            "{sql}: {}",
            text(&o)
        );
    }
}

/// Item 7: three stations and a batch at once over an overlapping device pool (the same
/// device ids offered by all of them, one key offered for two devices): every device id is
/// certified exactly once, no key and no serial twice, every certificate written verifies
/// with openssl, and the one audit chain verifies.
#[test]
fn item7_three_stations_and_a_batch_over_one_pool() {
    let line = Line::on_postgres();
    let (cluster, ledger) = pg(&line);
    let dir = line.file("work");
    std::fs::create_dir_all(&dir).unwrap();
    let pool = 8;
    let cfgs: Vec<PathBuf> = (0..3)
        .map(|i| {
            station_config(
                &line,
                &format!("p{i}"),
                &format!("p{i}"),
                20 + i as u8,
                ledger,
            )
        })
        .collect();
    let shared = csr(&dir, "shared");
    let mut jobs: Vec<(PathBuf, Vec<String>, PathBuf)> = Vec::new();
    for (i, cfg) in cfgs.iter().enumerate() {
        // Each station walks the pool from a different start.
        for k in 0..pool {
            let n = (k + i * 3) % pool + 1;
            let id = format!("pool-{n}");
            let c = csr(&dir, &format!("{id}-p{i}"));
            let out = line.file(&format!("st/p{i}/{id}"));
            jobs.push((cfg.clone(), vec![id, c.display().to_string()], out));
        }
    }
    for (i, id) in [(0, "pool-key-a"), (1, "pool-key-b")] {
        let out = line.file(&format!("st/p{i}/{id}"));
        jobs.push((
            cfgs[i].clone(),
            vec![id.to_string(), shared.display().to_string()],
            out,
        ));
    }
    let batch_out = line.file("pool-batch");
    let batch_cfg = line.config();
    let batch = std::thread::spawn(move || {
        certfab_with(
            &batch_cfg,
            &[
                "--json",
                "batch",
                "--profile",
                "generic-iot",
                "--count",
                "8",
                "--keygen",
                "host",
                "--plain-keys",
                "--id-template",
                "pool-{seq}",
                "--out",
                batch_out.to_str().unwrap(),
            ],
        )
    });
    // One thread per station, each issuing its devices one after another.
    let mut stations = Vec::new();
    for cfg in &cfgs {
        let mine: Vec<_> = jobs.iter().filter(|(c, _, _)| c == cfg).cloned().collect();
        stations.push(std::thread::spawn(move || {
            mine.into_iter()
                .map(|(cfg, a, out)| {
                    let o = certfab_with(
                        &cfg,
                        &issue_args("generic-iot", Path::new(&a[1]), &a[0], &out),
                    );
                    (a[0].clone(), out, o)
                })
                .collect::<Vec<_>>()
        }));
    }
    let b = batch.join().unwrap();
    assert!(matches!(code(&b), Some(0) | Some(10)), "{}", text(&b));
    let mut files = Vec::new();
    for s in stations {
        for (id, out, o) in s.join().unwrap() {
            match code(&o) {
                Some(0) => files.push(out.join("cert.pem")),
                Some(3) => {}
                _ => panic!("{id}: {}", text(&o)),
            }
        }
    }
    for e in std::fs::read_dir(line.file("pool-batch"))
        .unwrap()
        .flatten()
    {
        let p = e.path().join("cert.pem");
        if p.exists() {
            files.push(p);
        }
    }
    for f in &files {
        let v = issuing_verify(&line, f);
        assert!(text(&v).contains(": OK"), "{}: {}", f.display(), text(&v));
    }
    let q = |sql: &str| cluster.value(&ledger.db, sql);
    for n in 1..=pool {
        assert_eq!(
            q(&format!(
                "SELECT count(*) FROM certificates WHERE device_id = 'pool-{n}' AND state = 'signed'"
            )),
            "1",
            "pool-{n}"
        );
    }
    assert_eq!(
        q("SELECT count(*) FROM certificates WHERE device_id LIKE 'pool-key-%' AND state = 'signed'"),
        "1"
    );
    assert_eq!(
        q(
            "SELECT count(*) FROM (SELECT spki_sha256 FROM certificates WHERE state = 'signed'
             GROUP BY spki_sha256 HAVING count(*) > 1) d"
        ),
        "0"
    );
    assert_eq!(
        q("SELECT count(*) FROM (SELECT serial FROM certificates GROUP BY serial HAVING count(*) > 1) d"),
        "0"
    );
    // A file for every signed certificate of the pool, and no more.
    assert_eq!(
        q("SELECT count(*) FROM certificates WHERE device_id LIKE 'pool-%' AND state = 'signed'"),
        files.len().to_string()
    );
    let v = line.certfab(&["log", "verify"]);
    assert!(v.status.success(), "{}", text(&v));
}

/// Item 7 (the SoftHSM concurrent-open flake): forty certfab processes started at the same
/// instant on one token (a central ledger, so they share no ledger file lock) all open the
/// token, log in and issue; before the bounded retry at open some exited 4 with
/// `CKR_GENERAL_ERROR` or "no token matches".
#[test]
fn item7_forty_processes_open_one_token_at_once() {
    let line = Line::on_postgres();
    let dir = line.file("work");
    std::fs::create_dir_all(&dir).unwrap();
    // The schema exists before the crowd arrives (one migration is not what is tested here).
    let c = csr(&dir, "crowd-0");
    ok(&line.certfab(&issue_args(
        "generic-iot",
        &c,
        "crowd-0",
        &line.file("crowd/0"),
    )));
    let n = 40;
    let csrs: Vec<PathBuf> = (1..=n).map(|i| csr(&dir, &format!("crowd-{i}"))).collect();
    let start = std::sync::Arc::new(std::sync::Barrier::new(n));
    let config = line.config();
    let hs: Vec<_> = (1..=n)
        .map(|i| {
            let (start, config, c) = (start.clone(), config.clone(), csrs[i - 1].clone());
            let out = line.file(&format!("crowd/{i}"));
            std::thread::spawn(move || {
                let id = format!("crowd-{i}");
                let mut cmd = Command::new(bin());
                cmd.arg("--config")
                    .arg(&config)
                    .args(issue_args("generic-iot", &c, &id, &out))
                    .env_remove("CERTFAB_CONFIG");
                start.wait();
                (id, cmd.output().unwrap())
            })
        })
        .collect();
    let mut failed = Vec::new();
    for h in hs {
        let (id, o) = h.join().unwrap();
        if !o.status.success() {
            failed.push(format!("{id}: exit {:?}: {}", code(&o), text(&o)));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {n} failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    let v = line.certfab(&["log", "verify"]);
    assert!(v.status.success(), "{}", text(&v));
}

/// The figures in docs/performance.md "Central ledger": the same batch (host keys, no key
/// files kept encrypted) on a SQLite ledger and on a central PostgreSQL ledger, one after the
/// other on one token. Not part of the suite (`--ignored`); N from CERTFAB_BENCH_N (2000).
#[test]
#[ignore]
fn bench_batch_rate_sqlite_vs_postgres() {
    let n: usize = std::env::var("CERTFAB_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mut line = Line::new();
    let rate = |line: &Line, tag: &str| {
        let t = std::time::Instant::now();
        let s = line.host_batch(
            "generic-iot",
            n,
            &format!("{tag}-{{seq}}"),
            &line.file(&format!("bench-{tag}")),
            &["--plain-keys"],
        );
        assert_eq!(s["issued"], n as u64, "{s}");
        n as f64 / t.elapsed().as_secs_f64()
    };
    let sqlite = rate(&line, "lite");
    let cluster = PgCluster::start();
    let ledger = cluster.ledger("bench");
    let text = std::fs::read_to_string(line.config()).unwrap();
    std::fs::write(line.config(), common::pg::with_ledger(&text, &ledger)).unwrap();
    let postgres = rate(&line, "pg");
    line.pg = Some((cluster, ledger));
    println!(
        "batch of {n}: SQLite {sqlite:.0}/s, PostgreSQL {postgres:.0}/s ({:.0} %)",
        100.0 * postgres / sqlite
    );
}

/// A site config for a station of `line` on a SQLite ledger of its own (`NAME.sqlite` beside
/// the config): the line's config with its own station id and serial prefix.
fn sqlite_station_config(line: &Line, name: &str, prefix: u8) -> PathBuf {
    let text = std::fs::read_to_string(line.config()).unwrap();
    let mut out = String::new();
    for l in text.lines() {
        if l.starts_with("ledger:") {
            out.push_str(&format!("ledger: {name}.sqlite\n"));
        } else if !l.starts_with("ledger_password:") {
            out.push_str(l);
            out.push('\n');
        }
    }
    let out = out
        .replace("  id: dev-line\n", &format!("  id: {name}\n"))
        .replace(
            "  serial_prefix: 1\n",
            &format!("  serial_prefix: {prefix}\n"),
        );
    let path = line.file(&format!("{name}.yaml"));
    std::fs::write(&path, out).unwrap();
    path
}

/// `certfab --json batch` of `count` host keys named `template` with `config`; its summary.
fn batch_with(config: &Path, count: usize, template: &str, out: &Path) -> serde_json::Value {
    ok_json(&certfab_with(
        config,
        &[
            "--json",
            "batch",
            "--profile",
            "generic-iot",
            "--count",
            &count.to_string(),
            "--keygen",
            "host",
            "--plain-keys",
            "--id-template",
            template,
            "--out",
            out.to_str().unwrap(),
        ],
    ))
}

/// Issue 12 (pgops item 1): `certfab ledger import`. Two stations that ran on SQLite ledgers
/// of their own (a batch, single issues, a manifest) are imported into one central ledger:
/// every device, certificate and manifest is there, each station's audit chain is kept and
/// pinned in the central one, `log verify` and `audit` pass, and a manifest built on the
/// central ledger across the imported devices verifies offline. The same file again is a
/// no-op; a third station that certified a device id and a key the central ledger already
/// holds is refused with both conflicts named and nothing written; an imported event edited
/// on the server is found by `log verify`.
#[test]
fn item1_ledger_import_two_stations_then_a_conflicting_third_refused() {
    let line = Line::on_postgres();
    let (cluster, ledger) = pg(&line);
    let dir = line.file("work");
    std::fs::create_dir_all(&dir).unwrap();
    let q = |sql: &str| cluster.value(&ledger.db, sql);
    // The central ledger already has a single issue of the same profile and CA as the
    // stations' (their standing batches merge into its one).
    let c0 = csr(&dir, "central-1");
    ok(&line.certfab(&issue_args(
        "generic-iot",
        &c0,
        "central-1",
        &line.file("out/central-1"),
    )));
    let a = sqlite_station_config(&line, "station-a", 2);
    let b = sqlite_station_config(&line, "station-b", 3);
    let ba = batch_with(&a, 3, "imp-a-{seq}", &line.file("a-batch"));
    let bb = batch_with(&b, 3, "imp-b-{seq}", &line.file("b-batch"));
    let key_b = csr(&dir, "imp-b-single");
    for (cfg, id, c) in [
        (&a, "imp-a-single", csr(&dir, "imp-a-single")),
        (&b, "imp-b-single", key_b.clone()),
    ] {
        let o = certfab_with(
            cfg,
            &issue_args("generic-iot", &c, id, &line.file(&format!("out/{id}"))),
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    // Station A built a manifest of its batch (imported with its own chain).
    let batch_a = ba["batch"].as_str().unwrap().to_string();
    let batch_b = bb["batch"].as_str().unwrap().to_string();
    let o = certfab_with(
        &a,
        &[
            "--json",
            "manifest",
            "build",
            "--batch",
            &batch_a,
            "--out",
            line.file("a-manifest.jsonl").to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let devices_before = q("SELECT count(*) FROM devices");

    // Import A and B.
    for (name, stations) in [("station-a", "station-a"), ("station-b", "station-b")] {
        let path = line.file(&format!("{name}.sqlite"));
        let r = ok_json(&line.certfab(&["--json", "ledger", "import", path.to_str().unwrap()]));
        assert_eq!(r["already_imported"], false, "{r}");
        assert_eq!(r["counts"]["devices"], 4, "{r}");
        assert_eq!(r["counts"]["certificates"], 4, "{r}");
        assert!(r["stations"].to_string().contains(stations), "{r}");
    }
    assert_eq!(
        q("SELECT count(*) FROM devices"),
        (devices_before.parse::<u64>().unwrap() + 8).to_string()
    );
    assert_eq!(
        q("SELECT count(*) FROM certificates WHERE state = 'signed' AND device_id LIKE 'imp-%'"),
        "8"
    );
    // The standing batches of single issues merged into the central one.
    assert_eq!(
        q("SELECT count(DISTINCT batch_id) FROM devices WHERE device_id IN ('central-1', 'imp-a-single', 'imp-b-single')"),
        "1"
    );
    assert_eq!(
        q("SELECT count(*) FROM manifests WHERE import_id IS NOT NULL AND state = 'complete'"),
        "1"
    );
    assert_eq!(
        q("SELECT count(*) FROM audit WHERE kind = 'ledger_imported'"),
        "2"
    );
    // Each station chain is pinned by its head hash.
    let head_a = q("SELECT hash FROM imported_audit WHERE import_id = 1 ORDER BY seq DESC LIMIT 1");
    assert!(
        q("SELECT detail FROM audit WHERE kind = 'ledger_imported' ORDER BY seq LIMIT 1")
            .contains(&head_a),
        "the central event pins the station head"
    );

    // The same file again: nothing written.
    let audit_before = q("SELECT count(*) FROM audit");
    let again = ok_json(&line.certfab(&[
        "--json",
        "ledger",
        "import",
        line.file("station-a.sqlite").to_str().unwrap(),
    ]));
    assert_eq!(again["already_imported"], true, "{again}");
    assert_eq!(q("SELECT count(*) FROM audit"), audit_before);
    assert_eq!(q("SELECT count(*) FROM imports"), "2");

    // Station C certified a device id station A has, and station B's key for another device.
    let c = sqlite_station_config(&line, "station-c", 4);
    for (id, key) in [
        ("imp-a-1", csr(&dir, "imp-c-a1")),
        ("imp-c-key", key_b.clone()),
        ("imp-c-ok", csr(&dir, "imp-c-ok")),
    ] {
        let o = certfab_with(
            &c,
            &issue_args("generic-iot", &key, id, &line.file(&format!("out/c-{id}"))),
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = line.certfab(&[
        "ledger",
        "import",
        line.file("station-c.sqlite").to_str().unwrap(),
    ]);
    assert_eq!(code(&o), Some(3), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("2 conflicts"), "{t}");
    assert!(
        t.contains("device imp-a-1 (profile generic-iot): already on the central ledger"),
        "{t}"
    );
    assert!(t.contains("of device imp-c-key (profile generic-iot): the central ledger certifies it for device imp-b-single"), "{t}");
    assert!(t.contains("nothing was written"), "{t}");
    assert_eq!(
        q("SELECT count(*) FROM devices WHERE device_id = 'imp-c-ok'"),
        "0"
    );
    assert_eq!(q("SELECT count(*) FROM imports"), "2");
    assert_eq!(q("SELECT count(*) FROM audit"), audit_before);

    // The central ledger checks out: chain with the imported chains, and the audit report.
    let v = ok_json(&line.certfab(&["--json", "log", "verify"]));
    assert_eq!(v["ok"], true, "{v}");
    let au = line.certfab(&["--json", "audit"]);
    assert!(au.status.success(), "{}", text(&au));
    // A manifest of station B's batch, built on the central ledger, verifies offline.
    let m = line.file("central-b.jsonl");
    let o = line.manifest_build(&[&batch_b], None, &m);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(ok_json(&o)["count"], 3, "{}", text(&o));
    let o = Command::new(bin())
        .args([
            "--json",
            "manifest",
            "verify",
            m.to_str().unwrap(),
            "--trust",
            line.file("ca/root.pem").to_str().unwrap(),
        ])
        .env_remove("CERTFAB_CONFIG")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(stdout_json(&o)["ok"], true, "{}", text(&o));

    // An imported event edited on the server: found, named.
    cluster.sql(
        &ledger.db,
        "UPDATE imported_audit SET operator = 'mallory' WHERE import_id = 2 AND seq = 2",
    );
    let o = line.certfab(&["log", "verify"]);
    assert_eq!(code(&o), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("imported ledger 2") && text(&o).contains("audit event 2"),
        "{}",
        text(&o)
    );
}

/// Issue 12 (pgops item 1): `ledger import` needs a central ledger; on a SQLite site it is
/// refused (exit 2) with the fix, and the file named is left alone.
#[test]
fn item1_ledger_import_refused_on_a_sqlite_site() {
    let line = Line::new();
    if line.pg.is_some() {
        return;
    }
    let other = line.file("other.sqlite");
    std::fs::write(&other, b"").unwrap();
    let o = line.certfab(&["ledger", "import", other.to_str().unwrap()]);
    assert_eq!(code(&o), Some(2), "{}", text(&o));
    assert!(text(&o).contains("postgresql://"), "{}", text(&o));
    assert_eq!(std::fs::read(&other).unwrap().len(), 0);
}

/// Issue 12 (pgops item 2): `certfab ledger recover` burns the intent of a process that is
/// gone and says so (text and `--json`, one `ledger_recovered` audit event); the intent of a
/// process that still holds its lease is listed as left alone and stays an intent.
#[test]
fn item2_ledger_recover_burns_dead_intents_and_leaves_live_ones() {
    let line = Line::on_postgres();
    let (cluster, ledger) = pg(&line);
    let dir = line.file("work");
    std::fs::create_dir_all(&dir).unwrap();
    let c = csr(&dir, "rec-0");
    ok(&line.certfab(&issue_args(
        "generic-iot",
        &c,
        "rec-0",
        &line.file("out/rec-0"),
    )));
    let batch = cluster.value(
        &ledger.db,
        "SELECT batch_id FROM devices WHERE device_id = 'rec-0'",
    );
    let put = |lease: i64, dev: &str| {
        cluster.sql(
            &ledger.db,
            &format!(
                "INSERT INTO leases (id, station, host, pid, started_at) VALUES ({lease}, 'st-{lease}', 'h{lease}', {lease}, 't');
                 INSERT INTO devices (profile, device_id, batch_id, state, spki_sha256, serial, key_origin, input_line, updated_at, id_key)
                   VALUES ('generic-iot', '{dev}', '{batch}', 'signing', 'k{lease}', 's{lease}', 'csr', 1, 't', '{dev}');
                 INSERT INTO certificates (issuer_key_id, serial, profile, device_id, batch_id, state, tbs, created_at, spki_sha256, lease)
                   VALUES ('ik', 's{lease}', 'generic-iot', '{dev}', '{batch}', 'intent', '\\x01', 't', 'k{lease}', {lease});"
            ),
        );
    };
    // The live process.
    put(912, "rec-live");
    let mut holder = hold_advisory_lock(cluster, ledger, LEASE_LOCK, 912);
    // A process that died with an intent in flight (its lease unlocked).
    put(911, "rec-dead");
    let r = ok_json(&line.certfab(&["--json", "ledger", "recover"]));
    let burned = r["burned"].as_array().unwrap();
    assert_eq!(burned.len(), 1, "{r}");
    assert_eq!(burned[0]["serial"], "s911", "{r}");
    assert_eq!(burned[0]["device_id"], "rec-dead", "{r}");
    assert_eq!(burned[0]["lease"], 911, "{r}");
    assert_eq!(burned[0]["station"], "st-911", "{r}");
    let live = r["live"].as_array().unwrap();
    assert_eq!(live.len(), 1, "{r}");
    assert_eq!(live[0]["lease"], 912, "{r}");
    assert_eq!(live[0]["intents"], 1, "{r}");
    let q = |sql: &str| cluster.value(&ledger.db, sql);
    assert_eq!(
        q("SELECT state FROM certificates WHERE serial = 's911'"),
        "burned"
    );
    assert_eq!(
        q("SELECT state FROM certificates WHERE serial = 's912'"),
        "intent"
    );
    assert_eq!(
        q("SELECT state FROM devices WHERE device_id = 'rec-dead'"),
        "sign_failed"
    );
    assert_eq!(
        q("SELECT state FROM devices WHERE device_id = 'rec-live'"),
        "signing"
    );
    let ev =
        q("SELECT detail FROM audit WHERE kind = 'ledger_recovered' ORDER BY seq DESC LIMIT 1");
    assert!(
        ev.contains("\"s911\"") && ev.contains("\"lease\":912"),
        "{ev}"
    );
    // Nothing more to burn while the live one lives; the text says what was left alone.
    let o = line.certfab(&["ledger", "recover"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("0 intents of dead processes burned"),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains("left alone: lease 912 (station st-912, host h912, pid 912"),
        "{}",
        text(&o)
    );
    // Its process ends: the next recover burns it and names it.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        q("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 912") == "0"
    });
    assert!(gone, "the server ended the killed session");
    let o = line.certfab(&["ledger", "recover"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("burned serial s912 of CA key ik: device rec-live (profile generic-iot) (lease 912: station st-912, host h912, pid 912)"),
        "{}",
        text(&o)
    );
    assert_eq!(
        q("SELECT state FROM certificates WHERE serial = 's912'"),
        "burned"
    );
    // A real certfab batch signing while recover runs again and again: its intents are never
    // burned, and it completes every device exactly once.
    let out = line.file("rec-batch");
    let child = spawn_batch(&line.config(), 120, "rec-b-{seq}", &out);
    wait_signed(cluster, &ledger.db, "rec-b-%", 5);
    let mut saw_live = false;
    for _ in 0..5 {
        let r = ok_json(&line.certfab(&["--json", "ledger", "recover"]));
        assert_eq!(r["burned"].as_array().unwrap().len(), 0, "{r}");
        saw_live |= !r["live"].as_array().unwrap().is_empty();
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    exactly_once(cluster, &ledger.db, "rec-b-%", 120, &out);
    eprintln!("recover saw the running batch's intents in flight: {saw_live}");
    let v = line.certfab(&["log", "verify"]);
    assert!(v.status.success(), "{}", text(&v));
}

/// Issue 12 (pgops item 3): concurrent `manifest build`s on one central ledger run one at a
/// time: four started at once over four batches all succeed, with sequences 1–4 chained
/// (each names the one before), every file verifies; and a build started while another holds
/// the manifest lock waits for it instead of failing.
#[test]
fn item3_concurrent_manifest_builds_chain_one_after_another() {
    let line = Line::on_postgres();
    let (cluster, ledger) = pg(&line);
    let batches: Vec<String> = (0..4)
        .map(|i| {
            let b = line.host_batch(
                "generic-iot",
                2,
                &format!("mb{i}-{{seq}}"),
                &line.file(&format!("mb-out-{i}")),
                &["--plain-keys"],
            );
            b["batch"].as_str().unwrap().to_string()
        })
        .collect();
    let config = line.config();
    let hs: Vec<_> = batches
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let (cfg, b, out) = (config.clone(), b.clone(), line.file(&format!("m{i}.jsonl")));
            std::thread::spawn(move || {
                let o = certfab_with(
                    &cfg,
                    &[
                        "--json",
                        "manifest",
                        "build",
                        "--batch",
                        &b,
                        "--out",
                        out.to_str().unwrap(),
                    ],
                );
                (out, o)
            })
        })
        .collect();
    let mut files = Vec::new();
    for h in hs {
        let (out, o) = h.join().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        files.push(out);
    }
    let chain = cluster.value(
        &ledger.db,
        "SELECT string_agg(sequence || ':' || COALESCE(prev_sha256, '-') || ':' || sha256, ' ' ORDER BY sequence)
         FROM manifests WHERE state = 'complete'",
    );
    let links: Vec<Vec<&str>> = chain.split(' ').map(|l| l.split(':').collect()).collect();
    assert_eq!(links.len(), 4, "{chain}");
    for (i, l) in links.iter().enumerate() {
        assert_eq!(l[0], (i + 1).to_string(), "{chain}");
        let prev = if i == 0 { "-" } else { links[i - 1][2] };
        assert_eq!(l[1], prev, "{chain}");
    }
    for f in &files {
        let o = line.certfab(&["--json", "manifest", "verify", f.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
    }
    // Another build holds the lock (a session of its own): a new build waits, then runs.
    let more = line.host_batch(
        "generic-iot",
        2,
        "mb-late-{seq}",
        &line.file("mb-out-late"),
        &["--plain-keys"],
    );
    let more = more["batch"].as_str().unwrap().to_string();
    // A session holding the manifest build lock.
    let mut holder = hold_advisory_lock(cluster, ledger, 1667657058, 1);
    let late = line.file("m-late.jsonl");
    let mut build = Command::new(bin())
        .arg("--config")
        .arg(line.config())
        .args(["--json", "manifest", "build", "--batch", &more, "--out"])
        .arg(&late)
        .env_remove("CERTFAB_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(build.try_wait().unwrap().is_none(), "the build waits");
    assert!(!late.exists());
    holder.kill().unwrap();
    holder.wait().unwrap();
    let o = build.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(stdout_json(&o)["sequence"], 5, "{}", text(&o));
    let v = line.certfab(&["log", "verify"]);
    assert!(v.status.success(), "{}", text(&v));
}

/// A `certfab --json batch` of `count` host keys named `template` into `out` with `config`,
/// started in the background.
/// Devices in a batch that a fault must hit while it signs: enough that it is still signing
/// when the fault lands. With 120, a quiet machine finished the batch in 0.5 s (~230/s, debug
/// build), before `pg_ctl stop -m immediate` had taken effect, and the batch exited 0.
const MID_BATCH: usize = 1000;

fn spawn_batch(config: &Path, count: usize, template: &str, out: &Path) -> std::process::Child {
    Command::new(bin())
        .arg("--config")
        .arg(config)
        .args([
            "--json",
            "batch",
            "--profile",
            "generic-iot",
            "--count",
            &count.to_string(),
            "--keygen",
            "host",
            "--plain-keys",
            "--id-template",
            template,
            "--out",
            out.to_str().unwrap(),
        ])
        .env_remove("CERTFAB_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the ledger has at least `n` signed certificates of devices `like`.
fn wait_signed(cluster: &PgCluster, db: &str, like: &str, n: u64) {
    let ok = (0..600).any(|_| {
        // The first process to open the ledger creates the schema.
        if cluster.value(db, "SELECT to_regclass('certificates') IS NOT NULL") != "t" {
            std::thread::sleep(std::time::Duration::from_millis(50));
            return false;
        }
        let got: u64 = cluster
            .value(
                db,
                &format!("SELECT count(*) FROM certificates WHERE state = 'signed' AND device_id LIKE '{like}'"),
            )
            .parse()
            .unwrap();
        if got >= n {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        false
    });
    assert!(ok, "{n} devices {like} signed within 30 s");
}

/// Exactly once for devices `like` (of which there are `count`): each has one signed
/// certificate, no serial twice, no intent left; every cert.pem under `out` is the signed
/// certificate the ledger holds for its device (no file without its ledger row), and there is
/// one for each. Returns the number of files.
fn exactly_once(cluster: &PgCluster, db: &str, like: &str, count: usize, out: &Path) -> usize {
    let q = |sql: &str| cluster.value(db, sql);
    assert_eq!(
        q(&format!("SELECT count(DISTINCT device_id) FROM certificates WHERE state = 'signed' AND device_id LIKE '{like}'")),
        count.to_string()
    );
    assert_eq!(
        q(&format!(
            "SELECT count(*) FROM certificates WHERE state = 'signed' AND device_id LIKE '{like}'"
        )),
        count.to_string()
    );
    assert_eq!(
        q(&format!(
            "SELECT count(*) FROM certificates WHERE state = 'intent' AND device_id LIKE '{like}'"
        )),
        "0"
    );
    assert_eq!(
        q("SELECT count(*) FROM (SELECT issuer_key_id, serial FROM certificates GROUP BY 1, 2 HAVING count(*) > 1) d"),
        "0"
    );
    let ledger: std::collections::BTreeSet<String> = q(&format!(
        "SELECT cert_sha256 FROM certificates WHERE state = 'signed' AND device_id LIKE '{like}'"
    ))
    .lines()
    .map(str::to_string)
    .collect();
    let mut files = 0;
    let mut stack = vec![out.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "cert.pem") {
                let fp = openssl_sha256_fingerprint(&p);
                assert!(
                    ledger.contains(&fp),
                    "{}: no signed ledger row",
                    p.display()
                );
                files += 1;
            }
        }
    }
    assert_eq!(
        files,
        count,
        "one certificate file per device in {}",
        out.display()
    );
    files
}

/// Issue 12 (pgops item 4): one of three stations on a central ledger is SIGKILLed
/// mid-shift while the other two keep issuing; they finish, its resume (the same command)
/// completes; every device once, no file without its ledger row, `log verify` clean.
#[test]
fn item4_sigkill_one_station_mid_shift_others_run_then_resume() {
    let line = Line::on_postgres();
    let (cluster, ledger) = pg(&line);
    // The station killed has more to do than the two that keep running.
    let sizes = [240, 120, 120];
    let cfgs: Vec<PathBuf> = (0..3)
        .map(|i| {
            station_config(
                &line,
                &format!("k{i}"),
                &format!("k{i}"),
                30 + i as u8,
                ledger,
            )
        })
        .collect();
    let outs: Vec<PathBuf> = (0..3).map(|i| line.file(&format!("kout{i}"))).collect();
    let mut children: Vec<_> = (0..3)
        .map(|i| spawn_batch(&cfgs[i], sizes[i], &format!("k{i}-{{seq}}"), &outs[i]))
        .collect();
    wait_signed(cluster, &ledger.db, "k0-%", 10);
    children[0].kill().unwrap();
    let killed = children[0].wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(killed.signal(), Some(9), "killed mid-shift, not finished");
    let others = children.split_off(1);
    for c in others {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    assert_eq!(
        cluster.value(
            &ledger.db,
            "SELECT count(*) FROM batches WHERE station = 'k0' AND finished_at IS NULL"
        ),
        "1",
        "the killed station's shift had not finished"
    );
    let o = spawn_batch(&cfgs[0], sizes[0], "k0-{seq}", &outs[0])
        .wait_with_output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    for i in 0..3 {
        exactly_once(cluster, &ledger.db, &format!("k{i}-%"), sizes[i], &outs[i]);
    }
    let v = line.certfab(&["log", "verify"]);
    assert!(v.status.success(), "{}", text(&v));
}

/// Issue 12 (pgops item 4): the batch's database connection is cut mid-batch
/// (`pg_terminate_backend` from a superuser session): it fails closed with exit 5 and the
/// reason; the same command then completes with nothing lost or doubled.
#[test]
fn item4_connection_cut_mid_batch_fails_closed_then_resumes() {
    let line = Line::on_postgres();
    let (cluster, ledger) = pg(&line);
    let n = MID_BATCH;
    let out = line.file("cut-out");
    let child = spawn_batch(&line.config(), n, "cut-{seq}", &out);
    wait_signed(cluster, &ledger.db, "cut-%", 10);
    cluster.sql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'certfab%'",
    );
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), Some(5), "{}", text(&o));
    assert!(text(&o).contains("ledger"), "{}", text(&o));
    let o = spawn_batch(&line.config(), n, "cut-{seq}", &out)
        .wait_with_output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    exactly_once(cluster, &ledger.db, "cut-%", n, &out);
    let v = line.certfab(&["log", "verify"]);
    assert!(v.status.success(), "{}", text(&v));
}

/// The advisory-lock class of certfab's leases (docs/central-ledger.md).
const LEASE_LOCK: u32 = 1667656819;

/// A psql session holding advisory lock (`class`, `obj`) — a lease's or the manifest build's —
/// and then idle, as a live certfab between two statements is (an idle session's end is seen at
/// once by the server). Returns once the server shows the lock granted.
pub(crate) fn hold_advisory_lock(
    cluster: &PgCluster,
    ledger: &PgLedger,
    class: u32,
    obj: i64,
) -> std::process::Child {
    let mut holder = Command::new("psql")
        .args(["-X", "-q", "-h"])
        .arg(cluster.dir.path().join("data"))
        .args([
            "-p",
            &cluster.port.to_string(),
            "-U",
            "certfab_test_super",
            "-d",
            &ledger.db,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let stdin = holder.stdin.as_mut().unwrap();
        writeln!(stdin, "SELECT pg_advisory_lock({class}, {obj});").unwrap();
        stdin.flush().unwrap();
    }
    let held = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        cluster.value(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = {obj} AND classid = {class} AND granted"
            ),
        ) == "1"
    });
    assert!(held, "the holder took advisory lock ({class}, {obj})");
    holder
}
