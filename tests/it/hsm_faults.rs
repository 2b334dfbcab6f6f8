//! The HSM fault harness (issue 13): a remote token (SoftHSM exported by `p11-kit server`, a
//! dev line made by `hsm-fixtures/dev-line.sh --token p11-kit`) killed under certfab with
//! SIGKILL — the server and the per-connection process it forked for certfab, as a crashed
//! network HSM — and restarted within the recovery window or after it.
//!
//! What a user checks: the batch finishes with every device issued exactly once (ledger,
//! output files, OpenSSL), or stops with exit 4 naming the real cause within the window and
//! the same command then completes; the audit checkpoint after a kill is signed.

use crate::common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PROFILE: &str = "generic-iot";

/// Sets `pkcs11.recovery_window` in the line's site config.
fn set_recovery_window(line: &Line, window: &str) {
    let path = line.config();
    let yaml = std::fs::read_to_string(&path).unwrap();
    let yaml = yaml.replacen(
        "pkcs11:\n",
        &format!("pkcs11:\n  recovery_window: {window}\n"),
        1,
    );
    std::fs::write(&path, yaml).unwrap();
}

fn batch_args(n: usize, out: &Path) -> Vec<String> {
    [
        "--json",
        "batch",
        "--profile",
        PROFILE,
        "--count",
        &n.to_string(),
        "--keygen",
        "host",
        "--plain-keys",
        "--id-template",
        "fault-{seq:05}",
        "--jobs",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn spawn_batch(line: &Line, n: usize, out: &Path) -> Child {
    Command::new(bin())
        .arg("--config")
        .arg(line.config())
        .args(batch_args(n, out))
        .env_remove("CERTFAB_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Certificate rows in `states` so far (0 before the ledger exists or while it is busy).
/// The batch commits a group's intents before signing it and its certificates after.
fn rows_so_far(line: &Line, states: &str) -> u64 {
    let Ok(conn) = rusqlite::Connection::open_with_flags(
        line.file("ledger.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return 0;
    };
    conn.query_row(
        &format!("SELECT COUNT(*) FROM certificates WHERE state IN ({states})"),
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
    .unwrap_or(0)
}

/// Waits until the running batch has at least one certificate row in `states`; asserts it is
/// still running then (the kill must land mid-batch).
fn wait_mid_batch(line: &Line, child: &mut Child, states: &str) {
    let start = Instant::now();
    while rows_so_far(line, states) == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the batch ended before the kill"
        );
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cert_states(line: &Line) -> std::collections::BTreeMap<String, u64> {
    let conn = ledger(line);
    let mut st = conn
        .prepare("SELECT state, COUNT(*) FROM certificates GROUP BY state")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// Exactly once: one signed device row and one signed certificate per device, no intent
/// left, unique serials, each output certificate the ledger's and verified by OpenSSL up to
/// the dev root.
fn check_exactly_once(line: &Line, out: &Path, n: usize) {
    let conn = ledger(line);
    let mut st = conn
        .prepare("SELECT device_id, state, serial FROM devices WHERE profile = ?1")
        .unwrap();
    let devices: Vec<(String, String, String)> = st
        .query_map([PROFILE], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(devices.len(), n, "one device row per device");
    let states = cert_states(line);
    assert_eq!(states.get("intent"), None, "intents left: {states:?}");
    assert_eq!(states.get("signed"), Some(&(n as u64)), "{states:?}");
    let mut st = conn
        .prepare("SELECT serial, der FROM certificates WHERE state = 'signed'")
        .unwrap();
    let signed: std::collections::BTreeMap<String, Vec<u8>> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(signed.len(), n, "a serial signed twice");
    let mut files = Vec::new();
    for (id, state, serial) in &devices {
        assert_eq!(state, "signed", "{id}");
        let der = signed
            .get(serial)
            .unwrap_or_else(|| panic!("{id}: serial {serial} has no signed certificate"));
        let cert = out.join(id).join("cert.pem");
        let pem = std::fs::read(&cert).unwrap_or_else(|e| panic!("{}: {e}", cert.display()));
        let file_der = x509_parser::pem::Pem::iter_from_buffer(&pem)
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("{} holds no PEM", cert.display()))
            .contents;
        assert_eq!(&file_der, der, "{id}: output file is not the ledger's");
        files.push(cert);
    }
    let entries = std::fs::read_dir(out).unwrap().count();
    assert_eq!(entries, n, "one output directory per device");
    // One OpenSSL run verifies them all (it prints "FILE: OK" per certificate).
    let mut args = vec![
        "verify".to_string(),
        "-CAfile".into(),
        line.file("ca/root.pem").to_str().unwrap().into(),
        "-untrusted".into(),
        line.file("ca/issuing.pem").to_str().unwrap().into(),
    ];
    args.extend(files.iter().map(|f| f.to_str().unwrap().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let v = openssl(&args);
    assert!(v.status.success(), "{}", text(&v));
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).matches(": OK").count(),
        n,
        "{}",
        text(&v)
    );
}

/// Whether certfab died of p11-kit-client's own assertion (SIGABRT in its RPC transport).
fn module_aborted(o: &std::process::Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    o.status.signal() == Some(6)
        && String::from_utf8_lossy(&o.stderr).contains("p11-kit/rpc-transport.c")
}

/// Item 2: the server and its per-connection process killed mid-batch and restarted within
/// the recovery window: the batch continues (re-open, re-login, key found again) and
/// finishes with every device issued exactly once, no serial burned, and its audit
/// checkpoint signed after the kill.
#[test]
fn remote_token_killed_mid_batch_recovers_within_window() {
    let line = Line::on(Token::P11Kit);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    // Three signing groups on two workers: the kill lands after the first two are recorded,
    // with the third still to sign (and the audit checkpoint after it).
    let n = 3 * certfab::BATCH_GROUP;
    let mut child = spawn_batch(&line, n, &out);
    wait_mid_batch(&line, &mut child, "'signed'");
    line.kill_remote_token();
    std::thread::sleep(Duration::from_millis(500));
    line.restart_remote_token();
    let o = child.wait_with_output().unwrap();
    if module_aborted(&o) {
        // p11-kit-client aborts the whole process when the module is re-initialised under a
        // call still on the dead connection; certfab's gate should prevent that
        // (docs/hsm-compat.md), and should it happen anyway nothing may be lost or doubled:
        // the same command resumes and completes exactly once.
        let again = spawn_batch(&line, n, &out).wait_with_output().unwrap();
        assert!(again.status.success(), "{}", text(&again));
        check_exactly_once(&line, &out, n);
        ok(&line.certfab(&["log", "verify"]));
        return;
    }
    assert!(o.status.success(), "{}", text(&o));
    let summary = stdout_json(&o);
    assert_eq!(summary["issued"], n, "{summary}");
    let states = cert_states(&line);
    assert_eq!(
        states.get("burned"),
        None,
        "recovered in the HSM layer: {states:?}"
    );
    check_exactly_once(&line, &out, n);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("audit checkpoint 1 signed"), "{}", text(&o));
    ok(&line.certfab(&["log", "verify"]));
}

/// Item 1 and 2: the remote token killed and not back within the recovery window: the batch
/// stops with exit 4 within the window (not after minutes of retries), naming the failure
/// that began the outage (not "no private key matches"), intents burned; once the server is
/// back the same command resumes and completes exactly once.
#[test]
fn remote_token_not_back_within_window_exits_4_and_resumes() {
    let line = Line::on(Token::P11Kit);
    set_recovery_window(&line, "2s");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    // Killed as soon as the first intents are committed: two groups still to sign.
    let n = 2 * certfab::BATCH_GROUP;
    let mut child = spawn_batch(&line, n, &out);
    wait_mid_batch(&line, &mut child, "'intent', 'signed'");
    line.kill_remote_token();
    let killed = Instant::now();
    let o = child.wait_with_output().unwrap();
    let took = killed.elapsed();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        took < Duration::from_secs(2 + 20),
        "gave up {took:?} after the kill with a 2 s window"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("did not come back within the recovery window of 2 s"),
        "{}",
        text(&o)
    );
    assert!(
        err.contains("the token stopped answering (C_") && err.contains("failed with CKR_"),
        "the message names the real cause: {}",
        text(&o)
    );
    assert!(!err.contains("no private key matches"), "{}", text(&o));
    assert!(
        err.lines().count() < 20,
        "bounded output, not hundreds of retries: {}",
        text(&o)
    );
    let states = cert_states(&line);
    assert_eq!(states.get("intent"), None, "intents burned: {states:?}");
    assert!(states.get("burned").is_some_and(|b| *b > 0), "{states:?}");

    line.restart_remote_token();
    let o = line.certfab(
        &batch_args(n, &out)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let summary = stdout_json(&o);
    assert_eq!(summary["resumed"], true, "{summary}");
    check_exactly_once(&line, &out, n);
    ok(&line.certfab(&["log", "verify"]));
}

/// The TPM's dictionary-attack lockout counter, read with tpm2-tools through the line's
/// resource manager (an independent client of the same TPM).
fn tpm_lockout_counter(line: &Line) -> u64 {
    let o = Command::new("tpm2_getcap")
        .arg("properties-variable")
        .env("TPM2TOOLS_TCTI", "tabrmd:bus_type=session")
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            format!("unix:path={}", line.file("dbus.sock").display()),
        )
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let value = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("TPM2_PT_LOCKOUT_COUNTER:"))
        .unwrap_or_else(|| panic!("no lockout counter in {out}"));
    u64::from_str_radix(value.trim().trim_start_matches("0x"), 16).unwrap()
}

fn bench_once(line: &Line) -> std::process::Output {
    line.certfab(&[
        "hsm",
        "bench",
        "--key",
        "issuing",
        "--sessions",
        "1",
        "--seconds",
        "0.1",
    ])
}

/// Item 5: on a TPM, one command with a wrong PIN advances the TPM's lockout counter by at
/// most one (certfab makes one login attempt, and recovery never logs in with an unproven
/// PIN), and the message reports the lockout state: what a wrong PIN does on a TPM and how to
/// read the counter, and once the TPM is in lockout, that even the right PIN is refused and
/// why.
#[test]
fn tpm_wrong_pin_advances_lockout_by_at_most_one_and_says_so() {
    let line = Line::on(Token::Tpm2);
    let right = std::fs::read_to_string(line.config()).unwrap();
    let wrong_pin = line.file("wrong-pin");
    std::fs::write(&wrong_pin, "000000").unwrap();
    std::fs::set_permissions(
        &wrong_pin,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let wrong = right.replacen("pin: file:pin", "pin: file:wrong-pin", 1);
    assert_ne!(wrong, right);

    // swtpm's TPM2_PT_MAX_AUTH_FAIL is 3: two wrong commands, then the right PIN works.
    let start = tpm_lockout_counter(&line);
    std::fs::write(line.config(), &wrong).unwrap();
    for i in 1..=2 {
        let o = bench_once(&line);
        assert_eq!(o.status.code(), Some(4), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("CKR_PIN_INCORRECT"), "{}", text(&o));
        assert!(
            err.contains("PIN lockout: tpm2-pkcs11 reports no PIN counter")
                && err.contains("TPM2_PT_LOCKOUT_COUNTER"),
            "{}",
            text(&o)
        );
        assert!(!err.contains("000000"), "the PIN is never shown");
        assert_eq!(
            tpm_lockout_counter(&line),
            start + i,
            "one count per command"
        );
    }
    // A third wrong PIN puts the TPM in lockout; the right PIN is then refused too, with
    // the TPM's lockout named, and the counter does not move.
    let o = bench_once(&line);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert_eq!(tpm_lockout_counter(&line), start + 3);
    std::fs::write(line.config(), &right).unwrap();
    let o = bench_once(&line);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("CKR_PIN_LOCKED") && err.contains("the TPM is in dictionary-attack lockout"),
        "{}",
        text(&o)
    );
    assert_eq!(tpm_lockout_counter(&line), start + 3);
}

/// Item 6 (quirk): tpm2-pkcs11 pads the token model with NUL bytes, not spaces: `hsm info`
/// shows it trimmed, and a site token URI with `model=` selects the token.
#[test]
fn quirk_tpm_nul_padded_model_is_trimmed() {
    let line = Line::on(Token::Tpm2);
    let info = ok_json(&line.certfab(&["--json", "hsm", "info", "--no-login"]));
    let tokens = info["tokens"].as_array().unwrap();
    let t = tokens.iter().find(|t| t["selected"] == true).unwrap();
    assert_eq!(t["model"], "SW   TPM", "{t}");
    let yaml = std::fs::read_to_string(line.config()).unwrap();
    let yaml = yaml.replacen(
        "token: certfab-dev",
        "token: \"pkcs11:token=certfab-dev;model=SW%20%20%20TPM\"",
        1,
    );
    std::fs::write(line.config(), yaml).unwrap();
    ok(&bench_once(&line));
}

/// Item 4: a token with fewer sessions than `--jobs` asks for (here the site's own
/// `pkcs11.max_sessions`, as for a YubiHSM 2 whose 16 sessions other applications share):
/// certfab signs with the sessions it may have and says so, keeps one for the document
/// signer (the checkpoint is signed), and refuses a limit it cannot work within, clearly.
#[test]
fn session_limit_fewer_sessions_than_jobs_uses_what_it_gets() {
    let line = Line::new();
    let yaml = std::fs::read_to_string(line.config()).unwrap();
    let limited =
        |max: &str| yaml.replacen("pkcs11:\n", &format!("pkcs11:\n  max_sessions: {max}\n"), 1);
    std::fs::write(line.config(), limited("3")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let o = line.certfab(&[
        "--json",
        "batch",
        "--profile",
        PROFILE,
        "--count",
        "40",
        "--keygen",
        "host",
        "--plain-keys",
        "--id-template",
        "limit-{seq:03}",
        "--jobs",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(stdout_json(&o)["issued"], 40);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("signing with 1 session(s) instead of --jobs 4: pkcs11.max_sessions is 3"),
        "{}",
        text(&o)
    );
    assert!(err.contains("audit checkpoint 1 signed"), "{}", text(&o));
    let v = line.verify_device(&out.join("limit-001/cert.pem"));
    assert!(v.status.success(), "{}", text(&v));

    std::fs::write(line.config(), limited("2")).unwrap();
    let o = line.certfab(&["hsm", "info"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("pkcs11.max_sessions is 2; certfab needs at least 3"),
        "{}",
        text(&o)
    );
}

/// The fault harness's own hygiene: DIR/stop ends the p11-kit server and the processes it
/// forked. `p11-kit server` re-executes itself as `p11-kit-server`, so the stop script's
/// process-name check never matched and every p11-kit line left its server running.
#[test]
fn dev_line_stop_ends_the_p11_kit_server() {
    let line = Line::on(Token::P11Kit);
    // A client connection, so the server has forked a child too.
    let pid: u32 = std::fs::read_to_string(line.file("p11-kit.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let site = certfab::Site::open(&line.config()).unwrap();
    let children = Command::new("ps")
        .args(["-o", "pid=", "--ppid", &pid.to_string()])
        .output()
        .unwrap();
    let children: Vec<String> = String::from_utf8_lossy(&children.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(!children.is_empty(), "no per-connection process");
    let o = Command::new(line.file("stop")).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    drop(site);
    for p in std::iter::once(pid.to_string()).chain(children) {
        let proc_dir = format!("/proc/{p}");
        let start = Instant::now();
        while Path::new(&proc_dir).exists() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !Path::new(&proc_dir).exists(),
            "process {p} still runs 5 s after DIR/stop"
        );
    }
}
