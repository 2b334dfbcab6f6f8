//! Hostile input, found by a review of the line PC as an attacker would see it (issue 10): profile
//! values that overflowed, SAN values that were not names, control characters in what an operator
//! reads, look-alike device ids, unbounded inputs and an id template that broke a batch. Every
//! check runs the real binary on a dev line (SoftHSM, SQLite) and looks at what a user would.

use crate::common;

use crate::common::{derived_profile, openssl, openssl_csr, rust_csr_pem, text, Line};
use std::path::Path;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The 1-based line of the first line of `file` containing `needle`.
fn line_of(file: &Path, needle: &str) -> usize {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .position(|l| l.contains(needle))
        .unwrap()
        + 1
}

/// Runs `certfab issue` and `certfab batch` (one inline CSR) under `profile`.
fn issue_and_batch(line: &Line, profile: &Path, tag: &str) -> [std::process::Output; 2] {
    let dir = line.path();
    let csr = openssl_csr(dir, tag, "ec:prime256v1", "/CN=dev", &[]);
    let issue = line.certfab(&common::issue_args(
        profile.to_str().unwrap(),
        &csr,
        "SN1",
        &dir.join(format!("out-issue-{tag}")),
    ));
    let csv = dir.join(format!("{tag}.csv"));
    std::fs::write(
        &csv,
        format!(
            "device_id,csr\nSN2,\"{}\"\n",
            rust_csr_pem("dev").trim_end()
        ),
    )
    .unwrap();
    let batch = line.certfab(&[
        "batch",
        "--profile",
        profile.to_str().unwrap(),
        "--input",
        csv.to_str().unwrap(),
        "--out",
        dir.join(format!("out-batch-{tag}")).to_str().unwrap(),
    ]);
    [issue, batch]
}

/// Item 10: a validity of 9000 years panicked (exit 101) in issue and batch; an EKU arc above
/// 2^32 was wrapped to another OID. Both are now refused at load with the profile's file:line,
/// exit 2, and nothing is signed.
#[test]
fn item10_validity_overflow_and_huge_oid_arc_exit2_with_file_line() {
    let line = Line::new();
    let dir = line.path();
    let cases = [
        (
            derived_profile(
                dir,
                "long.yaml",
                "generic-iot.yaml",
                &[("duration: 10y", "duration: 9000y")],
            ),
            "9000y",
            "over the limit of 1000 years",
        ),
        (
            derived_profile(
                dir,
                "bigarc.yaml",
                "generic-iot.yaml",
                &[(
                    "extended_key_usage: [clientAuth]",
                    "extended_key_usage: [clientAuth, 2.25.240155868711111111111111111]",
                )],
            ),
            "2.25.2401558687",
            "is over 268435455",
        ),
        (
            derived_profile(
                dir,
                "bigsecond.yaml",
                "generic-iot.yaml",
                &[(
                    "extended_key_usage: [clientAuth]",
                    "extended_key_usage: [clientAuth, 2.999.3]",
                )],
            ),
            "2.999.3",
            "second arc is at most 39",
        ),
    ];
    for (i, (profile, needle, why)) in cases.iter().enumerate() {
        let at = format!("{}:{}", profile.display(), line_of(profile, needle));
        for o in issue_and_batch(&line, profile, &format!("c{i}")) {
            assert_eq!(o.status.code(), Some(2), "{}", text(&o));
            let e = stderr(&o);
            assert!(
                e.contains(&at) && e.contains(why),
                "want {at} and {why:?}: {e}"
            );
            assert!(!e.contains("panicked"), "{e}");
        }
    }
    // Refused at load: no ledger, no output.
    assert!(!line.file("ledger.sqlite").exists());
    assert!(!dir.join("out-issue-c0").exists() && !dir.join("out-batch-c0").exists());

    // The largest arc the X.509 library holds is encoded exactly: OpenSSL reads it back.
    let exact = derived_profile(
        dir,
        "maxarc.yaml",
        "generic-iot.yaml",
        &[(
            "extended_key_usage: [clientAuth]",
            "extended_key_usage: [clientAuth, 1.3.6.1.4.1.99999.268435455]",
        )],
    );
    let csr = openssl_csr(dir, "maxarc", "ec:prime256v1", "/CN=dev", &[]);
    let out = dir.join("out-maxarc");
    let o = line.certfab(&common::issue_args(
        exact.to_str().unwrap(),
        &csr,
        "SN9",
        &out,
    ));
    assert!(o.status.success(), "{}", text(&o));
    let cert = out.join("cert.pem");
    let t = openssl(&[
        "x509",
        "-in",
        cert.to_str().unwrap(),
        "-noout",
        "-ext",
        "extendedKeyUsage",
    ]);
    assert!(
        String::from_utf8_lossy(&t.stdout).contains("1.3.6.1.4.1.99999.268435455"),
        "{}",
        text(&t)
    );
}

