//! The PKCS#11 token matrix (docs/hsm-compat.md): one smoke scenario, run on every token
//! hsm-fixtures/dev-line.sh can build here — SoftHSM2, a TPM 2.0 through tpm2-pkcs11 on
//! swtpm, kryoptic, and SoftHSM exported by a `p11-kit server` to p11-kit-client.so.
//!
//! On each: the whole CA ceremony of the dev line (keygen in the token, self-sign, CSR, sign,
//! import), the CA keys read back by pkcs11-tool (an independent PKCS#11 client) as
//! sensitive, never extractable and sign-only, `certfab hsm info`, one `certfab issue` of a
//! P-256 device key verified by OpenSSL, and `certfab hsm bench`.
//!
//! Then the whole core on each (`token_core`, issue 13): `issue` of P-256, P-384 and RSA device
//! keys, a batch of 1,000 with `--jobs 2`, a station shift of 20 simulated devices, a CRL, a
//! signed manifest and a signed audit checkpoint, every artefact checked by OpenSSL.

use crate::common::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

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

/// Runs a scenario on every token of the matrix: `NAME::softhsm`, `NAME::tpm2`,
/// `NAME::kryoptic`, `NAME::p11_kit` (one definition, one test per token).
macro_rules! on_every_token {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use crate::common::Token;
            #[test]
            fn softhsm() {
                super::$name(Token::SoftHsm)
            }
            #[test]
            fn tpm2() {
                super::$name(Token::Tpm2)
            }
            #[test]
            fn kryoptic() {
                super::$name(Token::Kryoptic)
            }
            #[test]
            fn p11_kit() {
                super::$name(Token::P11Kit)
            }
        }
    )*};
}

on_every_token!(token_core);

/// How long each step of a scenario took on a token, printed at the end (the figures in
/// docs/hsm-compat.md come from these lines).
struct Timings {
    token: Token,
    start: Instant,
    last: Instant,
    steps: String,
}

impl Timings {
    fn new(token: Token) -> Self {
        let now = Instant::now();
        Self {
            token,
            start: now,
            last: now,
            steps: String::new(),
        }
    }

    fn step(&mut self, name: &str) {
        let now = Instant::now();
        let _ = write!(
            self.steps,
            " {name} {:.1}s;",
            (now - self.last).as_secs_f64()
        );
        self.last = now;
    }
}

impl Drop for Timings {
    fn drop(&mut self) {
        eprintln!(
            "token_core {}: total {:.1}s;{}",
            self.token.name(),
            self.start.elapsed().as_secs_f64(),
            self.steps
        );
    }
}

