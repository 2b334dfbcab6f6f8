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

/// Devices of the many-files test: exported ten to a file (azure-dps's bulk limit) and then
/// one to a file, 1,000 and 10,000 files from the same manifest.
const FILES_N: usize = 10_000;
/// Allowed growth of peak RSS per added file. What an export kept of each file (name, size,
/// hash, consumer, temporary, and the summary and printed list built whole) cost about
/// 0.6 KiB per file (this test before the scratch records: 34,216 KiB with 1,000 files,
/// 39,320 KiB with 10,000); now a 16-byte hash of each name is what stays in memory.
const PER_FILE_BOUND: u64 = 100;

/// Issue 14, flat memory in the number of files: `azure-dps` writes one file per 10 devices,
/// so at 1,000,000 devices it writes 100,000, and everything kept per file (for the summary
/// and the printed list) must not be held in memory. The same manifest is exported with 10
/// devices per file and with 1 (`--max-rows 1`), printing the list as `--json` and as text;
/// peak RSS may grow by at most [`PER_FILE_BOUND`] bytes per added file, and the summary
/// file and the printed list still name every file.
#[test]
fn issue14_flat_memory_in_the_number_of_export_files() {
    let line = Line::new();
    let s = line.host_batch(
        "generic-iot",
        FILES_N,
        "dev-f{seq:05}",
        &line.file("out-f"),
        &["--plain-keys", "--layout", "bundle"],
    );
    let m = line.file("m-files.jsonl");
    let o = line.manifest_build(&[s["batch"].as_str().unwrap()], None, &m);
    assert!(o.status.success(), "{}", text(&o));
    // Ten thousand files are ten thousand fsyncs: on tmpfs where there is one, so that they
    // do not dominate the run (the memory is the same on any file system).
    let shm = Path::new("/dev/shm");
    let scratch = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir_in(line.path()).unwrap()
    };
    let export = |tag: &str, max_rows: &str, json: bool| {
        let out = scratch.path().join(tag);
        let mut args = vec![];
        if json {
            args.push("--json");
        }
        args.extend([
            "export",
            "--format",
            "azure-dps",
            "--manifest",
            m.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--max-rows",
            max_rows,
        ]);
        let (o, rss) = certfab_rss(&line, &args);
        assert!(o.status.success(), "{tag}: {}", text(&o));
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("azure-dps.summary.json")).unwrap())
                .unwrap();
        std::fs::remove_dir_all(&out).unwrap();
        (o, summary, rss)
    };
    let (_, few_summary, few) = export("few", "10", true);
    let (printed, many_summary, many_json) = export("many", "1", true);
    let (printed_text, _, many_text) = export("many-text", "1", false);
    let files = |v: &serde_json::Value| v["files"].as_array().unwrap().len();
    assert_eq!(files(&few_summary), FILES_N / 10);
    assert_eq!(files(&many_summary), FILES_N);
    let listed: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(files(&listed), FILES_N);
    assert_eq!(
        listed["files"][FILES_N - 1],
        many_summary["files"][FILES_N - 1]
    );
    let out = String::from_utf8_lossy(&printed_text.stdout);
    assert_eq!(
        out.matches("azure-dps-enrollments-").count(),
        FILES_N,
        "{out:.500}"
    );

    let added = (FILES_N - FILES_N / 10) as u64;
    let many = many_json.max(many_text);
    eprintln!(
        "azure-dps, {FILES_N} devices: peak RSS {few} KiB with {} files, {many_json} KiB (--json) and {many_text} KiB (text) with {FILES_N}",
        FILES_N / 10
    );
    assert!(
        many * 1024 <= few * 1024 + added * PER_FILE_BOUND,
        "peak RSS grew by {} KiB for {added} more files (bound {PER_FILE_BOUND} bytes a file): {few} KiB -> {many} KiB",
        many.saturating_sub(few)
    );
}

