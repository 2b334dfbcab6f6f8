//! Issue 14, flat memory: `certfab audit` holds no more for four times the devices. The same
//! line is audited at N devices and again after 3N more (every device signed but not
//! installed, so every device is also a finding), each run under python's `resource`
//! (ru_maxrss of RUSAGE_CHILDREN, measured outside certfab); the peak RSS may not grow by more
//! than a bound that a per-device cost of even 1 KiB exceeds (the audit held ~1.9 KiB per
//! device, and its JSON report as one string, before it streamed).

use crate::common::{text, Line};
use crate::export_memory::certfab_rss;

const N: usize = 3000;
/// Allowed growth of peak RSS from N to 4N devices: 3N devices × 1 KiB.
const BOUND_KIB: u64 = 3 * N as u64;

/// Audits the line's ledger (`--json`, the site's CAs and profiles); returns the number of
/// `signed-not-installed` findings and the peak RSS in KiB.
fn audit_rss(line: &Line) -> (usize, u64) {
    let (o, rss) = certfab_rss(line, &["--json", "audit"]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let n = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "signed-not-installed")
        .count();
    (n, rss)
}

#[test]
fn issue14_flat_memory_audit() {
    let line = Line::new();
    let bundle = ["--plain-keys", "--layout", "bundle"];
    line.host_batch(
        "generic-iot",
        N,
        "dev-a{seq:05}",
        &line.file("out-a"),
        &bundle,
    );
    let (found, one) = audit_rss(&line);
    assert_eq!(found, N);
    line.host_batch(
        "generic-iot",
        3 * N,
        "dev-b{seq:05}",
        &line.file("out-b"),
        &bundle,
    );
    let (found, four) = audit_rss(&line);
    assert_eq!(found, 4 * N);
    eprintln!(
        "audit: peak RSS {one} KiB at {N} devices, {four} KiB at {}",
        4 * N
    );
    assert!(
        four <= one + BOUND_KIB,
        "audit: peak RSS grew by more than {BOUND_KIB} KiB from {N} to {} devices: {one} KiB -> {four} KiB",
        4 * N
    );
}

/// The working database needs a temporary directory: without a usable one the audit stops
/// with exit 5, naming TMPDIR and the fix, and writes no report.
#[test]
fn audit_without_a_usable_tmpdir_says_so() {
    let line = Line::new();
    let not_a_dir = line.file("not-a-dir");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let o = std::process::Command::new(crate::common::bin())
        .arg("--config")
        .arg(line.config())
        .args(["--json", "audit"])
        .env("TMPDIR", &not_a_dir)
        .env_remove("CERTFAB_CONFIG")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("TMPDIR") && err.contains("not-a-dir"), "{err}");
    assert!(o.stdout.is_empty(), "{}", text(&o));
}

/// A killed audit (Ctrl-C runs no destructors) leaves its working database behind in TMPDIR;
/// the next audit removes it, and keeps the home of an audit that is still running.
#[test]
fn a_killed_audits_working_directory_is_removed_by_the_next() {
    let line = Line::new();
    line.host_batch(
        "generic-iot",
        3,
        "dev-k{seq}",
        &line.file("out"),
        &["--plain-keys"],
    );
    let tmp = line.file("tmp");
    std::fs::create_dir(&tmp).unwrap();
    // A process that has ended: its PID names the killed audit's home.
    let mut ended = std::process::Command::new("true").spawn().unwrap();
    let dead = ended.id();
    ended.wait().unwrap();
    let killed = tmp.join(format!("certfab-audit-{dead}"));
    let scratch = killed.join(".certfab-0123456789abcdef0.tmp");
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(scratch.join("audit.sqlite"), b"a working database").unwrap();
    // This test process is alive: a home named by it belongs to a running audit.
    let running = tmp.join(format!("certfab-audit-{}", std::process::id()));
    std::fs::create_dir(&running).unwrap();
    std::fs::write(running.join("in-use"), b"x").unwrap();
    let o = std::process::Command::new(crate::common::bin())
        .arg("--config")
        .arg(line.config())
        .args(["--json", "audit"])
        .env("TMPDIR", &tmp)
        .env_remove("CERTFAB_CONFIG")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(!killed.exists(), "{} was left", killed.display());
    assert!(
        running.join("in-use").exists(),
        "a live audit's home was removed"
    );
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        vec![format!("certfab-audit-{}", std::process::id())],
        "the audit left its own working directory"
    );
}
