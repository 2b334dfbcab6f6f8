//! Station mode over real pipes, a PTY pair (socat) and TCP, with SoftHSM signing and OpenSSL
//! checking what the devices hold. The flows run against two adapters: the simulated line
//! (station-scripts/sim-device.py, with many fault modes) and strict-device.py, written from
//! docs/station-protocol.md alone and refusing anything the document does not allow, so the
//! protocol document and certfab cannot drift apart. Every `--json` event is validated against
//! docs/station-events.schema.json.

use crate::common;

use crate::common::{derived_profile, openssl, repo, text, Line};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn sim() -> String {
    repo()
        .join("station-scripts/sim-device.py")
        .display()
        .to_string()
}

fn strict() -> String {
    repo()
        .join("station-scripts/strict-device.py")
        .display()
        .to_string()
}

/// Which adapter serves a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// sim-device.py: the simulator with fault injection.
    Sim,
    /// strict-device.py: written from the protocol document alone.
    Strict,
}

/// Runs each named flow against both adapters: `NAME::sim` and `NAME::strict`.
macro_rules! on_both_adapters {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            pub(super) fn sim() {
                super::$name(super::Kind::Sim)
            }
            #[test]
            fn strict() {
                super::$name(super::Kind::Strict)
            }
        }
    )*};
}

/// A device misbehaving on purpose, in terms both adapters implement.
#[derive(Clone, Copy, Debug)]
enum Fault<'a> {
    /// Stores the files of its first install, then drops the link without replying.
    LoseInstallReply,
    /// Does not answer read_back, this many times.
    MuteReadBack(u32),
    /// Does not answer its first prove (the retry must carry the same nonce).
    MuteProve,
    /// Takes this many milliseconds over every install.
    SlowInstall(u32),
    /// Answers its first lock with device_error.
    RefuseLockOnce,
    /// Once locked, answers lock with the error `locked` (strict-device always does).
    StrictLock,
    /// Claims to be another device (its identity and public key) without its private key;
    /// `true`: also carries a copy of that device's stored files.
    Impostor(&'a str, bool),
}

/// A line of devices SIM-0001… served by one of the two adapters.
struct Bench {
    kind: Kind,
    dir: PathBuf,
}

impl From<PathBuf> for Bench {
    /// A line made with sim-device.py's own fault specs ([`make_line`]).
    fn from(dir: PathBuf) -> Self {
        Self {
            kind: Kind::Sim,
            dir,
        }
    }
}

fn device_name(i: usize) -> String {
    format!("SIM-{i:04}")
}

impl Bench {
    fn new(kind: Kind, parent: &Path, n: usize, faults: &[(&str, Fault)]) -> Self {
        let dir = parent.join(match kind {
            Kind::Sim => "sim-line",
            Kind::Strict => "strict-bench",
        });
        let names: Vec<String> = (1..=n).map(device_name).collect();
        let out = match kind {
            Kind::Sim => {
                let mut cmd = Command::new(sim());
                cmd.arg("make-line")
                    .arg(&dir)
                    .args(["--count", &n.to_string()]);
                for (d, f) in faults {
                    let spec = match f {
                        Fault::LoseInstallReply => "disconnect:after-install".to_string(),
                        Fault::MuteReadBack(k) => format!("timeout:read_back:{k}"),
                        Fault::MuteProve => "timeout:prove".to_string(),
                        Fault::SlowInstall(ms) => format!("slow:install:{ms}"),
                        Fault::RefuseLockOnce => "error:lock:device_error".to_string(),
                        Fault::StrictLock => "strict-lock".to_string(),
                        Fault::Impostor(other, false) => format!("impostor:{other}"),
                        Fault::Impostor(other, true) => format!("impostor:{other}:copy"),
                    };
                    cmd.args(["--fault", &format!("{d}={spec}")]);
                }
                cmd.output().expect("run sim-device.py")
            }
            Kind::Strict => {
                let mut cmd = Command::new(strict());
                cmd.arg("init").arg(&dir).args(&names);
                for (d, f) in faults {
                    let knobs: Vec<String> = match f {
                        Fault::LoseInstallReply => vec!["lose_install_reply=1".into()],
                        Fault::MuteReadBack(k) => vec![format!("mute_read_back={k}")],
                        Fault::MuteProve => vec!["mute_prove=1".into()],
                        Fault::SlowInstall(ms) => vec![format!("install_ms={ms}")],
                        Fault::RefuseLockOnce => vec!["refuse_lock=1".into()],
                        Fault::StrictLock => vec![],
                        Fault::Impostor(other, copy) => {
                            vec![format!("impostor_of={other}"), format!("copy_files={copy}")]
                        }
                    };
                    for k in knobs {
                        cmd.args(["--knob", &format!("{d}:{k}")]);
                    }
                }
                cmd.output().expect("run strict-device.py")
            }
        };
        assert!(out.status.success(), "{kind:?} line: {}", text(&out));
        Self { kind, dir }
    }

    /// The `--adapter` argument that serves this line over pipes.
    fn adapter(&self) -> String {
        self.adapter_with("")
    }

    fn adapter_with(&self, extra: &str) -> String {
        let script = match self.kind {
            Kind::Sim => sim(),
            Kind::Strict => strict(),
        };
        format!("exec:{script} serve {} {extra}", self.dir.display())
            .trim_end()
            .to_string()
    }

    /// Serves this line on a TCP port until dropped.
    fn serve_tcp(&self, port: u16) -> Kill {
        let addr = format!("127.0.0.1:{port}");
        let dir = self.dir.to_str().unwrap();
        match self.kind {
            Kind::Sim => serve(&sim(), &["serve", dir, "--tcp", &addr]),
            Kind::Strict => serve(&strict(), &["serve", dir, "--tcp", &addr]),
        }
    }

    /// Puts devices back in the queue as they are (all of them when `names` is empty); `wipe`
    /// also erases one's key, files and lock, as a reflashed field return.
    fn requeue(&self, names: &[&str], wipe: Option<&str>) {
        let mut cmd = match self.kind {
            Kind::Sim => {
                let mut c = Command::new(sim());
                c.arg("requeue");
                c
            }
            Kind::Strict => {
                let mut c = Command::new(strict());
                c.arg("again");
                c
            }
        };
        cmd.arg(&self.dir).args(names);
        if let Some(w) = wipe {
            cmd.arg(match self.kind {
                Kind::Sim => "--wipe",
                Kind::Strict => "--erase",
            })
            .arg(w);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "requeue: {}", text(&out));
    }

