//! The tamper-evident audit log on a real dev line: events from every code path, operator and
//! per-station numbers, checkpoints signed in SoftHSM, and a mutation harness: hundreds of
//! random edits, deletions, reorders and insertions of audit rows in a copy of the ledger (naive,
//! and re-hashed into a self-consistent chain) before the last checkpoint, every one detected;
//! on a SQLite file and, as `postgres::…`, on a PostgreSQL database.

use crate::common::*;
use certfab::checkpoints::{self as auditlog, CheckpointDoc, CheckpointTrust};
use certfab::CaCert;
use certfab::{AuditEvent, Ledger, LedgerLocation, GENESIS};
use std::path::Path;
use std::process::{Command, Output};

/// Runs `certfab --config CONFIG issue` for `id` (a fresh OpenSSL P-256 key, into out/ID),
/// as `operator` if given.
fn run_issue(line: &Line, config: &Path, id: &str, operator: Option<&str>) -> Output {
    let csr = openssl_csr(line.path(), id, "ec:prime256v1", &format!("/CN={id}"), &[]);
    let mut cmd = Command::new(bin());
    cmd.arg("--config")
        .arg(config)
        .args(["issue", "--profile", "generic-iot", "--csr"])
        .arg(&csr)
        .args(["--device-id", id, "--out"])
        .arg(line.file(&format!("out/{id}")))
        .env_remove("CERTFAB_CONFIG");
    if let Some(op) = operator {
        cmd.env("CERTFAB_OPERATOR", op);
    }
    cmd.output().unwrap()
}

fn issue(line: &Line, id: &str, operator: &str) {
    ok(&run_issue(line, &line.config(), id, Some(operator)));
}

/// A ledger as anyone with the database could read and edit it: the line's own, or a copy
/// of one (a SQLite file beside it, or a database cloned in the line's cluster).
struct Store<'l> {
    line: &'l Line,
    /// SQLite: the file name in the line dir; PostgreSQL: the database.
    name: String,
    location: LedgerLocation,
}

impl<'l> Store<'l> {
    /// The line's ledger.
    fn of_line(line: &'l Line) -> Self {
        let location = certfab::SiteConfig::load(&line.config()).unwrap().ledger;
        let name = match line.pg_ledger() {
            Some((_, l)) => l.db.clone(),
            None => "ledger.sqlite".into(),
        };
        Store {
            line,
            name,
            location,
        }
    }

    /// A copy of this ledger named `name`, replacing any copy of that name.
    fn copy(&self, name: &str) -> Store<'l> {
        let (name, location) = match (&self.location, self.line.pg_ledger()) {
            (LedgerLocation::Postgres(t), Some((c, l))) => {
                let db = format!("{}_{name}", l.db);
                c.sql(
                    "postgres",
                    &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
                );
                c.sql(
                    "postgres",
                    &format!(
                        "CREATE DATABASE {db} TEMPLATE {} OWNER {}",
                        self.name, l.role
                    ),
                );
                let mut t = t.clone();
                t.dbname = db.clone();
                (db, LedgerLocation::Postgres(t))
            }
            _ => {
                let file = format!("{name}.sqlite");
                let p = self.line.file(&file);
                let _ = std::fs::remove_file(&p);
                let c = rusqlite::Connection::open(self.line.file(&self.name)).unwrap();
                c.execute("VACUUM INTO ?1", [p.to_str().unwrap()]).unwrap();
                (file, LedgerLocation::Sqlite(p))
            }
        };
        Store {
            line: self.line,
            name,
            location,
        }
    }

    /// Runs statements on this ledger.
    fn exec(&self, sql: &str) {
        match self.line.pg_ledger() {
            Some((c, _)) => c.exec(&self.name, sql),
            None => rusqlite::Connection::open(self.line.file(&self.name))
                .unwrap()
                .execute_batch(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        }
    }

    /// The one value `sql` returns.
    fn value(&self, sql: &str) -> String {
        let rows = match self.line.pg_ledger() {
            Some((c, _)) => c.query(&self.name, sql),
            None => sqlite_query(&self.line.file(&self.name), sql),
        };
        rows[0][0].clone()
    }

    /// The line's config with `ledger:` pointing at this ledger.
    fn config_text(&self, text: &str) -> String {
        match self.line.pg_ledger() {
            Some((c, l)) => pg::with_ledger(
                text,
                &pg::PgLedger {
                    url: c.url(&l.role, &self.name),
                    password_file: l.password_file.clone(),
                    db: self.name.clone(),
                    role: l.role.clone(),
                },
            ),
            None => text.replace("ledger: ledger.sqlite", &format!("ledger: {}", self.name)),
        }
    }
}

