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
