//! The PKCS#11 token matrix (docs/hsm-compat.md): one smoke scenario, run on every token
//! hsm-fixtures/dev-line.sh can build here — SoftHSM2, a TPM 2.0 through tpm2-pkcs11 on
//! swtpm, kryoptic, and SoftHSM exported by a `p11-kit server` to p11-kit-client.so.
//!
//! On each: the whole CA ceremony of the dev line (keygen in the token, self-sign, CSR, sign,
//! import), the CA keys read back by pkcs11-tool (an independent PKCS#11 client) as
//! sensitive, never extractable and sign-only, `certfab hsm info`, one `certfab issue` of a
//! P-256 device key verified by OpenSSL, and `certfab hsm bench`.

use crate::common::*;

/// The CA keys every dev line holds.
const CA_KEYS: [&str; 6] = [
    "root-ca",
    "issuing-ca",
    "issuing-ca-2",
    "matter-paa",
    "matter-pai",
    "manifest-signer",
];

/// One definition for every token: the dev line, key protection, info, issue, bench.
fn token_smoke(token: Token) {
    let line = Line::on(token);
    assert_eq!(
        std::fs::read_to_string(line.file("token-kind"))
            .unwrap()
            .trim(),
        token.name()
    );
    for f in ["certfab.yaml", "ca/root.pem", "ca/issuing.pem", "stop"] {
        assert!(line.file(f).exists(), "{token:?} line has no {f}");
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(line.file("pin")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "{token:?}: pin file mode");

    // The CA keys as an independent client sees them: sensitive, always sensitive, never
    // extractable, usable to sign and for nothing else.
    let listing = ok(&line.pkcs11_tool_any(&["--list-objects", "--type", "privkey"]));
    for key in CA_KEYS {
        let block = listing
            .split("Private Key Object")
            .find(|b| b.contains(&format!("label:      {key}\n")))
            .unwrap_or_else(|| panic!("{token:?}: no private key {key} in\n{listing}"));
        let field = |name: &str| {
            block
                .lines()
                .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("{token:?}: {key} has no {name} line:\n{block}"))
        };
        let usage = field("Usage:");
        assert!(usage.contains("sign"), "{token:?} {key} usage: {usage}");
        for forbidden in ["decrypt", "unwrap", "derive"] {
            assert!(
                !usage.contains(forbidden),
                "{token:?} {key} can {forbidden}: {usage}"
            );
        }
        let access = field("Access:");
        for needed in ["sensitive", "always sensitive", "never extractable"] {
            assert!(
                access.split(", ").any(|a| a == needed),
                "{token:?} {key} access lacks {needed}: {access}"
            );
        }
        assert!(
            !access.split(", ").any(|a| a == "extractable"),
            "{token:?} {key}: {access}"
        );
    }

    // hsm info: the selected token and its CA keys with their protection.
    let info = ok_json(&line.certfab(&["--json", "hsm", "info"]));
    let selected: Vec<&serde_json::Value> = info["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["selected"] == true)
        .collect();
    assert_eq!(selected.len(), 1, "{token:?}: {info}");
    let t = selected[0];
    assert_eq!(t["label"], "certfab-dev");
    let mechanisms: Vec<&str> = t["mechanisms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(
        mechanisms.contains(&"CKM_ECDSA"),
        "{token:?}: {mechanisms:?}"
    );
    for key in CA_KEYS {
        let o = t["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["class"] == "private-key" && o["label"] == key)
            .unwrap_or_else(|| panic!("{token:?}: hsm info has no {key}: {t}"));
        assert_eq!(o["sensitive"], true, "{token:?} {key}");
        assert_eq!(o["extractable"], false, "{token:?} {key}");
        assert_eq!(o["sign"], true, "{token:?} {key}");
    }

    // One device certificate for a P-256 key, checked by OpenSSL up to the dev root.
    let work = tempfile::tempdir().unwrap();
    let csr = openssl_csr(work.path(), "dev", "ec:prime256v1", "/CN=matrix-0001", &[]);
    let out = work.path().join("out");
    ok(&line.certfab(&issue_args("generic-iot", &csr, "matrix-0001", &out)));
    let cert = out.join("cert.pem");
    let v = line.verify_device(&cert);
    assert!(v.status.success(), "{token:?}: {}", text(&v));
    let pubkey_cert = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"]);
    let pubkey_csr = openssl(&["req", "-in", csr.to_str().unwrap(), "-noout", "-pubkey"]);
    assert_eq!(pubkey_cert.stdout, pubkey_csr.stdout, "{token:?}");

    // The token's raw signing rate with one and two sessions.
    let bench = ok_json(&line.certfab(&[
        "--json",
        "hsm",
        "bench",
        "--key",
        "issuing",
        "--sessions",
        "1,2",
        "--seconds",
        "1",
    ]));
    let results = bench["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{token:?}: {bench}");
    for r in results {
        let rate = r["per_second"].as_f64().unwrap();
        assert!(rate > 0.0, "{token:?}: {bench}");
        eprintln!(
            "token_matrix {}: {} session(s): {:.0} signatures/s",
            token.name(),
            r["sessions"],
            rate
        );
    }
}

#[test]
fn token_matrix_softhsm() {
    token_smoke(Token::SoftHsm);
}

/// Also the regression test of `ca keygen` on tpm2-pkcs11 ("attr mismatch: 0x10a"): the dev
/// line's ceremony generates every CA key on the TPM.
#[test]
fn token_matrix_tpm2() {
    token_smoke(Token::Tpm2);
}

#[test]
fn token_matrix_kryoptic() {
    token_smoke(Token::Kryoptic);
}

#[test]
fn token_matrix_p11_kit() {
    token_smoke(Token::P11Kit);
}

/// RSA CA keys on tpm2-pkcs11 (issue 13 quirk): the module implements `CKM_RSA_PKCS` signing
/// as `TPM2_RSA_Decrypt`, which a sign-only key may not do; certfab signs with the
/// hash-and-sign `CKM_SHA256_RSA_PKCS` there instead. Before, `ca keygen` of an RSA key
/// failed its signing self-test and deleted the key again (exit 4). The key is kept, reads
/// back sign-only, and signs a self-signed CA certificate that OpenSSL verifies.
#[test]
fn quirk_tpm_rsa_ca_key_signs_with_hash_and_sign() {
    let line = Line::on(Token::Tpm2);
    let o = line.certfab(&["ca", "keygen", "--key", "rsa-ca", "--algorithm", "rsa2048"]);
    assert!(o.status.success(), "{}", text(&o));
    let listing = ok(&line.pkcs11_tool_any(&["--list-objects", "--type", "privkey"]));
    let block = listing
        .split("Private Key Object")
        .find(|b| b.contains("label:      rsa-ca\n"))
        .unwrap_or_else(|| panic!("no rsa-ca in\n{listing}"));
    assert!(block.contains("RSA"), "{block}");
    let usage = block
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage:"))
        .unwrap_or_default();
    assert!(
        usage.contains("sign") && !usage.contains("decrypt"),
        "{usage}"
    );
    let pem = line.file("ca/rsa-ca.pem");
    ok(&line.certfab(&[
        "ca",
        "selfsign",
        "--key",
        "rsa-ca",
        "--subject",
        "CN=TPM RSA CA",
        "--validity",
        "1y",
        "--out",
        pem.to_str().unwrap(),
    ]));
    let v = openssl_verify(&pem, &[], &[], &pem);
    assert!(v.status.success(), "{}", text(&v));
    let t = openssl_x509(&pem, &["-text"]);
    assert!(t.contains("sha256WithRSAEncryption"), "{t}");
}

/// A key that demands a context-specific login before every signature
/// (CKA_ALWAYS_AUTHENTICATE) is refused when it is opened, naming the attribute; before, each
/// C_Sign failed with CKR_USER_NOT_LOGGED_IN, which certfab took for a lost token: three
/// module re-initialisations and re-logins, then "check the HSM connection".
#[test]
fn always_authenticate_key_refused() {
    let line = Line::new();
    ok(&line.pkcs11_tool_any(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "always-auth",
        "--id",
        "a1a1",
        "--usage-sign",
        "--always-auth",
    ]));
    let o = line.certfab(&[
        "hsm",
        "bench",
        "--key",
        "pkcs11:object=always-auth;type=private",
        "--sessions",
        "1",
        "--seconds",
        "0.2",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("CKA_ALWAYS_AUTHENTICATE"), "{}", text(&o));
    assert!(!err.contains("recovery"), "{}", text(&o));
}
