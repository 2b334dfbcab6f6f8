//! Fault injection against the real `certfab batch` binary on a SoftHSM development line:
//!
//! 1. SIGKILL at pseudo-random points (during start-up, and while groups are reserved, signed,
//!    recorded and delivered), then a run to completion;
//! 2. SIGINT mid-run (exit 130, "resume with …"), then `certfab batch resume ID`;
//! 3. a file-size limit (RLIMIT_FSIZE) that makes ledger writes fail mid-batch (exit 5), then a
//!    run without the limit.
//!
//! After each fault the ledger (opened read-only) and the output directory are checked the way
//! an auditor would: no certificate on disk without a signed ledger row, one signed certificate
//! per device, every other serial burned, no serial twice, the signed DER is the TBS that was
//! committed before the HSM was asked, the audit chain verifies and accounts for every serial,
//! and OpenSSL verifies a sample of the chains.
//!
//! The kill timings come from a seed printed on stderr (`cargo test --test it batch_faults:: --
//! --nocapture` shows it); `CERTFAB_FAULT_SEED=N` replays one.

use crate::common;

use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use x509_parser::prelude::*;

const PROFILE: &str = "generic-iot";
/// Devices per ledger transaction in the batch engine.
const GROUP: u64 = certfab::BATCH_GROUP as u64;

// ---------------------------------------------------------------------------------------------
// Small helpers: a seeded PRNG, the binary, the ledger.

/// xorshift64*: enough to spread kill times, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn seed(test: &str) -> u64 {
    let s = std::env::var("CERTFAB_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{test}: seed {s} (replay with CERTFAB_FAULT_SEED={s})");
    s
}

fn certfab(line: &common::Line) -> Command {
    let mut c = Command::new(common::bin());
    c.arg("--config")
        .arg(line.config())
        .env_remove("CERTFAB_CONFIG");
    c
}

fn ledger_path(line: &common::Line) -> PathBuf {
    line.path().join("ledger.sqlite")
}

