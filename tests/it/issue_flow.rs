//! End-to-end issuance on a real SoftHSM token through the real binary, checked with OpenSSL
//! and an independent Rust parser (x509-parser).

use crate::common;

use crate::common::{issue_args, openssl, openssl_csr, text, Line};
use std::path::Path;
use x509_parser::prelude::*;

fn verify(line: &Line, cert: &Path) {
    let o = openssl(&[
        "verify",
        "-CAfile",
        line.file("ca/root.pem").to_str().unwrap(),
        "-untrusted",
        line.file("ca/issuing.pem").to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "openssl verify: {}", text(&o));
}

fn pem_der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    pem_rfc7468::decode_vec(&pem).unwrap().1
}

#[test]
fn issues_p256_p384_rsa_from_csr_and_pubkey() {
    let line = Line::new();
    let dir = line.path();
    for (i, keyspec) in ["ec:prime256v1", "ec:secp384r1", "rsa:2048"]
        .iter()
        .enumerate()
    {
        let id = format!("SN-{i:04}");
        let csr = openssl_csr(dir, &id, keyspec, "/CN=ignored-by-profile", &[]);
        let out = dir.join("out").join(&id);
        let o = line.certfab(&[
            "--json",
            "issue",
            "--profile",
            "generic-iot",
            "--csr",
            csr.to_str().unwrap(),
            "--device-id",
            &id,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(summary["device_id"], id.as_str());
        assert_eq!(summary["key_origin"], "csr");
        verify(&line, &out.join("cert.pem"));

        // chain.pem is leaf then issuing CA, and the leaf equals cert.pem.
        let chain = std::fs::read_to_string(out.join("chain.pem")).unwrap();
        let leaf = std::fs::read_to_string(out.join("cert.pem")).unwrap();
        assert!(chain.starts_with(&leaf));
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(chain.ends_with(&std::fs::read_to_string(line.file("ca/issuing.pem")).unwrap()));

        // Independent parse: what a relying party checks.
        let der = pem_der(&out.join("cert.pem"));
        let (_, c) = X509Certificate::from_der(&der).unwrap();
        let serial = c.tbs_certificate.raw_serial();
        assert_eq!(serial.len(), 17, "prefix + 16 random bytes");
        assert_eq!(serial[0], 0x01, "station serial prefix");
        assert_eq!(hex::encode(serial), summary["serial"].as_str().unwrap());
        let cn: Vec<_> = c
            .subject()
            .iter_common_name()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            cn,
            vec![id.clone()],
            "CN comes from the device id, not the CSR"
        );
        let bc = c.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && !bc.value.ca);
        let ku = c.key_usage().unwrap().unwrap();
        assert!(ku.critical && ku.value.digital_signature() && !ku.value.key_cert_sign());
        assert!(c.extended_key_usage().unwrap().unwrap().value.client_auth);
        assert!(
            c.validity().not_after.timestamp() - c.validity().not_before.timestamp()
                > 9 * 365 * 86400
        );
    }

    // Invariant 5: the same device and key again returns the certificate already issued
    // (same serial), without a new signature.
    let first = std::fs::read(dir.join("out/SN-0000/cert.pem")).unwrap();
    let o = line.certfab(&[
        "--json",
        "issue",
        "--profile",
        "generic-iot",
        "--csr",
        dir.join("SN-0000.csr").to_str().unwrap(),
        "--device-id",
        "SN-0000",
        "--out",
        dir.join("again").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let again = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap();
    assert_eq!(again["already_issued"], true);
    assert_eq!(std::fs::read(dir.join("again/cert.pem")).unwrap(), first);
    // The summary names the ledger batch the device is in, which `manifest build` takes.
    let batch = again["batch"].as_str().expect("batch id in the summary");
    let m = dir.join("single.jsonl");
    let o = line.certfab(&[
        "manifest",
        "build",
        "--batch",
        batch,
        "--out",
        m.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // The same key under another device id, or a new key for SN-0000, is refused.
    for (id, csr, why) in [
        (
            "SN-OTHER",
            dir.join("SN-0000.csr"),
            "already certified for device SN-0000",
        ),
        (
            "SN-0000",
            dir.join("SN-0001.csr"),
            "already has a live certificate",
        ),
    ] {
        let out = dir.join(format!("refused-{id}"));
        let o = line.certfab(&issue_args("generic-iot", &csr, id, &out));
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(why),
            "{}",
            text(&o)
        );
        assert!(!out.join("cert.pem").exists());
    }

    // --pubkey: a known public key, no CSR.
    let key = common::openssl_key(dir, "pub", "ec:prime256v1");
    let pubkey = dir.join("pub.pem");
    let o = openssl(&[
        "pkey",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-out",
        pubkey.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let out = dir.join("out/pub");
    let o = line.certfab(&[
        "issue",
        "--profile",
        "generic-iot",
        "--pubkey",
        pubkey.to_str().unwrap(),
        "--device-id",
        "SN-PUB",
        "--out",
        out.to_str().unwrap(),
        "--with-root",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    verify(&line, &out.join("cert.pem"));
    let chain = std::fs::read_to_string(out.join("chain.pem")).unwrap();
    assert_eq!(
        chain.matches("BEGIN CERTIFICATE").count(),
        3,
        "--with-root adds the root"
    );

    // Output is never overwritten: a second issue into the same dir is refused before signing.
    let o = line.certfab(&[
        "issue",
        "--profile",
        "generic-iot",
        "--pubkey",
        pubkey.to_str().unwrap(),
        "--device-id",
        "SN-PUB",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
}

#[test]
fn shipped_profiles_issue_what_their_standards_require() {
    let line = Line::new();
    let dir = line.path();
    // One key per device: the ledger refuses a key already certified for another device id.
    let run = |profile: &str, id: &str, extra: &[&str]| {
        let name = profile
            .rsplit('/')
            .next()
            .unwrap()
            .trim_end_matches(".yaml");
        let csr = openssl_csr(dir, name, "ec:prime256v1", "/CN=dev", &[]);
        let c = csr.to_str().unwrap();
        let out = dir.join(name);
        let mut args = vec![
            "issue",
            "--profile",
            profile,
            "--csr",
            c,
            "--device-id",
            id,
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = line.certfab(&args);
        assert!(o.status.success(), "{profile}: {}", text(&o));
        pem_der(&out.join("cert.pem"))
    };

    let der = run("aws-iot", "thing-001", &[]);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "thing-001"
    );
    verify(&line, &dir.join("aws-iot/cert.pem"));

    let der = run("ieee-802.1ar-idevid", "SN12345", &[]);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(
        cert.validity().not_after.to_datetime().year(),
        9999,
        "802.1AR: no expiry"
    );
    let sn = cert
        .subject()
        .iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER)
        .next()
        .unwrap();
    assert_eq!(sn.as_str().unwrap(), "SN12345");
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert!(
        matches!(san.value.general_names[0], GeneralName::OtherName(ref o, _) if o.to_id_string() == "1.3.6.1.5.5.7.8.4")
    );
    verify(&line, &dir.join("ieee-802.1ar-idevid/cert.pem"));

    let der = run("matter-dac", "Matter Dev 1", &["--var", "pid=8000"]);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let pai = pem_der(&line.file("ca/matter-pai.pem"));
    let (_, pai) = X509Certificate::from_der(&pai).unwrap();
    assert!(
        cert.validity().not_after <= pai.validity().not_after,
        "DAC nested in PAI"
    );
    assert!(
        cert.extended_key_usage().unwrap().is_none(),
        "no EKU on a DAC"
    );
    let o = openssl(&[
        "verify",
        "-CAfile",
        line.file("ca/matter-paa.pem").to_str().unwrap(),
        "-untrusted",
        line.file("ca/matter-pai.pem").to_str().unwrap(),
        dir.join("matter-dac/cert.pem").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));

    // {csr.CN} carries the CSR's own subject attribute, under the profile's attribute name.
    let profile = common::derived_profile(
        dir,
        "csrvars.yaml",
        "generic-iot.yaml",
        &[("  - O: \"certfab development\"", "  - OU: \"{csr.CN}\"")],
    );
    let der = run(profile.to_str().unwrap(), "SN-VARS", &[]);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let ou = cert.subject().iter_organizational_unit().next().unwrap();
    assert_eq!(ou.as_str().unwrap(), "dev", "OU rendered from the CSR's CN");

    // Matter DACs are P-256 only: a P-384 CSR is refused by key policy.
    let csr384 = openssl_csr(dir, "dev384", "ec:secp384r1", "/CN=dev", &[]);
    let o = line.certfab(&[
        "issue",
        "--profile",
        "matter-dac",
        "--csr",
        csr384.to_str().unwrap(),
        "--device-id",
        "m2",
        "--var",
        "pid=8000",
        "--out",
        dir.join("m384").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(!dir.join("m384/cert.pem").exists());
}

/// Invariant 1: CA keys are generated non-extractable and sensitive; a key that could leave
/// the token is refused for signing.
#[test]
fn ca_keys_never_leave_the_token() {
    let line = Line::new();
    let o = line.pkcs11_tool(&["--list-objects", "--type", "privkey"]);
    assert!(o.status.success(), "{}", text(&o));
    let listing = String::from_utf8_lossy(&o.stdout);
    for label in ["root-ca", "issuing-ca", "matter-paa", "matter-pai"] {
        let block = listing
            .split("Private Key Object")
            .find(|b| b.contains(&format!("label:      {label}")))
            .unwrap();
        assert!(
            block.contains("never extractable") && block.contains("always sensitive"),
            "{label}: {block}"
        );
        assert!(
            block.contains("Usage:      sign") && !block.contains("decrypt"),
            "{label}: {block}"
        );
    }

    // An extractable key (made by another tool) is refused.
    let o = line.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "leaky",
        "--extractable",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = line.file("leaky.pem");
    let o = line.certfab(&[
        "ca",
        "selfsign",
        "--key",
        "leaky",
        "--subject",
        "CN=Leaky",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("CKA_EXTRACTABLE"),
        "{}",
        text(&o)
    );
    assert!(!out.exists());

    // hsm info shows the flags and never the PIN.
    let pin = std::fs::read_to_string(line.file("pin")).unwrap();
    let o = line.certfab(&["--json", "hsm", "info"]);
    assert!(o.status.success(), "{}", text(&o));
    let all = text(&o);
    assert!(!all.contains(pin.trim()));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let objs = info["tokens"][0]["objects"].as_array().unwrap();
    let issuing = objs
        .iter()
        .find(|o| o["class"] == "private-key" && o["label"] == "issuing-ca")
        .unwrap();
    assert_eq!(issuing["extractable"], false);
    assert_eq!(issuing["sensitive"], true);
}

fn write_config(line: &Line, name: &str, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let text = std::fs::read_to_string(line.config()).unwrap();
    let p = line.file(name);
    std::fs::write(&p, edit(text)).unwrap();
    p
}

fn certfab_with(config: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

/// Bad site state gives a clear error, the documented exit code and no certificate.
#[test]
fn refuses_bad_site_state_with_clear_errors() {
    let line = Line::new();
    let dir = line.path();
    let csr = openssl_csr(dir, "d", "ec:prime256v1", "/CN=d", &[]);
    let issue = |config: &Path, profile: &str, out: &str| {
        let out = dir.join(out);
        let o = certfab_with(config, &issue_args(profile, &csr, "SN1", &out));
        assert!(
            !out.join("cert.pem").exists(),
            "no certificate may be written: {}",
            text(&o)
        );
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let pin = std::fs::read_to_string(line.file("pin")).unwrap();

    // Invariant 4: the CA certificate must belong to the token key.
    let cfg = write_config(&line, "mismatch.yaml", |t| {
        t.replace(
            "cert: ca/issuing.pem\n    chain: [ca/root.pem]",
            "cert: ca/matter-pai.pem\n    chain: [ca/matter-paa.pem]",
        )
    });
    let (code, err) = issue(&cfg, "generic-iot", "o1");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("does not match CA certificate"), "{err}");

    // Wrong PIN: one attempt, a clear message, no PIN echoed.
    let bad = dir.join("badpin");
    std::fs::write(&bad, "000000\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = write_config(&line, "badpin.yaml", |t| {
        t.replace("pin: file:pin", "pin: file:badpin")
    });
    let (code, err) = issue(&cfg, "generic-iot", "o2");
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains("CKR_PIN_INCORRECT") && err.contains("one attempt"),
        "{err}"
    );
    assert!(!err.contains("000000") && !err.contains(pin.trim()));

    // A PIN file others can read is refused before use.
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = issue(&cfg, "generic-iot", "o3");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("chmod 600"), "{err}");

    // Missing token and wrong module path.
    let cfg = write_config(&line, "notoken.yaml", |t| {
        t.replace("token: certfab-dev", "token: no-such-token")
    });
    let (code, err) = issue(&cfg, "generic-iot", "o4");
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains("no-such-token") && err.contains("certfab-dev"),
        "{err}"
    );
    let cfg = write_config(&line, "nomodule.yaml", |t| {
        t.replace("libsofthsm2.so", "libnothere.so")
    });
    let (code, err) = issue(&cfg, "generic-iot", "o5");
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("cannot load PKCS#11 module"), "{err}");

    // An expired CA is refused at start-up.
    let cfg = line.config();
    let o = certfab_with(&cfg, &["ca", "keygen", "--key", "old-ca"]);
    assert!(o.status.success(), "{}", text(&o));
    let csr_old = dir.join("old.csr");
    let o = certfab_with(
        &cfg,
        &[
            "ca",
            "csr",
            "--key",
            "old-ca",
            "--subject",
            "CN=Old CA",
            "--out",
            csr_old.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = certfab_with(
        &cfg,
        &[
            "ca",
            "sign",
            "--issuer-key",
            "root",
            "--csr",
            csr_old.to_str().unwrap(),
            "--validity",
            "1d",
            "--not-before",
            "2030-01-01T00:00:00Z",
            "--path-len",
            "0",
            "--out",
            dir.join("ca/old.pem").to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    // 2030 is in the future here: "not valid before" is refused the same way as expiry.
    let profile = common::derived_profile(
        dir,
        "old.yaml",
        "generic-iot.yaml",
        &[(
            "issuer: issuing ",
            "issuer: {key: \"pkcs11:object=old-ca\", cert: ca/old.pem}\n#",
        )],
    );
    let (code, err) = issue(&cfg, profile.to_str().unwrap(), "o6");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not valid before 2030-01-01"), "{err}");

    // Lint before signature (invariant 3): validity beyond the CA is refused, not signed.
    let profile = common::derived_profile(
        dir,
        "long.yaml",
        "generic-iot.yaml",
        &[
            ("issuer: issuing ", "issuer: matter-pai\n#"),
            ("duration: 10y", "duration: 40y"),
        ],
    );
    let (code, err) = issue(&cfg, profile.to_str().unwrap(), "o7");
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("pre-issuance lint") && err.contains("notAfter is after the CA"),
        "{err}"
    );

    // Invalid profile: file, line and fix.
    let profile = dir.join("broken.yaml");
    std::fs::write(&profile, "name: broken\nissuer: issuing\nkeys: [p256, dsa]\nsubject:\n  - CN: \"{device_id}\"\nvalidity: {duration: 1y}\nkey_usage: [digitalSignature]\n").unwrap();
    let (code, err) = issue(&cfg, profile.to_str().unwrap(), "o8");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("broken.yaml:3") && err.contains("unknown key type 'dsa'"),
        "{err}"
    );
    std::fs::write(&profile, "name: broken\nissuer: issuing\nkeys: [p256]\nsubject:\n  - CN: \"{serial}\"\nvalidity: {duration: 1y}\nkey_usage: [digitalSignature]\n").unwrap();
    let (code, err) = issue(&cfg, profile.to_str().unwrap(), "o9");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("broken.yaml:5") && err.contains("unknown placeholder {serial}"),
        "{err}"
    );
}

/// RSA CA keys in the token: PKCS#1 v1.5 and PSS signatures, checked by OpenSSL.
#[test]
fn rsa_ca_signs_pkcs1_and_pss() {
    let line = Line::new();
    let dir = line.path();
    let cfg = line.config();
    let o = certfab_with(
        &cfg,
        &["ca", "keygen", "--key", "rsa-ca", "--algorithm", "rsa3072"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let root = dir.join("ca/rsa.pem");
    let o = certfab_with(
        &cfg,
        &[
            "ca",
            "selfsign",
            "--key",
            "rsa-ca",
            "--subject",
            "CN=RSA Root",
            "--validity",
            "5y",
            "--out",
            root.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    for pss in [false, true] {
        let csr = openssl_csr(dir, &format!("d-{pss}"), "ec:prime256v1", "/CN=d", &[]);
        let id = format!("SN-RSA-{pss}");
        let profile = common::derived_profile(dir, &format!("rsa-{pss}.yaml"), "generic-iot.yaml", &[("issuer: issuing ", &format!("issuer: {{key: \"pkcs11:object=rsa-ca\", cert: ca/rsa.pem, rsa_pss: {pss}}}\n#")), ("duration: 10y", "duration: 1y")]);
        let out = dir.join(format!("out-{pss}"));
        let o = certfab_with(
            &cfg,
            &issue_args(profile.to_str().unwrap(), &csr, &id, &out),
        );
        assert!(o.status.success(), "{}", text(&o));
        let cert = out.join("cert.pem");
        let o = openssl(&[
            "verify",
            "-CAfile",
            root.to_str().unwrap(),
            cert.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let t = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-text"]);
        let t = String::from_utf8_lossy(&t.stdout);
        assert!(
            t.contains(if pss {
                "rsassaPss"
            } else {
                "sha256WithRSAEncryption"
            }),
            "{t}"
        );
    }
}

/// chain.pem carries every intermediate up to (not including) a self-signed root, whether or
/// not the site config lists the root.
#[test]
fn chain_keeps_intermediates_and_drops_only_a_root() {
    let line = Line::new();
    let dir = line.path();
    let cfg = line.config();
    let ok = |o: std::process::Output| assert!(o.status.success(), "{}", text(&o));
    // root → inter (pathLen 1) → issuing2 (pathLen 0), keys in the token.
    for (key, subject) in [("inter", "CN=Inter"), ("issuing2", "CN=Issuing 2")] {
        ok(certfab_with(&cfg, &["ca", "keygen", "--key", key]));
        let csr = dir.join(format!("{key}.csr"));
        ok(certfab_with(
            &cfg,
            &[
                "ca",
                "csr",
                "--key",
                key,
                "--subject",
                subject,
                "--out",
                csr.to_str().unwrap(),
            ],
        ));
    }
    ok(certfab_with(
        &cfg,
        &[
            "ca",
            "sign",
            "--issuer-key",
            "root",
            "--csr",
            dir.join("inter.csr").to_str().unwrap(),
            "--validity",
            "none",
            "--path-len",
            "1",
            "--out",
            dir.join("ca/inter.pem").to_str().unwrap(),
        ],
    ));
    ok(certfab_with(
        &cfg,
        &[
            "ca",
            "sign",
            "--issuer-key",
            "inter",
            "--issuer-cert",
            dir.join("ca/inter.pem").to_str().unwrap(),
            "--csr",
            dir.join("issuing2.csr").to_str().unwrap(),
            "--validity",
            "none",
            "--path-len",
            "0",
            "--out",
            dir.join("ca/issuing2.pem").to_str().unwrap(),
        ],
    ));
    let count = |chain: &str| {
        std::fs::read_to_string(dir.join(chain))
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count()
    };
    for (name, chain_cfg, want) in [
        ("with-root", "[ca/inter.pem, ca/root.pem]", 3),
        ("without-root", "[ca/inter.pem]", 3),
    ] {
        let profile = common::derived_profile(
            dir,
            &format!("{name}.yaml"),
            "generic-iot.yaml",
            &[("issuer: issuing ", &format!("issuer: {{key: \"pkcs11:object=issuing2\", cert: ca/issuing2.pem, chain: {chain_cfg}}}\n#"))],
        );
        let csr = openssl_csr(dir, name, "ec:prime256v1", "/CN=x", &[]);
        let out = dir.join(format!("out-{name}"));
        ok(certfab_with(
            &cfg,
            &issue_args(profile.to_str().unwrap(), &csr, name, &out),
        ));
        assert_eq!(
            count(&format!("out-{name}/chain.pem")),
            want,
            "{name}: leaf, issuing 2, inter"
        );
        let o = openssl(&[
            "verify",
            "-CAfile",
            line.file("ca/root.pem").to_str().unwrap(),
            "-untrusted",
            out.join("chain.pem").to_str().unwrap(),
            out.join("cert.pem").to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
    }
}

// The issuing flows again on a PostgreSQL ledger. Not twinned: ca_keys_never_leave_the_token
// and rsa_ca_signs_pkcs1_and_pss check the token and the signature scheme, which the ledger
// engine does not touch.
crate::postgres_twins!(
    issues_p256_p384_rsa_from_csr_and_pubkey,
    shipped_profiles_issue_what_their_standards_require,
    refuses_bad_site_state_with_clear_errors,
    chain_keeps_intermediates_and_drops_only_a_root,
);