/// A SQL string literal.
fn lit(s: Option<&str>) -> String {
    s.map_or("NULL".into(), |s| format!("'{}'", s.replace('\'', "''")))
}

/// Asserts some problem of `r` mentions `needle`.
fn assert_problem(r: &auditlog::VerifyReport, needle: &str) {
    assert!(
        r.problems.iter().any(|p| p.contains(needle)),
        "no problem mentions {needle:?}: {:?}",
        r.problems
    );
}

fn trust(line: &Line) -> CheckpointTrust {
    CheckpointTrust {
        roots: vec![CaCert::load(&line.file("ca/root.pem")).unwrap()],
        signer: Some(CaCert::load(&line.file("ca/manifest-signer.pem")).unwrap()),
    }
}

fn verify(
    store: &Store,
    trust: &CheckpointTrust,
    external: &[(String, CheckpointDoc)],
) -> auditlog::VerifyReport {
    let l = Ledger::open_read(store.location.clone(), "dev-line").unwrap();
    auditlog::verify(&l, trust, external).unwrap()
}

fn rows(store: &Store) -> Vec<AuditEvent> {
    Ledger::open_read(store.location.clone(), "dev-line")
        .unwrap()
        .audit_events()
        .unwrap()
}

/// Replaces the whole audit table with `events` (as an attacker with the database could), in
/// one transaction.
fn write_rows(store: &Store, events: &[AuditEvent]) {
    let mut sql = String::from("BEGIN; DELETE FROM audit;");
    for e in events {
        sql.push_str(&format!(
            "INSERT INTO audit (seq, v, at, station, station_seq, operator, kind, batch_id, device_id, detail, prev_hash, hash)
             VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {});",
            e.seq,
            e.v,
            lit(Some(&e.at)),
            lit(Some(&e.station)),
            e.station_seq.map_or("NULL".into(), |n| n.to_string()),
            lit(e.operator.as_deref()),
            lit(Some(&e.kind)),
            lit(e.batch_id.as_deref()),
            lit(e.device_id.as_deref()),
            lit(Some(&e.detail)),
            lit(Some(&e.prev_hash)),
            lit(Some(&e.hash)),
        ));
    }
    sql.push_str("COMMIT;");
    store.exec(&sql);
}

/// Makes `events` a self-consistent chain again: contiguous numbers, per-station numbers,
/// every link and hash recomputed. Only a signature over an earlier head can still tell.
fn rechain(events: &mut [AuditEvent]) {
    let mut prev = GENESIS.to_string();
    let mut per_station = std::collections::BTreeMap::new();
    for (i, e) in events.iter_mut().enumerate() {
        e.seq = i as i64 + 1;
        let n = per_station.entry(e.station.clone()).or_insert(0i64);
        *n += 1;
        e.station_seq = Some(*n);
        e.prev_hash = prev.clone();
        e.hash = e.expected_hash().unwrap();
        prev = e.hash.clone();
    }
}