/// The ledger opened read-only, as an auditor (or `batch status`) would while a batch runs.
fn ro(line: &common::Line) -> Connection {
    let c = Connection::open_with_flags(ledger_path(line), OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open ledger read-only");
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

/// Whether the ledger's schema exists yet (the migrations have committed).
fn has_schema(conn: &Connection) -> bool {
    conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'certificates'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n == 1)
    .unwrap_or(false)
}

/// Certificate rows by state.
fn cert_states(conn: &Connection) -> BTreeMap<String, u64> {
    let mut st = conn
        .prepare("SELECT state, COUNT(*) FROM certificates GROUP BY state")
        .unwrap();
    st.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
}

fn count(states: &BTreeMap<String, u64>, state: &str) -> u64 {
    states.get(state).copied().unwrap_or(0)
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The DER certificates of a PEM file, in order, up to the first that does not parse (a temp
/// file cut short by a kill).
fn pem_certs(data: &[u8]) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(data)
        .map_while(Result::ok)
        .filter(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
        .collect()
}

fn pem_file_der(path: &Path) -> Vec<u8> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut certs = pem_certs(&data);
    assert!(!certs.is_empty(), "{} holds no certificate", path.display());
    certs.swap_remove(0)
}

fn count_args(n: u64, out: &Path) -> Vec<String> {
    vec![
        "batch".into(),
        "--profile".into(),
        PROFILE.into(),
        "--count".into(),
        n.to_string(),
        "--keygen".into(),
        "host".into(),
        "--plain-keys".into(),
        "--out".into(),
        out.display().to_string(),
    ]
}

fn count_ids(n: u64) -> Vec<String> {
    (1..=n).map(|i| format!("SN{i:06}")).collect()
}

// ---------------------------------------------------------------------------------------------
// The checks.

/// A certificate row as the ledger holds it.
struct CertRow {
    serial: String,
    device: String,
    state: String,
    tbs: Vec<u8>,
    der: Option<Vec<u8>>,
    sha: Option<String>,
    reason: Option<String>,
}

fn cert_rows(conn: &Connection) -> Vec<CertRow> {
    let mut st = conn
        .prepare(
            "SELECT serial, device_id, state, tbs, der, cert_sha256, reason FROM certificates
             WHERE profile = ?1 ORDER BY created_at, serial",
        )
        .unwrap();
    st.query_map([PROFILE], |r| {
        Ok(CertRow {
            serial: r.get(0)?,
            device: r.get(1)?,
            state: r.get(2)?,
            tbs: r.get(3)?,
            der: r.get(4)?,
            sha: r.get(5)?,
            reason: r.get(6)?,
        })
    })
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
}

/// Signed certificates by SHA-256 of their DER: (device, serial).
fn signed_by_sha(conn: &Connection) -> BTreeMap<String, (String, String)> {
    cert_rows(conn)
        .into_iter()
        .filter(|c| c.state == "signed")
        .map(|c| (c.sha.unwrap(), (c.device, c.serial)))
        .collect()
}

/// What a directory scan found.
#[derive(Debug, Default)]
struct Scan {
    /// Device directories.
    dirs: u64,
    /// `cert.pem` files.
    certs: u64,
    /// Files other than cert.pem, chain.pem, device.json, key.pem (e.g. temp files a killed
    /// process left behind).
    stray: Vec<PathBuf>,
}

/// The crash invariant, checkable at any moment: every file under OUT/<id>/ that holds a
/// certificate holds (first) one the ledger records as signed for that device. Certificate
/// files are written only after the ledger commits the signature.
fn check_no_cert_without_ledger_row(conn: &Connection, out: &Path) -> Scan {
    let signed = signed_by_sha(conn);
    let mut scan = Scan::default();
    let Ok(entries) = std::fs::read_dir(out) else {
        return scan;
    };
    for e in entries {
        let e = e.unwrap();
        let dir = e.path();
        assert!(
            dir.is_dir(),
            "{}: only device directories belong in the output",
            dir.display()
        );
        let device = e.file_name().to_string_lossy().into_owned();
        // A device directory being assembled (renamed into place whole): a temporary, stray
        // once the batch is finished, and what it holds must be signed already.
        let assembling = device.starts_with(".certfab-") && device.ends_with(".tmp");
        if assembling {
            scan.stray.push(dir.clone());
        } else {
            scan.dirs += 1;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if !["cert.pem", "chain.pem", "device.json", "key.pem"].contains(&name.as_str()) {
                scan.stray.push(f.clone());
            }
            if name == "cert.pem" && !assembling {
                scan.certs += 1;
            }
            let data = std::fs::read(&f).unwrap();
            if !data
                .windows(27)
                .any(|w| w == b"-----BEGIN CERTIFICATE-----")
            {
                continue;
            }
            let certs = pem_certs(&data);
            let Some(leaf) = certs.first() else {
                // A temp file cut short holds no complete certificate.
                continue;
            };
            let sha = sha256_hex(leaf);
            let Some((dev, serial)) = signed.get(&sha) else {
                panic!(
                    "{} holds a certificate (sha256 {sha}) that the ledger has no signed row for",
                    f.display()
                );
            };
            if !assembling {
                assert_eq!(
                    dev,
                    &device,
                    "{}: certificate {serial} belongs to {dev}",
                    f.display()
                );
            }
        }
    }
    scan
}

/// How the device keys came.
enum Keys {
    /// Generated by certfab, written unencrypted to OUT/<id>/key.pem.
    Generated,
    /// Given as input: device id -> SPKI DER; no key.pem may exist.
    Given(BTreeMap<String, Vec<u8>>),
}

/// Everything a finished batch must satisfy. Returns the number of burned serials.
fn check_complete(
    line: &common::Line,
    out: &Path,
    ids: &[String],
    keys: &Keys,
    rng: &mut Rng,
) -> u64 {
    let conn = ro(line);
    let n = ids.len() as u64;

    // Devices: exactly one row per id, all signed.
    let mut st = conn
        .prepare("SELECT device_id, state, serial FROM devices WHERE profile = ?1")
        .unwrap();
    let devices: BTreeMap<String, (String, String)> = st
        .query_map([PROFILE], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(devices.len() as u64, n, "one device row per input device");
    for id in ids {
        let (state, _) = devices
            .get(id)
            .unwrap_or_else(|| panic!("device {id} has no ledger row"));
        assert_eq!(state, "signed", "device {id}");
    }

    // Certificates: N signed, the rest burned, none left as an intent; serials unique; every
    // signed DER is the committed TBS under the committed serial.
    let rows = cert_rows(&conn);
    let states = cert_states(&conn);
    assert_eq!(count(&states, "intent"), 0, "intents left: {states:?}");
    assert_eq!(count(&states, "signed"), n, "{states:?}");
    assert_eq!(
        count(&states, "signed") + count(&states, "burned"),
        rows.len() as u64,
        "only signed and burned rows: {states:?}"
    );
    let serials: BTreeSet<&str> = rows.iter().map(|c| c.serial.as_str()).collect();
    assert_eq!(serials.len(), rows.len(), "a serial appears twice");
    let mut signed_of: BTreeMap<&str, &CertRow> = BTreeMap::new();
    for c in &rows {
        match c.state.as_str() {
            "signed" => {
                let der = c.der.as_ref().expect("signed row has DER");
                assert_eq!(
                    Some(sha256_hex(der)),
                    c.sha,
                    "cert_sha256 of serial {}",
                    c.serial
                );
                let (_, x) = X509Certificate::from_der(der).expect("ledger DER parses");
                assert_eq!(
                    hex::encode(x.tbs_certificate.raw_serial()),
                    c.serial,
                    "serial in the certificate"
                );
                assert_eq!(
                    x.tbs_certificate.as_ref(),
                    c.tbs.as_slice(),
                    "serial {}: the signed TBS is not the one committed before signing",
                    c.serial
                );
                assert!(
                    signed_of.insert(c.device.as_str(), c).is_none(),
                    "device {} has two signed certificates",
                    c.device
                );
            }
            "burned" => {
                assert!(
                    c.der.is_none(),
                    "burned serial {} has a certificate",
                    c.serial
                );
                assert!(
                    c.reason.is_some(),
                    "burned serial {} has no reason",
                    c.serial
                );
            }
            s => panic!("serial {} in state {s}", c.serial),
        }
    }
    for (id, (_, serial)) in &devices {
        let c = signed_of
            .get(id.as_str())
            .unwrap_or_else(|| panic!("device {id} has no signed certificate"));
        assert_eq!(&c.serial, serial, "device {id}: current serial");
    }
    let burned = count(&states, "burned");

    // Audit trail: each serial reserved once, each signed certificate issued once with its
    // hash, each burned serial accounted for; the hash chain verifies.
    let mut st = conn
        .prepare("SELECT kind, device_id, detail FROM audit ORDER BY seq")
        .unwrap();
    let events: Vec<(String, Option<String>, serde_json::Value)> = st
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                serde_json::from_str(&r.get::<_, String>(2)?).unwrap(),
            ))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let mut reserved = BTreeSet::new();
    let mut issued = BTreeMap::new();
    let mut burned_events = 0u64;
    for (kind, device, detail) in &events {
        match kind.as_str() {
            "serial_reserved" => assert!(
                reserved.insert(detail["serial"].as_str().unwrap().to_string()),
                "serial reserved twice: {detail}"
            ),
            "issued" => {
                let serial = detail["serial"].as_str().unwrap().to_string();
                let v = (
                    device.clone().unwrap(),
                    detail["cert_sha256"].as_str().unwrap().to_string(),
                );
                assert!(
                    issued.insert(serial, v).is_none(),
                    "serial issued twice: {detail}"
                );
            }
            "serials_burned" => burned_events += detail["count"].as_u64().unwrap(),
            "sign_failed" => burned_events += 1,
            _ => {}
        }
    }
    assert_eq!(
        reserved,
        serials
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        "audit serial_reserved events vs certificate rows"
    );
    let signed_audit: BTreeMap<String, (String, String)> = rows
        .iter()
        .filter(|c| c.state == "signed")
        .map(|c| (c.serial.clone(), (c.device.clone(), c.sha.clone().unwrap())))
        .collect();
    assert_eq!(issued, signed_audit, "audit issued events vs signed rows");
    assert_eq!(burned_events, burned, "audit burn events vs burned rows");
    let chain = certfab::Ledger::open_read(ledger_path(line), "x")
        .unwrap()
        .verify_audit_chain();
    assert_eq!(chain, Ok(events.len() as u64), "audit chain");

    // Files: every device has its bundle, and it is the ledger's certificate.
    let issuing_der = pem_file_der(&line.file("ca/issuing.pem"));
    for id in ids {
        let d = out.join(id);
        let c = signed_of[id.as_str()];
        let der = pem_file_der(&d.join("cert.pem"));
        assert_eq!(
            Some(sha256_hex(&der)),
            c.sha,
            "{id}/cert.pem is not the ledger's certificate"
        );
        let chain = pem_certs(&std::fs::read(d.join("chain.pem")).unwrap());
        assert_eq!(chain.len(), 2, "{id}/chain.pem: leaf + issuing CA");
        assert_eq!(chain[0], der, "{id}/chain.pem leaf");
        assert_eq!(chain[1], issuing_der, "{id}/chain.pem issuing CA");
        // device.json describes a host-keygen bundle; where it exists it must match.
        let info = d.join("device.json");
        if info.exists() {
            let info: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&info).unwrap()).unwrap();
            assert_eq!(
                info["serial"].as_str(),
                Some(c.serial.as_str()),
                "{id}/device.json"
            );
            assert_eq!(
                info["cert_sha256"].as_str(),
                c.sha.as_deref(),
                "{id}/device.json"
            );
        } else {
            assert!(
                !matches!(keys, Keys::Generated),
                "{id}: generated key without device.json"
            );
        }
        let (_, x) = X509Certificate::from_der(&der).unwrap();
        let cert_spki = x.tbs_certificate.subject_pki.raw;
        match keys {
            Keys::Generated => {
                use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
                let pem = std::fs::read_to_string(d.join("key.pem"))
                    .unwrap_or_else(|e| panic!("{id}/key.pem: {e}"));
                let sk = p256::SecretKey::from_pkcs8_pem(&pem).expect("key.pem parses");
                let spki = sk.public_key().to_public_key_der().unwrap();
                assert_eq!(
                    spki.as_bytes(),
                    cert_spki,
                    "{id}/key.pem does not belong to {id}/cert.pem"
                );
            }
            Keys::Given(spkis) => {
                assert!(!d.join("key.pem").exists(), "{id}: key.pem for a given key");
                assert_eq!(spkis[id].as_slice(), cert_spki, "{id}: certified key");
            }
        }
    }
    let scan = check_no_cert_without_ledger_row(&conn, out);
    assert_eq!(scan.dirs, n, "device directories");
    assert_eq!(scan.certs, n, "cert.pem files");
    // Temp files of killed runs have fixed names and are consumed by the retry that rewrites
    // them: a finished batch leaves none (in particular no stray private key).
    assert!(
        scan.stray.is_empty(),
        "stray files after completion: {:?}",
        scan.stray
    );

    // OpenSSL verifies a sample of the chains, several certificates per invocation.
    let mut sample: Vec<String> = Vec::new();
    while sample.len() < 20.min(ids.len()) {
        let id = &ids[rng.range(0, ids.len() as u64 - 1) as usize];
        if !sample.contains(id) {
            sample.push(id.clone());
        }
    }
    let root = line.file("ca/root.pem");
    let issuing = line.file("ca/issuing.pem");
    for chunk in sample.chunks(5) {
        let files: Vec<String> = chunk
            .iter()
            .map(|id| out.join(id).join("cert.pem").display().to_string())
            .collect();
        let mut args = vec![
            "verify",
            "-CAfile",
            root.to_str().unwrap(),
            "-untrusted",
            issuing.to_str().unwrap(),
        ];
        args.extend(files.iter().map(String::as_str));
        let o = common::openssl(&args);
        assert!(o.status.success(), "openssl verify\n{}", common::text(&o));
        let ok = String::from_utf8_lossy(&o.stdout).matches(": OK").count();
        assert_eq!(ok, files.len(), "openssl verify\n{}", common::text(&o));
    }
    burned
}