    fn strict_doc(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir.join("bench.json")).unwrap()).unwrap()
    }

    /// What the device stores under `file`.
    fn stored(&self, device: &str, file: &str) -> Option<Vec<u8>> {
        match self.kind {
            Kind::Sim => std::fs::read(flash(&self.dir, device, file)).ok(),
            Kind::Strict => self.strict_doc()["boards"][device]["files"][file]
                .as_str()
                .map(|s| s.as_bytes().to_vec()),
        }
    }

    /// The device's private key (PEM), as its flash holds it.
    fn key_pem(&self, device: &str) -> Option<Vec<u8>> {
        match self.kind {
            Kind::Sim => std::fs::read(self.dir.join("devices").join(device).join("key.pem")).ok(),
            Kind::Strict => self.strict_doc()["boards"][device]["key_pem"]
                .as_str()
                .map(|s| s.as_bytes().to_vec()),
        }
    }

    fn locked(&self, device: &str) -> bool {
        match self.kind {
            Kind::Sim => sim_locked(&self.dir, device),
            Kind::Strict => self.strict_doc()["boards"][device]["locked"] == true,
        }
    }

    /// The device loses a stored file (flash corruption), while no adapter runs.
    fn lose_file(&self, device: &str, file: &str) {
        match self.kind {
            Kind::Sim => std::fs::remove_file(flash(&self.dir, device, file)).unwrap(),
            Kind::Strict => {
                let mut doc = self.strict_doc();
                let files = doc["boards"][device]["files"].as_object_mut().unwrap();
                assert!(files.remove(file).is_some(), "{device} holds no {file}");
                std::fs::write(
                    self.dir.join("bench.json"),
                    serde_json::to_vec(&doc).unwrap(),
                )
                .unwrap();
            }
        }
    }

    fn devices(&self) -> Vec<String> {
        match self.kind {
            Kind::Sim => std::fs::read_dir(self.dir.join("devices"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Kind::Strict => self.strict_doc()["boards"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect(),
        }
    }
}

/// A simulated line of `n` devices (SIM-0001…) with the given sim-device faults (`NAME=SPEC`).
fn make_line(dir: &Path, n: usize, faults: &[&str]) -> PathBuf {
    let line = dir.join("sim-line");
    let mut cmd = Command::new(sim());
    cmd.arg("make-line")
        .arg(&line)
        .args(["--count", &n.to_string()]);
    for f in faults {
        cmd.args(["--fault", f]);
    }
    let out = cmd.output().expect("run sim-device.py");
    assert!(out.status.success(), "make-line: {}", text(&out));
    line
}

fn exec_adapter(line: &Path) -> String {
    format!("exec:{} serve {}", sim(), line.display())
}

/// `certfab --json station --profile P --adapter A --operator alice EXTRA…`, not yet started.
fn station_cmd(l: &Line, profile: &str, adapter: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(common::bin());
    cmd.arg("--config")
        .arg(l.config())
        .args([
            "--json",
            "station",
            "--profile",
            profile,
            "--adapter",
            adapter,
        ])
        .args(["--operator", "alice"])
        .args(extra)
        .env_remove("CERTFAB_CONFIG")
        .stdin(Stdio::null());
    cmd
}

/// Runs `certfab --json station` and returns the output, whose events have been checked
/// against the documented schema.
fn station(l: &Line, profile: &str, adapter: &str, extra: &[&str]) -> Output {
    let out = station_cmd(l, profile, adapter, extra).output().unwrap();
    assert_events_fit_schema(&out);
    out
}

/// Every `--json` event validates against docs/station-events.schema.json (python
/// jsonschema), in the documented order.
fn assert_events_fit_schema(out: &Output) {
    use std::io::Write;
    let mut child = Command::new(common::python())
        .arg(repo().join("tests/py/station_events.py"))
        .arg(repo().join("docs/station-events.schema.json"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the test Python (common::python)");
    child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let check = child.wait_with_output().unwrap();
    assert!(
        check.status.success(),
        "station events vs schema: {}",
        text(&check)
    );
}

fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

/// (device id, verdict, step, reason, serial) per device attempt, in order.
fn outcomes(out: &Output) -> Vec<(String, String, String, String, Option<String>)> {
    events(out)
        .into_iter()
        .filter(|e| e["event"] == "device")
        .map(|e| {
            let o = &e["outcome"];
            (
                o["device_id"].as_str().unwrap_or("").to_string(),
                o["verdict"].as_str().unwrap().to_string(),
                o["step"].as_str().unwrap().to_string(),
                o["reason"].as_str().unwrap().to_string(),
                o["serial"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn summary(out: &Output) -> Value {
    events(out)
        .into_iter()
        .find(|e| e["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary: {}", text(out)))["summary"]
        .clone()
}

fn flash(line: &Path, device: &str, file: &str) -> PathBuf {
    line.join("devices").join(device).join("files").join(file)
}

/// What a user checks on a device: the certificate it stores verifies to the dev root, and
/// its public key is the device's own key.
fn assert_device_holds_valid_identity(l: &Line, bench: &Bench, device: &str) {
    let cert = l.path().join(format!("{device}-stored-cert.pem"));
    let key = l.path().join(format!("{device}-flash-key.pem"));
    let stored = bench.stored(device, "cert.pem");
    std::fs::write(
        &cert,
        stored.unwrap_or_else(|| panic!("{device} stores no cert.pem")),
    )
    .unwrap();
    std::fs::write(
        &key,
        bench
            .key_pem(device)
            .unwrap_or_else(|| panic!("{device} has no key")),
    )
    .unwrap();
    assert_valid_identity(l, &cert, &key, device);
}

/// `cert` verifies to the dev root through the issuing CA, names `cn`, and is for `key`.
fn assert_valid_identity(l: &Line, cert: &Path, key: &Path, cn: &str) {
    let v = openssl(&[
        "verify",
        "-CAfile",
        l.file("ca/root.pem").to_str().unwrap(),
        "-untrusted",
        l.file("ca/issuing.pem").to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    assert!(v.status.success(), "{cn}: {}", text(&v));
    let subj = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-subject"]);
    assert!(
        text(&subj).contains(&format!("CN = {cn}")),
        "{}",
        text(&subj)
    );
    let cert_pub = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"]);
    let dev_pub = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    assert_eq!(
        cert_pub.stdout, dev_pub.stdout,
        "{cn}: certificate is not for the device's key"
    );
}

/// The ledger invariants after any run: one live identity per device and per key, and every
/// certificate a device stores is one the ledger knows as signed.
fn assert_ledger_consistent(l: &Line, bench: &Bench) {
    let dup_keys = l.ledger_count(
        "SELECT COUNT(*) FROM (SELECT spki_sha256 FROM devices WHERE state NOT IN ('superseded','revoked')
         GROUP BY spki_sha256 HAVING COUNT(*) > 1) AS k",
    );
    assert_eq!(dup_keys, 0, "a public key has two live identities");
    let live_certs_per_device = l.ledger_count(
        "SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) AS n FROM certificates c
           WHERE c.state = 'signed' AND NOT EXISTS (SELECT 1 FROM cert_status s
             WHERE s.issuer_key_id = c.issuer_key_id AND s.serial = c.serial)
           GROUP BY c.profile, c.device_id) AS d",
    );
    assert!(
        live_certs_per_device <= 1,
        "a device has two live certificates"
    );
    for device in bench.devices() {
        let Some(pem) = bench.stored(&device, "cert.pem") else {
            continue;
        };
        let pem = String::from_utf8(pem).unwrap();
        let der = pem_to_der(&pem);
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&der));
        let known = l.ledger_count(&format!(
            "SELECT COUNT(*) FROM certificates WHERE cert_sha256 = '{sha}' AND state = 'signed'"
        ));
        assert_eq!(
            known, 1,
            "{device} holds a certificate the ledger does not know"
        );
    }
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn device_state(l: &Line, device: &str) -> Option<String> {
    l.ledger_query(&format!(
        "SELECT state FROM devices WHERE device_id = '{device}'"
    ))
    .pop()
    .map(|r| r[0].clone())
}

fn signed_count(l: &Line, device: &str) -> i64 {
    l.ledger_count(&format!(
        "SELECT COUNT(*) FROM certificates WHERE device_id = '{device}' AND state = 'signed'"
    ))
}

on_both_adapters!(
    a_line_of_devices_all_pass_and_hold_verified_identities,
    lost_install_reply_is_unconfirmed_then_the_same_certificate_is_installed,
    a_device_with_a_new_key_needs_supersede,
    host_generated_keys_are_installed_and_proven,
    tcp_transport,
    scanned_labels_name_the_devices_and_a_mislabelled_board_is_refused,
    ctrl_c_finishes_the_device_in_the_fixture_then_stops,
    item9_relocked_device_passes,
    item9_failed_reinstall_keeps_installed,
    item9_impostor_does_not_downgrade,
    generate_csr_asks_for_the_profiles_first_key_type_the_adapter_makes,
    a_refused_lock_is_unconfirmed_then_locked_with_the_same_certificate,
    a_retried_prove_carries_the_same_nonce,
);

fn a_line_of_devices_all_pass_and_hold_verified_identities(kind: Kind) {
    let l = Line::new();
    let bench = Bench::new(kind, l.path(), 6, &[]);
    let manifest = l.file("shift.jsonl");
    let out = station(
        &l,
        "generic-iot",
        &bench.adapter(),
        &["--manifest", manifest.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    let o = outcomes(&out);
    assert_eq!(o.len(), 6, "{o:?}");
    assert!(o.iter().all(|x| x.1 == "pass"), "{o:?}");
    let s = summary(&out);
    assert_eq!(s["passed"], 6);
    assert_eq!(s["end_of_line"], true);
    // The shift ended in its manifest (the last event), and the manifest verifies.
    assert_eq!(events(&out).last().unwrap()["event"], "manifest");
    let v = l.certfab(&["manifest", "verify", manifest.to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v));
    for i in 1..=6 {
        let d = device_name(i);
        assert_device_holds_valid_identity(&l, &bench, &d);
        assert_eq!(device_state(&l, &d).as_deref(), Some("exported"));
        assert!(bench.locked(&d), "{d} was not locked");
        // config.json rendered from the profile for this device.
        let cfg: Value = serde_json::from_slice(&bench.stored(&d, "config.json").unwrap()).unwrap();
        assert_eq!(cfg["client_id"], d.as_str());
    }
    let counts = l.ledger_query(
        "SELECT COUNT(*), COUNT(DISTINCT operator) FROM attempts WHERE outcome = 'pass' AND operator = 'alice'",
    );
    assert_eq!(counts, [["6", "1"]]);
    assert_ledger_consistent(&l, &bench);
    assert!(l.certfab(&["batch", "status"]).status.success());

    // The same devices again (a re-run of the lot): idempotent PASS, nothing signed.
    bench.requeue(&[], None);
    let out = station(&l, "generic-iot", &bench.adapter(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let o = outcomes(&out);
    assert_eq!(o.len(), 6);
    assert!(
        o.iter()
            .all(|x| x.1 == "pass" && x.3.contains("already installed")),
        "{o:?}"
    );
    for i in 1..=6 {
        assert_eq!(signed_count(&l, &device_name(i)), 1);
    }
}

/// A shipped profile with 2 s step timeouts, so timeout faults cost seconds, not minutes;
/// except `hello`, which no fault delays and which waits for the adapter's start-up (a Python
/// importing cryptography), slower than 2 s on a busy machine.
fn fast_profile(l: &Line, base: &str, more: &[(&str, &str)]) -> PathBuf {
    let mut r = vec![(
        "timeouts: {default: 10s, generate_csr: 30s, install: 30s}",
        "timeouts: {default: 2s, hello: 20s}",
    )];
    r.extend_from_slice(more);
    derived_profile(l.path(), &format!("fast-{base}"), base, &r)
}

#[test]
fn misbehaving_devices_fail_cleanly_and_pass_when_they_come_back() {
    let l = Line::new();
    let fast = fast_profile(&l, "generic-iot.yaml", &[]);
    let line = make_line(
        l.path(),
        9,
        &[
            "SIM-0001=timeout:install", // one lost request: retried within the attempt
            "SIM-0002=timeout:install:5", // more than the retries: FAIL, unconfirmed
            "SIM-0003=garbage:read_back", // protocol violation
            "SIM-0004=wrong-readback",  // stores something else
            "SIM-0005=bad-proof",       // cannot prove the key
            "SIM-0006=debug-unlocked",  // refused before signing, every time
            "SIM-0008=reuse-key:SIM-0007", // key cloned from another device
            "SIM-0009=disconnect:after-install", // link lost after storing: retried
        ],
    );
    let out = station(&l, fast.to_str().unwrap(), &exec_adapter(&line), &[]);
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));
    let o = outcomes(&out);
    let last = |d: &str| o.iter().rev().find(|x| x.0 == d).cloned().unwrap();
    let first = |d: &str| o.iter().find(|x| x.0 == d).cloned().unwrap();

    // Recovered inside one attempt.
    for d in ["SIM-0001", "SIM-0009"] {
        assert_eq!(first(d).1, "pass", "{d}: {o:?}");
    }
    // Failed, then passed with the same certificate when re-presented.
    for (d, step) in [
        ("SIM-0002", "install"),
        ("SIM-0003", "read_back"),
        ("SIM-0004", "read_back"),
        ("SIM-0005", "prove"),
    ] {
        let f = first(d);
        assert_eq!((f.1.as_str(), f.2.as_str()), ("fail", step), "{d}: {o:?}");
        let p = last(d);
        assert_eq!(p.1, "pass", "{d}: {o:?}");
        assert_eq!(p.4, f.4, "{d} got a second certificate");
        assert_eq!(signed_count(&l, d), 1, "{d}");
        assert_device_holds_valid_identity(&l, &Bench::from(line.clone()), d);
    }
    assert!(first("SIM-0005").3.contains("proof of possession failed"));
    // Refused before anything was signed.
    let r = first("SIM-0006");
    assert_eq!(r.1, "refused");
    assert!(r.3.contains("debug"), "{r:?}");
    assert_eq!(signed_count(&l, "SIM-0006"), 0);
    assert!(!flash(&line, "SIM-0006", "cert.pem").exists());
    // The cloned key: the first device keeps its identity, the clone is refused.
    assert_eq!(last("SIM-0007").1, "pass");
    let r = last("SIM-0008");
    assert_eq!(r.1, "refused", "{r:?}");
    assert!(
        r.3.contains("already certified for device SIM-0007"),
        "{r:?}"
    );
    assert_eq!(signed_count(&l, "SIM-0008"), 0);
    assert_ledger_consistent(&l, &Bench::from(line.clone()));
    let s = summary(&out);
    assert_eq!(s["passed"], 7, "{s}");
}

fn lost_install_reply_is_unconfirmed_then_the_same_certificate_is_installed(kind: Kind) {
    let l = Line::new();
    let profile = fast_profile(&l, "generic-iot.yaml", &[("retries: 2", "retries: 0")]);
    let bench = Bench::new(kind, l.path(), 1, &[("SIM-0001", Fault::LoseInstallReply)]);
    let out = station(&l, profile.to_str().unwrap(), &bench.adapter(), &["--once"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert_eq!(
        device_state(&l, "SIM-0001").as_deref(),
        Some("install_unconfirmed")
    );
    let serial = outcomes(&out)[0].4.clone().unwrap();
    // The device did store it; the ledger knows that certificate.
    assert!(bench.stored("SIM-0001", "cert.pem").is_some());
    assert_ledger_consistent(&l, &bench);

    let out = station(&l, profile.to_str().unwrap(), &bench.adapter(), &["--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let o = outcomes(&out);
    assert_eq!(o[0].1, "pass");
    assert_eq!(o[0].4.as_deref(), Some(serial.as_str()));
    assert!(o[0].3.contains("install confirmed"), "{o:?}");
    assert_eq!(device_state(&l, "SIM-0001").as_deref(), Some("installed"));
    assert_eq!(signed_count(&l, "SIM-0001"), 1);
    assert_device_holds_valid_identity(&l, &bench, "SIM-0001");
}

fn a_device_with_a_new_key_needs_supersede(kind: Kind) {
    let l = Line::new();
    let bench = Bench::new(kind, l.path(), 1, &[]);
    assert!(station(&l, "generic-iot", &bench.adapter(), &[])
        .status
        .success());
    let old = l.ledger_value("SELECT serial FROM devices WHERE device_id = 'SIM-0001'");
    // Field return: flash wiped (key, files, lock gone), device back on the line.
    bench.requeue(&[], Some("SIM-0001"));
    assert!(bench.key_pem("SIM-0001").is_none());
    let out = station(&l, "generic-iot", &bench.adapter(), &["--once"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        outcomes(&out)[0].3.contains("--supersede"),
        "{}",
        text(&out)
    );
    assert_eq!(signed_count(&l, "SIM-0001"), 1);

    let out = station(
        &l,
        "generic-iot",
        &bench.adapter(),
        &["--once", "--supersede"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let o = outcomes(&out);
    assert_ne!(o[0].4.as_deref(), Some(old.as_str()));
    assert_device_holds_valid_identity(&l, &bench, "SIM-0001");
    let status = l.ledger_value(&format!(
        "SELECT status FROM cert_status WHERE serial = '{old}'"
    ));
    assert_eq!(status, "superseded");
    assert_ledger_consistent(&l, &bench);
}

fn host_generated_keys_are_installed_and_proven(kind: Kind) {
    let l = Line::new();
    let profile = fast_profile(
        &l,
        "generic-iot.yaml",
        &[("keygen: device ", "keygen: host ")],
    );
    let bench = Bench::new(kind, l.path(), 3, &[("SIM-0002", Fault::MuteReadBack(3))]);
    let out = station(&l, profile.to_str().unwrap(), &bench.adapter(), &[]);
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));
    for i in 1..=3 {
        let d = device_name(i);
        assert_device_holds_valid_identity(&l, &bench, &d);
        assert_eq!(
            signed_count(&l, &d),
            1,
            "{d}: the same host key and certificate on retry"
        );
    }
    let origin = l.ledger_value("SELECT DISTINCT key_origin FROM devices");
    assert_eq!(origin, "host");
    // No private key in the ledger or on certfab's side: only the device has it.
    let db = l.ledger_bytes();
    assert!(!String::from_utf8_lossy(&db).contains("PRIVATE KEY"));
}

#[test]
fn profile_needs_a_capability_the_adapter_lacks() {
    let l = Line::new();
    let line = make_line(l.path(), 1, &[]);
    let (a, b, _socat) = pty_pair(l.path());
    let _sim = serve(
        &sim(),
        &[
            "serve",
            line.to_str().unwrap(),
            "--pty",
            b.to_str().unwrap(),
            "--dialect",
            "nrf91",
        ],
    );
    // The nRF91 adapter offers no prove and no lock; generic-iot requires both.
    let adapter = format!(
        "exec:{} --port {} --sim-line",
        repo().join("station-scripts/nrf91-adapter.py").display(),
        a.display()
    );
    let out = station(&l, "generic-iot", &adapter, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("does not offer prove, lock"), "{t}");
    // Refused before any device was touched.
    assert_eq!(l.ledger_count("SELECT COUNT(*) FROM certificates"), 0);
}

#[test]
fn serial_transport_over_a_pty_pair() {
    let l = Line::new();
    let line = make_line(l.path(), 3, &[]);
    let (a, b, _socat) = pty_pair(l.path());
    let _sim = serve(
        &sim(),
        &[
            "serve",
            line.to_str().unwrap(),
            "--pty",
            b.to_str().unwrap(),
        ],
    );
    let out = station(
        &l,
        "generic-iot",
        &format!("serial:{}?baud=115200", a.display()),
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(summary(&out)["passed"], 3);
    for i in 1..=3 {
        assert_device_holds_valid_identity(&l, &Bench::from(line.clone()), &format!("SIM-{i:04}"));
    }
}

fn tcp_transport(kind: Kind) {
    let l = Line::new();
    let bench = Bench::new(kind, l.path(), 2, &[]);
    let port = free_port();
    let _adapter = bench.serve_tcp(port);
    let out = station(&l, "generic-iot", &format!("tcp:127.0.0.1:{port}"), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(summary(&out)["passed"], 2);
    assert_device_holds_valid_identity(&l, &bench, "SIM-0002");
}

#[test]
fn nrf91_modems_over_at_commands() {
    let l = Line::new();
    let line = make_line(l.path(), 2, &[]);
    let (a, b, _socat) = pty_pair(l.path());
    let _sim = serve(
        &sim(),
        &[
            "serve",
            line.to_str().unwrap(),
            "--pty",
            b.to_str().unwrap(),
            "--dialect",
            "nrf91",
        ],
    );
    let adapter = format!(
        "exec:{} --port {} --sim-line",
        repo().join("station-scripts/nrf91-adapter.py").display(),
        a.display()
    );
    let out = station(&l, "nrf91-modem", &adapter, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let o = outcomes(&out);
    assert_eq!(o.len(), 2, "{o:?}");
    assert!(o.iter().all(|x| x.1 == "pass"), "{o:?}");
    assert_ledger_consistent(&l, &Bench::from(line.clone()));
    // What the modem holds: the client certificate in sec_tag 16842753 (type 1) verifies to
    // the dev root, names the IMEI, and is for the key %KEYGEN made (type 2).
    for dev in ["SIM-0001", "SIM-0002"] {
        let flash = line.join("devices").join(dev);
        let imei =
            serde_json::from_slice::<Value>(&std::fs::read(flash.join("modem.json")).unwrap())
                .unwrap()["imei"]
                .as_str()
                .unwrap()
                .to_string();
        assert_valid_identity(
            &l,
            &flash.join("cmng/16842753_1"),
            &flash.join("cmng/16842753_2"),
            &imei,
        );
        assert_eq!(device_state(&l, &imei).as_deref(), Some("installed"));
    }
}

/// Kills a child process when dropped.
struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pty_pair(dir: &Path) -> (PathBuf, PathBuf, Kill) {
    let a = dir.join("pty-certfab");
    let b = dir.join("pty-device");
    let socat = Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .stderr(Stdio::null())
        .spawn()
        .map(Kill)
        .expect("socat (apt-get install socat)");
    for _ in 0..100 {
        if a.exists() && b.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (a, b, socat)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a simulator server and returns once it listens (its "serving … baud" or
/// "listening on" log line), so the first request is not lost to a port nobody reads yet.
fn serve(program: &str, args: &[&str]) -> Kill {
    use std::io::BufRead;
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if line.contains(" baud") || line.contains("listening on") {
                let _ = tx.send(());
            }
            eprintln!("{line}");
        }
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("simulator did not start serving");
    Kill(child)
}

/// certfab station with the given stdin (a barcode scanner types labels and Enter).
fn station_with_stdin(l: &Line, profile: &str, adapter: &str, stdin: &str) -> Output {
    use std::io::Write;
    let mut child = station_cmd(l, profile, adapter, &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_events_fit_schema(&out);
    out
}

fn scanned_labels_name_the_devices_and_a_mislabelled_board_is_refused(kind: Kind) {
    let l = Line::new();
    let bench = Bench::new(kind, l.path(), 3, &[]);
    let scan = derived_profile(
        l.path(),
        "scan-generic-iot.yaml",
        "generic-iot.yaml",
        &[("device_id: device_id", "device_id: scan")],
    );
    // The second board carries the third board's label: refused before anything is signed.
    let out = station_with_stdin(
        &l,
        scan.to_str().unwrap(),
        &bench.adapter(),
        "SIM-0001\nSIM-0003\nSIM-0003\n",
    );
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));
    let o = outcomes(&out);
    assert_eq!(o[0].1, "pass", "{o:?}");
    assert_eq!(o[1].1, "refused", "{o:?}");
    assert!(o[1].3.contains("SIM-0002"), "{o:?}");
    assert_eq!(signed_count(&l, "SIM-0002"), 0);
    // The third board, correctly labelled, passes.
    assert!(
        o.iter().any(|x| x.0 == "SIM-0003" && x.1 == "pass"),
        "{o:?}"
    );
    assert_device_holds_valid_identity(&l, &bench, "SIM-0001");
    assert_ledger_consistent(&l, &bench);
}

fn ctrl_c_finishes_the_device_in_the_fixture_then_stops(kind: Kind) {
    let l = Line::new();
    // The first board's install takes 1.5 s of device time, so SIGINT lands in the middle of it.
    let bench = Bench::new(kind, l.path(), 4, &[("SIM-0001", Fault::SlowInstall(1500))]);
    let child = station_cmd(&l, "generic-iot", &bench.adapter(), &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first device is being installed, then interrupt.
    let t0 = std::time::Instant::now();
    while ledger_state_is(&l, "SIM-0001", "installing").is_none() {
        assert!(t0.elapsed().as_secs() < 60, "station never reached install");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert_events_fit_schema(&out);
    // Stopping is how a shift normally ends: exit 0 when every device handled passed.
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(summary(&out)["interrupted"], true);
    let o = outcomes(&out);
    // The device in the fixture was finished (PASS), nothing after it was started.
    assert_eq!(o.len(), 1, "{o:?}");
    assert_eq!((o[0].0.as_str(), o[0].1.as_str()), ("SIM-0001", "pass"));
    assert_eq!(device_state(&l, "SIM-0001").as_deref(), Some("installed"));
    assert_eq!(signed_count(&l, "SIM-0002"), 0);
    assert_ledger_consistent(&l, &bench);
    // The next shift carries on with the rest of the line.
    let out = station(&l, "generic-iot", &bench.adapter(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let o = outcomes(&out);
    assert_eq!(o.len(), 3, "{o:?}");
    assert!(o.iter().all(|x| x.1 == "pass"), "{o:?}");
}

/// Some(()) when the ledger has `device` in `state` (a read that tolerates a busy ledger).
fn ledger_state_is(l: &Line, device: &str, state: &str) -> Option<()> {
    if let Some((c, pg)) = l.pg_ledger() {
        let rows = c
            .try_query(
                &pg.db,
                &format!("SELECT state FROM devices WHERE device_id = '{device}'"),
            )
            .ok()?;
        return (rows.first()?.first()? == state).then_some(());
    }
    let db = rusqlite::Connection::open_with_flags(
        l.file("ledger.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    let s: String = db
        .query_row(
            "SELECT state FROM devices WHERE device_id = ?1",
            [device],
            |r| r.get(0),
        )
        .ok()?;
    (s == state).then_some(())
}

/// What a measured run left behind.
struct Measured {
    out: Output,
    /// Bytes certfab wrote to stderr (only the first 64 KiB are kept in `out.stderr`).
    stderr_len: usize,
    /// The child's peak resident set (VmHWM), kB.
    peak_rss_kb: u64,
}

/// Runs `cmd`, draining stdout and stderr on threads and sampling the child's VmHWM (a
/// high-water mark, so the last sample is the peak so far) from /proc until it exits.
fn run_measured(mut cmd: Command) -> Measured {
    use std::io::Read;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let stderr = std::thread::spawn(move || {
        let (mut head, mut n, mut buf) = (Vec::new(), 0usize, vec![0u8; 1 << 16]);
        while let Ok(k) = se.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k;
            if head.len() < 1 << 16 {
                head.extend_from_slice(&buf[..k]);
            }
        }
        (n, head)
    });
    let mut peak = 0u64;
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let hwm = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            peak = peak.max(hwm.unwrap_or(0));
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let (stderr_len, head) = stderr.join().unwrap();
    Measured {
        out: Output {
            status,
            stdout: stdout.join().unwrap(),
            stderr: head,
        },
        stderr_len,
        peak_rss_kb: peak,
    }
}

#[test]
fn item4_flooding_adapter_fails_bounded() {
    let l = Line::new();
    // Each board sends 200 MB of 1 KB log lines before it answers identify.
    let line = make_line(
        l.path(),
        2,
        &["SIM-0001=flood:identify", "SIM-0002=flood:identify"],
    );
    // Without and with -v (adapter log lines shown): bounded either way.
    for extra in [&["--once"][..], &["--once", "-v"][..]] {
        let m = run_measured(station_cmd(&l, "generic-iot", &exec_adapter(&line), extra));
        assert_events_fit_schema(&m.out);
        eprintln!(
            "{extra:?}: peak RSS {} kB, {} bytes on stderr",
            m.peak_rss_kb, m.stderr_len
        );
        assert!(
            m.peak_rss_kb < 100 * 1024,
            "{extra:?}: certfab grew to {} kB while the adapter flooded",
            m.peak_rss_kb
        );
        assert!(
            m.stderr_len < 1 << 20,
            "{extra:?}: certfab copied {} bytes to stderr",
            m.stderr_len
        );
        assert_eq!(m.out.status.code(), Some(6), "{}", text(&m.out));
        let o = outcomes(&m.out);
        assert_eq!(o.len(), 1, "{o:?}");
        assert_eq!((o[0].1.as_str(), o[0].2.as_str()), ("fail", "identify"));
        assert!(
            o[0].3.contains("protocol violation") && o[0].3.contains("log lines"),
            "{o:?}"
        );
    }
    // Nothing was signed for a device that never identified itself within the rules.
    assert_eq!(l.ledger_count("SELECT COUNT(*) FROM certificates"), 0);
}

/// Every column of the device's ledger row, as text.
fn device_row(l: &Line, device: &str) -> Vec<String> {
    let mut rows = l.ledger_query(&format!(
        "SELECT * FROM devices WHERE device_id = '{device}'"
    ));
    assert_eq!(rows.len(), 1, "{device}: {rows:?}");
    rows.remove(0)
}

fn sim_locked(line: &Path, device: &str) -> bool {
    let st: Value = serde_json::from_slice(
        &std::fs::read(line.join("devices").join(device).join("state.json")).unwrap(),
    )
    .unwrap();
    st["locked"] == true
}

fn item9_relocked_device_passes(kind: Kind) {
    let l = Line::new();
    // A locked board answers lock with the documented `locked` error.
    let bench = Bench::new(kind, l.path(), 1, &[("SIM-0001", Fault::StrictLock)]);
    let out = station(&l, "generic-iot", &bench.adapter(), &["--once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(bench.locked("SIM-0001"));
    let before = device_row(&l, "SIM-0001");
    // The provisioned, locked board comes back (a re-run of the lot).
    bench.requeue(&[], None);
    let out = station(&l, "generic-iot", &bench.adapter(), &["--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let o = outcomes(&out);
    assert_eq!(o[0].1, "pass", "{o:?}");
    assert!(o[0].3.contains("already installed"), "{o:?}");
    assert_eq!(device_state(&l, "SIM-0001").as_deref(), Some("installed"));
    assert_eq!(device_row(&l, "SIM-0001"), before);
    assert_eq!(signed_count(&l, "SIM-0001"), 1);
    assert_device_holds_valid_identity(&l, &bench, "SIM-0001");
}

fn item9_failed_reinstall_keeps_installed(kind: Kind) {
    let l = Line::new();
    let bench = Bench::new(kind, l.path(), 1, &[("SIM-0001", Fault::StrictLock)]);
    let out = station(&l, "generic-iot", &bench.adapter(), &["--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let before = device_row(&l, "SIM-0001");
    // The locked board lost a file: certfab re-sends the same certificate, which a locked
    // board refuses. The device fails, but it was proven once: its record stays installed.
    bench.lose_file("SIM-0001", "config.json");
    bench.requeue(&[], None);
    let out = station(&l, "generic-iot", &bench.adapter(), &["--once"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let o = outcomes(&out);
    assert_eq!(
        (o[0].1.as_str(), o[0].2.as_str()),
        ("fail", "install"),
        "{o:?}"
    );
    assert!(o[0].3.contains("locked"), "{o:?}");
    assert_eq!(device_row(&l, "SIM-0001"), before);
    assert_eq!(signed_count(&l, "SIM-0001"), 1);
}

fn item9_impostor_does_not_downgrade(kind: Kind) {
    let l = Line::new();
    // SIM-0002 and SIM-0003 claim to be SIM-0001 and report its public key without holding
    // its private key; SIM-0003 also carries a copy of SIM-0001's stored files.
    let bench = Bench::new(
        kind,
        l.path(),
        3,
        &[
            ("SIM-0002", Fault::Impostor("SIM-0001", false)),
            ("SIM-0003", Fault::Impostor("SIM-0001", true)),
        ],
    );
    let out = station(&l, "generic-iot", &bench.adapter(), &["--once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(outcomes(&out)[0].0, "SIM-0001");
    let before = device_row(&l, "SIM-0001");
    let audit_before = l.ledger_count("SELECT COUNT(*) FROM audit");

    // The impostors, each presented three times.
    let out = station(&l, "generic-iot", &bench.adapter(), &[]);
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));
    let o = outcomes(&out);
    assert_eq!(o.len(), 6, "{o:?}");
    for x in &o {
        assert_eq!((x.0.as_str(), x.1.as_str()), ("SIM-0001", "fail"), "{o:?}");
    }
    // The copy stores exactly the files, so only the proof can tell: it fails there.
    assert!(
        o.iter()
            .any(|x| x.2 == "prove" && x.3.contains("proof of possession failed")),
        "{o:?}"
    );
    assert_eq!(device_row(&l, "SIM-0001"), before);
    assert_eq!(signed_count(&l, "SIM-0001"), 1);
    let superseded = l.ledger_count("SELECT COUNT(*) FROM cert_status");
    assert_eq!(superseded, 0);
    // The attempts are on record.
    let failed = l.ledger_count(
        "SELECT COUNT(*) FROM attempts WHERE device_id = 'SIM-0001' AND outcome = 'fail'",
    );
    assert_eq!(failed, 6);
    assert!(l.ledger_count("SELECT COUNT(*) FROM audit") > audit_before);

    // The real board still passes with the certificate it has.
    bench.requeue(&["SIM-0001"], None);
    let out = station(&l, "generic-iot", &bench.adapter(), &["--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let o = outcomes(&out);
    assert_eq!((o[0].0.as_str(), o[0].1.as_str()), ("SIM-0001", "pass"));
    assert!(o[0].3.contains("already installed"), "{o:?}");
    assert_eq!(device_row(&l, "SIM-0001"), before);
    assert_device_holds_valid_identity(&l, &bench, "SIM-0001");
}

fn generate_csr_asks_for_the_profiles_first_key_type_the_adapter_makes(kind: Kind) {
    let l = Line::new();
    let bench = Bench::new(kind, l.path(), 2, &[]);
    // A secure element that makes P-384 and RSA 2048 keys only (hello's key_types); the
    // profile allows p256, p384, rsa: P-384 is the first both accept.
    let adapter = bench.adapter_with("--key-types p384,rsa2048");
    let out = station(&l, "generic-iot", &adapter, &["--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let cert = l.file("SIM-0001-cert.pem");
    std::fs::write(&cert, bench.stored("SIM-0001", "cert.pem").unwrap()).unwrap();
    let t = text(&openssl(&[
        "x509",
        "-in",
        cert.to_str().unwrap(),
        "-noout",
        "-text",
    ]));
    assert!(t.contains("secp384r1") || t.contains("P-384"), "{t}");
    assert_device_holds_valid_identity(&l, &bench, "SIM-0001");
    // A profile that allows none of the types the adapter makes is refused at start-up,
    // before any device is touched.
    let p256_only = derived_profile(
        l.path(),
        "p256-generic-iot.yaml",
        "generic-iot.yaml",
        &[("keys: [p256, p384, rsa]", "keys: [p256]")],
    );
    let out = station(&l, p256_only.to_str().unwrap(), &adapter, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("makes keys of type p384, rsa2048") && t.contains("allows p256"),
        "{t}"
    );
    assert_eq!(signed_count(&l, "SIM-0002"), 0);
}

fn a_refused_lock_is_unconfirmed_then_locked_with_the_same_certificate(kind: Kind) {
    let l = Line::new();
    let bench = Bench::new(kind, l.path(), 1, &[("SIM-0001", Fault::RefuseLockOnce)]);
    let out = station(&l, "generic-iot", &bench.adapter(), &["--once"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let o = outcomes(&out);
    assert_eq!(
        (o[0].1.as_str(), o[0].2.as_str()),
        ("fail", "lock"),
        "{o:?}"
    );
    assert_eq!(
        device_state(&l, "SIM-0001").as_deref(),
        Some("install_unconfirmed")
    );
    assert!(!bench.locked("SIM-0001"));
    // Presented again (the fixture puts a failed board back): read-back and proof pass, the
    // lock is sent again and takes; the same certificate, nothing signed.
    let out = station(&l, "generic-iot", &bench.adapter(), &["--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let p = outcomes(&out);
    assert_eq!(p[0].1, "pass", "{p:?}");
    assert!(p[0].3.contains("install confirmed"), "{p:?}");
    assert_eq!(p[0].4, o[0].4);
    assert_eq!(device_state(&l, "SIM-0001").as_deref(), Some("installed"));
    assert!(bench.locked("SIM-0001"));
    assert_eq!(signed_count(&l, "SIM-0001"), 1);
}

fn a_retried_prove_carries_the_same_nonce(kind: Kind) {
    let l = Line::new();
    let profile = fast_profile(&l, "generic-iot.yaml", &[]);
    // The first prove goes unanswered; strict-device refuses a retry with another nonce.
    let bench = Bench::new(kind, l.path(), 1, &[("SIM-0001", Fault::MuteProve)]);
    let out = station(&l, profile.to_str().unwrap(), &bench.adapter(), &["--once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_device_holds_valid_identity(&l, &bench, "SIM-0001");
}

/// The `--adapter` that serves `line` through tests/py/station_kill_proxy.py, halting at the
/// first `op` request (`when`: before or after the device sees it; `go`: carry on once that
/// file exists).
fn kill_proxy_adapter(
    line: &Path,
    marker: &Path,
    op: &str,
    when: &str,
    go: Option<&Path>,
) -> String {
    format!(
        "exec:{} {} {op} {when} {}-- {} serve {}",
        repo().join("tests/py/station_kill_proxy.py").display(),
        marker.display(),
        go.map(|g| format!("{} ", g.display())).unwrap_or_default(),
        sim(),
        line.display()
    )
}

/// The per-connection processes of the line's p11-kit server (the token certfab signs with).
fn remote_token_processes(l: &Line) -> Vec<String> {
    let pid = std::fs::read_to_string(l.file("p11-kit.pid")).unwrap();
    let children = Command::new("ps")
        .args(["-o", "pid=", "--ppid", pid.trim()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&children.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn signal(sig: &str, pids: &[String]) {
    if pids.is_empty() {
        return;
    }
    let k = Command::new("kill").arg(sig).args(pids).output().unwrap();
    assert!(k.status.success(), "kill {sig}: {}", text(&k));
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(t0.elapsed().as_secs() < 60, "never reached: {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `sql` with `?1` bound to `device` (a test's own id: quoting it is enough), on either engine.
fn bind(sql: &str, device: &str) -> String {
    sql.replace("?1", &format!("'{}'", device.replace('\'', "''")))
}

fn count(l: &Line, sql: &str, device: &str) -> i64 {
    l.ledger_value(&bind(sql, device)).parse().unwrap()
}

fn signed_serial(l: &Line, device: &str) -> Option<String> {
    l.ledger_query(&bind(
        "SELECT serial FROM certificates WHERE device_id = ?1 AND state = 'signed'",
        device,
    ))
    .into_iter()
    .next()
    .map(|row| row[0].clone())
}

/// Issue 14, station durable commits: a device now costs three durable commits (the intent;
/// the certificate with `installing`; `installed` with the attempt row). certfab is SIGKILLed
/// at each of them and at the external effects between them — the device's new key, the HSM
/// signing (the remote token stopped), the install sent or not, the proof given, the fixture
/// told PASS — and the guarantees of docs/station.md hold at the kill and after a restart: no
/// certificate in a device that the ledger does not hold as signed, no PASS (to the fixture
/// or on stdout) without `installed` and its attempt row, and one identity per device: a device
/// that may hold its certificate gets the same one again, nothing is signed twice.
#[test]
fn durable_commits_killed_at_each_commit_point_keep_the_guarantees() {
    let l = Line::on(common::Token::P11Kit);
    // (device prefix, request, where the kill lands)
    let points = [
        ("KA-", "generate_csr", "after"), // the device made its key; nothing committed
        ("KB-", "generate_csr", "sign"),  // intent committed; the HSM is signing
        ("KC-", "install", "before"),     // certificate + installing committed; not sent
        ("KD-", "install", "after"),      // the device stores it; certfab never hears
        ("KE-", "prove", "after"),        // read back and proven; installed not committed
        ("KF-", "release", "after"),      // installed + attempt committed; fixture told PASS
    ];
    for (prefix, op, when) in points {
        let dev = format!("{prefix}0001");
        let line = l.path().join(format!("line-{prefix}"));
        let out = Command::new(sim())
            .arg("make-line")
            .arg(&line)
            .args(["--count", "2", "--prefix", prefix])
            .output()
            .unwrap();
        assert!(out.status.success(), "make-line: {}", text(&out));
        let bench = Bench::from(line.clone());
        let marker = l.path().join(format!("{prefix}reached"));
        let go = l.path().join(format!("{prefix}go"));
        let (proxy_when, go_arg) = match when {
            "sign" => ("before", Some(go.as_path())),
            w => (w, None),
        };
        let adapter = kill_proxy_adapter(&line, &marker, op, proxy_when, go_arg);
        let mut child = station_cmd(&l, "generic-iot", &adapter, &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for(&format!("{dev} at {op} {when}"), || marker.exists());
        let mut stopped = Vec::new();
        if when == "sign" {
            // The token stops answering, then the device's CSR goes through: certfab commits
            // the intent and waits in C_Sign.
            stopped = remote_token_processes(&l);
            signal("-STOP", &stopped);
            std::fs::write(&go, "").unwrap();
            wait_for(&format!("{dev}'s intent"), || {
                ledger_state_is(&l, &dev, "signing").is_some()
            });
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        child.kill().unwrap();
        let killed = child.wait_with_output().unwrap();
        signal("-CONT", &stopped);

        // At the kill.
        assert_ledger_consistent(&l, &bench);
        for (d, verdict, ..) in outcomes(&killed) {
            if verdict == "pass" {
                assert_eq!(device_state(&l, &d).as_deref(), Some("installed"), "{d}");
            }
        }
        let state = device_state(&l, &dev);
        let stored = bench.stored(&dev, "cert.pem").is_some();
        match (op, when) {
            ("generate_csr", "after") => assert_eq!(state, None, "{prefix}"),
            ("generate_csr", _) => {
                assert_eq!(state.as_deref(), Some("signing"), "{prefix}");
                assert_eq!(
                    count(&l, "SELECT COUNT(*) FROM certificates WHERE device_id = ?1 AND state = 'intent'", &dev),
                    1
                );
            }
            ("install", "before") => {
                assert_eq!(state.as_deref(), Some("installing"), "{prefix}");
                assert!(!stored, "{prefix}: the install was never sent");
            }
            ("install", _) | ("prove", _) => {
                assert_eq!(state.as_deref(), Some("installing"), "{prefix}");
                assert!(stored, "{prefix}: the device stores its certificate");
            }
            _ => {
                // The fixture was told PASS: installed and the attempt are on disk.
                assert_eq!(state.as_deref(), Some("installed"), "{prefix}");
                assert_eq!(
                    count(
                        &l,
                        "SELECT COUNT(*) FROM attempts WHERE device_id = ?1 AND outcome = 'pass'",
                        &dev
                    ),
                    1,
                    "{prefix}: PASS released to the fixture without its attempt row"
                );
            }
        }
        let before = signed_serial(&l, &dev);

        // The restart finishes the line.
        let out = station(&l, "generic-iot", &exec_adapter(&line), &[]);
        assert!(out.status.success(), "{prefix}: {}", text(&out));
        let o = outcomes(&out);
        assert!(o.iter().all(|x| x.1 == "pass"), "{prefix}: {o:?}");
        let expect = if when == "after" && op == "release" {
            1
        } else {
            2
        };
        assert_eq!(o.len(), expect, "{prefix}: {o:?}");
        for d in [dev.clone(), format!("{prefix}0002")] {
            assert_eq!(device_state(&l, &d).as_deref(), Some("installed"), "{d}");
            assert_eq!(signed_count(&l, &d), 1, "{d}: one identity");
            assert_eq!(
                count(
                    &l,
                    "SELECT COUNT(*) FROM attempts WHERE device_id = ?1 AND outcome = 'pass'",
                    &d
                ),
                1,
                "{d}: one PASS attempt"
            );
            assert_device_holds_valid_identity(&l, &bench, &d);
        }
        if before.is_some() {
            assert_eq!(
                signed_serial(&l, &dev),
                before,
                "{prefix}: the same certificate"
            );
        }
        if when == "sign" {
            assert_eq!(
                count(
                    &l,
                    "SELECT COUNT(*) FROM certificates WHERE device_id = ?1 AND state = 'burned'",
                    &dev
                ),
                1,
                "{prefix}: the intent left by the kill is burned"
            );
        }
        assert_ledger_consistent(&l, &bench);
    }
}

// The station flows again on a PostgreSQL ledger, on the simulator (the strict adapter checks
// the protocol, which the ledger engine does not touch). Not twinned: transports (TCP, PTY,
// AT modems), scanned labels, CSR key types, prove nonces, a flooding adapter and a refused
// capability exercise the adapter side only; ledger_state_is polls the ledger on either engine.
crate::postgres_twins!(
    a_line_of_devices_all_pass_and_hold_verified_identities::sim,
    lost_install_reply_is_unconfirmed_then_the_same_certificate_is_installed::sim,
    a_device_with_a_new_key_needs_supersede::sim,
    host_generated_keys_are_installed_and_proven::sim,
    misbehaving_devices_fail_cleanly_and_pass_when_they_come_back,
    item9_impostor_does_not_downgrade::sim,
    ctrl_c_finishes_the_device_in_the_fixture_then_stops::sim,
    a_refused_lock_is_unconfirmed_then_locked_with_the_same_certificate::sim,
);