/// Issue 14, flat memory: `manifest show` (and with `--devices`, as text and as `--json`)
/// reads the manifest a line at a time, so three times the devices take no more memory; it
/// still counts and lists every device. Before, it read the file whole and kept every device
/// line (about 8 KiB a device: 426 MiB for 50,000 devices, 650 MiB with `--devices`).
#[test]
fn issue14_flat_memory_manifest_show() {
    let line = Line::new();
    let mut manifests = Vec::new();
    let mut batches = Vec::new();
    for (tag, n) in [("a", N), ("b", 3 * N)] {
        let s = line.host_batch(
            "generic-iot",
            n,
            &format!("dev-{tag}{{seq:05}}"),
            &line.file(&format!("out-{tag}")),
            &["--plain-keys"],
        );
        batches.push(s["batch"].as_str().unwrap().to_string());
        let m = line.file(&format!("m-{tag}.jsonl"));
        let o = line.manifest_build(&[batches.last().unwrap()], None, &m);
        assert!(o.status.success(), "{}", text(&o));
        // The second manifest chains to the first: it holds only the second batch.
        manifests.push((m, n));
    }
    let mut grew = Vec::new();
    for (json, list) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut rss = Vec::new();
        for (m, n) in &manifests {
            let mut args = vec![];
            if json {
                args.push("--json");
            }
            args.extend(["manifest", "show", m.to_str().unwrap()]);
            if list {
                args.push("--devices");
            }
            let (o, kib) = certfab_rss(&line, &args);
            assert!(o.status.success(), "{args:?}: {}", text(&o));
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(out.contains("verified"), "{out:.300}");
            if json {
                let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                assert_eq!(v["device_lines"], *n);
                let listed = v["devices"].as_array().map_or(0, Vec::len);
                assert_eq!(listed, if list { *n } else { 0 });
            } else {
                assert!(out.contains(&format!(" {n} devices (")), "{out:.300}");
                let listed = out.lines().filter(|l| l.contains(" serial ")).count();
                assert_eq!(listed, if list { *n } else { 0 });
            }
            rss.push(kib);
        }
        eprintln!(
            "manifest show json={json} devices={list}: peak RSS {} KiB at {N} devices, {} KiB at {}",
            rss[0],
            rss[1],
            3 * N
        );
        if rss[1] > rss[0] + SHOW_BOUND_KIB {
            grew.push(format!(
                "json={json} devices={list}: {} -> {} KiB",
                rss[0], rss[1]
            ));
        }
    }
    assert!(
        grew.is_empty(),
        "peak RSS grew by more than {SHOW_BOUND_KIB} KiB from {N} to {} devices: {grew:?}",
        3 * N
    );
}

/// Allowed growth of `manifest show`'s peak RSS from N to 3N devices: 2N devices × 2 KiB.
const SHOW_BOUND_KIB: u64 = (2 * N as u64) * 2;

/// Devices in the small manifests of the multi-manifest test; the large one has three times as
/// many.
const MULTI_N: usize = 1000;
/// Allowed growth of peak RSS per added device for `manifest verify A B` and `manifest merge
/// A B`: 1 KiB. Before they streamed, they held every device of every input: 172 MiB (verify)
/// and 379 MiB (merge) for two manifests of 20,000 devices in a debug build, 3.4 and 8.4 KiB a
/// device (docs/performance.md "Memory against batch size").
const MULTI_BOUND_PER_DEVICE_KIB: u64 = 1;