/// Item 16: `SN{seq:068345}` panicked in render_id after the batch was recorded, and every
/// resume panicked again. The template is refused before anything starts (exit 2, no batch), a
/// batch recorded by an older certfab with such a template resumes to a clear exit 2 instead of
/// a panic, and `batch close` ends it with the reason in the audit log.
#[test]
fn item16_wide_id_template_refused_before_the_batch_and_stuck_batch_closes() {
    use sha2::Digest;
    let line = Line::new();
    let dir = line.path();
    let bad = "SN{seq:068345}";
    let o = line.certfab(&[
        "batch",
        "--profile",
        "generic-iot",
        "--count",
        "2",
        "--keygen",
        "host",
        "--id-template",
        bad,
        "--plain-keys",
        "--out",
        dir.join("o1").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("width 68345 is over 20"),
        "{}",
        text(&o)
    );
    assert!(!dir.join("o1").exists());
    if line.file("ledger.sqlite").exists() {
        let n: i64 = common::ledger(&line)
            .query_row("SELECT COUNT(*) FROM batches", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "no batch may be recorded for a refused template");
    }

    // A batch an older certfab recorded with that template, stopped before it finished.
    let summary = line.host_batch(
        "generic-iot",
        1,
        "SN{seq:06}",
        &dir.join("o2"),
        &["--plain-keys"],
    );
    let id = summary["batch"].as_str().unwrap().to_string();
    {
        let db = rusqlite::Connection::open(line.file("ledger.sqlite")).unwrap();
        let (source, sha, ca): (String, String, String) = db
            .query_row(
                "SELECT source, profile_sha256, ca FROM batches WHERE id = ?1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        let source = source.replace("SN{seq:06}", bad);
        let key = hex::encode(sha2::Sha256::digest(format!("{sha}\n{ca}\n{source}")));
        db.execute(
            "UPDATE batches SET source = ?2, input_key = ?3, finished_at = NULL WHERE id = ?1",
            rusqlite::params![id, source, key],
        )
        .unwrap();
    }
    let st = line.certfab(&["batch", "status", &id]);
    assert!(common::ok(&st).contains("resume it"), "{}", text(&st));
    let o = line.certfab(&["batch", "resume", &id]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(stderr(&o).contains("width 68345 is over 20") && !stderr(&o).contains("panicked"));

    let o = line.certfab(&["batch", "close", &id, "--reason", "id template was wrong"]);
    assert!(o.status.success(), "{}", text(&o));
    let st = common::ok(&line.certfab(&["batch", "status", &id]));
    assert!(
        st.contains(", finished ") && !st.contains("resume it"),
        "{st}"
    );
    let log = common::ok(&line.certfab(&["log", "show", "--kind", "batch_closed"]));
    assert!(
        log.contains("id template was wrong") && log.contains(&id),
        "{log}"
    );
    // Closing twice is refused, naming why.
    let o = line.certfab(&["batch", "close", &id, "--reason", "again"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(stderr(&o).contains("already finished"));
}

/// Item 11: `san: dns: "{csv.site}.example"` with site `a/../b` or `x y` signed invalid
/// dNSNames, and a URI with a space; a critical nameConstraints extension passed on a leaf.
/// Now each bad device is rejected (exit 10, its id named, nothing signed for it) while good
/// rows are issued, and CA-only extensions are refused at profile load.
#[test]
fn item11_san_syntax_checked_per_device_and_ca_only_extensions_refused() {
    let line = Line::new();
    let dir = line.path();
    let profile = derived_profile(
        dir,
        "san.yaml",
        "generic-iot.yaml",
        &[(
            "validity:",
            "san:\n  - dns: \"{csv.site}.example\"\n  - uri: \"urn:dev:{csv.site}\"\nvalidity:",
        )],
    );
    let mut csv = String::from("device_id,csr,site\n");
    for (id, site) in [
        ("GOOD-1", "hall-1"),
        ("BAD-DOTS", "a/../b"),
        ("BAD-SPACE", "x y"),
    ] {
        csv.push_str(&format!(
            "{id},\"{}\",{site}\n",
            rust_csr_pem(id).trim_end()
        ));
    }
    let input = dir.join("san.csv");
    std::fs::write(&input, csv).unwrap();
    let out = dir.join("out");
    let o = line.certfab(&[
        "--json",
        "batch",
        "--profile",
        profile.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let problems = v["problems"].as_array().unwrap();
    for id in ["BAD-DOTS", "BAD-SPACE"] {
        let p = problems
            .iter()
            .find(|p| p["device_id"] == id)
            .unwrap_or_else(|| panic!("{id} not reported: {v}"));
        let reason = p["reason"].as_str().unwrap();
        assert!(reason.contains("SAN dns"), "{id}: {reason}");
        assert!(!out.join(id).exists(), "{id} got files");
    }
    assert_eq!(v["issued"], 1, "{v}");
    let san = common::openssl_x509(&out.join("GOOD-1/cert.pem"), &["-ext", "subjectAltName"]);
    assert!(
        san.contains("DNS:hall-1.example") && san.contains("URI:urn:dev:hall-1"),
        "{san}"
    );
    let signed: i64 = common::ledger(&line)
        .query_row(
            "SELECT COUNT(*) FROM certificates WHERE device_id LIKE 'BAD-%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(signed, 0, "no serial may be reserved for a refused SAN");

    // `certfab issue` refuses the same with exit 3 (the URI check, on its own profile).
    let uri_only = derived_profile(
        dir,
        "uri.yaml",
        "generic-iot.yaml",
        &[(
            "validity:",
            "san:\n  - uri: \"urn:dev:{device_id}\"\nvalidity:",
        )],
    );
    let csr = openssl_csr(dir, "u", "ec:prime256v1", "/CN=dev", &[]);
    let o = line.certfab(&common::issue_args(
        uri_only.to_str().unwrap(),
        &csr,
        "SN 1",
        &dir.join("out-uri"),
    ));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(stderr(&o).contains("SAN uri") && stderr(&o).contains("not a URI character"));

    // CA-only extensions in a device profile: refused where they are written, exit 2.
    for (oid, name, der) in [
        (
            "2.5.29.30",
            "nameConstraints",
            "3011a00f300d820b6578616d706c652e636f6d",
        ),
        ("2.5.29.36", "policyConstraints", "3003800100"),
        ("2.5.29.54", "inhibitAnyPolicy", "020100"),
    ] {
        let p = derived_profile(
            dir,
            &format!("ca-only-{name}.yaml"),
            "generic-iot.yaml",
            &[(
                "validity:",
                &format!(
                    "extensions:\n  - {{oid: {oid}, critical: true, der: \"{der}\"}}\nvalidity:"
                ),
            )],
        );
        let csr = openssl_csr(dir, name, "ec:prime256v1", "/CN=dev", &[]);
        let o = line.certfab(&common::issue_args(
            p.to_str().unwrap(),
            &csr,
            "SN2",
            &dir.join(format!("out-{name}")),
        ));
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let at = format!("{}:{}", p.display(), line_of(&p, oid));
        assert!(
            stderr(&o).contains(&at)
                && stderr(&o).contains(&format!("{name}) belongs on CA certificates only")),
            "{}",
            text(&o)
        );
    }
}

/// Runs certfab under python's resource module; returns the output and the child's peak RSS
/// in KiB (ru_maxrss of RUSAGE_CHILDREN, an independent measurement).
fn certfab_rss(line: &Line, args: &[&str]) -> (std::process::Output, u64) {
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
        .output()
        .unwrap();
    let rss = stderr(&o)
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("maxrss ").map(|v| v.trim().parse().unwrap()))
        .unwrap();
    (o, rss)
}

/// Item 15: a 100 MB CSV field took 538 MB RSS; a 200 MB profile was accepted; YAML nested
/// 100k deep took 25 s of CPU. Now: the field's row stops the batch with its line and the limit
/// (the rows before it issued, a resume after the fix finishes it) at a small RSS; oversized or
/// deeply nested profiles and configs are refused at once, naming the file and the limit.
#[test]
fn item15_unbounded_inputs_are_bounded_with_clear_errors() {
    let line = Line::new();
    let dir = line.path();

    // CSV: a 100 MB field on the third device row.
    let input = dir.join("big.csv");
    let good = |id: &str| format!("{id},\"{}\"\n", rust_csr_pem(id).trim_end());
    let head = format!("device_id,csr\n{}{}", good("DEV-1"), good("DEV-2"));
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        f.write_all(head.as_bytes()).unwrap();
        f.write_all(b"DEV-3,\"").unwrap();
        let chunk = vec![b'A'; 1 << 20];
        for _ in 0..100 {
            f.write_all(&chunk).unwrap();
        }
        f.write_all(b"\"\n").unwrap();
        f.write_all(good("DEV-4").as_bytes()).unwrap();
    }
    let out = dir.join("out");
    let args = [
        "batch",
        "--profile",
        "generic-iot",
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let (o, rss_kib) = certfab_rss(&line, &args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let e = stderr(&o);
    let at = head.lines().count() + 1;
    assert!(
        e.contains(&format!("line {at}:"))
            && e.contains("1024 KiB row limit")
            && e.contains("resume"),
        "{e}"
    );
    assert!(
        rss_kib < 100 * 1024,
        "peak RSS {rss_kib} KiB for a 100 MB field"
    );
    eprintln!(
        "item15: peak RSS {} MiB with a 100 MB CSV field",
        rss_kib / 1024
    );
    assert!(out.join("DEV-1/cert.pem").exists() && out.join("DEV-2/cert.pem").exists());
    assert!(!out.join("DEV-4").exists(), "nothing past the bad row");
    let st = common::ok(&line.certfab(&["batch", "status"]));
    assert!(st.contains("resume it"), "{st}");
    // Fixed input: the same command resumes and finishes the batch.
    std::fs::write(&input, format!("{head}{}{}", good("DEV-3"), good("DEV-4"))).unwrap();
    let o = line.certfab(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.join("DEV-3/cert.pem").exists() && out.join("DEV-4/cert.pem").exists());

    // A field over 64 KiB in an otherwise short row rejects that row only.
    let input2 = dir.join("field.csv");
    std::fs::write(
        &input2,
        format!(
            "device_id,csr,note\nDEV-5,\"{}\",n\nDEV-6,\"{}\",{}\n",
            rust_csr_pem("DEV-5").trim_end(),
            rust_csr_pem("DEV-6").trim_end(),
            "n".repeat(70_000)
        ),
    )
    .unwrap();
    let o = line.certfab(&[
        "--json",
        "batch",
        "--profile",
        "generic-iot",
        "--input",
        input2.to_str().unwrap(),
        "--out",
        dir.join("out2").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = &v["problems"][0];
    assert_eq!(p["device_id"], "DEV-6", "{v}");
    assert_eq!(v["issued"], 1, "{v}");
    assert!(p["reason"]
        .as_str()
        .unwrap()
        .contains("field note is 70000 bytes, over the 64 KiB limit"));

    // Profiles and the site config: size and nesting.
    let big = dir.join("big.yaml");
    let mut t = std::fs::read_to_string(common::repo().join("profiles/generic-iot.yaml")).unwrap();
    t.push_str(&format!("# {}\n", "x".repeat(2 << 20)));
    std::fs::write(&big, t).unwrap();
    let deep = dir.join("deep.yaml");
    std::fs::write(
        &deep,
        format!(
            "name: deep\nx: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
    )
    .unwrap();
    let csr = openssl_csr(dir, "p", "ec:prime256v1", "/CN=dev", &[]);
    for (p, want) in [
        (&big, format!("{}: over the 1024 KiB limit", big.display())),
        (
            &deep,
            format!("{}:2: nested deeper than 64 levels", deep.display()),
        ),
    ] {
        let t0 = std::time::Instant::now();
        let o = line.certfab(&common::issue_args(
            p.to_str().unwrap(),
            &csr,
            "SN1",
            &dir.join("o"),
        ));
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(stderr(&o).contains(&want), "want {want}: {}", text(&o));
        assert!(t0.elapsed().as_secs() < 5, "took {:?}", t0.elapsed());
    }
    let cfg = std::fs::read_to_string(line.config()).unwrap();
    std::fs::write(line.config(), format!("{cfg}# {}\n", "x".repeat(2 << 20))).unwrap();
    let o = line.certfab(&["batch", "status"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("over the 1024 KiB limit"),
        "{}",
        text(&o)
    );
}

/// Item 12: device ids with ESC, NUL or a line feed were printed raw by the batch summary and
/// `batch status` (a fake status line could be forged) and kept raw in the HTML report. Every
/// human-facing output now shows them escaped: the raw bytes are absent, the escaped forms there.
#[test]
fn item12_control_characters_escaped_in_summary_status_errors_and_reports() {
    let line = Line::new();
    let dir = line.path();
    let forged = "\n  line 99 (SN-FAKE): duplicate: same device and key as line 2; issued once";
    let ids = [
        "EVIL\x1b[2J\x1b[1;32mPASS".to_string(),
        "NUL\0ID".to_string(),
        format!("LF{forged}"),
    ];
    let mut csv = format!(
        "device_id,csr\nGOOD-1,\"{}\"\n",
        rust_csr_pem("g").trim_end()
    );
    for id in &ids {
        csv.push_str(&format!("\"{id}\",\"{}\"\n", rust_csr_pem("x").trim_end()));
    }
    let input = dir.join("evil.csv");
    std::fs::write(&input, csv).unwrap();
    let forged_line = "\n  line 99 (SN-FAKE)";
    let check = |what: &str, bytes: &[u8]| {
        let s = String::from_utf8_lossy(bytes);
        assert!(
            !bytes.contains(&0x1b) && !bytes.contains(&0),
            "{what}: raw ESC/NUL:\n{s}"
        );
        assert!(
            !s.contains(forged_line),
            "{what}: forged line printed:\n{s}"
        );
    };
    let o = line.certfab(&[
        "batch",
        "--profile",
        "generic-iot",
        "--input",
        input.to_str().unwrap(),
        "--out",
        dir.join("out").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    let summary = String::from_utf8_lossy(&o.stdout).into_owned();
    check("summary", &o.stdout);
    check("summary stderr", &o.stderr);
    for want in [
        "(EVIL\\u{1b}[2J\\u{1b}[1;32mPASS)",
        "(NUL\\0ID)",
        "(LF\\n  line 99 (SN-FAKE): duplicate",
    ] {
        assert!(summary.contains(want), "summary lacks {want}:\n{summary}");
    }
    let st = line.certfab(&["batch", "status"]);
    check("status", &st.stdout);
    assert!(String::from_utf8_lossy(&st.stdout).contains("(LF\\n  line 99"));

    // An error quoting a device id.
    let csr = openssl_csr(dir, "e", "ec:prime256v1", "/CN=dev", &[]);
    let o = line.certfab(&common::issue_args(
        "generic-iot",
        &csr,
        &ids[0],
        &dir.join("o"),
    ));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    check("error", &o.stderr);
    assert!(stderr(&o).contains("\\u{1b}[2J"), "{}", text(&o));

    // The audit report, as text and as HTML.
    let html = dir.join("report.html");
    let o = line.certfab(&["audit", "--html", html.to_str().unwrap()]);
    check("audit text", &o.stdout);
    let page = std::fs::read(&html).unwrap();
    check("audit html", &page);
    let page = String::from_utf8_lossy(&page);
    assert!(
        page.contains("EVIL\\u{1b}[2J") && page.contains("NUL\\0ID"),
        "ids not shown escaped"
    );
}

/// Item 13: under `allow_unicode: true`, `SN1`, `ＳＮ1` (fullwidth), `ЅN1` (Cyrillic) and `sn1`
/// got four identities, and case variants got two under the ASCII policy. Now they are one
/// identity: the first spelling is issued, every other one is refused naming it (exit 3), in
/// `issue` and within one batch, while the recorded spelling still gets its certificate back.
#[test]
fn item13_fullwidth_and_cyrillic_fold_to_one_identity() {
    let line = Line::new();
    let dir = line.path();
    let unicode = derived_profile(
        dir,
        "uni.yaml",
        "generic-iot.yaml",
        &[(
            "\nstation:\n",
            "\nnames:\n  allow_unicode: true\nstation:\n",
        )],
    );
    let issue = |profile: &str, id: &str, tag: &str| {
        let csr = openssl_csr(dir, tag, "ec:prime256v1", "/CN=dev", &[]);
        (
            line.certfab(&common::issue_args(
                profile,
                &csr,
                id,
                &dir.join(format!("o-{tag}")),
            )),
            csr,
        )
    };
    let uni = unicode.to_str().unwrap();
    let (first, csr) = issue(uni, "SN1", "a");
    assert!(first.status.success(), "{}", text(&first));
    for (i, other) in ["ＳＮ1", "\u{405}N1", "sn1", "Sn1"].iter().enumerate() {
        let (o, _) = issue(uni, other, &format!("u{i}"));
        assert_eq!(o.status.code(), Some(3), "{other}: {}", text(&o));
        assert!(stderr(&o).contains("same identity as SN1"), "{}", text(&o));
    }
    // The recorded spelling with its key gets its certificate back, no new serial.
    let again = line.certfab(&common::issue_args(uni, &csr, "SN1", &dir.join("o-again")));
    assert!(again.status.success(), "{}", text(&again));
    let n: i64 = common::ledger(&line)
        .query_row("SELECT COUNT(*) FROM certificates", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1, "one identity, one certificate");

    // ASCII policy: case variants are one identity too, also inside one batch.
    let (o, _) = issue("generic-iot", "GW-7", "g1");
    assert!(o.status.success(), "{}", text(&o));
    let (o, _) = issue("generic-iot", "gw-7", "g2");
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let input = dir.join("case.csv");
    std::fs::write(
        &input,
        format!(
            "device_id,csr\nDEV-A,\"{}\"\ndev-a,\"{}\"\n",
            rust_csr_pem("a").trim_end(),
            rust_csr_pem("b").trim_end()
        ),
    )
    .unwrap();
    let o = line.certfab(&[
        "--json",
        "batch",
        "--profile",
        "generic-iot",
        "--input",
        input.to_str().unwrap(),
        "--out",
        dir.join("ob").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["issued"], 1, "{v}");
    assert_eq!(v["problems"][0]["device_id"], "dev-a", "{v}");
    assert!(v["problems"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("same identity as DEV-A"));
}
