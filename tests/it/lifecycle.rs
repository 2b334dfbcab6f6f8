//! Lifecycle on a real dev line (SoftHSM): revoke, CRL checked by OpenSSL and by a TLS server
//! that refuses the revoked device, cloud revocation lists, renew, CA rollover and status,
//! tenants.

use crate::common::*;
use std::path::Path;
use std::process::{Command, Stdio};

/// Issues `id` (into out/ID) for a fresh P-256 key made by OpenSSL; returns the key path.
fn issue(line: &Line, profile: &str, id: &str) -> std::path::PathBuf {
    let csr = openssl_csr(line.path(), id, "ec:prime256v1", &format!("/CN={id}"), &[]);
    let out = line.file(&format!("out/{id}"));
    ok(&line.certfab(&issue_args(profile, &csr, id, &out)));
    line.file(&format!("{id}.key"))
}

/// `certfab renew` arguments: `device` with its new `csr`, into `out`.
fn renew_args<'a>(device: &'a str, csr: &'a Path, out: &'a Path) -> [&'a str; 7] {
    [
        "renew",
        "--device",
        device,
        "--csr",
        csr.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]
}

/// `certfab --json renew …` (see [`renew_args`]); asserts success and returns its JSON.
fn renew(line: &Line, device: &str, csr: &Path, out: &Path) -> serde_json::Value {
    let mut args = vec!["--json"];
    args.extend(renew_args(device, csr, out));
    ok_json(&line.certfab(&args))
}

/// The issuer line of `openssl x509 -issuer`.
fn issuer_of(cert: &Path) -> String {
    openssl_x509(cert, &["-issuer"])
}

/// `openssl crl -text` of a PEM CRL.
fn crl_text(crl: &Path) -> String {
    ok(&openssl(&[
        "crl",
        "-in",
        crl.to_str().unwrap(),
        "-noout",
        "-text",
    ]))
}

/// `openssl crl -verify` of a PEM CRL against the CA certificate `ca`.
fn crl_verify(crl: &Path, ca: &Path) -> std::process::Output {
    openssl(&[
        "crl",
        "-in",
        crl.to_str().unwrap(),
        "-noout",
        "-verify",
        "-CAfile",
        ca.to_str().unwrap(),
    ])
}

/// `name`'s entry in `certfab --json ca status` output.
fn ca_entry(status: &serde_json::Value, name: &str) -> serde_json::Value {
    status["cas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no CA {name} in {status}"))
        .clone()
}

fn cert_der(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    pem_rfc7468::decode_vec(text.as_bytes()).unwrap().1
}

fn serial_of(path: &Path) -> String {
    openssl_x509(path, &["-serial"])
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
}

fn code(o: &std::process::Output) -> Option<i32> {
    o.status.code()
}