/// The core of issue 13 on one token, every artefact checked by OpenSSL: `issue` of a P-256, a
/// P-384 and an RSA device key; a batch of 1,000 with `--jobs 2`; a station shift of 20
/// simulated devices; a revocation and its CRL; the batch's signed manifest (the OpenSSL recipe
/// of docs/manifest.md); a signed audit checkpoint (the same recipe with the checkpoint's
/// content type) and `log verify`. Device key types are the devices' own: every token signs
/// them with its P-256 issuing CA, so no token needs an alternative here (what a token cannot
/// hold itself is in its dev line's token-notes and hsm-compat.md).
fn token_core(token: Token) {
    let mut t = Timings::new(token);
    let line = Line::on(token);
    t.step("dev line");
    let work = tempfile::tempdir().unwrap();

    // issue: one device key of each type the profile allows.
    let mut first = None;
    for (name, spec) in [
        ("core-p256", "ec:prime256v1"),
        ("core-p384", "ec:secp384r1"),
        ("core-rsa", "rsa:2048"),
    ] {
        let subj = format!("/CN={name}");
        let csr = openssl_csr(work.path(), name, spec, &subj, &[]);
        let out = work.path().join(name);
        ok(&line.certfab(&issue_args("generic-iot", &csr, name, &out)));
        let cert = out.join("cert.pem");
        let v = line.verify_device(&cert);
        assert!(v.status.success(), "{token:?} {name}: {}", text(&v));
        let pubkey_cert = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"]);
        let pubkey_csr = openssl(&["req", "-in", csr.to_str().unwrap(), "-noout", "-pubkey"]);
        assert_eq!(pubkey_cert.stdout, pubkey_csr.stdout, "{token:?} {name}");
        first.get_or_insert(cert);
    }
    t.step("issue p256+p384+rsa");

    // A batch of 1,000 public keys with two signing workers.
    let mut csv = String::from("device_id,pubkey\n");
    for i in 1..=1000 {
        let _ = writeln!(csv, "CORE-{i:04},\"{}\"", rust_pubkey_pem().trim_end());
    }
    let input = work.path().join("core.csv");
    std::fs::write(&input, csv).unwrap();
    let out = work.path().join("batch");
    let o = line.certfab(&[
        "--json",
        "batch",
        "--profile",
        "generic-iot",
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--jobs",
        "2",
    ]);
    let summary = ok_json(&o);
    assert_eq!(summary["issued"], 1000, "{token:?}: {summary}");
    let batch = summary["batch"].as_str().unwrap().to_string();
    t.step("batch 1000 --jobs 2");
    let certs: Vec<PathBuf> = (1..=1000)
        .map(|i| out.join(format!("CORE-{i:04}/cert.pem")))
        .collect();
    verify_all(&line, &certs);
    t.step("openssl verify 1000");

    // A station shift over the simulated line.
    let sim = repo().join("station-scripts/sim-device.py");
    let sim_line = work.path().join("sim-line");
    let o = Command::new(&sim)
        .arg("make-line")
        .arg(&sim_line)
        .args(["--count", "20"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let adapter = format!("exec:{} serve {}", sim.display(), sim_line.display());
    let o = line.certfab(&[
        "--json",
        "station",
        "--profile",
        "generic-iot",
        "--adapter",
        &adapter,
        "--operator",
        "alice",
    ]);
    assert!(o.status.success(), "{token:?}: {}", text(&o));
    let shift = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "summary")
        .expect("station summary");
    assert_eq!(shift["summary"]["passed"], 20, "{token:?}: {shift}");
    let stored: Vec<PathBuf> = (1..=20)
        .map(|i| sim_line.join(format!("devices/SIM-{i:04}/files/cert.pem")))
        .collect();
    verify_all(&line, &stored);
    t.step("station shift 20");

    // A revocation published on a CRL the issuing CA signed.
    ok(&line.certfab(&[
        "revoke",
        "--device",
        "core-p256",
        "--reason",
        "keyCompromise",
    ]));
    let crl = work.path().join("crl.pem");
    ok(&line.certfab(&[
        "crl",
        "--profile",
        "generic-iot",
        "--out",
        crl.to_str().unwrap(),
    ]));
    let v = openssl(&[
        "crl",
        "-in",
        crl.to_str().unwrap(),
        "-noout",
        "-verify",
        "-CAfile",
        line.file("ca/issuing.pem").to_str().unwrap(),
    ]);
    assert!(
        v.status.success() && String::from_utf8_lossy(&v.stderr).contains("verify OK"),
        "{token:?}: {}",
        text(&v)
    );
    let serial = openssl_x509(first.as_ref().unwrap(), &["-serial"]);
    let serial = serial.trim().trim_start_matches("serial=");
    let listed = ok(&openssl(&[
        "crl",
        "-in",
        crl.to_str().unwrap(),
        "-noout",
        "-text",
    ]));
    assert!(
        listed.contains(&format!("Serial Number: {serial}")) && listed.contains("Key Compromise"),
        "{token:?}: {serial} not on\n{listed}"
    );
    t.step("revoke + crl");

    // The batch's manifest, signed by the document signer in the token.
    let m = work.path().join("core.jsonl");
    let o = line.manifest_build(&[&batch], None, &m);
    let r = ok_json(&o);
    assert_eq!(r["count"], 1000, "{token:?}: {r}");
    ok(&line.certfab(&["manifest", "verify", m.to_str().unwrap()]));
    let v = jws_recipe(&m, &line.file("ca/root.pem"), MANIFEST_CTY);
    assert!(v.status.success(), "{token:?}: {}", text(&v));
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("Verified OK"),
        "{}",
        text(&v)
    );
    t.step("manifest 1000");

    // An audit checkpoint signed by the same signer, checked the same way, and the chain.
    let cp_file = work.path().join("cp.json");
    let cp = ok_json(&line.certfab(&[
        "--json",
        "log",
        "checkpoint",
        "--out",
        cp_file.to_str().unwrap(),
    ]));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&cp_file).unwrap()).unwrap();
    assert_eq!(doc["statement"], cp["checkpoint"]["statement"]);
    // RFC 8785 of the statement: its keys sorted, ASCII strings and integers only.
    let canonical: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_value(doc["statement"].clone()).unwrap();
    let payload = work.path().join("cp-statement");
    std::fs::write(&payload, serde_json::to_string(&canonical).unwrap()).unwrap();
    std::fs::write(
        work.path().join("cp-statement.jws"),
        doc["signature"].as_str().unwrap(),
    )
    .unwrap();
    let v = jws_recipe(&payload, &line.file("ca/root.pem"), CHECKPOINT_CTY);
    assert!(v.status.success(), "{token:?}: {}", text(&v));
    let head_seq = doc["statement"]["head_seq"].as_i64().unwrap();
    let head_hash: String = ledger(&line)
        .query_row("SELECT hash FROM audit WHERE seq = ?1", [head_seq], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(doc["statement"]["head_hash"], head_hash.as_str());
    let lv = ok_json(&line.certfab(&[
        "--json",
        "log",
        "verify",
        "--checkpoint",
        cp_file.to_str().unwrap(),
    ]));
    assert_eq!(lv["ok"], true, "{token:?}: {lv}");
    t.step("checkpoint");
}