/// `certfab --json batch status [ID]`, when the ledger has a batch.
fn status_json(line: &common::Line, id: Option<&str>) -> Option<serde_json::Value> {
    let mut c = certfab(line);
    c.args(["--json", "batch", "status"]);
    if let Some(id) = id {
        c.arg(id);
    }
    let o = c.output().unwrap();
    if !o.status.success() {
        return None;
    }
    serde_json::from_slice(&o.stdout).ok()
}

/// Where a kill's delay counts from.
#[derive(Debug, Clone, Copy)]
enum KillFrom {
    Spawn,
    BatchStart,
    Signatures,
}

impl KillFrom {
    const ALL: [KillFrom; 3] = [Self::Spawn, Self::BatchStart, Self::Signatures];
}

/// (audit seq of the latest batch start or resume, signed certificates); zeros before the
/// ledger exists.
fn ledger_progress(line: &common::Line) -> (i64, u64) {
    if !ledger_path(line).exists() {
        return (0, 0);
    }
    let Ok(conn) = Connection::open_with_flags(ledger_path(line), OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return (0, 0);
    };
    let start = conn
        .query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM audit WHERE kind IN ('batch_started', 'batch_resumed')",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0);
    let signed = conn
        .query_row(
            "SELECT COUNT(*) FROM certificates WHERE state = 'signed'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap_or(0);
    (start, signed as u64)
}

fn out_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// 1. SIGKILL at random points, then resume.

#[test]
fn sigkill_and_resume() {
    const N: u64 = 1500;
    const ROUNDS: u32 = 8;
    let started = Instant::now();
    let mut rng = Rng::new(seed("sigkill_and_resume"));
    let line = common::Line::new();
    let out = line.file("out");
    let args = count_args(N, &out);

    for round in 1..=ROUNDS {
        // Where the delay counts from, in turn: the spawn (kills land in start-up: ledger open,
        // burning the last run's intents, HSM login, or the first reservation), the batch start
        // in the ledger (keys written, the group signed), and this run's first recorded
        // signatures (certificates being delivered, the next group reserved and signed).
        let mode = KillFrom::ALL[(round as usize - 1) % KillFrom::ALL.len()];
        let delay = Duration::from_millis(rng.range(30, 400));
        let (early, status, at) = kill_round(&line, &args, mode, delay);
        match early {
            // It finished by itself before the kill: only acceptable as a success.
            Some(s) => assert!(
                s.success(),
                "round {round}: certfab exited with {s:?} before the kill:\n{}",
                std::fs::read_to_string(line.file("round.stderr")).unwrap_or_default()
            ),
            None => assert_eq!(status.signal(), Some(9), "round {round}: {status:?}"),
        }
        // A kill right after SQLite created the file but before the first migration committed
        // leaves a ledger without tables: nothing was reserved, like no ledger at all.
        let conn = ledger_path(&line).exists().then(|| ro(&line));
        let (states, scan) = match conn.filter(has_schema) {
            Some(conn) => (
                cert_states(&conn),
                check_no_cert_without_ledger_row(&conn, &out),
            ),
            None => (BTreeMap::new(), Scan::default()),
        };
        assert!(
            count(&states, "intent") <= GROUP,
            "round {round}: more than one group in flight: {states:?}"
        );
        eprintln!(
            "round {round}: SIGKILL {} ms after {mode:?} ({} ms after spawn); ledger {states:?}; {} cert.pem on disk",
            delay.as_millis(),
            at.as_millis(),
            scan.certs
        );
    }

    let o = certfab(&line).args(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "final run\n{}", common::text(&o));
    assert!(out_text(&o).contains("(resumed)"), "{}", common::text(&o));
    let burned = check_complete(&line, &out, &count_ids(N), &Keys::Generated, &mut rng);

    let st = status_json(&line, None).expect("batch status");
    assert!(st["batch"]["finished_at"].is_string(), "{st:#}");
    assert_eq!(st["counts"]["signed"], N, "{st:#}");
    eprintln!(
        "sigkill_and_resume: {N} devices, {ROUNDS} kills, {burned} serials burned, {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. SIGINT: finish the group in flight, exit 130, resume by id.

/// Runs `certfab ARGS`, waits until `batch status` shows more than `signed_before` signed
/// certificates, sends `signal` with kill(1), and expects a clean stop: exit 130, the resume
/// hint, nothing pending, nothing burned, every signed certificate delivered. Returns the
/// batch id and the signed count.
fn interrupt(
    line: &common::Line,
    args: &[String],
    signal: &str,
    signed_before: u64,
    rng: &mut Rng,
) -> (String, u64) {
    let started = Instant::now();
    let child = certfab(line)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        assert!(Instant::now() < deadline, "the batch never signed anything");
        if let Some(st) = status_json(line, None) {
            if st["counts"]["signed"].as_u64().unwrap_or(0) > signed_before {
                break st["batch"]["id"].as_str().unwrap().to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let extra = rng.range(0, 200);
    std::thread::sleep(Duration::from_millis(extra));
    let k = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(k.success());
    let o = child.wait_with_output().unwrap();
    eprintln!(
        "SIG{signal} {} ms after spawn ({extra} ms after new signatures were visible)",
        started.elapsed().as_millis()
    );
    assert_eq!(
        o.status.code(),
        Some(130),
        "SIG{signal}\n{}",
        common::text(&o)
    );
    let text = out_text(&o);
    assert!(
        text.contains(&format!("certfab batch resume {id}")),
        "no resume hint for {id}\n{text}"
    );

    // Stopped cleanly: the group in flight was finished and delivered, nothing is pending.
    let conn = ro(line);
    let states = cert_states(&conn);
    let signed = count(&states, "signed");
    eprintln!("after SIG{signal}: ledger {states:?}");
    assert_eq!(count(&states, "intent"), 0, "{states:?}");
    assert_eq!(
        count(&states, "burned"),
        0,
        "a clean stop burns nothing: {states:?}"
    );
    let scan = check_no_cert_without_ledger_row(&conn, &line.file("out"));
    assert_eq!(scan.certs, signed, "every signed certificate is delivered");
    assert!(scan.stray.is_empty(), "stray files: {:?}", scan.stray);
    drop(conn);
    let st = status_json(line, Some(&id)).unwrap();
    assert!(st["batch"]["finished_at"].is_null(), "{st:#}");
    assert_eq!(st["counts"]["signed"], signed, "{st:#}");
    (id, signed)
}

#[test]
fn sigint_stops_cleanly_and_resumes() {
    // 20000 devices take ~40 s in a debug build. 6000 leave room for SIGINT (and then SIGTERM
    // on the resume) to land mid-run even if the engine gets several times faster (asserted).
    const N: u64 = 6000;
    let started = Instant::now();
    let mut rng = Rng::new(seed("sigint_stops_cleanly_and_resumes"));
    let line = common::Line::new();
    let out = line.file("out");

    // SIGINT (Ctrl-C) on the first run.
    let (id, signed) = interrupt(&line, &count_args(N, &out), "INT", 0, &mut rng);
    assert!(signed < N, "SIGINT did not land mid-run: {signed} signed");

    // SIGTERM (systemd stop, docker stop) on `batch resume`: the same clean stop.
    let resume: Vec<String> = ["batch", "resume", &id].map(String::from).to_vec();
    let (id2, signed2) = interrupt(&line, &resume, "TERM", signed, &mut rng);
    assert_eq!(id2, id);
    assert!(
        signed2 > signed && signed2 < N,
        "SIGTERM did not land mid-run: {signed} then {signed2} signed"
    );

    let o = certfab(&line)
        .args(["batch", "resume", &id])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "resume\n{}", common::text(&o));
    let text = out_text(&o);
    assert!(text.contains(&format!("batch {id} (resumed)")), "{text}");
    assert!(
        text.contains(&format!("{} issued, {signed2} already done", N - signed2)),
        "{text}"
    );
    let burned = check_complete(&line, &out, &count_ids(N), &Keys::Generated, &mut rng);
    assert_eq!(burned, 0);
    let st = status_json(&line, Some(&id)).unwrap();
    assert!(st["batch"]["finished_at"].is_string(), "{st:#}");
    eprintln!(
        "sigint_stops_cleanly_and_resumes: {N} devices, {signed} signed before SIGINT, {signed2} before SIGTERM, {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. The ledger cannot be written (file-size limit): stop before the next signature.

/// A CSV of inline PEM public keys (quoted: PEM spans lines). Returns ids and SPKI DER.
fn write_pubkey_csv(path: &Path, n: u64) -> (Vec<String>, BTreeMap<String, Vec<u8>>) {
    use p256::pkcs8::{EncodePublicKey, LineEnding};
    let mut csv = String::from("device_id,pubkey,site\n");
    let mut ids = Vec::new();
    let mut spkis = BTreeMap::new();
    for i in 1..=n {
        let id = format!("CSV{i:06}");
        let pk = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng).public_key();
        let pem = pk.to_public_key_pem(LineEnding::LF).unwrap();
        csv.push_str(&format!("{id},\"{}\",line-3\n", pem.trim_end()));
        spkis.insert(
            id.clone(),
            pk.to_public_key_der().unwrap().as_bytes().to_vec(),
        );
        ids.push(id);
    }
    std::fs::write(path, csv).unwrap();
    (ids, spkis)
}

/// Intent serials in the ledger.
fn intents(conn: &Connection) -> BTreeSet<String> {
    conn.prepare("SELECT serial FROM certificates WHERE state = 'intent'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn disk_full_stops_before_next_signature() {
    const N: u64 = 1500;
    // A full ledger takes ~3 KB per device (~4.5 MB for 1500); one group's WAL frames are
    // ~1.5 MB. Each limited run starts where the last one stopped, with a limit 512 KB higher
    // (ulimit -f counts 512-byte blocks in dash), so the limit is hit at different points: the
    // reservation, the write that records a group's signatures (after the HSM signed them),
    // the burn of the previous run's intents at open, the checkpoint at close. Certificate and
    // chain files stay far below the limit.
    const FIRST_BLOCKS: u64 = 1000;
    const STEP_BLOCKS: u64 = 1000;
    let started = Instant::now();
    let mut rng = Rng::new(seed("disk_full_stops_before_next_signature"));
    let line = common::Line::new();
    let out = line.file("out");
    let input = line.file("devices.csv");
    let (ids, spkis) = write_pubkey_csv(&input, N);
    let args = [
        "batch",
        "--profile",
        PROFILE,
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];

    let mut failures = 0;
    // Serials reserved (and so sent to the HSM) by a run whose recording write then failed.
    let mut signed_but_unrecorded = BTreeSet::new();
    let mut blocks = FIRST_BLOCKS;
    loop {
        let before = if ledger_path(&line).exists() {
            intents(&ro(&line))
        } else {
            BTreeSet::new()
        };
        // `exec "$0" "$@"` keeps the arguments out of the shell's parser. SIGXFSZ is ignored so
        // the write fails with EFBIG (what a full disk looks like to SQLite) instead of killing
        // the process.
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "trap '' XFSZ; ulimit -f {blocks}; exec \"$0\" \"$@\""
            ))
            .arg(common::bin())
            .arg("--config")
            .arg(line.config())
            .args(args)
            .env_remove("CERTFAB_CONFIG")
            .output()
            .unwrap();
        if o.status.code() == Some(0) {
            // The limit was never in the way (a much smaller ledger than expected); the
            // assertions after the loop say whether the interesting writes were hit.
            eprintln!("ulimit -f {blocks}: the batch completed");
            break;
        }
        failures += 1;
        assert_eq!(
            o.status.code(),
            Some(5),
            "ulimit -f {blocks}\n{}",
            common::text(&o)
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("ledger write failed")
                && err.contains("stopped before the next signature"),
            "ulimit -f {blocks}\n{}",
            common::text(&o)
        );
        assert_eq!(
            err.matches("certfab: error:").count(),
            1,
            "one error, then stop\n{err}"
        );

        // Nothing on disk that the ledger does not hold as signed; at most one group pending.
        let conn = ro(&line);
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok");
        let states = cert_states(&conn);
        let scan = check_no_cert_without_ledger_row(&conn, &out);
        let after = intents(&conn);
        let new: Vec<&String> = after.difference(&before).collect();
        let phase = if !new.is_empty() {
            "after the HSM signed a group, recording it failed: none of it was delivered"
        } else if !before.is_empty() && after == before {
            "at start-up, burning the last run's intents failed"
        } else {
            "reserving serials failed: nothing was sent to the HSM"
        };
        eprintln!(
            "ulimit -f {blocks}: exit 5; ledger {states:?}; {} cert.pem on disk; {phase}",
            scan.certs
        );
        assert!(
            count(&states, "intent") <= GROUP,
            "more than one group pending: {states:?}"
        );
        assert!(scan.certs <= count(&states, "signed"), "{states:?}");
        signed_but_unrecorded.extend(new.into_iter().cloned());
        drop(conn);
        // Enough: the limit hit both kinds of write, and part of the batch is done and
        // delivered. The run without a limit does the rest.
        if !signed_but_unrecorded.is_empty() && scan.certs > 0 && count(&states, "intent") > 0 {
            break;
        }
        assert!(
            blocks < 40 * STEP_BLOCKS,
            "the limit never landed on the interesting writes"
        );
        blocks += STEP_BLOCKS;
    }
    assert!(failures >= 2, "the limit was hit only {failures} times");
    assert!(
        !signed_but_unrecorded.is_empty(),
        "no limit landed on the write that records signatures"
    );

    // Without the limit the same command resumes: every pending serial burned, every device
    // issued once.
    let o = certfab(&line).args(args).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "rerun\n{}", common::text(&o));
    assert!(out_text(&o).contains("(resumed)"), "{}", common::text(&o));
    let conn = ro(&line);
    for s in &signed_but_unrecorded {
        let (state, reason): (String, Option<String>) = conn
            .query_row(
                "SELECT state, reason FROM certificates WHERE serial = ?1",
                [s],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(state, "burned", "serial {s} signed but never recorded");
        assert!(reason.unwrap_or_default().contains("interrupted"));
    }
    drop(conn);
    let burned = check_complete(&line, &out, &ids, &Keys::Given(spkis), &mut rng);
    assert_eq!(
        burned,
        signed_but_unrecorded.len() as u64,
        "the burned serials are exactly those signed but never recorded"
    );
    eprintln!(
        "disk_full_stops_before_next_signature: {N} devices, {failures} failed runs, {} serials signed but never recorded, {burned} burned, {:.1}s",
        signed_but_unrecorded.len(),
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// 4. A hostile output tree and hostile input files (issue 10, items 1, 3, 7 and 14).

/// Runs `cmd` and waits at most `secs`: a run that blocks (on a FIFO, say) is killed and the
/// test fails, instead of hanging the suite.
fn run_within(mut cmd: Command, secs: u64, what: &str) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{what}: certfab still running after {secs}s (blocked)");
        }
    }
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn is_plain_file(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file())
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The key in OUT/<id>/key.pem (plain PKCS#8) is the one certified in OUT/<id>/cert.pem.
fn assert_key_matches_cert(dir: &Path) {
    use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let pem = std::fs::read_to_string(dir.join("key.pem")).unwrap();
    let sk = p256::SecretKey::from_pkcs8_pem(&pem).expect("key.pem parses");
    let der = pem_file_der(&dir.join("cert.pem"));
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(
        sk.public_key().to_public_key_der().unwrap().as_bytes(),
        cert.public_key().raw,
        "{}: key.pem does not belong to cert.pem",
        dir.display()
    );
}

/// Item 1: links planted at the fixed temporary names the writer used to open
/// (`key.pem.tmp`, `cert.pem.tmp`, `chain.pem.tmp`) and at a name of certfab's own temporary
/// pattern are never followed: the key lands in OUT/<id>/key.pem (0600, a plain file), nothing
/// outside OUT is created or truncated, and the stray links certfab did not make are left
/// alone (its own pattern's are removed as stale temporaries, the link, not its target).
#[test]
fn item1_symlinked_key_tmp_is_not_followed() {
    let line = common::Line::new();
    let out = line.file("out");
    let outside = line.file("outside");
    std::fs::create_dir_all(&outside).unwrap();
    for id in ["SN000001", "SN000002", "SN000003"] {
        std::fs::create_dir_all(out.join(id)).unwrap();
    }
    let link = |target: &str, at: &str| {
        std::os::unix::fs::symlink(outside.join(target), out.join(at)).unwrap();
    };
    link("stolen-key.pem", "SN000001/key.pem.tmp");
    std::fs::write(outside.join("victim.txt"), "precious").unwrap();
    link("victim.txt", "SN000002/cert.pem.tmp");
    std::fs::write(outside.join("victim2.txt"), "precious").unwrap();
    link("victim2.txt", "SN000003/chain.pem.tmp");
    std::fs::write(outside.join("victim3.txt"), "precious").unwrap();
    link("victim3.txt", "SN000003/.certfab-0000000000000000.tmp");

    let o = certfab(&line).args(count_args(3, &out)).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o));

    assert_eq!(
        names_in(&outside),
        ["victim.txt", "victim2.txt", "victim3.txt"]
            .map(String::from)
            .into(),
        "a file appeared outside OUT"
    );
    for v in ["victim.txt", "victim2.txt", "victim3.txt"] {
        assert_eq!(
            std::fs::read_to_string(outside.join(v)).unwrap(),
            "precious",
            "{v} was overwritten through a link"
        );
    }
    for id in ["SN000001", "SN000002", "SN000003"] {
        let d = out.join(id);
        for f in ["key.pem", "cert.pem", "chain.pem", "device.json"] {
            assert!(is_plain_file(&d.join(f)), "{id}/{f} is not a plain file");
        }
        assert_eq!(mode_of(&d.join("key.pem")), 0o600, "{id}/key.pem");
        assert_key_matches_cert(&d);
    }
    // The planted links stay where they were (certfab neither follows nor removes names it
    // did not make); the one in certfab's own temporary pattern was cleared as stale.
    assert!(std::fs::symlink_metadata(out.join("SN000001/key.pem.tmp")).is_ok());
    assert!(std::fs::symlink_metadata(out.join("SN000003/.certfab-0000000000000000.tmp")).is_err());
}

/// Item 1: a device directory that is a symlink, and a final file name that is one, are
/// refused with exit 5 and a message naming the path; nothing is written outside OUT, the
/// certificates signed so far are in the ledger, and once the links are gone the same command
/// finishes the batch.
#[test]
fn item1_symlinked_device_dir_and_final_name_are_refused() {
    let line = common::Line::new();
    let out = line.file("out");
    let outside = line.file("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim.pem"), "precious").unwrap();
    let input = line.file("devices.csv");
    let (ids, _) = write_pubkey_csv(&input, 3);
    std::fs::create_dir_all(out.join(&ids[0])).unwrap();
    std::os::unix::fs::symlink(
        outside.join("victim.pem"),
        out.join(&ids[0]).join("cert.pem"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, out.join(&ids[1])).unwrap();
    let args = [
        "batch",
        "--profile",
        PROFILE,
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];

    let o = certfab(&line).args(args).output().unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", common::text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let first = out.join(&ids[0]).join("cert.pem");
    assert!(
        err.contains(&first.display().to_string()) && err.contains("symbolic link"),
        "{err}"
    );
    assert!(err.contains("recorded in the ledger"), "{err}");
    std::fs::remove_file(&first).unwrap();

    let o = certfab(&line).args(args).output().unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", common::text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&out.join(&ids[1]).display().to_string()) && err.contains("symbolic link"),
        "{err}"
    );
    std::fs::remove_file(out.join(&ids[1])).unwrap();

    assert_eq!(names_in(&outside), ["victim.pem".to_string()].into());
    assert_eq!(
        std::fs::read_to_string(outside.join("victim.pem")).unwrap(),
        "precious"
    );
    assert_eq!(count(&cert_states(&ro(&line)), "signed"), 3);

    let o = certfab(&line).args(args).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o));
    for id in &ids {
        assert!(is_plain_file(&out.join(id).join("cert.pem")), "{id}");
        assert!(is_plain_file(&out.join(id).join("chain.pem")), "{id}");
    }
    assert_eq!(
        count(&cert_states(&ro(&line)), "signed"),
        3,
        "no re-signing"
    );
}

