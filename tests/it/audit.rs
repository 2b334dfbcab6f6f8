//! `certfab audit` through the real binary, over ledgers written by real batches and station
//! shifts (SoftHSM signing, simulated devices). Every finding is produced by making the
//! problem happen: a second station with the same serial prefix, a device id and a key issued
//! twice, a certificate deleted from its row, an edited audit event, a certificate from a
//! ledger the audit was not given, a profile changed after issuance, a short-lived profile, a
//! CA re-signed shorter than its devices, a lost install reply.

use crate::common;

use crate::common::{derived_profile, openssl, repo, rust_pubkey_pem, text, Line};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

/// Runs `certfab --json audit ARGS` without a site config.
fn audit(args: &[&str]) -> Output {
    Command::new(common::bin())
        .arg("--json")
        .arg("audit")
        .args(args)
        .env_remove("CERTFAB_CONFIG")
        .output()
        .expect("run certfab audit")
}

/// Runs `certfab --config CONFIG --json audit EXTRA`: the site's ledger, CAs and profiles.
fn site_audit(config: &Path, extra: &[&str]) -> Output {
    Command::new(common::bin())
        .args(["--config", s(config), "--json", "audit"])
        .args(extra)
        .env_remove("CERTFAB_CONFIG")
        .output()
        .expect("run certfab audit")
}

/// Audits `ledgers` against the dev line's generic CAs (see [`ca_args`]), with `extra` flags.
fn audit_ledgers(l: &Line, ledgers: &[&Path], extra: &[&str]) -> Output {
    let mut a: Vec<String> = ledgers
        .iter()
        .flat_map(|p| ["--ledger".to_string(), p.display().to_string()])
        .collect();
    a.extend(ca_args(l));
    a.extend(extra.iter().map(|x| x.to_string()));
    audit(&args_of(&a))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Findings with `code`.
fn with_code<'a>(r: &'a Value, code: &str) -> Vec<&'a Value> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == code)
        .collect()
}

fn codes(r: &Value) -> Vec<String> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