/// One TLS handshake on loopback: `openssl s_server` requiring a client certificate and
/// checking it against `crl`, `openssl s_client` presenting `cert`/`key`. Returns the server's
/// output.
fn tls_handshake(line: &Line, cert: &Path, key: &Path, crl: &Path) -> String {
    let dir = line.path();
    let srv_key = dir.join("srv.key");
    let srv = dir.join("srv.pem");
    if !srv.exists() {
        ok(&openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            srv_key.to_str().unwrap(),
            "-out",
            srv.to_str().unwrap(),
            "-subj",
            "/CN=localhost",
            "-days",
            "1",
        ]));
        let mut bundle = std::fs::read_to_string(dir.join("ca/issuing.pem")).unwrap();
        bundle.push_str(&std::fs::read_to_string(dir.join("ca/root.pem")).unwrap());
        std::fs::write(dir.join("bundle.pem"), bundle).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let accept = format!("127.0.0.1:{port}");
    // stdin stays open (piped) so the server does not quit before the handshake.
    let server = Command::new("openssl")
        .args(["s_server", "-accept", &accept, "-naccept", "1", "-cert"])
        .arg(&srv)
        .arg("-key")
        .arg(&srv_key)
        .arg("-CAfile")
        .arg(dir.join("bundle.pem"))
        .args(["-Verify", "2", "-verify_return_error", "-crl_check", "-CRL"])
        .arg(crl)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_server");
    let mut client_out = None;
    for _ in 0..200 {
        let c = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &accept,
                "-servername",
                "localhost",
                "-cert",
            ])
            .arg(cert)
            .arg("-key")
            .arg(key)
            .stdin(Stdio::null())
            .output()
            .expect("openssl s_client");
        let t = text(&c);
        // The server may not listen yet: retry until it does.
        if t.contains("Connection refused") {
            std::thread::sleep(std::time::Duration::from_millis(25));
            continue;
        }
        client_out = Some(t);
        break;
    }
    assert!(client_out.is_some(), "s_client never connected");
    let out = server.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn revoke_crl_tls_and_cloud_lists() {
    let line = Line::new();
    let k1 = issue(&line, "generic-iot", "dev-1");
    let k2 = issue(&line, "generic-iot", "dev-2");
    issue(&line, "generic-iot", "dev-3");
    issue(&line, "generic-iot", "dev-4");
    let s1 = serial_of(&line.file("out/dev-1/cert.pem"));
    let s4 = serial_of(&line.file("out/dev-4/cert.pem"));

    // Revoke by device, by serial (with colons, upper case), and one more.
    let r = ok_json(&line.certfab(&[
        "--json",
        "revoke",
        "--device",
        "dev-1",
        "--reason",
        "keyCompromise",
        "--comment",
        "key found on a forum",
    ]));
    assert_eq!(r["already"], false);
    assert_eq!(r["cert"]["serial"], s1.as_str());
    ok(&line.certfab(&[
        "revoke",
        "--device",
        "dev-3",
        "--reason",
        "cessationOfOperation",
    ]));
    let colons = s4
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    ok(&line.certfab(&["revoke", "--serial", &colons, "--reason", "unspecified"]));

    // Idempotent: a second revocation changes nothing and reports the first reason.
    let again = ok_json(&line.certfab(&[
        "--json",
        "revoke",
        "--device",
        "dev-1",
        "--reason",
        "superseded",
    ]));
    assert_eq!(again["already"], true);
    assert_eq!(again["reason"], "keyCompromise");
    let n = line.ledger_count("SELECT COUNT(*) FROM cert_status WHERE status = 'revoked'");
    assert_eq!(n, 3);
    let state = line.ledger_value("SELECT state FROM devices WHERE device_id = 'dev-1'");
    assert_eq!(state, "revoked");
    let events = line.ledger_count("SELECT COUNT(*) FROM audit WHERE kind = 'revoked'");
    assert_eq!(
        events, 3,
        "one audit event per revocation, none for the repeat"
    );

    // Unknown device and bad reasons: clear errors, documented codes.
    let o = line.certfab(&["revoke", "--device", "nope", "--reason", "keyCompromise"]);
    assert_eq!(code(&o), Some(3), "{}", text(&o));
    assert!(text(&o).contains("no device 'nope'"), "{}", text(&o));
    let o = line.certfab(&["revoke", "--device", "dev-2", "--reason", "certificateHold"]);
    assert_eq!(code(&o), Some(2), "{}", text(&o));
    assert!(text(&o).contains("revocation is final"), "{}", text(&o));
    let o = line.certfab(&["revoke", "--device", "dev-2"]);
    assert_eq!(code(&o), Some(2), "{}", text(&o));

    // A revoked key is never certified again, for the same device or another.
    let o = line.certfab(&issue_args(
        "generic-iot",
        &line.file("dev-1.csr"),
        "dev-1",
        &line.file("out/again"),
    ));
    assert_eq!(code(&o), Some(3), "{}", text(&o));
    assert!(text(&o).contains("revoked"), "{}", text(&o));

    // The CRL: signed in the HSM, verified by OpenSSL, reasons and numbers as recorded.
    let crl = line.file("crl.pem");
    let c = ok_json(&line.certfab(&[
        "--json",
        "crl",
        "--profile",
        "generic-iot",
        "--next-update",
        "2d",
        "--out",
        crl.to_str().unwrap(),
    ]));
    assert_eq!(c["crl"]["number"], 1);
    assert_eq!(c["crl"]["entries"], 3);
    let v = crl_verify(&crl, &line.file("ca/issuing.pem"));
    assert!(text(&v).contains("verify OK"), "{}", text(&v));
    // Against the wrong CA it fails (the check can fail).
    let bad = crl_verify(&crl, &line.file("ca/issuing-2.pem"));
    assert!(!text(&bad).contains("verify OK"), "{}", text(&bad));
    let t = crl_text(&crl);
    assert!(t.contains("Version 2"), "{t}");
    assert!(t.contains("Key Compromise"), "{t}");
    assert!(t.contains("Cessation Of Operation"), "{t}");
    assert!(t.contains(&s1.to_ascii_uppercase()), "{t}");
    assert!(t.contains("X509v3 Authority Key Identifier"), "{t}");
    // Independent parse: python cryptography (reasons per serial, number, AKI = CA's SKI).
    let py = Command::new(python())
        .arg("-c")
        .arg(
            r#"
import sys
from cryptography import x509
crl = x509.load_pem_x509_crl(open(sys.argv[1], 'rb').read())
ca = x509.load_pem_x509_certificate(open(sys.argv[2], 'rb').read())
assert crl.is_signature_valid(ca.public_key())
num = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
assert aki == ski
print("number", num)
for r in crl:
    try:
        reason = r.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
    except x509.ExtensionNotFound:
        reason = "none"
    print(format(r.serial_number, "x"), reason)
print("span", int((crl.next_update_utc - crl.last_update_utc).total_seconds()))
"#,
        )
        .arg(&crl)
        .arg(line.file("ca/issuing.pem"))
        .output()
        .unwrap();
    let p = ok(&py);
    assert!(p.contains("number 1"), "{p}");
    assert!(
        p.contains(&format!("{} key_compromise", s1.trim_start_matches('0'))),
        "{p}"
    );
    assert!(
        p.contains(&format!("{} none", s4.trim_start_matches('0'))),
        "{p}"
    );
    assert!(p.contains("cessation_of_operation"), "{p}");
    assert!(p.contains("span 172800"), "{p}");

    // A TLS server with the CRL refuses the revoked device and accepts the good one.
    let refused = tls_handshake(&line, &line.file("out/dev-1/cert.pem"), &k1, &crl);
    assert!(refused.contains("certificate revoked"), "{refused}");
    let accepted = tls_handshake(&line, &line.file("out/dev-2/cert.pem"), &k2, &crl);
    assert!(!accepted.contains("verify error:num=23"), "{accepted}");
    assert!(!accepted.contains("ERROR"), "{accepted}");
    assert!(accepted.contains("CN = dev-2"), "{accepted}");

    // CRL numbers only go up.
    let crl2 = line.file("crl2.der");
    let c2 = ok_json(&line.certfab(&[
        "--json",
        "crl",
        "--ca",
        "issuing",
        "--der",
        "--out",
        crl2.to_str().unwrap(),
    ]));
    assert_eq!(c2["crl"]["number"], 2);
    let n = ok(&openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        crl2.to_str().unwrap(),
        "-noout",
        "-crlnumber",
    ]));
    assert!(n.contains("crlNumber=0x02"), "{n}");
    // Never over an existing file.
    let o = line.certfab(&["crl", "--ca", "issuing", "--out", crl.to_str().unwrap()]);
    assert_eq!(code(&o), Some(5), "{}", text(&o));

    // Cloud lists: AWS certificate ids are SHA-256 of the DER; Azure disables enrollments.
    let d1 = cert_der(&line.file("out/dev-1/cert.pem"));
    let id1 = hex::encode(certfab::sha256(&d1));
    let aws = ok(&line.certfab(&["revoke", "list", "--format", "aws"]));
    assert!(
        aws.contains(&format!(
            "aws iot update-certificate --certificate-id {id1} --new-status REVOKED"
        )),
        "{aws}"
    );
    assert_eq!(aws.matches("update-certificate").count(), 3, "{aws}");
    let azure: serde_json::Value =
        serde_json::from_str(&ok(&line.certfab(&["revoke", "list", "--format", "azure"]))).unwrap();
    let body = &azure[0];
    assert_eq!(body["mode"], "update");
    let en = body["enrollments"].as_array().unwrap();
    assert_eq!(en.len(), 3);
    let e1 = en.iter().find(|e| e["registrationId"] == "dev-1").unwrap();
    assert_eq!(e1["provisioningStatus"], "disabled");
    assert_eq!(e1["attestation"]["type"], "x509");
    let pem = e1["attestation"]["x509"]["clientCertificates"]["primary"]["certificate"]
        .as_str()
        .unwrap();
    assert_eq!(pem_rfc7468::decode_vec(pem.as_bytes()).unwrap().1, d1);
    let list = ok_json(&line.certfab(&["revoke", "list"]));
    assert_eq!(list.as_array().unwrap().len(), 3);
    let l1 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["device_id"] == "dev-1")
        .unwrap();
    assert_eq!(l1["cert_sha256"], id1.as_str());
    assert_eq!(l1["reason"], "keyCompromise");

    // Everything above is in an intact audit chain.
    let v = ok_json(&line.certfab(&["--json", "log", "verify"]));
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn renew_rotates_a_device_key() {
    let line = Line::new();
    issue(&line, "generic-iot", "rot-1");
    issue(&line, "generic-iot", "other-1");
    let old = serial_of(&line.file("out/rot-1/cert.pem"));
    let new_csr = openssl_csr(line.path(), "rot-1-new", "ec:prime256v1", "/CN=rot-1", &[]);
    let out = line.file("renewed");
    let r = renew(&line, "rot-1", &new_csr, &out);
    let ren = &r["renewal"];
    assert_eq!(ren["already"], false);
    assert_eq!(ren["old_serial"], old.as_str());
    let new = serial_of(&out.join("cert.pem"));
    assert_eq!(ren["new_serial"], new.as_str());
    assert_ne!(new, old);
    // The new certificate chains to the dev root and holds the new key.
    let v = line.verify_device(&out.join("cert.pem"));
    assert!(text(&v).contains(": OK"), "{}", text(&v));
    let pk_cert = openssl_x509(&out.join("cert.pem"), &["-pubkey"]);
    let pk_key = ok(&openssl(&[
        "pkey",
        "-in",
        line.file("rot-1-new.key").to_str().unwrap(),
        "-pubout",
    ]));
    assert_eq!(pk_cert, pk_key);

    // Ledger: old superseded, device on the new serial in a renewal batch.
    let st = line.ledger_value(&format!(
        "SELECT status FROM cert_status WHERE serial = '{old}'"
    ));
    assert_eq!(st, "superseded");
    let row = line.ledger_query("SELECT serial, batch_id FROM devices WHERE device_id = 'rot-1'");
    let (serial, batch) = (&row[0][0], &row[0][1]);
    assert_eq!(serial, &new);
    assert_eq!(batch, ren["batch_id"].as_str().unwrap());
    let source = line.ledger_value(&format!("SELECT source FROM batches WHERE id = '{batch}'"));
    assert!(source.contains("\"kind\":\"renew\""), "{source}");

    // The renewal batch's manifest carries the new certificate.
    let m = line.file("renew-manifest.json");
    let o = line.manifest_build(&[batch.as_str()], None, &m);
    assert!(o.status.success(), "{}", text(&o));
    let mtext = std::fs::read_to_string(&m).unwrap();
    assert!(mtext.contains(&new), "manifest lacks the new serial");
    assert!(
        !mtext.contains(&old),
        "manifest carries the superseded serial"
    );

    // Same renewal again: the certificate already issued, no new serial.
    let again = renew(&line, "rot-1", &new_csr, &line.file("renewed-again"));
    assert_eq!(again["renewal"]["already"], true);
    assert_eq!(again["renewal"]["new_serial"], new.as_str());

    // Refusals: the current key, an old key of this device, another device's key, unknown.
    let cases = [
        (
            "rot-1",
            line.file("rot-1.csr"),
            "was certified for device 'rot-1' before",
        ),
        (
            "rot-1",
            line.file("other-1.csr"),
            "already certified for device other-1",
        ),
        ("ghost", line.file("rot-1-new.csr"), "no certificate"),
    ];
    for (i, (dev, csr, want)) in cases.iter().enumerate() {
        let o = line.certfab(&[
            "renew",
            "--device",
            dev,
            "--profile",
            "generic-iot",
            "--csr",
            csr.to_str().unwrap(),
            "--out",
            line.file(&format!("refused-{i}")).to_str().unwrap(),
        ]);
        assert_eq!(code(&o), Some(3), "{}", text(&o));
        assert!(text(&o).contains(want), "{want}: {}", text(&o));
    }
    // A revoked device is not renewed.
    ok(&line.certfab(&[
        "revoke",
        "--device",
        "other-1",
        "--reason",
        "privilegeWithdrawn",
    ]));
    let fresh = openssl_csr(
        line.path(),
        "other-1-new",
        "ec:prime256v1",
        "/CN=other-1",
        &[],
    );
    let o = line.certfab(&renew_args(
        "other-1",
        &fresh,
        &line.file("refused-revoked"),
    ));
    assert_eq!(code(&o), Some(3), "{}", text(&o));
    assert!(text(&o).contains("revoked"), "{}", text(&o));
    // The old certificate of the renewed device can now be revoked by serial: it goes on the
    // CRL as superseded.
    ok(&line.certfab(&["revoke", "--serial", &old, "--reason", "superseded"]));
    let crl = line.file("crl.pem");
    ok(&line.certfab(&[
        "crl",
        "--profile",
        "generic-iot",
        "--out",
        crl.to_str().unwrap(),
    ]));
    let t = crl_text(&crl);
    assert!(t.contains("Superseded"), "{t}");
    assert!(t.contains(&old.to_ascii_uppercase()), "{t}");
    assert!(!t.contains(&new.to_ascii_uppercase()), "{t}");
    let renewed_events = ok(&line.certfab(&["log", "show", "--kind", "renewed"]));
    assert_eq!(renewed_events.lines().count(), 1, "{renewed_events}");

    // A renewal that died after the HSM failed (serial burned, device sign_failed, old
    // certificate superseded) is finished by running it again.
    issue(&line, "generic-iot", "rot-2");
    let csr2 = openssl_csr(line.path(), "rot-2-new", "ec:prime256v1", "/CN=rot-2", &[]);
    line.ledger_exec(&format!(
        "INSERT INTO cert_status (issuer_key_id, serial, status, reason, at)
           SELECT c.issuer_key_id, c.serial, 'superseded', 'test', '2026-01-01T00:00:00Z'
           FROM certificates c WHERE c.device_id = 'rot-2';
         INSERT INTO certificates (issuer_key_id, serial, profile, device_id, batch_id, state, tbs, created_at)
           SELECT issuer_key_id, '01ff', profile, device_id, batch_id, 'burned', {}, created_at
           FROM certificates WHERE device_id = 'rot-2';
         UPDATE devices SET state = 'sign_failed', serial = '01ff' WHERE device_id = 'rot-2';",
        line.sql_bytes(&[0])
    ));
    let r = renew(&line, "rot-2", &csr2, &line.file("renewed-2"));
    assert_eq!(r["renewal"]["already"], false);
    let row = line.ledger_query("SELECT state, serial FROM devices WHERE device_id = 'rot-2'");
    assert_eq!(row[0][0], "signed");
    assert_eq!(row[0][1], r["renewal"]["new_serial"].as_str().unwrap());
}