/// Item 7: under `umask 000`, everything certfab creates is still private: directories 0750
/// or stricter, key.pem 0600, certificates not writable or readable by others (batch, and
/// `certfab issue`).
#[test]
fn item7_umask_000_gives_private_modes() {
    let line = common::Line::new();
    let umask0 = |args: &[String]| {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("umask 000; exec \"$0\" \"$@\"")
            .arg(common::bin())
            .arg("--config")
            .arg(line.config())
            .args(args)
            .env_remove("CERTFAB_CONFIG");
        c.output().unwrap()
    };
    let out = line.file("nested/out");
    let o = umask0(&count_args(2, &out));
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o));
    for d in [line.file("nested"), out.clone(), out.join("SN000001")] {
        let m = mode_of(&d);
        assert_eq!(m & 0o027, 0, "{}: mode {m:o}", d.display());
    }
    let dev = out.join("SN000001");
    assert_eq!(mode_of(&dev.join("key.pem")), 0o600);
    for f in ["cert.pem", "chain.pem", "device.json"] {
        let m = mode_of(&dev.join(f));
        assert_eq!(m & 0o037, 0, "{f}: mode {m:o}");
    }

    let csr = common::openssl_csr(line.path(), "dev", "ec:prime256v1", "/CN=umask", &[]);
    let issue_out = line.file("issued/one");
    let args: Vec<String> = common::issue_args(PROFILE, &csr, "UMASK-1", &issue_out)
        .iter()
        .map(|s| s.to_string())
        .collect();
    let o = umask0(&args);
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o));
    for d in [line.file("issued"), issue_out.clone()] {
        let m = mode_of(&d);
        assert_eq!(m & 0o027, 0, "{}: mode {m:o}", d.display());
    }
    for f in ["cert.pem", "chain.pem"] {
        let m = mode_of(&issue_out.join(f));
        assert_eq!(m & 0o037, 0, "{f}: mode {m:o}");
    }
}