fn sha256_file(p: &Path) -> String {
    let o = openssl(&["dgst", "-sha256", "-r", s(p)]);
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn sim() -> String {
    repo()
        .join("station-scripts/sim-device.py")
        .display()
        .to_string()
}

/// A CSV batch of public keys: `rows` are (device id, PEM).
fn pubkey_batch(
    l: &Line,
    config: &Path,
    name: &str,
    profile: &str,
    rows: &[(&str, &str)],
) -> Output {
    let mut csv = String::from("device_id,pubkey\n");
    for (id, pem) in rows {
        csv.push_str(&format!("{id},\"{}\"\n", pem.trim_end()));
    }
    let input = l.file(&format!("{name}.csv"));
    std::fs::write(&input, csv).unwrap();
    Command::new(common::bin())
        .arg("--config")
        .arg(config)
        .args([
            "--json",
            "batch",
            "--profile",
            profile,
            "--input",
            s(&input),
            "--out",
            s(&l.file(&format!("out-{name}"))),
        ])
        .env_remove("CERTFAB_CONFIG")
        .output()
        .unwrap()
}

/// A second station on the same token (as with a network HSM shared by two stations): its own
/// station id and ledger, and the same serial prefix as the first.
fn second_station(l: &Line) -> PathBuf {
    let cfg = std::fs::read_to_string(l.config())
        .unwrap()
        .replace("id: dev-line", "id: dev-line-b")
        .replace("ledger: ledger.sqlite", "ledger: ledger-b.sqlite");
    assert!(cfg.contains("dev-line-b") && cfg.contains("ledger-b.sqlite"));
    let p = l.file("station-b.yaml");
    std::fs::write(&p, cfg).unwrap();
    p
}

/// The CA flags for the dev line's generic CAs.
fn ca_args(l: &Line) -> Vec<String> {
    ["ca/root.pem", "ca/issuing.pem"]
        .iter()
        .flat_map(|c| ["--ca".to_string(), l.file(c).display().to_string()])
        .collect()
}

fn args_of(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A shift of simulated devices and a batch with bad rows, audited: nothing at or above high,
/// the medium and low findings a line really has, counts that add up, an HTML report that
/// escapes a hostile device id, and a ledger left untouched while the station holds its lock.
#[test]
fn a_real_shift_and_batch_audit_with_counts_and_an_html_report() {
    let l = Line::new();
    let profiles = l.file("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    // The station profile with no retries, used for the batch too. Its step timeouts stay the
    // shipped ones: no fault here waits for one (the refusal and the dropped link are
    // immediate), and 2 s ones fired on a busy machine before the dropped-link board was
    // signed, so it never became install-unconfirmed.
    let profile = derived_profile(
        &profiles,
        "generic-iot.yaml",
        "generic-iot.yaml",
        &[("retries: 2", "retries: 0")],
    );
    // A shift: two good boards and one with debug open (refused before signing); then a
    // board that drops the link right after install, alone (--once), so it stays unconfirmed.
    let shift = |name: &str, prefix: &str, n: &str, fault: &str, extra: &[&str]| {
        let line = l.file(name);
        let mk = Command::new(sim())
            .args(["make-line", s(&line), "--count", n, "--prefix", prefix])
            .args(["--fault", fault])
            .output()
            .unwrap();
        assert!(mk.status.success(), "{}", text(&mk));
        let adapter = format!("exec:{} serve {}", sim(), line.display());
        let mut a = vec![
            "--json",
            "station",
            "--profile",
            s(&profile),
            "--adapter",
            &adapter,
            "--operator",
            "alice",
        ];
        a.extend_from_slice(extra);
        let out = l.certfab(&a);
        assert!(matches!(out.status.code(), Some(6 | 10)), "{}", text(&out));
    };
    shift("line-1", "SIM-", "3", "SIM-0003=debug-unlocked", &[]);
    shift(
        "line-2",
        "FLT-",
        "1",
        "FLT-0001=disconnect:after-install",
        &["--once"],
    );

    let hostile = "<script>alert(1)</script>";
    let o = pubkey_batch(
        &l,
        &l.config(),
        "lot1",
        s(&profile),
        &[
            ("LOT-1", &rust_pubkey_pem()),
            ("LOT-2", &rust_pubkey_pem()),
            (hostile, &rust_pubkey_pem()),
            ("LOT-4", "not a key"),
        ],
    );
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));

    let ledger = l.file("ledger.sqlite");
    let before = sha256_file(&ledger);
    // A station holding the ledger's lock does not keep the auditor out.
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(&ledger)
        .unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();

    let html = l.file("report.html");
    let out = audit_ledgers(
        &l,
        &[&ledger],
        &["--profiles", s(&profiles), "--html", s(&html)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = json(&out);
    assert_eq!(r["schema"], "certfab-audit/1");
    assert_eq!(r["fail_on"], "high");
    assert_eq!(r["failed"], false);
    assert_eq!(r["by_severity"]["critical"], 0, "{r:#}");
    assert_eq!(r["by_severity"]["high"], 0, "{r:#}");

    let unconfirmed = with_code(&r, "install-unconfirmed");
    assert_eq!(unconfirmed.len(), 1, "{r:#}");
    assert_eq!(unconfirmed[0]["device_id"], "FLT-0001");
    assert_eq!(unconfirmed[0]["severity"], "medium");
    let mut never: Vec<&str> = with_code(&r, "signed-not-installed")
        .iter()
        .map(|f| f["device_id"].as_str().unwrap())
        .collect();
    never.sort();
    assert_eq!(never, ["LOT-1", "LOT-2"]);
    assert!(with_code(&r, "profile-mismatch").is_empty(), "{r:#}");
    assert!(with_code(&r, "cert-not-chaining").is_empty(), "{r:#}");
    assert_eq!(with_code(&r, "rejections").len(), 1);

    // Counts: the station's three devices by alice, the batch's two without an operator.
    let c = &r["counts"];
    assert_eq!(c["per_station"]["dev-line"]["issued"], 5, "{c:#}");
    assert_eq!(c["per_operator"]["alice"]["issued"], 3, "{c:#}");
    assert_eq!(c["per_operator"]["alice"]["passed"], 2, "{c:#}");
    assert_eq!(c["per_operator"]["alice"]["failed"], 1, "{c:#}");
    // The refused board is refused each time the line presents it.
    let refused = c["rejections_by_reason"]["device-security"]
        .as_u64()
        .unwrap();
    assert!(refused >= 1, "{c:#}");
    assert_eq!(c["per_operator"]["alice"]["rejected"], refused, "{c:#}");
    assert_eq!(c["per_operator"]["(batch)"]["issued"], 2, "{c:#}");
    assert_eq!(c["per_operator"]["(batch)"]["rejected"], 2, "{c:#}");
    assert_eq!(c["per_profile"]["generic-iot"]["issued"], 5);
    let per_hour: u64 = c["issued_per_hour"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(per_hour, 5);
    let per_day: u64 = c["per_day"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v["issued"].as_u64().unwrap())
        .sum();
    assert_eq!(per_day, 5, "{c:#}");
    assert_eq!(c["rejections_by_reason"]["name-policy"], 1, "{c:#}");
    assert_eq!(c["rejections_by_reason"]["input-format"], 1, "{c:#}");

    // The ledger is byte-for-byte what it was.
    assert_eq!(sha256_file(&ledger), before);
    drop(lock);

    // --fail-on medium: the unconfirmed install now fails the audit (exit 3).
    let out = audit_ledgers(
        &l,
        &[&ledger],
        &["--profiles", s(&profiles), "--fail-on", "medium"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(json(&out)["failed"], true);

    // The same audit from the site config: its ledger, CAs and profiles_dir by default;
    // terminal text names the finding and the verdict.
    let out = Command::new(common::bin())
        .args([
            "--config",
            s(&l.config()),
            "audit",
            "--profiles",
            s(&profiles),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("MEDIUM   install-unconfirmed"), "{t}");
    assert!(t.contains("Result: pass"), "{t}");

    check_html(&html, hostile, 5, refused + 2);
}

/// The HTML report, parsed as a browser would tokenize it (python's html.parser): no script,
/// no external reference, the hostile device id shown as text, and chart bars that add up.
fn check_html(html: &Path, hostile: &str, issued: u64, rejected: u64) {
    let doc = std::fs::read_to_string(html).unwrap();
    assert!(!doc.contains(hostile), "hostile id unescaped");
    assert!(doc.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    let script = r#"
import sys, json
from html.parser import HTMLParser
class P(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = {}; self.bars = {}; self.external = []; self.texts = []; self.svg = 0
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        for k in ("src", "href"):
            if k in a: self.external.append(a[k])
        if tag == "rect" and "bar" in a.get("class", ""):
            kind = a["class"].split()[1]
            self.bars.setdefault(kind, []).append([a["data-label"], int(a["data-count"])])
    def handle_data(self, d):
        self.texts.append(d)
p = P(); p.feed(open(sys.argv[1], encoding="utf-8").read()); p.close()
print(json.dumps({"tags": p.tags, "bars": p.bars, "external": p.external, "text": "".join(p.texts)}))
"#;
    let o = Command::new(common::python())
        .args(["-c", script, html.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["tags"].get("script"), None, "no <script> element");
    assert_eq!(v["tags"].get("link"), None, "no external stylesheet");
    assert_eq!(v["external"], serde_json::json!([]), "no external asset");
    assert_eq!(v["tags"]["svg"], 2, "two charts");
    assert!(
        v["text"].as_str().unwrap().contains(hostile),
        "shown as text"
    );
    let sum = |kind: &str| -> u64 {
        v["bars"][kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b[1].as_u64().unwrap())
            .sum()
    };
    assert_eq!(sum("issue"), issued);
    assert_eq!(sum("reject"), rejected);
}

/// Two stations with the same serial prefix issue independently: one device id and one key
/// are issued at both, and a certificate row copied from one ledger into the other forces a
/// duplicate serial. Each is a critical finding across the two ledgers.
#[test]
fn duplicates_across_two_stations_are_critical() {
    let l = Line::new();
    let b = second_station(&l);
    let shared_key = rust_pubkey_pem();
    let o = pubkey_batch(
        &l,
        &l.config(),
        "a",
        "generic-iot",
        &[("DEV-1", &rust_pubkey_pem()), ("DEV-2", &shared_key)],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = pubkey_batch(
        &l,
        &b,
        "b",
        "generic-iot",
        &[("DEV-1", &rust_pubkey_pem()), ("DEV-9", &shared_key)],
    );
    assert!(o.status.success(), "{}", text(&o));
    let (la, lb) = (l.file("ledger.sqlite"), l.file("ledger-b.sqlite"));

    let out = audit_ledgers(&l, &[&la, &lb], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let r = json(&out);
    let dev = with_code(&r, "duplicate-device-id");
    assert_eq!(dev.len(), 1, "{r:#}");
    assert_eq!(dev[0]["device_id"], "DEV-1");
    assert_eq!(dev[0]["severity"], "critical");
    assert_eq!(dev[0]["locations"].as_array().unwrap().len(), 2);
    let key = with_code(&r, "duplicate-public-key");
    assert_eq!(key.len(), 1, "{r:#}");
    let m = key[0]["message"].as_str().unwrap();
    assert!(m.contains("DEV-2") && m.contains("DEV-9"), "{m}");
    let prefix = with_code(&r, "serial-prefix-shared");
    assert_eq!(prefix.len(), 1, "{r:#}");
    assert_eq!(prefix[0]["severity"], "medium");
    assert!(with_code(&r, "duplicate-serial").is_empty());
    assert_eq!(r["counts"]["per_station"]["dev-line"]["issued"], 2);
    assert_eq!(r["counts"]["per_station"]["dev-line-b"]["issued"], 2);

    // Force a duplicate serial: station A's DEV-2 row copied into B's ledger under another id.
    {
        let db = rusqlite::Connection::open(&lb).unwrap();
        db.execute("ATTACH DATABASE ?1 AS a", [s(&la)]).unwrap();
        let n = db
            .execute(
                "INSERT INTO certificates (issuer_key_id, serial, profile, device_id, batch_id, state, tbs, der, cert_sha256, created_at, signed_at)
                 SELECT c.issuer_key_id, c.serial, c.profile, 'DEV-COPY', (SELECT id FROM main.batches LIMIT 1), c.state, c.tbs, c.der, c.cert_sha256, c.created_at, c.signed_at
                 FROM a.certificates c WHERE c.device_id = 'DEV-2'",
                [],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    let serial: String = common::ledger(&l)
        .query_row(
            "SELECT serial FROM certificates WHERE device_id = 'DEV-2'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let out = audit_ledgers(&l, &[&la, &lb], &[]);
    let r = json(&out);
    let dup = with_code(&r, "duplicate-serial");
    assert_eq!(dup.len(), 1, "{r:#}");
    assert_eq!(dup[0]["serial"], serial.as_str());
    assert_eq!(dup[0]["severity"], "critical");
    // The copied row never went through certfab: no issued event in B's audit log.
    let unlogged = with_code(&r, "cert-not-in-audit-log");
    assert_eq!(unlogged.len(), 1, "{r:#}");
    assert_eq!(unlogged[0]["device_id"], "DEV-COPY");
}

/// A ledger edited behind certfab's back, and a certificate nobody recorded.
#[test]
fn tampered_ledgers_and_unrecorded_certificates() {
    let l = Line::new();
    let o = l.certfab(&[
        "batch",
        "--profile",
        "generic-iot",
        "--count",
        "3",
        "--keygen",
        "host",
        "--plain-keys",
        "--out",
        s(&l.file("out-a")),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // Station B's certificates, audited without B's ledger: nobody recorded them.
    let b = second_station(&l);
    let o = pubkey_batch(&l, &b, "b", "generic-iot", &[("B-1", &rust_pubkey_pem())]);
    assert!(o.status.success(), "{}", text(&o));

    let la = l.file("ledger.sqlite");
    let r = json(&audit_ledgers(&l, &[&la], &[]));
    assert_eq!(r["by_severity"]["critical"], 0, "{r:#}");
    assert_eq!(r["by_severity"]["high"], 0, "{r:#}");

    let out = audit_ledgers(
        &l,
        &[&la],
        &[
            "--certs",
            s(&l.file("out-a")),
            "--certs",
            s(&l.file("out-b")),
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let r = json(&out);
    // One per device: chain.pem repeats the leaf and adds the CA, which is not a device's.
    assert_eq!(r["inputs"]["cert_files"], 4);
    let unrec = with_code(&r, "cert-without-record");
    assert_eq!(unrec.len(), 1, "{r:#}");
    assert!(unrec[0]["locations"][0]
        .as_str()
        .unwrap()
        .contains("out-b/B-1/cert.pem"));

    // A certificate deleted from its row while the device still says signed, and an edited
    // audit event.
    {
        let db = rusqlite::Connection::open(&la).unwrap();
        assert_eq!(
            db.execute(
                "UPDATE certificates SET der = NULL WHERE device_id = 'SN000002'",
                []
            )
            .unwrap(),
            1
        );
        assert_eq!(
            db.execute(
                "UPDATE audit SET detail = '{\"serial\":\"00\"}' WHERE seq = 3",
                []
            )
            .unwrap(),
            1
        );
    }
    let out = audit_ledgers(&l, &[&la], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let r = json(&out);
    let missing = with_code(&r, "ledger-cert-missing");
    assert!(!missing.is_empty(), "{r:#}");
    assert!(missing.iter().all(|f| f["device_id"] == "SN000002"));
    assert_eq!(missing[0]["severity"], "high");
    let broken = with_code(&r, "audit-chain-broken");
    assert_eq!(broken.len(), 1, "{r:#}");
    assert_eq!(broken[0]["severity"], "critical");
    assert!(broken[0]["message"]
        .as_str()
        .unwrap()
        .contains("audit event 3"));
    // The first finding is the most severe.
    assert_eq!(r["findings"][0]["severity"], "critical");
}

/// Certificates judged against profiles and CAs: an unknown issuer, a profile edited after
/// issuance, a short-lived profile, and a CA re-signed to expire before its devices.
#[test]
fn profile_chain_and_expiry_findings() {
    let l = Line::new();
    let dir = l.path();
    let profiles = l.file("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    // The shipped generic profile, as the auditor knows it.
    std::fs::copy(
        repo().join("profiles/generic-iot.yaml"),
        profiles.join("generic-iot.yaml"),
    )
    .unwrap();
    // Issued with an edited copy that still calls itself generic-iot, but gives serverAuth.
    let edited = derived_profile(
        dir,
        "edited.yaml",
        "generic-iot.yaml",
        &[(
            "extended_key_usage: [clientAuth]",
            "extended_key_usage: [serverAuth]",
        )],
    );
    // A short-lived class, known to the auditor.
    let short = derived_profile(
        &profiles,
        "short-lived.yaml",
        "generic-iot.yaml",
        &[
            ("name: generic-iot", "name: short-lived"),
            ("duration: 10y", "duration: 5d"),
        ],
    );
    // A generic class signed by the Matter PAI, which the auditor is not given.
    let pai = derived_profile(
        &profiles,
        "pai-signed.yaml",
        "generic-iot.yaml",
        &[
            ("name: generic-iot", "name: pai-signed"),
            ("issuer: issuing ", "issuer: matter-pai "),
            ("duration: 10y", "duration: 1y"),
        ],
    );
    for (name, p) in [("edited", &edited), ("short", &short), ("pai", &pai)] {
        let id = format!("{}-1", name.to_uppercase());
        let o = pubkey_batch(&l, &l.config(), name, s(p), &[(&id, &rust_pubkey_pem())]);
        assert!(o.status.success(), "{name}: {}", text(&o));
    }
    let ok = pubkey_batch(
        &l,
        &l.config(),
        "ok",
        "generic-iot",
        &[("OK-1", &rust_pubkey_pem())],
    );
    assert!(ok.status.success(), "{}", text(&ok));

    // The issuing CA re-signed by the root with the same key and name, for one year only.
    let short_ca = l.file("ca/issuing-1y.pem");
    l.root_signs_ca(&l.file("ca/issuing.csr"), "1y", &short_ca);

    let ledger = l.file("ledger.sqlite");
    let out = audit(&[
        "--ledger",
        s(&ledger),
        "--ca",
        s(&l.file("ca/root.pem")),
        "--ca",
        s(&short_ca),
        "--profiles",
        s(&profiles),
        "--expiring-days",
        "30",
        "--fail-on",
        "critical",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let r = json(&out);

    let chain = with_code(&r, "cert-not-chaining");
    assert_eq!(chain.len(), 1, "{r:#}");
    assert_eq!(chain[0]["device_id"], "PAI-1");
    assert!(chain[0]["message"].as_str().unwrap().contains("Matter PAI"));

    let mism = with_code(&r, "profile-mismatch");
    assert_eq!(mism.len(), 1, "{r:#}");
    assert_eq!(mism[0]["device_id"], "EDITED-1");
    assert_eq!(mism[0]["severity"], "high");
    let m = mism[0]["message"].as_str().unwrap();
    assert!(
        m.contains("extendedKeyUsage is [serverAuth], the profile says [clientAuth]"),
        "{m}"
    );
    let changed = with_code(&r, "profile-changed");
    assert_eq!(changed.len(), 1, "{r:#}");

    let exp = with_code(&r, "cert-expiring");
    assert_eq!(exp.len(), 1, "{r:#}");
    assert_eq!(exp[0]["device_id"], "SHORT-1");
    assert_eq!(exp[0]["severity"], "low");

    let ca = with_code(&r, "ca-expires-before-devices");
    assert_eq!(ca.len(), 1, "{r:#}");
    assert_eq!(ca[0]["severity"], "medium");
    let m = ca[0]["message"].as_str().unwrap();
    // EDITED-1 and OK-1 run 10 years; SHORT-1's five days end before the CA.
    assert!(m.contains("before 2 live device certificates"), "{m}");
    assert!(!codes(&r).contains(&"ca-chain-incomplete".to_string()));

    // Without the root, the short CA's chain cannot be followed to a root.
    let out = audit(&["--ledger", s(&ledger), "--ca", s(&short_ca)]);
    let r = json(&out);
    assert_eq!(with_code(&r, "ca-chain-incomplete").len(), 1, "{r:#}");

    // Usage errors name the fix.
    let out = audit(&["--ledger", s(&ledger)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca CA.pem"));
    let out = audit(&[
        "--ledger",
        s(&l.file("nothere.sqlite")),
        "--ca",
        s(&short_ca),
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothere.sqlite"));
}

/// A site with two tenants: counts per tenant, and one device key certified under both
/// tenants (the ledger allows it: same device id, different profiles), then a CA handed to the
/// other tenant in the site config after it issued.
#[test]
fn tenants_are_counted_and_mixing_is_critical() {
    let l = Line::new();
    let cfg = std::fs::read_to_string(l.config()).unwrap();
    let with_tenants = cfg
        .replace(
            "    cert: ca/issuing.pem\n",
            "    cert: ca/issuing.pem\n    tenant: acme\n",
        )
        .replace(
            "    cert: ca/root.pem\n",
            "    cert: ca/root.pem\n    tenant: globex\n",
        );
    assert_eq!(with_tenants.matches("tenant:").count(), 2);
    std::fs::write(l.config(), &with_tenants).unwrap();
    let profiles = l.file("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    let acme = derived_profile(
        &profiles,
        "acme.yaml",
        "generic-iot.yaml",
        &[("name: generic-iot", "name: acme-iot\ntenant: acme")],
    );
    let globex = derived_profile(
        &profiles,
        "globex.yaml",
        "generic-iot.yaml",
        &[
            ("name: generic-iot", "name: globex-iot\ntenant: globex"),
            ("issuer: issuing ", "issuer: root "),
        ],
    );
    let key = rust_pubkey_pem();
    for (name, p) in [("acme", &acme), ("globex", &globex)] {
        let o = pubkey_batch(&l, &l.config(), name, s(p), &[("DEV-1", &key)]);
        assert!(o.status.success(), "{name}: {}", text(&o));
    }
    let o = pubkey_batch(
        &l,
        &l.config(),
        "acme2",
        s(&acme),
        &[("DEV-2", &rust_pubkey_pem())],
    );
    assert!(o.status.success(), "{}", text(&o));

    let out = site_audit(&l.config(), &["--profiles", s(&profiles)]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let r = json(&out);
    assert_eq!(r["counts"]["per_tenant"]["acme"]["issued"], 2, "{r:#}");
    assert_eq!(r["counts"]["per_tenant"]["globex"]["issued"], 1, "{r:#}");
    let mix = with_code(&r, "tenant-mixing");
    assert_eq!(mix.len(), 1, "{r:#}");
    let m = mix[0]["message"].as_str().unwrap();
    assert!(m.contains("2 tenants (acme, globex)"), "{m}");
    assert!(
        with_code(&r, "duplicate-public-key").is_empty(),
        "same device id: not a duplicate"
    );

    // The issuing CA moved to globex in the site config: acme's certificates from it now mix.
    std::fs::write(
        l.config(),
        with_tenants.replace("    tenant: acme\n", "    tenant: globex\n"),
    )
    .unwrap();
    let r = json(&site_audit(&l.config(), &["--profiles", s(&profiles)]));
    let mut moved: Vec<&str> = with_code(&r, "tenant-mixing")
        .iter()
        .filter(|f| {
            f["message"]
                .as_str()
                .unwrap()
                .contains("which the site config gives")
        })
        .map(|f| f["device_id"].as_str().unwrap())
        .collect();
    moved.sort();
    assert_eq!(moved, ["DEV-1", "DEV-2"], "{r:#}");
}

/// Signed manifests against ledgers: a clean one, one audited against a ledger that never
/// issued its devices, a ledger edited after the manifest, and a manifest edited after signing.
#[test]
fn manifests_are_checked_against_the_ledgers() {
    let l = Line::new();
    let o = pubkey_batch(
        &l,
        &l.config(),
        "m",
        "generic-iot",
        &[
            ("M-1", &rust_pubkey_pem()),
            ("M-2", &rust_pubkey_pem()),
            ("M-3", &rust_pubkey_pem()),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let batch = json(&o)["batch"].as_str().unwrap().to_string();
    let manifest = l.file("m.jsonl");
    let o = l.manifest_build(&[&batch], None, &manifest);
    assert!(o.status.success(), "{}", text(&o));
    let la = l.file("ledger.sqlite");
    let run = |ledger: &Path, m: &Path| audit_ledgers(&l, &[ledger], &["--manifest", s(m)]);

    let out = run(&la, &manifest);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r = json(&out);
    // Exported devices are not "signed, never installed". What remains: the manifest's own
    // audit event came after the batch's checkpoint, and no profiles were given.
    assert_eq!(
        codes(&r),
        ["audit-not-checkpointed", "profiles-not-checked"],
        "{r:#}"
    );
    assert_eq!(r["inputs"]["manifests"][0], s(&manifest));

    // Another station's ledger: none of the manifest's certificates is recorded there.
    let b = second_station(&l);
    let o = pubkey_batch(&l, &b, "b", "generic-iot", &[("B-1", &rust_pubkey_pem())]);
    assert!(o.status.success(), "{}", text(&o));
    let out = run(&l.file("ledger-b.sqlite"), &manifest);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let r = json(&out);
    let unrec = with_code(&r, "cert-without-record");
    let mut lines: Vec<&str> = unrec
        .iter()
        .map(|f| f["locations"][0].as_str().unwrap())
        .collect();
    lines.sort();
    let want: Vec<String> = (2..=4)
        .map(|n| format!("{} line {n}", manifest.display()))
        .collect();
    assert_eq!(lines, want, "{r:#}");
    assert_eq!(unrec[0]["severity"], "critical");

    // The ledger edited after the manifest: M-2's current serial is no longer the one the
    // manifest carries, and nothing says it was superseded.
    {
        let db = rusqlite::Connection::open(&la).unwrap();
        let n = db
            .execute(
                "UPDATE devices SET serial = '01' || substr(serial, 3, 30) || 'ff' WHERE device_id = 'M-2'",
                [],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    let r = json(&run(&la, &manifest));
    let mm = with_code(&r, "manifest-ledger-mismatch");
    assert_eq!(mm.len(), 1, "{r:#}");
    assert_eq!(mm[0]["device_id"], "M-2");
    assert_eq!(mm[0]["severity"], "high");
    assert!(mm[0]["locations"][0]
        .as_str()
        .unwrap()
        .ends_with("m.jsonl line 3"));
    assert_eq!(with_code(&r, "ledger-cert-missing").len(), 1, "{r:#}");

    // The manifest edited after signing (a device id changed): it does not verify.
    let edited = l.file("edited.jsonl");
    let text_m = std::fs::read_to_string(&manifest).unwrap();
    assert!(text_m.contains("\"M-3\""));
    std::fs::write(&edited, text_m.replace("\"M-3\"", "\"M-X\"")).unwrap();
    std::fs::copy(l.file("m.jsonl.jws"), l.file("edited.jsonl.jws")).unwrap();
    let r = json(&run(&la, &edited));
    let bad = with_code(&r, "manifest-invalid");
    assert_eq!(bad.len(), 1, "{r:#}");
    assert_eq!(bad[0]["severity"], "critical");
    assert!(
        with_code(&r, "cert-without-record").is_empty(),
        "its devices are not used"
    );
}

/// Signed checkpoints of the audit log: a fresh one covers everything; a later single issue
/// is reported as not yet covered; a log cut back behind a checkpoint (the events and the stored
/// checkpoint deleted, so the rest still chains) is caught by the exported copy.
#[test]
fn checkpoints_catch_a_log_cut_back_behind_them() {
    let l = Line::new();
    let count = |n: &str, out: &str| {
        let o = l.certfab(&[
            "batch",
            "--profile",
            "generic-iot",
            "--count",
            n,
            "--id-template",
            &format!("{out}-{{seq}}"),
            "--keygen",
            "host",
            "--plain-keys",
            "--out",
            s(&l.file(out)),
        ]);
        assert!(o.status.success(), "{}", text(&o));
    };
    count("2", "first");
    let cp = l.file("cp1.json");
    let o = l.certfab(&["log", "checkpoint", "--out", s(&cp)]);
    assert!(o.status.success(), "{}", text(&o));
    let config = l.config();
    let site_audit = |extra: &[&str]| json(&site_audit(&config, extra));
    let r = site_audit(&[]);
    assert!(with_code(&r, "checkpoint-invalid").is_empty(), "{r:#}");
    assert!(with_code(&r, "audit-not-checkpointed").is_empty(), "{r:#}");
    assert!(with_code(&r, "checkpoints-not-checked").is_empty(), "{r:#}");

    // A single issue is not checkpointed automatically (batches and shifts are).
    let key = l.file("one.pub.pem");
    std::fs::write(&key, rust_pubkey_pem()).unwrap();
    let o = l.certfab(&[
        "issue",
        "--profile",
        "generic-iot",
        "--pubkey",
        s(&key),
        "--device-id",
        "ONE",
        "--out",
        s(&l.file("one")),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r = site_audit(&[]);
    let open = with_code(&r, "audit-not-checkpointed");
    assert_eq!(open.len(), 1, "{r:#}");
    assert_eq!(open[0]["severity"], "low");

    // Cut the log back to before the checkpoint's head and remove the stored checkpoint.
    let head: i64 = serde_json::from_str::<Value>(&std::fs::read_to_string(&cp).unwrap()).unwrap()
        ["statement"]["head_seq"]
        .as_i64()
        .unwrap();
    assert!(l.ledger_count(&format!("SELECT COUNT(*) FROM audit WHERE seq >= {head}")) > 0);
    l.ledger_exec(&format!(
        "DELETE FROM audit WHERE seq >= {head}; DELETE FROM checkpoints"
    ));
    let r = site_audit(&[]);
    assert!(
        with_code(&r, "audit-chain-broken").is_empty(),
        "the rest still chains: {r:#}"
    );
    assert!(
        with_code(&r, "checkpoint-invalid").is_empty(),
        "nothing left to compare: {r:#}"
    );
    let r = site_audit(&["--checkpoint", s(&cp)]);
    let bad = with_code(&r, "checkpoint-invalid");
    assert_eq!(bad.len(), 1, "{r:#}");
    assert_eq!(bad[0]["severity"], "critical");
    assert!(
        bad[0]["message"].as_str().unwrap().contains("cp1.json"),
        "{r:#}"
    );
    assert_eq!(r["failed"], true);
}

/// A revoked device must reach a CRL: reported until `certfab crl` lists it, and the CRL
/// itself when it goes stale or is signed by a CA the auditor does not know.
#[test]
fn revocations_must_reach_a_current_crl() {
    let l = Line::new();
    let o = pubkey_batch(
        &l,
        &l.config(),
        "r",
        "generic-iot",
        &[("R-1", &rust_pubkey_pem()), ("R-2", &rust_pubkey_pem())],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = l.certfab(&["revoke", "--device", "R-1", "--reason", "keyCompromise"]);
    assert!(o.status.success(), "{}", text(&o));
    let config = l.config();
    let site_audit = |extra: &[&str]| json(&site_audit(&config, extra));
    let r = site_audit(&[]);
    let unpub = with_code(&r, "revocation-not-published");
    assert_eq!(unpub.len(), 1, "{r:#}");
    assert_eq!(unpub[0]["device_id"], "R-1");
    assert_eq!(unpub[0]["severity"], "medium");
    let never: Vec<&str> = with_code(&r, "signed-not-installed")
        .iter()
        .map(|f| f["device_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        never,
        ["R-2"],
        "a revoked device is not waiting for install"
    );

    let crl = l.file("crl.pem");
    let o = l.certfab(&[
        "crl",
        "--profile",
        "generic-iot",
        "--next-update",
        "2s",
        "--out",
        s(&crl),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r = site_audit(&[]);
    for code in ["revocation-not-published", "crl-stale", "crl-not-chaining"] {
        assert!(with_code(&r, code).is_empty(), "{code}: {r:#}");
    }
    // What the audit read from the ledger is the CRL OpenSSL sees.
    let o = openssl(&["crl", "-in", s(&crl), "-noout", "-text"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Key Compromise"),
        "{}",
        text(&o)
    );

    std::thread::sleep(std::time::Duration::from_secs(3));
    let r = site_audit(&[]);
    let stale = with_code(&r, "crl-stale");
    assert_eq!(stale.len(), 1, "{r:#}");
    assert_eq!(stale[0]["severity"], "medium");

    // An auditor who was not given the issuing CA cannot verify the CRL either.
    let r = json(&audit(&[
        "--ledger",
        s(&l.file("ledger.sqlite")),
        "--ca",
        s(&l.file("ca/root.pem")),
    ]));
    assert_eq!(with_code(&r, "crl-not-chaining").len(), 1, "{r:#}");
}

/// The rest of the findings, each made to happen: a batch killed with serials reserved but not
/// signed (then resumed, burning them), rows edited, a broken and a missing profile, a device
/// certificate and CAs that expire, a checkpoint of another ledger, no root to check
/// checkpoints with.
#[test]
fn interrupted_runs_edited_rows_and_expiry() {
    let l = Line::new();
    let ledger = l.file("ledger.sqlite");
    let count_args = |n: &str, out: &str| -> Vec<String> {
        [
            "--config",
            s(&l.config()),
            "batch",
            "--profile",
            "generic-iot",
            "--count",
            n,
            "--id-template",
            &format!("{out}{{seq:05}}"),
            "--keygen",
            "host",
            "--plain-keys",
            "--out",
            s(&l.file(out)),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    // Kill the batch the moment the ledger holds reserved serials (committed before the HSM
    // is asked): the audit sees them pending; the next run burns them.
    let mut pending = false;
    for _ in 0..10 {
        let mut child = Command::new(common::bin())
            .args(count_args("1500", "K"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        loop {
            let intents = rusqlite::Connection::open_with_flags(
                &ledger,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .ok()
            .and_then(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM certificates WHERE state = 'intent'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .ok()
            })
            .unwrap_or(0);
            if intents > 0 {
                child.kill().unwrap();
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
        }
        child.wait().unwrap();
        let left: i64 = common::ledger(&l)
            .query_row(
                "SELECT COUNT(*) FROM certificates WHERE state = 'intent'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if left > 0 {
            pending = true;
            break;
        }
    }
    assert!(
        pending,
        "no kill landed between reserve and record in 10 tries"
    );
    let base = |extra: &[&str]| -> Value { json(&audit_ledgers(&l, &[&ledger], extra)) };
    let r = base(&[]);
    assert_eq!(with_code(&r, "intent-pending").len(), 1, "{r:#}");
    let o = Command::new(common::bin())
        .args(count_args("1500", "K"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let r = base(&[]);
    assert!(with_code(&r, "intent-pending").is_empty(), "{r:#}");
    let burned = with_code(&r, "serials-burned");
    assert_eq!(burned.len(), 1, "{r:#}");
    assert_eq!(burned[0]["severity"], "info");

    // Rows edited: a recorded hash that is not the certificate's, a certificate that is not
    // one.
    {
        let db = rusqlite::Connection::open(&ledger).unwrap();
        db.execute(
            "UPDATE certificates SET cert_sha256 = ?1 WHERE device_id = 'K00001'",
            ["00".repeat(32)],
        )
        .unwrap();
        db.execute(
            "UPDATE certificates SET der = X'3003020101' WHERE device_id = 'K00002' AND state = 'signed'",
            [],
        )
        .unwrap();
    }
    let r = base(&[]);
    let mism = with_code(&r, "cert-record-mismatch");
    assert_eq!(mism.len(), 1, "{r:#}");
    assert_eq!(mism[0]["device_id"], "K00001");
    let unparse = with_code(&r, "cert-unparseable");
    assert_eq!(unparse.len(), 1, "{r:#}");
    assert_eq!(unparse[0]["device_id"], "K00002");

    // A profiles directory with a broken profile and without the one the ledger names.
    let profiles = l.file("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(profiles.join("broken.yaml"), "name: broken\nkeys: [p257]\n").unwrap();
    let short = derived_profile(
        &profiles,
        "seconds.yaml",
        "generic-iot.yaml",
        &[
            ("name: generic-iot", "name: seconds"),
            ("duration: 10y", "duration: 2s"),
            (
                "  backdate: 1h             # tolerate device clocks a little behind\n",
                "",
            ),
        ],
    );
    let o = pubkey_batch(
        &l,
        &l.config(),
        "sec",
        s(&short),
        &[("SEC-1", &rust_pubkey_pem())],
    );
    assert!(o.status.success(), "{}", text(&o));
    // The issuing CA re-signed twice with its own key and name: for ten days, and for two
    // seconds.
    let resign = |validity: &str, out: &str| {
        let p = l.file(out);
        l.root_signs_ca(&l.file("ca/issuing.csr"), validity, &p);
        p
    };
    let ten_days = resign("10d", "issuing-10d.pem");
    let two_s = resign("2s", "issuing-2s.pem");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let r = base(&["--profiles", s(&profiles)]);
    let unload = with_code(&r, "profile-unloadable");
    assert_eq!(unload.len(), 1, "{r:#}");
    assert!(unload[0]["message"]
        .as_str()
        .unwrap()
        .contains("broken.yaml"));
    let unknown = with_code(&r, "profile-unknown");
    assert_eq!(unknown.len(), 1, "{r:#}");
    assert!(unknown[0]["message"]
        .as_str()
        .unwrap()
        .contains("'generic-iot'"));
    let expired = with_code(&r, "cert-expired");
    assert_eq!(expired.len(), 1, "{r:#}");
    assert_eq!(expired[0]["device_id"], "SEC-1");
    assert_eq!(expired[0]["severity"], "medium");

    let r = json(&audit(&[
        "--ledger",
        s(&ledger),
        "--ca",
        s(&l.file("ca/root.pem")),
        "--ca",
        s(&ten_days),
        "--ca",
        s(&two_s),
    ]));
    assert_eq!(with_code(&r, "ca-expiring").len(), 1, "{r:#}");
    let gone = with_code(&r, "ca-expired");
    assert_eq!(gone.len(), 1, "{r:#}");
    assert_eq!(gone[0]["severity"], "high");

    // A checkpoint exported from another station's ledger, and no root to check signatures.
    let b = second_station(&l);
    let o = pubkey_batch(&l, &b, "b", "generic-iot", &[("B-1", &rust_pubkey_pem())]);
    assert!(o.status.success(), "{}", text(&o));
    let cp_b = l.file("cp-b.json");
    let o = Command::new(common::bin())
        .args(["--config", s(&b), "log", "checkpoint", "--out", s(&cp_b)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let r = base(&["--checkpoint", s(&cp_b)]);
    let un = with_code(&r, "checkpoint-unmatched");
    assert_eq!(un.len(), 1, "{r:#}");
    assert!(un[0]["message"].as_str().unwrap().contains("cp-b.json"));
    let r = json(&audit(&[
        "--ledger",
        s(&ledger),
        "--ca",
        s(&l.file("ca/issuing.pem")),
    ]));
    assert_eq!(with_code(&r, "checkpoints-not-checked").len(), 1, "{r:#}");
}

/// A station killed while a device installs leaves it `installing`: reported until the
/// device is presented again.
#[test]
fn a_station_killed_mid_install_leaves_the_device_installing() {
    let l = Line::new();
    let line = l.file("slow-line");
    let mk = Command::new(sim())
        .args([
            "make-line",
            s(&line),
            "--count",
            "1",
            "--fault",
            "SIM-0001=slow:install:4000",
        ])
        .output()
        .unwrap();
    assert!(mk.status.success(), "{}", text(&mk));
    let adapter = format!("exec:{} serve {}", sim(), line.display());
    let mut child = Command::new(common::bin())
        .args([
            "--config",
            s(&l.config()),
            "--json",
            "station",
            "--profile",
            "generic-iot",
        ])
        .args(["--adapter", &adapter, "--operator", "bob", "--once"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ledger = l.file("ledger.sqlite");
    let state = || -> Option<String> {
        rusqlite::Connection::open_with_flags(&ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?
            .query_row(
                "SELECT state FROM devices WHERE device_id = 'SIM-0001'",
                [],
                |r| r.get(0),
            )
            .ok()
    };
    loop {
        if state().as_deref() == Some("installing") {
            child.kill().unwrap();
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "station ended before installing"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait().unwrap();
    let mut a = vec!["--ledger".to_string(), ledger.display().to_string()];
    a.extend(ca_args(&l));
    let r = json(&audit(&args_of(&a)));
    let f = with_code(&r, "install-interrupted");
    assert_eq!(f.len(), 1, "{r:#}");
    assert_eq!(f[0]["device_id"], "SIM-0001");
    assert_eq!(f[0]["severity"], "medium");
    assert_eq!(r["counts"]["devices_by_state"]["installing"], 1);
}

// The site audit again on a PostgreSQL ledger (the site's ledger, through --config). The
// other tests audit SQLite files named with --ledger (several stations' ledgers, a file
// locked by a station, its bytes unchanged), which a central ledger has no counterpart of.
crate::postgres_twins!(
    tenants_are_counted_and_mixing_is_critical,
    checkpoints_catch_a_log_cut_back_behind_them,
);