#[test]
fn rollover_status_and_tenants() {
    let line = Line::new();
    // A profile in rollover whose switch time has passed issues from issuing-2.
    let profile = derived_profile(
        line.path(),
        "rolling.yaml",
        "generic-iot.yaml",
        &[
            ("name: generic-iot", "name: rolling"),
            ("duration: 10y", "duration: 4y"),
            (
                "issuer: issuing ",
                "rollover: {next_issuer: issuing-2, switch_at: \"2020-01-01T00:00:00Z\"}\nissuer: issuing ",
            ),
        ],
    );
    issue(&line, profile.to_str().unwrap(), "roll-1");
    let issuer = issuer_of(&line.file("out/roll-1/cert.pem"));
    assert!(issuer.contains("Issuing CA 2"), "{issuer}");
    // Before the switch time the current issuer signs; the profile change is audited by hash.
    let later = std::fs::read_to_string(&profile)
        .unwrap()
        .replace("2020-01-01T00:00:00Z", "2999-01-01T00:00:00Z");
    std::fs::write(&profile, later).unwrap();
    issue(&line, profile.to_str().unwrap(), "roll-2");
    let issuer = issuer_of(&line.file("out/roll-2/cert.pem"));
    assert!(issuer.contains("Issuing CA 1"), "{issuer}");
    let changes = ok(&line.certfab(&["log", "show", "--kind", "config_changed"]));
    let rolling: Vec<serde_json::Value> = changes
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|e| serde_json::from_str(e["detail"].as_str().unwrap()).unwrap())
        .filter(|d: &serde_json::Value| d["name"] == "rolling")
        .collect();
    assert_eq!(rolling.len(), 2, "{rolling:?}");
    assert!(rolling[0]["old_sha256"].is_null());
    assert_eq!(rolling[1]["old_sha256"], rolling[0]["sha256"]);
    assert_ne!(rolling[1]["sha256"], rolling[0]["sha256"]);
    // Its trust bundle carries both issuing CAs (and the root once).
    let bundle = line.file("bundle-rolling.pem");
    ok(&line.certfab(&[
        "ca",
        "bundle",
        "--profile",
        profile.to_str().unwrap(),
        "--out",
        bundle.to_str().unwrap(),
    ]));
    let b = std::fs::read_to_string(&bundle).unwrap();
    assert_eq!(b.matches("BEGIN CERTIFICATE").count(), 3, "{b}");
    for ca in ["issuing.pem", "issuing-2.pem"] {
        let v = openssl(&[
            "verify",
            "-CAfile",
            bundle.to_str().unwrap(),
            line.file(&format!("ca/{ca}")).to_str().unwrap(),
        ]);
        assert!(text(&v).contains(": OK"), "{}", text(&v));
    }

    // ca status: dependants, rollover roles and the warnings that matter.
    issue(&line, "generic-iot", "plain-1");
    let s = ok_json(&line.certfab(&["--json", "ca", "status", "--warn-days", "3650"]));
    let i2 = ca_entry(&s, "issuing-2");
    assert_eq!(i2["live_certificates"], 1);
    assert!(i2["days_left"].as_i64().unwrap() > 1000);
    let w = i2["warnings"].to_string();
    assert!(w.contains("within the 3650-day warning window"), "{w}");
    assert_eq!(ca_entry(&s, "issuing")["live_certificates"], 2);
    assert!(ca_entry(&s, "issuing")["warnings"]
        .as_array()
        .unwrap()
        .is_empty());
    // With the default 90-day window, nothing needs attention.
    let s = ok_json(&line.certfab(&["--json", "ca", "status"]));
    let i2 = ca_entry(&s, "issuing-2");
    assert!(i2["warnings"].as_array().unwrap().is_empty(), "{i2}");
    // The same CA key re-certified for 2 years: the 4-year device certificate now outlives it.
    let short = line.file("ca/issuing-2-short.pem");
    line.root_signs_ca(&line.file("ca/issuing-2.csr"), "2y", &short);
    let short_cfg = line.file("short.yaml");
    std::fs::write(
        &short_cfg,
        std::fs::read_to_string(line.config())
            .unwrap()
            .replace("cert: ca/issuing-2.pem", "cert: ca/issuing-2-short.pem"),
    )
    .unwrap();
    let o = Command::new(bin())
        .args([
            "--config",
            short_cfg.to_str().unwrap(),
            "--json",
            "ca",
            "status",
        ])
        .env_remove("CERTFAB_CONFIG")
        .output()
        .unwrap();
    let s = ok_json(&o);
    let i2 = ca_entry(&s, "issuing-2");
    let w = i2["warnings"].to_string();
    assert!(
        w.contains("1 live device certificates expire after this CA does"),
        "{w}"
    );

    // Tenants: a CA of tenant acme, a profile of tenant acme, a profile without one.
    let cfg = std::fs::read_to_string(line.config()).unwrap();
    let cfg = cfg.replace(
        "    cert: ca/issuing-2.pem\n",
        "    cert: ca/issuing-2.pem\n    tenant: acme\n",
    );
    assert!(cfg.contains("tenant: acme"));
    let tcfg = line.file("tenants.yaml");
    std::fs::write(&tcfg, cfg).unwrap();
    let tc = tcfg.to_str().unwrap();
    let acme = derived_profile(
        line.path(),
        "acme.yaml",
        "generic-iot.yaml",
        &[
            ("name: generic-iot", "name: acme-iot\ntenant: acme"),
            ("issuer: issuing ", "issuer: issuing-2 "),
            ("duration: 10y", "duration: 4y"),
        ],
    );
    let wrong = derived_profile(
        line.path(),
        "wrong.yaml",
        "generic-iot.yaml",
        &[("name: generic-iot", "name: wrong\ntenant: acme")],
    );
    let run = |args: &[&str]| {
        Command::new(bin())
            .args(["--config", tc])
            .args(args)
            .env_remove("CERTFAB_CONFIG")
            .output()
            .unwrap()
    };
    let csr = openssl_csr(line.path(), "acme-1", "ec:prime256v1", "/CN=acme-1", &[]);
    let o = run(&issue_args(
        wrong.to_str().unwrap(),
        &csr,
        "acme-1",
        &line.file("out/wrong"),
    ));
    assert_eq!(code(&o), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("only use CAs of its own tenant"),
        "{}",
        text(&o)
    );
    ok(&run(&issue_args(
        acme.to_str().unwrap(),
        &csr,
        "acme-1",
        &line.file("out/acme-1"),
    )));
    let t = line.ledger_value(
        "SELECT b.tenant FROM devices d JOIN batches b ON b.id = d.batch_id WHERE d.device_id = 'acme-1'",
    );
    assert_eq!(t, "acme");
    // A revocation list never mixes tenants.
    ok(&run(&[
        "revoke",
        "--device",
        "acme-1",
        "--reason",
        "keyCompromise",
    ]));
    ok(&run(&[
        "revoke",
        "--device",
        "plain-1",
        "--reason",
        "keyCompromise",
    ]));
    let o = run(&["revoke", "list", "--format", "aws"]);
    assert_eq!(code(&o), Some(2), "{}", text(&o));
    assert!(text(&o).contains("mixes tenants"), "{}", text(&o));
    let only: serde_json::Value =
        serde_json::from_str(&ok(&run(&["revoke", "list", "--tenant", "acme"]))).unwrap();
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(only[0]["device_id"], "acme-1");
}

// Revocation, renewal and rollover again on a PostgreSQL ledger.
crate::postgres_twins!(
    revoke_crl_tls_and_cloud_lists,
    renew_rotates_a_device_key,
    rollover_status_and_tenants,
);