/// Item 14: a key that cannot be written (OUT/<id> is a file) stops the batch before its
/// group is signed, and the message says so instead of "the certificates are recorded".
#[test]
fn item14_key_write_failure_says_nothing_was_signed() {
    let line = common::Line::new();
    let out = line.file("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("SN000002"), "in the way").unwrap();
    let o = certfab(&line).args(count_args(3, &out)).output().unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", common::text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&out.join("SN000002").display().to_string())
            && err.contains("not a directory")
            && err.contains("no certificate was signed")
            && !err.contains("are recorded"),
        "{err}"
    );
    assert_eq!(count(&cert_states(&ro(&line)), "signed"), 0);

    std::fs::remove_file(out.join("SN000002")).unwrap();
    let o = certfab(&line).args(count_args(3, &out)).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o));
    let states = cert_states(&ro(&line));
    assert_eq!(count(&states, "signed"), 3, "{states:?}");
    assert_eq!(
        count(&states, "burned"),
        3,
        "the first run's intents: {states:?}"
    );
    for id in count_ids(3) {
        assert_key_matches_cert(&out.join(&id));
    }
}

/// Rejections of a batch, by line: (device id, reason).
fn rejections(line: &common::Line) -> BTreeMap<u64, (Option<String>, String)> {
    let conn = ro(line);
    let mut st = conn
        .prepare("SELECT line, device_id, reason FROM rejections ORDER BY line")
        .unwrap();
    st.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            (r.get(1)?, r.get::<_, String>(2)?),
        ))
    })
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
}

