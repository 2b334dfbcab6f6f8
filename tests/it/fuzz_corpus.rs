//! Replays every committed fuzz input (fuzz/corpus/<target>/) and every past crash
//! (fuzz/regressions/<target>/) through the library entry points the fuzz targets call, on
//! stable Rust: CI guards what fuzzing found without nightly or libFuzzer (docs/fuzzing.md).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(d) => d
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Each target's inputs run without a panic (a panic fails the test and names the file).
#[test]
fn fuzz_corpora_and_regressions_replay_without_panics() {
    let mut total = 0;
    for (name, f) in certfab::fuzzing::TARGETS {
        let corpus = files(&root().join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} has no seed inputs");
        assert!(
            root()
                .join("fuzz_targets")
                .join(format!("{name}.rs"))
                .exists(),
            "fuzz/fuzz_targets/{name}.rs is missing"
        );
        for p in corpus
            .iter()
            .chain(&files(&root().join("regressions").join(name)))
        {
            let data = std::fs::read(p).unwrap();
            if std::panic::catch_unwind(|| f(&data)).is_err() {
                panic!("fuzz target {name} panics on {}", p.display());
            }
            total += 1;
        }
    }
    eprintln!("replayed {total} fuzz inputs");
}

/// The manifest seed is a real signed manifest, its JWS and the root it chains to: the
/// harness's input format reaches a successful verification (so fuzzing explores past the
/// first parse error), and each mutation of it is refused.
#[test]
fn fuzz_manifest_seed_verifies() {
    let data = std::fs::read(root().join("corpus/manifest_verify/batch3")).unwrap();
    let mut parts = data.splitn(3, |b| *b == 0);
    let (m, jws, trust) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let (_, der) = pem_rfc7468::decode_vec(trust).unwrap();
    let root = certfab::CaCert::from_der(der, "root".into()).unwrap();
    let jws = String::from_utf8_lossy(jws);
    let ok = certfab::manifests::verify_bytes(
        Path::new("m"),
        "m.jws",
        m,
        Some(&jws),
        std::slice::from_ref(&root),
    );
    assert!(ok.is_ok(), "{:?}", ok.err());
    let mut bad = m.to_vec();
    bad[10] ^= 1;
    assert!(
        certfab::manifests::verify_bytes(Path::new("m"), "m.jws", &bad, Some(&jws), &[root])
            .is_err()
    );
}

/// Item 16's crash (a zero-padding width of 68345 in --id-template) stays a regression input.
#[test]
fn item16_template_crash_is_kept_as_a_regression() {
    let p = root().join("regressions/id_template/item16-width-68345");
    assert_eq!(std::fs::read_to_string(p).unwrap(), "SN{seq:068345}");
}
