//! Golden TBS tests: every shipped profile (profiles/*.yaml) prepared in process with a fixed
//! clock, a fixed serial, a fixed device key and a fixed software CA, then signed by that CA
//! (`SoftSigner`) and verified. The TBSCertificate bytes must equal the checked-in golden file
//! byte for byte, so any change to what certfab puts in a certificate shows up as a diff to
//! review. `UPDATE_GOLDEN=1 cargo test --lib golden` rewrites the files (testdata/golden/README.md).

use super::{prepare, sign, IssueContext, KeySource, Request};
use crate::clock::{Clock, FixedClock};
use crate::crypto::{Signer, SoftSigner};
use crate::profile::Profile;
use crate::x509::{AttrType, CaCert, FixedSerials};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use time::macros::datetime;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn golden_dir() -> PathBuf {
    repo().join("src/issue/testdata/golden")
}

/// A P-256 key from a fixed scalar.
fn key(byte: u8) -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[byte; 32]).expect("a valid P-256 scalar")
}

/// The fixed CA: a self-signed P-256 root without expiry (the IDevID profile has none either)
/// whose subject carries Matter vendor FFF1 (so the
/// Matter DAC profile's issuer rules hold too). Its own serial is random, but no device TBS
/// contains it: only its name, key identifier and validity go in.
fn ca() -> (SoftSigner, CaCert) {
    let signer = SoftSigner::from_p256(key(0x11));
    let at = |s: &str| AttrType::from_str(s).expect("attribute");
    let subject = crate::x509::name(&[
        (at("CN"), "certfab golden CA".into()),
        (at("O"), "certfab development".into()),
        (at("matter-vid"), "FFF1".into()),
    ])
    .expect("name");
    let der = crate::ca::self_sign(
        &signer,
        &crate::ca::CaParams {
            subject: Some(subject),
            not_before: datetime!(2025-01-01 00:00:00 UTC),
            not_after: None,
            path_len: Some(0),
            serial_prefix: 0x01,
        },
    )
    .expect("self-signed CA");
    (
        signer,
        CaCert::from_der(der, "golden CA".into()).expect("CA"),
    )
}

fn device_spki() -> Vec<u8> {
    use p256::pkcs8::EncodePublicKey;
    key(0x22)
        .verifying_key()
        .to_public_key_der()
        .expect("SPKI")
        .as_bytes()
        .to_vec()
}

fn shipped_profiles() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("profiles"))
        .expect("profiles/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

/// The TBS `profile` gives the fixed device at the fixed time, signed and verified.
fn golden_tbs(profile: &Profile, ca: &(SoftSigner, CaCert)) -> Vec<u8> {
    let clock = FixedClock(datetime!(2026-03-01 12:00:00 UTC));
    let serials = FixedSerials([0x5a; crate::x509::RANDOM_BYTES]);
    let ctx = IssueContext {
        profile,
        ca: &ca.1,
        signature: ca.0.algorithm(),
        serial_prefix: 0x42,
        now: clock.now(),
        serials: &serials,
    };
    let req = Request {
        device_id: Some("GOLDEN-0001".into()),
        key: KeySource::PublicKey(device_spki()),
        vars: [("var.pid", "8000"), ("var.batch", "b-golden")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
    };
    let prepared = prepare(&ctx, &req)
        .unwrap_or_else(|e| panic!("profile {} refuses the golden device: {e}", profile.name));
    let tbs = prepared.tbs.clone();
    // Signed by the software CA and verified with its certificate's key, as the HSM path is.
    let issued = sign(prepared, &ca.1, &ca.0).expect("signature verifies");
    let parsed = x509_parser::parse_x509_certificate(&issued.der)
        .expect("parses")
        .1;
    assert_eq!(
        parsed.tbs_certificate.as_ref(),
        &tbs[..],
        "the certificate carries the TBS"
    );
    tbs
}

#[test]
fn item5_golden_tbs_for_each_shipped_profile() {
    let ca = ca();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let dir = golden_dir();
    let mut expected_files = Vec::new();
    let mut diffs = Vec::new();
    for path in shipped_profiles() {
        let profile = Profile::load(&path).expect("shipped profile loads");
        let tbs = golden_tbs(&profile, &ca);
        // Same inputs, same bytes: nothing in preparation reads the clock or the RNG itself.
        assert_eq!(
            golden_tbs(&profile, &ca),
            tbs,
            "{} is not deterministic",
            profile.name
        );
        let file = dir.join(format!("{}.tbs.hex", profile.name));
        expected_files.push(file.file_name().unwrap_or_default().to_owned());
        let hex_now = format!("{}\n", hex::encode(&tbs));
        if update {
            std::fs::create_dir_all(&dir).expect("golden dir");
            std::fs::write(&file, &hex_now).expect("write golden");
            continue;
        }
        match std::fs::read_to_string(&file) {
            Ok(want) if want == hex_now => {}
            Ok(want) => diffs.push(format!(
                "{}: TBS differs from {} (first difference at byte {}); review the change, then run UPDATE_GOLDEN=1 cargo test --lib golden",
                profile.name,
                file.display(),
                first_difference(want.trim(), hex_now.trim()) / 2
            )),
            Err(e) => diffs.push(format!(
                "{}: no golden file {} ({e}); run UPDATE_GOLDEN=1 cargo test --lib golden",
                profile.name,
                file.display()
            )),
        }
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    // No golden file outlives its profile.
    let mut present: Vec<_> = std::fs::read_dir(&dir)
        .expect("golden dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tbs.hex"))
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(
        present, expected_files,
        "golden files without a shipped profile"
    );
}

fn first_difference(a: &str, b: &str) -> usize {
    a.bytes()
        .zip(b.bytes())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

#[test]
fn item5_the_serial_and_the_clock_reach_the_tbs() {
    // A fixed source is what makes the goldens possible: the serial and times in the TBS are
    // exactly the ones given.
    let ca = ca();
    let profile = Profile::load(&repo().join("profiles/generic-iot.yaml")).expect("profile");
    let tbs = golden_tbs(&profile, &ca);
    use x509_parser::prelude::FromDer;
    let (_, parsed) = x509_parser::certificate::TbsCertificate::from_der(&tbs).expect("TBS");
    let mut serial = vec![0x42];
    serial.extend([0x5a; crate::x509::RANDOM_BYTES]);
    assert_eq!(parsed.raw_serial(), &serial[..]);
    // generic-iot backdates by 1 h.
    assert_eq!(
        parsed.validity().not_before.timestamp(),
        datetime!(2026-03-01 11:00:00 UTC).unix_timestamp()
    );
}
