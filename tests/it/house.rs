//! The test house itself (issue 11, "Tests"): the copied dev line is a line of its own, the
//! test checkers run in their own Python, and the docs name only test files and test
//! targets that exist (the tests moved into tests/it/).

use crate::common::{self, issue_args, ok, openssl_csr, repo, text, Line};
use std::path::Path;

/// What `pkcs11-tool --list-objects` shows of a line's token (object labels).
fn labels(line: &Line) -> String {
    ok(&line.pkcs11_tool(&["--list-objects"]))
}

/// Item "build the dev line once and copy it per test": each copy points at its own token
/// store (not the template's, not another copy's), keeps the PIN file private, issues
/// certificates OpenSSL verifies under the line's CAs, and what a test does to its token is
/// seen by no other line.
#[test]
fn dev_line_copies_are_lines_of_their_own() {
    let (a, b) = (Line::new(), Line::new());
    let template = common::template();
    for l in [&a, &b] {
        let cfg = std::fs::read_to_string(l.config()).unwrap();
        let conf = l.file("softhsm2.conf");
        assert!(
            cfg.contains(&format!("SOFTHSM2_CONF: {}", conf.display())),
            "{cfg}"
        );
        let store = std::fs::read_to_string(&conf).unwrap();
        assert!(
            store.contains(&format!(
                "directories.tokendir = {}",
                l.file("tokens").display()
            )),
            "{store}"
        );
        for f in [&cfg, &store] {
            assert!(!f.contains(template.to_str().unwrap()), "{f}");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(l.file("pin"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the PIN file stays private");
    }
    let issuing_ca = |l: &Line| labels(l).matches("label:      issuing-ca\n").count();
    let objects = issuing_ca(&a);
    assert!(objects > 0, "{}", labels(&a));

    // What one test does to its token stays in its token.
    ok(&a.pkcs11_tool(&[
        "--delete-object",
        "--type",
        "privkey",
        "--label",
        "issuing-ca",
    ]));
    assert_eq!(issuing_ca(&a), objects - 1, "{}", labels(&a));
    assert_eq!(issuing_ca(&b), objects, "{}", labels(&b));
    for other in [&b, &Line::new()] {
        let csr = openssl_csr(other.path(), "dev", "ec:prime256v1", "/CN=copy", &[]);
        let out = other.file("out");
        let o = other.certfab(&issue_args("generic-iot", &csr, "SN-COPY", &out));
        assert!(o.status.success(), "{}", text(&o));
        let v = other.verify_device(&out.join("cert.pem"));
        assert!(v.status.success(), "{}", text(&v));
    }
    let csr = openssl_csr(a.path(), "dev", "ec:prime256v1", "/CN=copy", &[]);
    let o = a.certfab(&issue_args("generic-iot", &csr, "SN-COPY", &a.file("out")));
    assert_eq!(
        o.status.code(),
        Some(4),
        "its own CA key is gone: {}",
        text(&o)
    );
}

/// Item "test-only Python checkers in a virtual environment under target/": the Python the
/// tests run is a virtual environment in target/pyenv (not the system interpreter) and holds
/// the checkers the tests import.
#[test]
fn test_python_is_the_virtual_environment_under_target() {
    let py = common::python();
    let o = std::process::Command::new(&py)
        .args([
            "-c",
            "import sys, botocore, jwcrypto, jsonschema, parliament, cryptography\n\
             print(sys.prefix != sys.base_prefix)\nprint(sys.prefix)",
        ])
        .output()
        .unwrap();
    let out = ok(&o);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("True"), "a virtual environment: {out}");
    let prefix = Path::new(lines.next().unwrap()).canonicalize().unwrap();
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    assert_eq!(prefix, target.join("pyenv").canonicalize().unwrap());
}

/// Every file under tests/ that README.md, docs/, the scripts and the test sources name exists
/// (so moving a test cannot leave a stale path behind), every `path::name` of a test names a
/// function in that file, and every `cargo test --test NAME` names a test target.
#[test]
fn docs_name_only_test_files_that_exist() {
    let mut files = vec![repo().join("README.md"), repo().join(".ci/run")];
    for dir in [
        "docs",
        "hsm-fixtures",
        "bench",
        "station-scripts",
        "tests/it",
        "tests/py",
        "tests/fixtures",
        "src/cli",
    ] {
        for e in std::fs::read_dir(repo().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                files.push(p);
            }
        }
    }
    let path_re = regex::Regex::new(r"tests/[A-Za-z0-9_./-]*[A-Za-z0-9_/](::[a-z0-9_]+)?").unwrap();
    let target_re = regex::Regex::new(r"cargo test --test ([a-z0-9_]+)").unwrap();
    let mut stale = Vec::new();
    let mut seen = 0;
    for f in &files {
        let Ok(body) = std::fs::read_to_string(f) else {
            continue;
        };
        let name = f.strip_prefix(repo()).unwrap().display().to_string();
        for (i, line) in body.lines().enumerate() {
            for m in path_re.find_iter(line) {
                // A path inside another path (e.g. fuzz/…/tests/x) is not one of ours.
                if line[..m.start()]
                    .ends_with(|c: char| c.is_alphanumeric() || c == '/' || c == '_')
                {
                    continue;
                }
                // Ours: a test source directly under tests/, or one of its folders (another
                // project's tests/data/… named as a source in docs/exports.md is not).
                let rest = &m.as_str()["tests/".len()..];
                let first = rest.split('/').next().unwrap_or_default();
                let ours = ["it", "common", "py", "support", "java", "fixtures"].contains(&first)
                    || (!rest.contains('/') && first.contains(".rs"));
                if !ours {
                    continue;
                }
                seen += 1;
                let (path, func) = match m.as_str().split_once("::") {
                    Some((p, f)) => (p, Some(f)),
                    None => (m.as_str(), None),
                };
                let p = repo().join(path);
                if !p.exists() {
                    stale.push(format!("{name}:{}: {path} does not exist", i + 1));
                } else if let Some(func) = func {
                    let src = std::fs::read_to_string(&p).unwrap_or_default();
                    if !src.contains(&format!("fn {func}(")) && !src.contains(&format!("{func},")) {
                        stale.push(format!("{name}:{}: {path} has no test {func}", i + 1));
                    }
                }
            }
            for c in target_re.captures_iter(line) {
                seen += 1;
                let t = &c[1];
                let exists = repo().join(format!("tests/{t}.rs")).exists()
                    || repo().join(format!("tests/{t}/main.rs")).exists();
                if !exists {
                    stale.push(format!("{name}:{}: no test target `{t}`", i + 1));
                }
            }
        }
    }
    assert!(
        seen > 40,
        "only {seen} test paths found: is the scan broken?"
    );
    assert!(stale.is_empty(), "stale test paths:\n{}", stale.join("\n"));
}