const MANIFEST_CTY: &str = "certfab-manifest/1";
const CHECKPOINT_CTY: &str = "certfab-audit-checkpoint/1";

/// The OpenSSL recipe of docs/manifest.md, as written, on the detached JWS `payload.jws` over
/// `payload`, trusting `root`; for a checkpoint its content type is the checkpoint's
/// (docs/audit-log.md: the same JWS, made by the same signer).
fn jws_recipe(payload: &Path, root: &Path, cty: &str) -> std::process::Output {
    let doc = std::fs::read_to_string(repo().join("docs/manifest.md")).unwrap();
    let start = doc.find("<!-- openssl-recipe:begin -->").unwrap();
    let end = doc.find("<!-- openssl-recipe:end -->").unwrap();
    let code = doc[start..end]
        .split_once("```sh\n")
        .and_then(|(_, r)| r.split_once("```"))
        .map(|(c, _)| c)
        .expect("sh block");
    assert!(
        code.contains(MANIFEST_CTY),
        "the recipe checks the content type"
    );
    Command::new("sh")
        .arg("-c")
        .arg(code.replace(MANIFEST_CTY, cty))
        .env("M", payload)
        .env("ROOT", root)
        .output()
        .unwrap()
}

/// One `openssl verify` of every certificate in `certs` up to the line's root.
fn verify_all(line: &Line, certs: &[PathBuf]) {
    let mut args = vec![
        "verify".to_string(),
        "-CAfile".into(),
        line.file("ca/root.pem").display().to_string(),
        "-untrusted".into(),
        line.file("ca/issuing.pem").display().to_string(),
    ];
    args.extend(certs.iter().map(|c| c.display().to_string()));
    let o = openssl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).matches(": OK").count(),
        certs.len()
    );
}

/// `ca keygen` deletes a key pair that fails its post-generation check. The trigger is a
/// token whose mechanism policy lets it generate EC keys but not sign with `CKM_ECDSA`
/// (SoftHSM's `slots.mechanisms`; HSM partition policies do the same): the new key's signing
/// self-test is refused, and the key must not stay behind as a CA key nobody can use. (The
/// TPM RSA key this test used before signs since the hash-and-sign quirk.)
#[test]
fn ca_keygen_refused_key_is_deleted() {
    let line = Line::new();
    let conf = line.file("softhsm2.conf");
    let mut softhsm = std::fs::read_to_string(&conf).unwrap();
    softhsm.push_str("slots.mechanisms = CKM_EC_KEY_PAIR_GEN,CKM_RSA_PKCS_KEY_PAIR_GEN\n");
    std::fs::write(&conf, softhsm).unwrap();
    let o = line.certfab(&["ca", "keygen", "--key", "no-ecdsa", "--algorithm", "p256"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("made key 'no-ecdsa' that failed the read-back and signing self-test")
            && err.contains("deleted again"),
        "{}",
        text(&o)
    );
    // What an independent client sees: no trace of the refused key, the CA keys untouched.
    for class in ["privkey", "pubkey"] {
        let listing = ok(&line.pkcs11_tool_any(&["--list-objects", "--type", class]));
        assert!(!listing.contains("no-ecdsa"), "{class} left:\n{listing}");
        assert!(listing.contains("issuing-ca"), "{listing}");
    }
}

/// AWS CloudHSM's SDK 5 supports no read-only session (docs/hsm-compat.md): certfab opens
/// none, the login's included. Before, the login was made on a read-only session, which
/// CloudHSM refuses. Checked in the call log of pkcs11-spy in front of SoftHSM: every
/// `C_OpenSession` of an issue has `CKF_RW_SESSION` set, and the login happened.
#[test]
fn cloudhsm_no_read_only_session() {
    let line = Line::new();
    let log = line.file("spy.log");
    spy_on(&line, &log);
    let work = tempfile::tempdir().unwrap();
    let csr = openssl_csr(work.path(), "dev", "ec:prime256v1", "/CN=rw-0001", &[]);
    let out = work.path().join("out");
    ok(&line.certfab(&issue_args("generic-iot", &csr, "rw-0001", &out)));
    assert!(line.verify_device(&out.join("cert.pem")).status.success());
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(calls.contains(": C_Login\n"), "no login in the spy log");
    let mut opened = 0;
    for block in calls.split(": C_OpenSession\n").skip(1) {
        let flags = block
            .lines()
            .find_map(|l| l.strip_prefix("[in] flags = 0x"))
            .expect("C_OpenSession without flags");
        let flags = u64::from_str_radix(flags.trim(), 16).unwrap();
        const CKF_RW_SESSION: u64 = 0x2;
        assert_ne!(
            flags & CKF_RW_SESSION,
            0,
            "read-only session opened: {block}"
        );
        opened += 1;
    }
    assert!(
        opened >= 2,
        "{opened} sessions: the login's and the signer's at least"
    );
}