/// A tiny deterministic PRNG (xorshift64*), so a failure is reproducible from its index.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn audit_log_events_checkpoints_and_mutations() {
    let line = Line::new();
    // A batch (auto-checkpointed at its end), single issues by a named operator, a revocation,
    // a CRL, then an explicit checkpoint exported to a file, then one more event.
    let o = line.certfab(&[
        "batch",
        "--profile",
        "generic-iot",
        "--count",
        "6",
        "--keygen",
        "host",
        "--plain-keys",
        "--out",
        line.file("bundles").to_str().unwrap(),
    ]);
    ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("audit checkpoint 1 signed"),
        "{}",
        text(&o)
    );
    // A station shift over two simulated devices: started/stopped events by its operator, and
    // its own checkpoint at the end.
    let sim = repo().join("station-scripts/sim-device.py");
    let sim_line = line.file("sim-line");
    ok(&Command::new(&sim)
        .arg("make-line")
        .arg(&sim_line)
        .args(["--count", "2"])
        .output()
        .unwrap());
    let o = Command::new(bin())
        .arg("--config")
        .arg(line.config())
        .args([
            "--json",
            "station",
            "--profile",
            "generic-iot",
            "--operator",
            "carol",
            "--adapter",
        ])
        .arg(format!(
            "exec:{} serve {}",
            sim.display(),
            sim_line.display()
        ))
        .env_remove("CERTFAB_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("audit checkpoint 2 signed"),
        "{}",
        text(&o)
    );
    issue(&line, "op-1", "alice");
    issue(&line, "op-2", "alice");
    ok(&line.certfab(&["revoke", "--device", "op-2", "--reason", "keyCompromise"]));
    ok(&line.certfab(&[
        "crl",
        "--profile",
        "generic-iot",
        "--out",
        line.file("crl.pem").to_str().unwrap(),
    ]));
    // A failed login is recorded (and the PIN is not).
    let bad = line.file("bad-pin");
    std::fs::write(&bad, "000000\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let cfg = std::fs::read_to_string(line.config())
        .unwrap()
        .replace("pin: file:pin", "pin: file:bad-pin");
    let bad_cfg = line.file("bad.yaml");
    std::fs::write(&bad_cfg, cfg).unwrap();
    let o = run_issue(&line, &bad_cfg, "nope-1", None);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let cp2 = line.file("cp2.json");
    let cp = ok_json(&line.certfab(&[
        "--json",
        "log",
        "checkpoint",
        "--out",
        cp2.to_str().unwrap(),
    ]));
    assert_eq!(cp["checkpoint"]["statement"]["checkpoint"], 3);
    issue(&line, "late-1", "bob");

    // The events an auditor expects, with operator and per-station numbers.
    let live = Store::of_line(&line);
    let events = rows(&live);
    let kinds: std::collections::BTreeSet<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    for (kind, op) in [("station_started", "carol"), ("station_stopped", "carol")] {
        assert!(
            events
                .iter()
                .any(|e| e.kind == kind && e.operator.as_deref() == Some(op)),
            "no {kind} by {op}"
        );
    }
    for k in [
        "config_changed",
        "login",
        "login_failed",
        "batch_started",
        "batch_finished",
        "serial_reserved",
        "issued",
        "revoked",
        "crl_issued",
        "checkpoint",
    ] {
        assert!(kinds.contains(k), "no {k} event in {kinds:?}");
    }
    let pin = std::fs::read_to_string(line.file("pin")).unwrap();
    assert!(
        events.iter().all(|e| !e.detail.contains(pin.trim())),
        "PIN in the log"
    );
    assert!(events.iter().any(|e| e.kind == "issued"
        && e.device_id.as_deref() == Some("op-1")
        && e.operator.as_deref() == Some("alice")));
    let failed = events.iter().find(|e| e.kind == "login_failed").unwrap();
    assert!(failed.detail.contains("pin_source"), "{}", failed.detail);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1);
        assert_eq!(e.v, 2);
        assert_eq!(
            e.station_seq,
            Some(i as i64 + 1),
            "one station: its numbers are the seqs"
        );
    }

    // The CLI verdict on the intact log.
    let v = ok_json(&line.certfab(&[
        "--json",
        "log",
        "verify",
        "--checkpoint",
        cp2.to_str().unwrap(),
    ]));
    assert_eq!(v["ok"], true, "{v}");
    let head = v["checkpointed_seq"].as_i64().unwrap();
    assert_eq!(
        head,
        cp["checkpoint"]["statement"]["head_seq"].as_i64().unwrap()
    );
    // The checkpoint's own record is not news, nor the count of token signatures its command
    // recorded as it ended (docs/audit.md, token_signatures).
    let own_count = events
        .iter()
        .any(|e| e.seq == head + 2 && e.kind == "token_signatures");
    let late = events.len() as i64 - head - 1 - i64::from(own_count);
    assert!(own_count);
    assert!(late > 0);
    assert_eq!(v["not_checkpointed"], late, "{v}");

    // The harness. Mutations are confined to events up to the last checkpointed head.
    let pristine = live.copy("pristine");
    let t = trust(&line);
    assert!(verify(&pristine, &t, &[]).ok);
    let base = rows(&pristine);
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    let mut counts = std::collections::BTreeMap::new();
    let runs = 320;
    let content = |v: &[AuditEvent]| -> Vec<String> {
        v.iter()
            .map(|e| {
                format!(
                    "{}|{}|{}|{:?}|{}|{:?}|{:?}|{}",
                    e.seq, e.at, e.station, e.operator, e.kind, e.batch_id, e.device_id, e.detail
                )
            })
            .collect()
    };
    // One copy for every run: each replaces the whole audit table, the only one it edits.
    let copy = pristine.copy("mutated");
    copy.exec("DROP INDEX IF EXISTS audit_station_seq");
    let mut i = 0;
    while i < runs {
        let mut ev = base.clone();
        let k = rng.below(head as u64) as usize; // index of an event at or before the head
        let rehash = rng.below(2) == 1;
        let what = match rng.below(4) {
            0 => {
                let e = &mut ev[k];
                // Re-hashing renumbers stations, so a station_seq edit only counts naive.
                let edit = match rng.below(7) {
                    5 if rehash => 0,
                    n => n,
                };
                match edit {
                    0 => e.detail.push(' '),
                    1 => e.kind = format!("{}x", e.kind),
                    2 => e.at = "2020-01-01T00:00:00Z".into(),
                    3 => e.operator = Some("mallory".into()),
                    4 => {
                        e.device_id = Some(format!(
                            "{}-forged",
                            e.device_id.clone().unwrap_or_default()
                        ))
                    }
                    5 => e.station_seq = e.station_seq.map(|s| s + 100),
                    _ => e.station = "elsewhere".into(),
                }
                "edit"
            }
            1 => {
                ev.remove(k);
                "delete"
            }
            2 => {
                let mut j = rng.below(head as u64) as usize;
                if j == k {
                    j = (k + 1) % head as usize;
                }
                // Swap contents, keep the positions' numbers.
                let (a, b) = (ev[k].clone(), ev[j].clone());
                ev[k] = AuditEvent { seq: a.seq, ..b };
                ev[j] = AuditEvent { seq: b.seq, ..a };
                "reorder"
            }
            _ => {
                let mut forged = ev[k].clone();
                forged.kind = "issued".into();
                forged.device_id = Some("ghost".into());
                forged.detail = r#"{"serial":"01"}"#.into();
                ev.insert(k, forged);
                for (n, e) in ev.iter_mut().enumerate() {
                    e.seq = n as i64 + 1;
                }
                "insert"
            }
        };
        // Swapping two identical events (two logins in the same second) changes nothing:
        // not a mutation, draw again.
        if content(&ev) == content(&base) {
            continue;
        }
        if rehash {
            rechain(&mut ev);
        }
        write_rows(&copy, &ev);
        let r = verify(&copy, &t, &[]);
        assert!(
            !r.ok,
            "mutation {i} ({what}, rehash {rehash}, at index {k}) was not detected: {r:?}"
        );
        *counts.entry((what, rehash)).or_insert(0) += 1;
        i += 1;
    }
    assert_eq!(counts.values().sum::<i32>(), runs);
    assert_eq!(
        counts.len(),
        8,
        "every kind of mutation, naive and re-hashed: {counts:?}"
    );

    // Truncating the tail back past the last checkpoint is detected...
    let copy = pristine.copy("truncated");
    copy.exec(&format!("DELETE FROM audit WHERE seq > {}", head - 3));
    let r = verify(&copy, &t, &[]);
    assert!(!r.ok);
    assert_problem(&r, "truncated");
    // ...and so is removing a checkpoint that a later checkpoint event names.
    let copy = pristine.copy("truncated");
    copy.exec("DELETE FROM checkpoints WHERE id = 1");
    let r = verify(&copy, &t, &[]);
    assert_problem(&r, "checkpoint 1, recorded by event");
    // Removing the last checkpoint together with everything after the one before it leaves a
    // consistent older ledger: only an exported checkpoint file catches that.
    let copy = pristine.copy("truncated");
    let first_head: i64 = copy
        .value("SELECT head_seq FROM checkpoints WHERE id = 2")
        .parse()
        .unwrap();
    copy.exec(&format!(
        "DELETE FROM audit WHERE seq > {}; DELETE FROM checkpoints WHERE id = 3",
        first_head + 1
    ));
    assert!(
        verify(&copy, &t, &[]).ok,
        "documented limit: needs the exported checkpoint"
    );
    let doc = auditlog::read_doc(&cp2).unwrap();
    let r = verify(&copy, &t, &[("cp2.json".into(), doc.clone())]);
    assert!(!r.ok);
    assert_problem(&r, "truncated");
    // A statement edited in the table no longer matches its signature.
    let copy = pristine.copy("truncated");
    let s = copy.value("SELECT statement FROM checkpoints WHERE id = 3");
    let mut d: CheckpointDoc = serde_json::from_str(&s).unwrap();
    d.statement.head_seq -= 1;
    d.statement.head_hash = base[(d.statement.head_seq - 1) as usize].hash.clone();
    copy.exec(&format!(
        "UPDATE checkpoints SET statement = {} WHERE id = 3",
        lit(Some(&serde_json::to_string(&d).unwrap()))
    ));
    let r = verify(&copy, &t, &[]);
    assert_problem(&r, "signature");

    // A device's key cannot sign checkpoints (its certificate lacks the signer EKU) ...
    let sk = {
        use p256::pkcs8::DecodePrivateKey;
        p256::SecretKey::from_pkcs8_pem(&std::fs::read_to_string(line.file("op-1.key")).unwrap())
            .unwrap()
    };
    let refused = certfab::manifests::jws::DocumentSigner::new(
        CaCert::load(&line.file("out/op-1/cert.pem")).unwrap(),
        vec![
            CaCert::load(&line.file("ca/issuing.pem")).unwrap(),
            CaCert::load(&line.file("ca/root.pem")).unwrap(),
        ],
        certfab::SoftSigner::from_p256(p256::ecdsa::SigningKey::from(sk)),
        time::OffsetDateTime::now_utc(),
    );
    assert!(refused.is_err());
    // ... and a second, properly made signer under the same root (an insider with the root
    // key could make one) is refused because checkpoints are pinned to the configured signer.
    for args in [
        vec![
            "ca",
            "keygen",
            "--key",
            "rogue-signer",
            "--algorithm",
            "p256",
        ],
        vec![
            "ca",
            "csr",
            "--key",
            "rogue-signer",
            "--subject",
            "CN=rogue",
            "--out",
            "rogue.csr",
        ],
        vec![
            "ca",
            "sign",
            "--issuer-key",
            "root",
            "--csr",
            "rogue.csr",
            "--end-entity",
            "--validity",
            "1y",
            "--out",
            "ca/rogue.pem",
        ],
        vec![
            "ca",
            "import",
            "--key",
            "rogue-signer",
            "--cert",
            "ca/rogue.pem",
        ],
    ] {
        let o = Command::new(bin())
            .current_dir(line.path())
            .arg("--config")
            .arg(line.config())
            .args(&args)
            .env_remove("CERTFAB_CONFIG")
            .output()
            .unwrap();
        ok(&o);
    }
    let rogue_ledger = pristine.copy("rogue");
    let cfg = rogue_ledger
        .config_text(&std::fs::read_to_string(line.config()).unwrap())
        .replace("object=manifest-signer;", "object=rogue-signer;")
        .replace("cert: ca/manifest-signer.pem", "cert: ca/rogue.pem");
    let rogue_cfg = line.file("rogue.yaml");
    std::fs::write(&rogue_cfg, cfg).unwrap();
    let forged_path = line.file("forged.json");
    ok(&Command::new(bin())
        .arg("--config")
        .arg(&rogue_cfg)
        .args(["log", "checkpoint", "--out"])
        .arg(&forged_path)
        .env_remove("CERTFAB_CONFIG")
        .output()
        .unwrap());
    let forged = auditlog::read_doc(&forged_path).unwrap();
    assert_eq!(forged.statement.ledger_id, doc.statement.ledger_id);
    let r = verify(&pristine, &t, &[("forged.json".into(), forged.clone())]);
    assert_problem(&r, "not by the configured audit signer");
    // Without the pin its signature would pass: the pin is what stops it.
    let loose = CheckpointTrust {
        roots: t.roots.clone(),
        signer: None,
    };
    let r = verify(&pristine, &loose, &[("forged.json".into(), forged)]);
    assert!(
        !r.problems.iter().any(|p| p.contains("signature")),
        "{:?}",
        r.problems
    );

    // Events after the last checkpoint can be rewritten consistently: reported as not yet
    // checkpointed, which is exactly what the log can and cannot promise.
    let copy = pristine.copy("truncated");
    let mut ev = base.clone();
    ev.last_mut().unwrap().operator = Some("mallory".into());
    rechain(&mut ev);
    write_rows(&copy, &ev);
    let r = verify(&copy, &t, &[]);
    assert!(r.ok, "{:?}", r.problems);
    assert_eq!(r.not_checkpointed, late);

    // The CLI fails with exit 3 on a tampered ledger.
    live.exec("UPDATE audit SET operator = 'mallory' WHERE seq = 2");
    let o = line.certfab(&["log", "verify"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("audit event 2: content does not match its hash"),
        "{}",
        text(&o)
    );
}

// The whole harness on a PostgreSQL ledger: the tamper tests hold for the central ledger too.
crate::postgres_twins!(audit_log_events_checkpoints_and_mutations);
