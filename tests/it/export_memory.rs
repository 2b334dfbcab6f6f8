//! Issue 14, flat memory: `certfab export` in every format holds no more for four times the
//! devices. Each format is exported from a manifest of N devices and from one of 4N, each run
//! under python's `resource` (ru_maxrss of RUSAGE_CHILDREN, measured outside certfab), and the
//! peak RSS may not grow by more than a bound that a per-device cost of even 2 KiB exceeds
//! (the exporters held 6–7 KiB per device before they streamed).

use crate::common::{self, text, Line};
use std::path::Path;

const N: usize = 1000;
/// Allowed growth of peak RSS from N to 4N devices: 3N devices × 2 KiB.
const BOUND_KIB: u64 = (3 * N as u64) * 2;

/// Runs certfab (with the line's config) under python's resource module; returns the output
/// and the child's peak RSS in KiB.
pub(crate) fn certfab_rss(line: &Line, args: &[&str]) -> (std::process::Output, u64) {
    let o = std::process::Command::new(common::python())
        .arg("-c")
        .arg(
            "import resource,subprocess,sys\n\
             r=subprocess.run(sys.argv[1:])\n\
             print('maxrss', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n\
             sys.exit(r.returncode)",
        )
        .arg(common::bin())
        .arg("--config")
        .arg(line.config())
        .args(args)
        .current_dir(line.path())
        .output()
        .unwrap();
    let rss = String::from_utf8_lossy(&o.stderr)
        .lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix("maxrss ")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no maxrss: {}", text(&o)));
    (o, rss)
}

/// Every format with the settings it needs (`--set`), each a separate export.
fn formats() -> Vec<(&'static str, Vec<&'static str>)> {
    let aws = [
        "aws.region=eu-central-1",
        "aws.account_id=123456789012",
        "aws.role_arn=arn:aws:iam::123456789012:role/certfab-registration",
        "aws.certificate_mode=SNI_ONLY",
    ];
    vec![
        ("aws-bulk", vec![]),
        ("aws-jitp", aws.to_vec()),
        ("aws-jitr", aws.to_vec()),
        ("aws-multi-account", vec![]),
        ("aws-policy", aws.to_vec()),
        (
            "aws-fleet-claim",
            [&aws[..], &["aws.template_name=certfab-fleet"]].concat(),
        ),
        ("azure-dps", vec![]),
        ("azure-dps-group", vec![]),
        ("hono", vec!["hono.tenant_id=line-1"]),
        ("peridio", vec!["peridio.product_prn=prn:1:bench"]),
        ("nrfcloud", vec![]),
        ("microchip-jws", vec![]),
        ("csv", vec![]),
    ]
}

fn export_rss(line: &Line, manifest: &Path, format: &str, sets: &[&str], tag: &str) -> u64 {
    let out = line.file(&format!("x-{format}-{tag}"));
    let claim_id = format!("claim-{tag}");
    let mut args = vec![
        "export",
        "--format",
        format,
        "--manifest",
        manifest.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    if format == "aws-fleet-claim" {
        args.extend(["--plain-keys", "--claim-id", &claim_id]);
    }
    let (o, rss) = certfab_rss(line, &args);
    assert!(o.status.success(), "{format} ({tag}): {}", text(&o));
    rss
}

#[test]
fn issue14_flat_memory_every_export_format() {
    let line = Line::new();
    let small = line.host_batch(
        "generic-iot",
        N,
        "dev-a{seq:05}",
        &line.file("out-a"),
        &["--plain-keys", "--layout", "bundle"],
    );
    let more = line.host_batch(
        "generic-iot",
        3 * N,
        "dev-b{seq:05}",
        &line.file("out-b"),
        &["--plain-keys", "--layout", "bundle"],
    );
    let (a, b) = (
        small["batch"].as_str().unwrap(),
        more["batch"].as_str().unwrap(),
    );
    let m1 = line.file("m-1.jsonl");
    let m4 = line.file("m-4.jsonl");
    let o = line.manifest_build(&[a], None, &m1);
    assert!(o.status.success(), "{}", text(&o));
    let o = line.manifest_build(&[a, b], None, &m4);
    assert!(o.status.success(), "{}", text(&o));

    let mut grew = Vec::new();
    for (format, sets) in formats() {
        let one = export_rss(&line, &m1, format, &sets, "1");
        let four = export_rss(&line, &m4, format, &sets, "4");
        eprintln!(
            "{format}: peak RSS {one} KiB at {N} devices, {four} KiB at {}",
            4 * N
        );
        if four > one + BOUND_KIB {
            grew.push(format!("{format}: {one} KiB -> {four} KiB"));
        }
    }
    assert!(
        grew.is_empty(),
        "peak RSS grew by more than {BOUND_KIB} KiB from {N} to {} devices: {grew:?}",
        4 * N
    );
}
