//! Manifests too large to hold: `manifest build` and `manifest verify` stream the file (issue
//! 14, docs/performance.md "Memory"). What changed is where the checks look, so these tests put
//! the damage past the first MiB, where a reader that stopped early or checked only what it
//! held would miss it, and check that the line is still named.

use crate::common::{rust_pubkey_pem, text, Line};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;

/// Issues `n` devices from known public keys (bundle layout: quick) and builds their manifest
/// at `out`; returns the manifest's lines.
fn big_manifest(l: &Line, n: usize, out: &Path) -> Vec<String> {
    let mut csv = String::from("device_id,pubkey\n");
    for i in 1..=n {
        writeln!(csv, "STREAM-{i:05},\"{}\"", rust_pubkey_pem().trim_end()).unwrap();
    }
    let input = l.file("stream.csv");
    std::fs::write(&input, csv).unwrap();
    let o = l.certfab(&[
        "--json",
        "batch",
        "--profile",
        "generic-iot",
        "--input",
        input.to_str().unwrap(),
        "--layout",
        "bundle",
        "--out",
        l.file("stream-out").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let batch = serde_json::from_slice::<Value>(&o.stdout).unwrap()["batch"]
        .as_str()
        .unwrap()
        .to_string();
    let o = l.manifest_build(&[&batch], None, out);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `certfab --json manifest verify FILE --trust root.pem`, with `FILE.jws` beside it.
fn verify(l: &Line, m: &Path) -> (Option<i32>, Value) {
    let o = l.certfab(&[
        "--json",
        "manifest",
        "verify",
        m.to_str().unwrap(),
        "--trust",
        l.file("ca/root.pem").to_str().unwrap(),
    ]);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    (o.status.code(), v)
}

/// Writes `lines` as a manifest at `name` with the original signature beside it.
fn tampered(l: &Line, name: &str, lines: &[String], jws: &Path) -> std::path::PathBuf {
    let p = l.file(name);
    std::fs::write(&p, format!("{}\n", lines.join("\n"))).unwrap();
    std::fs::copy(jws, l.file(&format!("{name}.jws"))).unwrap();
    p
}

/// The first device line that starts past the first MiB of the file (1-based line number).
fn line_past_first_mib(lines: &[String]) -> usize {
    let mut offset = 0;
    for (i, s) in lines.iter().enumerate() {
        if offset > 1 << 20 && i + 1 < lines.len() {
            return i + 1;
        }
        offset += s.len() + 1;
    }
    panic!("the manifest is not larger than 1 MiB ({offset} bytes)");
}

#[test]
fn streamed_verify_names_an_entry_corrupted_past_the_first_mib() {
    let l = Line::new();
    let m = l.file("big.jsonl");
    let lines = big_manifest(&l, 800, &m);
    let jws = l.file("big.jsonl.jws");
    let (code, v) = verify(&l, &m);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["count"], 800);
    assert_eq!(v["states"]["signed"], 800, "{v}");

    // One character of a certificate past the first MiB.
    let n = line_past_first_mib(&lines);
    let mut bad = lines.clone();
    let line: &mut String = &mut bad[n - 1];
    let at = line
        .find("\"cert\":\"-----BEGIN CERTIFICATE-----\\n")
        .unwrap()
        + 40;
    let old = line.as_bytes()[at];
    line.replace_range(at..at + 1, if old == b'A' { "B" } else { "A" });
    let p = tampered(&l, "cert.jsonl", &bad, &jws);
    let (code, v) = verify(&l, &p);
    assert_eq!(code, Some(3), "{v}");
    let problems = v["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["line"] == n),
        "no problem names line {n}: {v}"
    );
    assert!(
        problems.iter().any(|p| p["line"].is_null()),
        "the signature over the changed bytes must fail too: {v}"
    );
}

#[test]
fn streamed_verify_names_a_repeated_device_past_the_first_mib() {
    let l = Line::new();
    let m = l.file("rep.jsonl");
    let lines = big_manifest(&l, 800, &m);
    let jws = l.file("rep.jsonl.jws");
    // Device line 2 (the first device) again, in place of a line past the first MiB: the
    // repeat is found by a fixed-size filter and named by the second pass over the file.
    let n = line_past_first_mib(&lines);
    let mut bad = lines.clone();
    bad[n - 1] = lines[1].clone();
    let first: Value = serde_json::from_str(&lines[1]).unwrap();
    let id = first["device_id"].as_str().unwrap();
    let p = tampered(&l, "dup.jsonl", &bad, &jws);
    let (code, v) = verify(&l, &p);
    assert_eq!(code, Some(3), "{v}");
    let problems = v["problems"].as_array().unwrap();
    let want = format!("device id {id} is already on line 2");
    assert!(
        problems
            .iter()
            .any(|p| p["line"] == n && p["msg"].as_str().unwrap().contains(&want)),
        "no problem on line {n} says {want:?}: {v}"
    );
}

/// `manifest verify A B` and `manifest merge A B` no longer hold the devices (issue 14): the
/// repeats across files are found by filters and named by a second read of the files. A
/// ledger whose record of manifest #1's devices is lost builds them again into #2 (an entry
/// replayed): verifying both names every replayed certificate with both files and lines, as
/// when every device was held; merging them names each repeated device id, serial and key;
/// the same manifest given twice is one manifest (nothing replayed).
#[test]
fn replays_across_manifests_are_named_by_verify_and_merge() {
    let l = Line::new();
    let m1 = l.file("r1.jsonl");
    let n = 300;
    let lines = big_manifest(&l, n, &m1);
    let batch = serde_json::from_str::<Value>(&lines[1]).unwrap()["batch"]
        .as_str()
        .unwrap()
        .to_string();
    l.ledger_exec(
        "DELETE FROM manifest_devices; UPDATE devices SET state = 'signed' WHERE state = 'exported'",
    );
    let m2 = l.file("r2.jsonl");
    let o = l.manifest_build(&[&batch], None, &m2);
    assert!(o.status.success(), "{}", text(&o));
    let root = l.file("ca/root.pem");
    let verify_many = |files: &[&Path]| {
        let mut a = vec!["--json", "manifest", "verify"];
        a.extend(files.iter().map(|p| p.to_str().unwrap()));
        a.extend(["--trust", root.to_str().unwrap()]);
        l.certfab(&a)
    };
    let o = verify_many(&[&m1, &m2]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["manifests"][0]["ok"], true, "{v}");
    assert_eq!(v["manifests"][1]["ok"], true, "{v}");
    let problems: Vec<&str> = v["chain"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(problems.len(), n, "{v}");
    for (i, raw) in lines[1..=n].iter().enumerate() {
        let d: Value = serde_json::from_str(raw).unwrap();
        let want = format!(
            "device {} (certificate {}) is in {}:{} and {}:{}",
            d["device_id"].as_str().unwrap(),
            &d["cert_sha256"].as_str().unwrap()[..16],
            m1.display(),
            i + 2,
            m2.display(),
            i + 2
        );
        assert_eq!(problems[i], want);
    }
    // Text output: the same, on stderr.
    let o = l.certfab(&[
        "manifest",
        "verify",
        m1.to_str().unwrap(),
        m2.to_str().unwrap(),
        "--trust",
        root.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("chain: {}", problems[n - 1])),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains(&format!(
            "0 of 2 manifest(s) do not verify, {n} chain problem(s)"
        )),
        "{}",
        text(&o)
    );

    // The same file given twice replays nothing (it is one manifest given twice).
    let o = verify_many(&[&m1, &m1]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["chain"]["problems"].as_array().unwrap().len(),
        1,
        "only the chain link is wrong: {v}"
    );
    assert!(
        v["chain"]["problems"][0]
            .as_str()
            .unwrap()
            .contains("given twice"),
        "{v}"
    );

    let out = l.file("r12.jsonl");
    let o = l.certfab(&[
        "manifest",
        "merge",
        m1.to_str().unwrap(),
        m2.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--trust",
        root.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let t = text(&o);
    let first: Value = serde_json::from_str(&lines[1]).unwrap();
    for (what, key) in [
        ("device id", "device_id"),
        ("serial", "serial"),
        ("public key", "spki_sha256"),
    ] {
        let want = format!(
            "{what} {} is in {}:2 and {}:2",
            first[key].as_str().unwrap(),
            m1.display(),
            m2.display()
        );
        assert!(t.contains(&want), "no {want:?} in {t}");
    }
    assert!(
        t.contains(&format!(
            "refusing to merge: {} device(s) appear in more than one manifest",
            3 * n
        )),
        "{t}"
    );
    // Fifty are named, the rest counted.
    assert_eq!(
        t.lines().filter(|l| l.contains(" is in ")).count(),
        50,
        "{t}"
    );
    assert!(!out.exists() && !l.file("r12.jsonl.jws").exists());
}