fn pubkey_pem() -> String {
    use p256::pkcs8::{EncodePublicKey, LineEnding};
    p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng)
        .public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}

/// Item 3 (and item 14's CRLF line numbers): CSV key paths resolve inside the CSV's
/// directory. `..`, absolute paths and links leading out are refused, a FIFO or directory is
/// refused without blocking, and no reason quotes a byte of what a file holds (no PEM label,
/// no leading bytes). `--input-root` widens the root explicitly. The CSV has CRLF line ends:
/// each refusal is reported at its physical line.
#[test]
fn item3_csv_key_paths_are_confined_and_reasons_quote_no_content() {
    let line = common::Line::new();
    let base = line.file("input");
    let keys = base.join("keys");
    let outside = line.file("outside");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(keys.join("in1.pem"), pubkey_pem()).unwrap();
    std::fs::write(keys.join("in2-real.pem"), pubkey_pem()).unwrap();
    std::os::unix::fs::symlink("in2-real.pem", keys.join("in2.pem")).unwrap();
    std::fs::write(outside.join("valid.pem"), pubkey_pem()).unwrap();
    std::fs::write(outside.join("valid2.pem"), pubkey_pem()).unwrap();
    std::fs::write(
        outside.join("secret.txt"),
        "-----BEGIN TOP SECRET-----\naHVudGVyMg==\n-----END TOP SECRET-----\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), keys.join("link-out.pem")).unwrap();
    std::os::unix::fs::symlink("../../outside/valid2.pem", keys.join("rel-out.pem")).unwrap();
    let fifo = keys.join("fifo.pem");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    std::fs::write(
        keys.join("label.pem"),
        "-----BEGIN TOP SECRET-----\naHVudGVyMg==\n-----END TOP SECRET-----\n",
    )
    .unwrap();
    std::fs::write(keys.join("text.pem"), "root:x:0:0:hunter2:/root:/bin/sh\n").unwrap();
    let rows = [
        "device_id,pubkey,site",       // 1
        "IN1,keys/in1.pem,a",          // 2
        "OUT1,../outside/valid.pem,a", // 3
        "ABS,/etc/passwd,a",           // 4
        "LNK,keys/link-out.pem,a",     // 5
        "REL,keys/rel-out.pem,a",      // 6
        "FIFO,keys/fifo.pem,a",        // 7
        "DIR,keys,a",                  // 8
        "LBL,keys/label.pem,a",        // 9
        "TXT,keys/text.pem,a",         // 10
        "BAD,only-two",                // 11
        "IN2,keys/in2.pem,a",          // 12
    ];
    let input = base.join("devices.csv");
    std::fs::write(&input, rows.join("\r\n") + "\r\n").unwrap();
    let out = line.file("out");
    let mut cmd = certfab(&line);
    cmd.args([
        "batch",
        "--profile",
        PROFILE,
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let o = run_within(cmd, 120, "CSV with a FIFO key path");
    assert_eq!(o.status.code(), Some(10), "{}", common::text(&o));
    let shown = common::text(&o);
    let rej = rejections(&line);
    let expect: &[(u64, Option<&str>, &str)] = &[
        (3, Some("OUT1"), "outside the input root"),
        (4, Some("ABS"), "outside the input root"),
        (5, Some("LNK"), "outside the input root"),
        (6, Some("REL"), "outside the input root"),
        (7, Some("FIFO"), "FIFO"),
        (8, Some("DIR"), "a directory"),
        (9, Some("LBL"), "PEM label is not"),
        (10, Some("TXT"), "neither PEM"),
        (11, None, "2 fields"),
    ];
    assert_eq!(rej.len(), expect.len(), "{rej:#?}");
    for (l, id, needle) in expect {
        let (got_id, reason) = rej
            .get(l)
            .unwrap_or_else(|| panic!("no rejection on line {l}: {rej:#?}"));
        assert_eq!(got_id.as_deref(), *id, "line {l}: {reason}");
        assert!(reason.contains(needle), "line {l}: {reason}");
    }
    for (l, (_, reason)) in &rej {
        for secret in [
            "TOP SECRET",
            "hunter2",
            "aHVudGVy",
            "root:",
            "APPLICATION",
            "0x",
        ] {
            assert!(
                !reason.contains(secret),
                "line {l}: the reason quotes file content ({secret}): {reason}"
            );
        }
    }
    for secret in ["TOP SECRET", "hunter2"] {
        assert!(
            !shown.contains(secret),
            "output quotes file content:\n{shown}"
        );
    }
    for id in ["IN1", "IN2"] {
        assert!(is_plain_file(&out.join(id).join("cert.pem")), "{id}");
    }
    assert!(!out.join("OUT1").exists() && !out.join("LNK").exists());

    // An explicit, wider root: the key beside the input directory is allowed.
    let mut cmd = certfab(&line);
    cmd.args([
        "batch",
        "--profile",
        PROFILE,
        "--input",
        input.to_str().unwrap(),
        "--input-root",
        line.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let o = run_within(cmd, 120, "CSV with --input-root");
    assert_eq!(o.status.code(), Some(10), "{}", common::text(&o));
    for id in ["OUT1", "REL", "IN1", "IN2"] {
        assert!(is_plain_file(&out.join(id).join("cert.pem")), "{id}");
    }
    assert!(
        !out.join("ABS").exists(),
        "/etc/passwd is outside any root given"
    );
}

/// Item 3: a FIFO given as the CSV is refused at once (exit 2, nothing recorded): a batch
/// reads its input again on resume, so it must be a regular file; the old code blocked in
/// open() forever, holding the ledger lock.
#[test]
fn item3_fifo_as_csv_is_refused_without_blocking() {
    let line = common::Line::new();
    let fifo = line.file("devices.csv");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let out = line.file("out");
    let mut cmd = certfab(&line);
    cmd.args([
        "batch",
        "--profile",
        PROFILE,
        "--input",
        fifo.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let o = run_within(cmd, 60, "FIFO as the CSV");
    assert_eq!(o.status.code(), Some(2), "{}", common::text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&fifo.display().to_string()) && err.contains("FIFO"),
        "{err}"
    );
    let batches: i64 = ro(&line)
        .query_row("SELECT COUNT(*) FROM batches", [], |r| r.get(0))
        .unwrap_or(0);
    assert_eq!(batches, 0, "a batch was recorded for an unreadable input");
}

/// Item 3: in a --csr-dir, a link leading out of the directory and a FIFO are rejected rows
/// (never read, never blocking); a link inside is followed.
#[test]
fn item3_csr_dir_links_leading_outside_are_refused() {
    let line = common::Line::new();
    let csrs = line.file("csrs");
    let outside = line.file("outside");
    std::fs::create_dir_all(&csrs).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(csrs.join("1.csr"), common::rust_csr_pem("SE-1")).unwrap();
    std::fs::write(csrs.join("real-2.txt"), common::rust_csr_pem("SE-2")).unwrap();
    std::os::unix::fs::symlink("real-2.txt", csrs.join("2.csr")).unwrap();
    std::fs::write(outside.join("3.csr"), common::rust_csr_pem("SE-3")).unwrap();
    std::os::unix::fs::symlink(outside.join("3.csr"), csrs.join("3.csr")).unwrap();
    assert!(Command::new("mkfifo")
        .arg(csrs.join("4.csr"))
        .status()
        .unwrap()
        .success());
    let profile = common::derived_profile(
        line.path(),
        "se.yaml",
        "generic-iot.yaml",
        &[(
            "issuer: issuing",
            "device_id: {from: csr.CN}\nissuer: issuing",
        )],
    );
    let out = line.file("out");
    let mut cmd = certfab(&line);
    cmd.args([
        "batch",
        "--profile",
        profile.to_str().unwrap(),
        "--csr-dir",
        csrs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let o = run_within(cmd, 120, "CSR directory with a FIFO");
    assert_eq!(o.status.code(), Some(10), "{}", common::text(&o));
    let rej = rejections(&line);
    assert_eq!(rej.len(), 2, "{rej:#?}");
    assert!(rej[&3].1.contains("3.csr") && rej[&3].1.contains("outside the input root"));
    assert!(rej[&4].1.contains("4.csr") && rej[&4].1.contains("FIFO"));
    for id in ["SE-1", "SE-2"] {
        assert!(is_plain_file(&out.join(id).join("cert.pem")), "{id}");
    }
    assert!(!out.join("SE-3").exists());
}

// ---------------------------------------------------------------------------------------------
// 4. The bundle layout under SIGKILL: every device in exactly one bundle line, no line without
//    its ledger row, no bundle in place before its rows are settled.

/// Bundle lines as found on disk right now: (file, device, serial, cert DER, line JSON) for
/// every `bundle-*.jsonl` in place. Temporaries and key spools are not bundles.
fn bundle_lines(out: &Path) -> Vec<(String, String, String, Vec<u8>, serde_json::Value)> {
    let mut lines = Vec::new();
    let Ok(entries) = std::fs::read_dir(out) else {
        return lines;
    };
    for e in entries {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if !(name.starts_with("bundle-") && name.ends_with(".jsonl")) {
            continue;
        }
        let text = std::fs::read_to_string(out.join(&name)).unwrap();
        assert!(
            text.ends_with('\n'),
            "{name}: a bundle in place ends with a complete line"
        );
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{name}: a line that is not JSON ({e})"));
            let der = pem_file_der_bytes(v["cert"].as_str().expect("cert").as_bytes());
            lines.push((
                name.clone(),
                v["device_id"].as_str().expect("device_id").to_string(),
                v["serial"].as_str().expect("serial").to_string(),
                der,
                v,
            ));
        }
    }
    lines
}

fn pem_file_der_bytes(pem: &[u8]) -> Vec<u8> {
    let mut certs = pem_certs(pem);
    assert!(
        !certs.is_empty(),
        "a bundle line's cert holds no certificate"
    );
    certs.swap_remove(0)
}

/// The crash invariant for bundles: every line in place is a certificate the ledger records as
/// signed for that device under that serial, and no device has two lines.
fn check_bundle_lines_have_ledger_rows(conn: &Connection, out: &Path) -> usize {
    let signed = signed_by_sha(conn);
    let lines = bundle_lines(out);
    let mut seen = BTreeMap::new();
    for (file, device, serial, der, _) in &lines {
        let sha = sha256_hex(der);
        let Some((dev, ser)) = signed.get(&sha) else {
            panic!(
                "{file}: line for {device} holds a certificate the ledger has no signed row for"
            );
        };
        assert_eq!((dev, ser), (device, serial), "{file}: line for {device}");
        if let Some(other) = seen.insert(device.clone(), file.clone()) {
            panic!("device {device} has a line in {other} and in {file}");
        }
    }
    lines.len()
}

#[test]
fn bundle_layout_sigkill_and_resume_every_device_in_exactly_one_line() {
    const N: u64 = 1500;
    const PER_FILE: u64 = 200;
    const ROUNDS: u32 = 8;
    let mut rng = Rng::new(seed("bundle_layout_sigkill_and_resume"));
    let line = common::Line::new();
    let out = line.file("out");
    let mut args = count_args(N, &out);
    args.extend([
        "--layout".into(),
        "bundle".into(),
        "--bundle-size".into(),
        PER_FILE.to_string(),
    ]);

    for round in 1..=ROUNDS {
        // Kills land once the batch has started (the token is logged in): a SIGKILL in the
        // first ~100 ms of a process can catch SoftHSM rewriting its token.object in place and
        // leave it empty (the token then vanishes for every later run, whatever the layout;
        // reproduced with the dirs layout too). Start-up kills are sigkill_and_resume's.
        let mode = [KillFrom::BatchStart, KillFrom::Signatures][(round as usize - 1) % 2];
        let delay = Duration::from_millis(rng.range(30, 600));
        let (early, status, _) = kill_round(&line, &args, mode, delay);
        match early {
            Some(s) => assert!(
                s.success(),
                "round {round}: certfab exited with {s:?} before the kill:\n{}",
                std::fs::read_to_string(line.file("round.stderr")).unwrap_or_default()
            ),
            None => assert_eq!(status.signal(), Some(9), "round {round}: {status:?}"),
        }
        let conn = ledger_path(&line).exists().then(|| ro(&line));
        let (states, lines) = match conn.filter(has_schema) {
            Some(conn) => (
                cert_states(&conn),
                check_bundle_lines_have_ledger_rows(&conn, &out),
            ),
            None => (BTreeMap::new(), 0),
        };
        // Bundles go into place whole: only full ranges of PER_FILE rows before the end.
        assert!(
            lines as u64 % PER_FILE == 0 || lines as u64 == N,
            "round {round}: a partial bundle is in place ({lines} lines)"
        );
        eprintln!(
            "round {round}: SIGKILL {} ms after {mode:?}; ledger {states:?}; {lines} bundle lines in place",
            delay.as_millis()
        );
    }

    let o = certfab(&line).args(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "final run\n{}", common::text(&o));
    let conn = ro(&line);
    let states = cert_states(&conn);
    assert_eq!(count(&states, "signed"), N, "{states:?}");
    assert_eq!(count(&states, "intent"), 0, "{states:?}");
    assert_eq!(check_bundle_lines_have_ledger_rows(&conn, &out) as u64, N);

    // Exactly one line per device, in the bundle of its input row, with its key and chain.
    let issuing_der = pem_file_der(&line.file("ca/issuing.pem"));
    let ids = count_ids(N);
    let mut by_device = BTreeMap::new();
    for (file, device, _, der, v) in bundle_lines(&out) {
        let row = ids
            .iter()
            .position(|i| *i == device)
            .expect("a device of the input") as u64;
        assert_eq!(
            file,
            format!("bundle-{:05}.jsonl", row / PER_FILE),
            "{device} (input row {row})"
        );
        let chain = pem_certs(v["chain"].as_str().unwrap().as_bytes());
        assert_eq!(
            chain,
            vec![der.clone(), issuing_der.clone()],
            "{device}: chain"
        );
        use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
        let sk =
            p256::SecretKey::from_pkcs8_pem(v["key"].as_str().expect("key")).expect("key parses");
        let (_, x) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(
            sk.public_key().to_public_key_der().unwrap().as_bytes(),
            x.tbs_certificate.subject_pki.raw,
            "{device}: the line's key does not belong to its certificate"
        );
        by_device.insert(device, v["cert"].as_str().unwrap().to_string());
    }
    assert_eq!(by_device.len() as u64, N);
    // Nothing else is left: no temporaries, no key spools.
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let expected: Vec<String> = (0..N.div_ceil(PER_FILE))
        .map(|k| format!("bundle-{k:05}.jsonl"))
        .collect();
    assert_eq!(names, expected, "files left in the output");

    // What a user checks next: batch status and OpenSSL on a few certificates.
    let st = status_json(&line, None).expect("batch status");
    assert!(st["batch"]["finished_at"].is_string(), "{st:#}");
    assert_eq!(st["counts"]["signed"], N, "{st:#}");
    let root = line.file("ca/root.pem");
    let issuing = line.file("ca/issuing.pem");
    for _ in 0..3 {
        let id = &ids[rng.range(0, N - 1) as usize];
        let pem = line.file("sample.pem");
        std::fs::write(&pem, &by_device[id]).unwrap();
        let o = common::openssl_verify(&root, &[&issuing], &[], &pem);
        assert!(
            o.status.success(),
            "openssl verify {id}\n{}",
            common::text(&o)
        );
    }
}

/// One kill round of a batch: starts `certfab args`, waits until the ledger shows `mode`'s
/// point was reached (or 30 s, or the process ended), then `delay` more, and SIGKILLs it.
/// Returns how it had ended by itself (if it had), its final status, and when it was killed.
fn kill_round(
    line: &common::Line,
    args: &[String],
    mode: KillFrom,
    delay: Duration,
) -> (
    Option<std::process::ExitStatus>,
    std::process::ExitStatus,
    Duration,
) {
    let before = ledger_progress(line);
    let mut child = certfab(line)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(line.file("round.stderr")).unwrap())
        .spawn()
        .unwrap();
    let spawned = Instant::now();
    let reached = |p: (i64, u64)| match mode {
        KillFrom::Spawn => true,
        KillFrom::BatchStart => p.0 > before.0,
        KillFrom::Signatures => p.0 > before.0 && p.1 > before.1,
    };
    while !reached(ledger_progress(line))
        && spawned.elapsed() < Duration::from_secs(30)
        && child.try_wait().unwrap().is_none()
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(delay);
    let early = child.try_wait().unwrap();
    let _ = child.kill();
    let status = child.wait().unwrap();
    (early, status, spawned.elapsed())
}