/// Issue 14, flat memory: `manifest verify A B` (each verified, then the chain and replay
/// checks across them) and `manifest merge A B` take no more memory for inputs with twice the
/// devices: the small pair holds 2 × [`MULTI_N`] devices, the large pair 4 × [`MULTI_N`] (its
/// second manifest has three times the devices). Both still verify, and the merged file is
/// byte for byte what the merge made when it held everything: the inputs' device lines
/// renumbered in input order, under the same header, with the trailer's count and Merkle root.
#[test]
fn issue14_flat_memory_manifest_verify_several_and_merge() {
    let line = Line::new();
    let mut ms = Vec::new();
    for (tag, n) in [("a", MULTI_N), ("b", MULTI_N), ("c", 3 * MULTI_N)] {
        let s = line.host_batch(
            "generic-iot",
            n,
            &format!("dev-{tag}{{seq:05}}"),
            &line.file(&format!("out-{tag}")),
            &["--plain-keys", "--layout", "bundle"],
        );
        let m = line.file(&format!("m-{tag}.jsonl"));
        let o = line.manifest_build(&[s["batch"].as_str().unwrap()], None, &m);
        assert!(o.status.success(), "{}", text(&o));
        ms.push(m);
    }
    let root = line.file("ca/root.pem");
    let mut grew = Vec::new();
    let mut merged = Vec::new();
    for (pair, devices) in [
        ([&ms[0], &ms[1]], 2 * MULTI_N),
        ([&ms[1], &ms[2]], 4 * MULTI_N),
    ] {
        let (o, verify) = certfab_rss(
            &line,
            &[
                "--json",
                "manifest",
                "verify",
                pair[0].to_str().unwrap(),
                pair[1].to_str().unwrap(),
                "--trust",
                root.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["ok"], true, "{v}");
        let out = line.file(&format!("merged-{devices}.jsonl"));
        let (o, merge) = certfab_rss(
            &line,
            &[
                "--json",
                "manifest",
                "merge",
                pair[0].to_str().unwrap(),
                pair[1].to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["count"], devices, "{v}");
        assert_merged_as_before(&out, &[pair[0], pair[1]]);
        merged.push(out);
        eprintln!(
            "{devices} devices in two manifests: peak RSS verify {verify} KiB, merge {merge} KiB"
        );
        grew.push((verify, merge));
    }
    let bound = (2 * MULTI_N as u64) * MULTI_BOUND_PER_DEVICE_KIB;
    let (small, large) = (grew[0], grew[1]);
    assert!(
        large.0 <= small.0 + bound && large.1 <= small.1 + bound,
        "peak RSS grew by more than {bound} KiB from {} to {} devices: verify {} -> {} KiB, merge {} -> {} KiB",
        2 * MULTI_N,
        4 * MULTI_N,
        small.0,
        large.0,
        small.1,
        large.1
    );
    let o = line.certfab(&[
        "manifest",
        "verify",
        merged[1].to_str().unwrap(),
        "--trust",
        root.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
}

/// The merged file `out` is what the merge made when it held every device: the header, every
/// device line of `inputs` in order renumbered from 1 (its own digest recomputed), and the
/// trailer with that count and the RFC 6962 root of those lines.
fn assert_merged_as_before(out: &Path, inputs: &[&Path]) {
    use certfab::manifests::format::{self, DeviceLine, Trailer};
    let got = std::fs::read_to_string(out).unwrap();
    let header = got.lines().next().unwrap();
    let mut want = format!("{header}\n");
    let mut lines = Vec::new();
    for p in inputs {
        let text = std::fs::read_to_string(p).unwrap();
        let all: Vec<&str> = text.lines().collect();
        for l in &all[1..all.len() - 1] {
            let d: DeviceLine = serde_json::from_str(l).unwrap();
            let d = DeviceLine {
                seq: lines.len() as u64 + 1,
                line_sha256: String::new(),
                ..d
            };
            lines.push(format::encode(&d).unwrap());
        }
    }
    for l in &lines {
        want.push_str(l);
        want.push('\n');
    }
    let trailer = Trailer {
        kind: "trailer".into(),
        count: lines.len() as u64,
        merkle_root: hex::encode(certfab::manifests::merkle::root(&lines)),
        line_sha256: String::new(),
    };
    want.push_str(&format::encode(&trailer).unwrap());
    want.push('\n');
    assert!(
        got == want,
        "{} differs from the merge of its inputs",
        out.display()
    );
    let h: serde_json::Value = serde_json::from_str(header).unwrap();
    assert_eq!(h["ledger"], "merged");
    assert_eq!(h["merged_from"].as_array().unwrap().len(), inputs.len());
}
