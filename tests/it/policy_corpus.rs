//! Hostile-input corpus for `certfab issue`: every bad CSR or device id must be refused with a
//! message that names the problem, the DESIGN exit code (3 = rejected by policy, 2 = usage),
//! no certificate written, and no PIN on stdout/stderr.
//!
//! The corpus is generated at test time (OpenSSL CLI and Rust), never checked in. Every CSR that
//! breaks a *policy* is correctly self-signed (OpenSSL verifies it before certfab sees it), so a
//! refusal proves the policy check, not merely proof of possession. Control cases (valid P-256
//! and RSA CSRs, a 64-character device id, the CN-derived-id profile) prove the harness can pass.
//!
//! One dev line (SoftHSM token) is shared by all cases; each case has its own out dir. Failures
//! are collected and reported together.

use crate::common;

use crate::common::{openssl, openssl_csr, text, Line};
use der::asn1::SetOfVec;
use der::EncodePem;
use num_bigint_dig::prime::{next_prime, probably_prime};
use num_bigint_dig::{BigUint, RandBigInt, RandPrime};
use p256::elliptic_curve::rand_core::{OsRng, RngCore};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::builder::{Builder, RequestBuilder};
use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::request::CertReq;

/// The 38 small primes of certfab's ROCA detector (src/csr/keypolicy.rs `ROCA_PRIMES`).
const ROCA_PRIMES: [u32; 38] = [
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97,
    101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
];

const PROFILE: &str = "generic-iot";

struct Corpus {
    line: Line,
    pin: String,
    /// Where the inputs are written.
    dir: PathBuf,
    failures: Vec<String>,
    cases: usize,
}

impl Corpus {
    fn new() -> Self {
        let line = Line::new();
        let pin = fs::read_to_string(line.file("pin"))
            .expect("read pin")
            .trim()
            .to_string();
        assert!(pin.len() >= 8, "the dev line's PIN looks wrong: {pin:?}");
        let dir = line.file("corpus");
        fs::create_dir_all(&dir).unwrap();
        Self {
            line,
            pin,
            dir,
            failures: Vec::new(),
            cases: 0,
        }
    }

    fn input(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn out_dir(&self, case: &str) -> PathBuf {
        self.line.path().join("out").join(case)
    }

    fn fail(&mut self, case: &str, why: String) {
        self.failures.push(format!("[{case}] {why}"));
    }

    fn issue(&self, case: &str, profile: &str, csr: &Path, device_id: Option<&str>) -> Output {
        let out = self.out_dir(case);
        let mut args = vec![
            "issue",
            "--profile",
            profile,
            "--csr",
            csr.to_str().unwrap(),
        ];
        if let Some(id) = device_id {
            args.extend(["--device-id", id]);
        }
        args.extend(["--out", out.to_str().unwrap()]);
        self.line.certfab(&args)
    }

    /// Checks that holds for every run: the PIN never appears in the output.
    fn no_secret(&mut self, case: &str, o: &Output) {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        if all.contains(&self.pin) {
            self.fail(case, "the PIN appears in certfab's output".into());
        }
    }

    /// `certfab issue` must refuse: exit `code`, stderr names the input file and every needle
    /// (case-insensitive), and nothing lands in the out dir.
    fn refused(
        &mut self,
        case: &str,
        profile: &str,
        csr: &Path,
        device_id: Option<&str>,
        code: i32,
        needles: &[&str],
    ) {
        let o = self.issue(case, profile, csr, device_id);
        self.check_refused(case, &o, csr, code, needles);
    }

    fn check_refused(&mut self, case: &str, o: &Output, csr: &Path, code: i32, needles: &[&str]) {
        self.cases += 1;
        self.no_secret(case, o);
        let stderr = String::from_utf8_lossy(&o.stderr).to_string();
        let lower = stderr.to_lowercase();
        if o.status.code() != Some(code) {
            self.fail(case, format!("expected exit {code}\n{}", text(o)));
        }
        if !stderr.starts_with("certfab: error: ") {
            self.fail(
                case,
                format!("stderr is not one 'certfab: error:' message\n{}", text(o)),
            );
        }
        let file = csr.file_name().unwrap().to_string_lossy();
        if !stderr.contains(file.as_ref()) {
            self.fail(
                case,
                format!("the message does not name the input {file}\n{}", text(o)),
            );
        }
        for n in needles {
            if !lower.contains(&n.to_lowercase()) {
                self.fail(
                    case,
                    format!("the message does not mention {n:?}\n{}", text(o)),
                );
            }
        }
        let out = self.out_dir(case);
        for f in ["cert.pem", "chain.pem"] {
            if out.join(f).exists() {
                self.fail(
                    case,
                    format!("{f} was written although the input was refused"),
                );
            }
        }
        if let Ok(rd) = fs::read_dir(&out) {
            let left: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
            if !left.is_empty() {
                self.fail(case, format!("files left in the out dir: {left:?}"));
            }
        }
    }

    /// Like [`Corpus::issue`] with `--csr /dev/stdin`, `input` written to certfab's stdin.
    fn issue_stdin(&self, case: &str, input: Vec<u8>) -> Output {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let out = self.out_dir(case);
        let mut child = Command::new(common::bin())
            .arg("--config")
            .arg(self.line.config())
            .args([
                "issue",
                "--profile",
                PROFILE,
                "--csr",
                "/dev/stdin",
                "--device-id",
                "SN-1",
                "--out",
            ])
            .arg(&out)
            .env_remove("CERTFAB_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run certfab");
        let mut stdin = child.stdin.take().unwrap();
        // certfab may stop reading early (EPIPE here): that is its right.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let o = child.wait_with_output().expect("wait for certfab");
        writer.join().unwrap();
        o
    }

    /// `certfab issue` must succeed and the certificate must chain to the dev root (OpenSSL).
    /// Returns the certificate path.
    fn issued(
        &mut self,
        case: &str,
        profile: &str,
        csr: &Path,
        device_id: Option<&str>,
    ) -> Option<PathBuf> {
        self.cases += 1;
        let o = self.issue(case, profile, csr, device_id);
        self.no_secret(case, &o);
        if o.status.code() != Some(0) {
            self.fail(case, format!("control case was not issued\n{}", text(&o)));
            return None;
        }
        let cert = self.out_dir(case).join("cert.pem");
        if !cert.exists() || !self.out_dir(case).join("chain.pem").exists() {
            self.fail(case, "exit 0 but cert.pem/chain.pem missing".into());
            return None;
        }
        let v = openssl(&[
            "verify",
            "-CAfile",
            self.line.file("ca/root.pem").to_str().unwrap(),
            "-untrusted",
            self.line.file("ca/issuing.pem").to_str().unwrap(),
            cert.to_str().unwrap(),
        ]);
        if !v.status.success() || !String::from_utf8_lossy(&v.stdout).contains(": OK") {
            self.fail(
                case,
                format!("openssl verify failed on the issued cert\n{}", text(&v)),
            );
        }
        Some(cert)
    }

    /// The subject of an issued certificate, RFC 2253 text.
    fn subject(&self, cert: &Path) -> String {
        let o = openssl(&[
            "x509",
            "-in",
            cert.to_str().unwrap(),
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

/// Asserts that OpenSSL accepts the CSR's self-signature (or, with `valid = false`, rejects it).
fn assert_self_signature(csr: &Path, valid: bool) {
    let der = fs::read(csr).unwrap().first() == Some(&0x30);
    let mut args = vec!["req", "-in", csr.to_str().unwrap(), "-noout", "-verify"];
    if der {
        args.extend(["-inform", "DER"]);
    }
    let o = openssl(&args);
    let ok = o.status.success() && String::from_utf8_lossy(&o.stderr).contains("verify OK");
    assert_eq!(
        ok,
        valid,
        "corpus bug: self-signature of {} should be valid={valid}\n{}",
        csr.display(),
        text(&o)
    );
}

fn run_openssl(args: &[&str]) {
    let o = openssl(args);
    assert!(o.status.success(), "openssl {args:?}\n{}", text(&o));
}

/// A CSR from an existing key file.
fn openssl_req(key: &Path, csr: &Path, extra: &[&str]) -> PathBuf {
    common::openssl_req(key, csr, "/CN=corpus", extra)
}

fn write_pem(path: &Path, req: &CertReq) -> PathBuf {
    fs::write(path, req.to_pem(der::pem::LineEnding::LF).unwrap()).unwrap();
    path.to_path_buf()
}

/// A subject with one CN whose UTF8String content is exactly `cn` (no escaping, no checks).
fn cn_subject(cn: &str) -> Name {
    let atv = AttributeTypeAndValue {
        oid: const_oid::db::rfc4519::CN,
        value: der::Any::new(der::Tag::Utf8String, cn.as_bytes().to_vec()).unwrap(),
    };
    RdnSequence(vec![RelativeDistinguishedName(
        SetOfVec::try_from(vec![atv]).unwrap(),
    )])
}

/// A correctly signed P-256 CSR with subject CN=`cn`.
fn p256_csr(path: &Path, cn: &str) -> PathBuf {
    let sk = p256::ecdsa::SigningKey::random(&mut OsRng);
    let b = RequestBuilder::new(cn_subject(cn), &sk).unwrap();
    write_pem(path, &b.build::<p256::ecdsa::DerSignature>().unwrap())
}

/// The RSA key with primes `p`, `q` and e = 65537, if e is invertible modulo λ(n).
fn rsa_key(p: BigUint, q: BigUint) -> Option<rsa::RsaPrivateKey> {
    rsa::RsaPrivateKey::from_p_q(p, q, BigUint::from(65537u32)).ok()
}

/// A correctly signed RSA CSR (PKCS#1 v1.5, SHA-256).
fn rsa_csr(path: &Path, key: rsa::RsaPrivateKey) -> PathBuf {
    let sk = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key);
    let b = RequestBuilder::new(cn_subject("corpus"), &sk).unwrap();
    write_pem(path, &b.build::<rsa::pkcs1v15::Signature>().unwrap())
}

/// Just above √2 · 2^1023: the product of two primes at least this large has exactly 2048 bits.
fn prime_floor() -> BigUint {
    BigUint::from(0xB505u32) << (1024 - 16)
}

/// A 1024-bit prime with Infineon RSALib's structure: p = k·M + (65537^a mod M), M the product
/// of the detector's primes. Any product of two such primes carries the ROCA fingerprint.
fn roca_prime() -> BigUint {
    let m = ROCA_PRIMES
        .iter()
        .fold(BigUint::from(1u32), |acc, &r| acc * r);
    let top = BigUint::from(1u32) << 1024;
    let lo = prime_floor() / &m + 1u32;
    let hi = (&top - &m) / &m;
    loop {
        let k = OsRng.gen_biguint_range(&lo, &hi);
        let a = BigUint::from(OsRng.next_u64());
        let p = &k * &m + BigUint::from(65537u32).modpow(&a, &m);
        if p.bits() == 1024 && probably_prime(&p, 20) {
            return p;
        }
    }
}

/// Two 1024-bit primes about 2^500 apart: n = p·q falls to Fermat's method at once.
fn fermat_primes() -> (BigUint, BigUint) {
    let floor = prime_floor();
    let p = loop {
        let p = OsRng.gen_prime(1024);
        if p >= floor {
            break p;
        }
    };
    let q = next_prime(&(&p + OsRng.gen_biguint(500)));
    (p, q)
}

/// A ROCA-fingerprinted and a Fermat-factorable RSA-2048 CSR, both correctly self-signed.
fn weak_rsa_csrs(dir: &Path) -> (PathBuf, PathBuf) {
    // from_p_q fails in the rare case e is not invertible mod λ(n): draw new primes then.
    let roca = loop {
        if let Some(key) = rsa_key(roca_prime(), roca_prime()) {
            break rsa_csr(&dir.join("rsa-roca.csr"), key);
        }
    };
    let fermat = loop {
        let (p, q) = fermat_primes();
        if let Some(key) = rsa_key(p, q) {
            break rsa_csr(&dir.join("rsa-fermat.csr"), key);
        }
    };
    (roca, fermat)
}

/// A P-256 CSR whose extensionRequest lists keyUsage twice (identical, benign values).
fn duplicate_extension_csr(path: &Path) -> PathBuf {
    let sk = p256::ecdsa::SigningKey::random(&mut OsRng);
    let mut b = RequestBuilder::new(cn_subject("corpus"), &sk).unwrap();
    let ku = KeyUsage(KeyUsages::DigitalSignature.into());
    b.add_extension(&ku).unwrap();
    b.add_extension(&ku).unwrap();
    write_pem(path, &b.build::<p256::ecdsa::DerSignature>().unwrap())
}

/// The CSR's DER (PEM input).
fn csr_der(pem_path: &Path) -> Vec<u8> {
    let pem = fs::read_to_string(pem_path).unwrap();
    let (label, der) = pem_rfc7468::decode_vec(pem.as_bytes()).unwrap();
    assert_eq!(label, "CERTIFICATE REQUEST");
    der
}

#[test]
fn issue_refuses_hostile_inputs() {
    let started = std::time::Instant::now();
    // The slow part (prime searches) runs while OpenSSL and certfab work through the rest.
    let weak_dir = tempfile::tempdir().unwrap();
    let weak_path = weak_dir.path().to_path_buf();
    let weak = std::thread::spawn(move || weak_rsa_csrs(&weak_path));

    let mut c = Corpus::new();
    let d = c.dir.clone();

    // 9. Controls first: the harness must be able to pass.
    let good = openssl_csr(&d, "good-p256", "ec:prime256v1", "/CN=corpus", &[]);
    assert_self_signature(&good, true);
    c.issued("control-p256", PROFILE, &good, Some("SN-0001"));
    let good_rsa = openssl_csr(&d, "good-rsa2048", "rsa:2048", "/CN=corpus", &[]);
    assert_self_signature(&good_rsa, true);
    c.issued("control-rsa2048", PROFILE, &good_rsa, Some("SN-0002"));

    // 1. Inputs that are not a CSR at all.
    let mut junk = vec![0u8; 600];
    OsRng.fill_bytes(&mut junk);
    junk[0] = 0x30; // looks like a SEQUENCE, so the DER parser has to do the refusing
    let p = c.input("random.der");
    fs::write(&p, &junk).unwrap();
    c.refused(
        "random-bytes",
        PROFILE,
        &p,
        Some("SN-1"),
        3,
        &["malformed CSR"],
    );

    let p = c.input("empty.csr");
    fs::write(&p, b"").unwrap();
    c.refused("empty", PROFILE, &p, Some("SN-1"), 3, &["malformed CSR"]);

    let der = csr_der(&good);
    let p = c.input("truncated.der");
    fs::write(&p, &der[..der.len() / 2]).unwrap();
    c.refused(
        "truncated-der",
        PROFILE,
        &p,
        Some("SN-1"),
        3,
        &["malformed CSR"],
    );

    let pem = fs::read_to_string(&good).unwrap();
    let p = c.input("truncated.pem");
    fs::write(&p, &pem[..pem.len() / 2]).unwrap();
    c.refused(
        "truncated-pem",
        PROFILE,
        &p,
        Some("SN-1"),
        3,
        &["malformed CSR", "PEM"],
    );

    // A real certificate (the dev root) handed over as if it were a CSR.
    let p = c.input("root-cert-as-csr.pem");
    fs::copy(c.line.file("ca/root.pem"), &p).unwrap();
    // The label found is not quoted: the input could be any file, and a refusal reason
    // is recorded (issue 10 item 3).
    let o = c.issue("wrong-pem-label", PROFILE, &p, Some("SN-1"));
    c.check_refused(
        "wrong-pem-label",
        &o,
        &p,
        3,
        &["PEM label is not", "'CERTIFICATE REQUEST'"],
    );
    assert!(!text(&o).contains("'CERTIFICATE'"), "{}", text(&o));

    // A valid CSR padded past the limit: refused on size alone, before parsing.
    let mut big = pem.clone().into_bytes();
    big.resize(64 * 1024 + 1, b'\n');
    let p = c.input("oversize.csr");
    fs::write(&p, &big).unwrap();
    c.refused("oversize", PROFILE, &p, Some("SN-1"), 3, &["64 KiB"]);

    // The same through a pipe, where the file size is unknown up front: 1 MiB of a repeated CSR.
    let stream = pem
        .as_bytes()
        .iter()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect();
    let o = c.issue_stdin("oversize-stdin", stream);
    c.check_refused(
        "oversize-stdin",
        &o,
        Path::new("/dev/stdin"),
        3,
        &["64 KiB"],
    );

    // A device node is not read at all (opening one can have effects of its own; an endless
    // one would only be cut at the limit): a usage error naming what it is.
    c.refused(
        "endless",
        PROFILE,
        Path::new("/dev/zero"),
        Some("SN-1"),
        2,
        &["character device", "not a regular file or a pipe"],
    );

    // Usage, not policy: the CSR file does not exist.
    let p = c.input("missing.csr");
    c.refused(
        "missing-file",
        PROFILE,
        &p,
        Some("SN-1"),
        2,
        &["cannot read CSR"],
    );

    // 2. Proof of possession: well-formed CSRs whose signature was altered afterwards.
    let mut bad = der.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x01; // low byte of ECDSA s: still valid DER, wrong signature
    let p = c.input("bad-sig-p256.der");
    fs::write(&p, &bad).unwrap();
    assert_self_signature(&p, false);
    c.refused(
        "bad-signature-p256",
        PROFILE,
        &p,
        Some("SN-1"),
        3,
        &["self-signature", "proof of possession"],
    );

    let mut bad = csr_der(&good_rsa);
    let mid = bad.len() - 128;
    bad[mid] ^= 0x80;
    let p = c.input("bad-sig-rsa.der");
    fs::write(&p, &bad).unwrap();
    assert_self_signature(&p, false);
    c.refused(
        "bad-signature-rsa",
        PROFILE,
        &p,
        Some("SN-1"),
        3,
        &["self-signature", "proof of possession"],
    );

    // 3. Weak or obsolete signature algorithms (all correctly self-signed by OpenSSL).
    let p = openssl_csr(&d, "sha1", "rsa:2048", "/CN=corpus", &["-sha1"]);
    assert_self_signature(&p, true);
    c.refused(
        "sha1-rsa",
        PROFILE,
        &p,
        Some("SN-1"),
        3,
        &["sha1WithRSAEncryption", "not accepted"],
    );

    let rsa_key = d.join("good-rsa2048.key");
    let p = openssl_req(&rsa_key, &d.join("md5.csr"), &["-md5"]);
    assert_self_signature(&p, true);
    c.refused(
        "md5-rsa",
        PROFILE,
        &p,
        Some("SN-1"),
        3,
        &["md5WithRSAEncryption", "not accepted"],
    );

    let ec_key = d.join("good-p256.key");
    let p = openssl_req(&ec_key, &d.join("ecdsa-sha1.csr"), &["-sha1"]);
    assert_self_signature(&p, true);
    c.refused(
        "ecdsa-sha1",
        PROFILE,
        &p,
        Some("SN-1"),
        3,
        &["ecdsa-with-SHA1", "not accepted"],
    );

    let params = d.join("dsa-params.pem");
    let dsa_key = d.join("dsa.key");
    run_openssl(&[
        "genpkey",
        "-genparam",
        "-algorithm",
        "DSA",
        "-pkeyopt",
        "dsa_paramgen_bits:2048",
        "-out",
        params.to_str().unwrap(),
    ]);
    run_openssl(&[
        "genpkey",
        "-paramfile",
        params.to_str().unwrap(),
        "-out",
        dsa_key.to_str().unwrap(),
    ]);
    let p = openssl_req(&dsa_key, &d.join("dsa.csr"), &[]);
    assert_self_signature(&p, true);
    c.refused(
        "dsa",
        PROFILE,
        &p,
        Some("SN-1"),
        3,
        &["DSA", "not accepted"],
    );

    // 4. Weak RSA keys.
    let p = openssl_csr(&d, "rsa1024", "rsa:1024", "/CN=corpus", &[]);
    assert_self_signature(&p, true);
    c.refused(
        "rsa-1024",
        PROFILE,
        &p,
        Some("SN-1"),
        3,
        &["RSA key refused", "1024-bit", "2048"],
    );

    let e3_key = d.join("rsa-e3.key");
    run_openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-pkeyopt",
        "rsa_keygen_pubexp:3",
        "-out",
        e3_key.to_str().unwrap(),
    ]);
    let p = openssl_req(&e3_key, &d.join("rsa-e3.csr"), &[]);
    assert_self_signature(&p, true);
    c.refused(
        "rsa-e3",
        PROFILE,
        &p,
        Some("SN-1"),
        3,
        &["RSA key refused", "exponent 3", "65537"],
    );

    // 5. EC keys: explicit parameters, curves outside the allow-list.
    let ecx_key = d.join("ec-explicit.key");
    run_openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-param_enc",
        "explicit",
        "-genkey",
        "-noout",
        "-out",
        ecx_key.to_str().unwrap(),
    ]);
    let p = openssl_req(&ecx_key, &d.join("ec-explicit.csr"), &[]);
    assert_self_signature(&p, true);
    c.refused(
        "ec-explicit-params",
        PROFILE,
        &p,
        Some("SN-1"),
        3,
        &["explicit curve parameters"],
    );

    let p = openssl_csr(&d, "secp256k1", "ec:secp256k1", "/CN=corpus", &[]);
    assert_self_signature(&p, true);
    c.refused(
        "ec-secp256k1",
        PROFILE,
        &p,
        Some("SN-1"),
        3,
        &["curve", "secp256k1", "not accepted"],
    );

    let p = openssl_csr(&d, "p521", "ec:secp521r1", "/CN=corpus", &[]);
    assert_self_signature(&p, true);
    c.refused(
        "ec-p521",
        PROFILE,
        &p,
        Some("SN-1"),
        3,
        &["curve", "1.3.132.0.35", "not accepted"],
    );

    // A key kind the profile does not list (generic-iot: P-256, P-384, RSA).
    let p = openssl_csr(&d, "ed25519", "ED25519", "/CN=corpus", &[]);
    assert_self_signature(&p, true);
    c.refused(
        "ed25519-not-in-profile",
        PROFILE,
        &p,
        Some("SN-1"),
        3,
        &["Ed25519", "not allowed", "generic-iot"],
    );

    // 7. Requested extensions.
    let p = openssl_req(
        &ec_key,
        &d.join("ca-true.csr"),
        &["-addext", "basicConstraints=critical,CA:TRUE"],
    );
    assert_self_signature(&p, true);
    c.refused(
        "basic-constraints-ca",
        PROFILE,
        &p,
        Some("SN-1"),
        3,
        &["basicConstraints CA:TRUE"],
    );

    let p = openssl_req(
        &ec_key,
        &d.join("unknown-critical.csr"),
        &["-addext", "1.2.3.4.5=critical,DER:0500"],
    );
    assert_self_signature(&p, true);
    c.refused(
        "unknown-critical-ext",
        PROFILE,
        &p,
        Some("SN-1"),
        3,
        &["critical extension", "1.2.3.4.5"],
    );

    let p = duplicate_extension_csr(&d.join("duplicate-ext.csr"));
    assert_self_signature(&p, true);
    c.refused(
        "duplicate-ext",
        PROFILE,
        &p,
        Some("SN-1"),
        3,
        &["keyUsage", "twice"],
    );

    // 8. Hostile device ids, given on the command line with an otherwise valid CSR.
    let long = "A".repeat(65);
    for (case, id, needle) in [
        ("id-comma", "SN1,O=Evil", "','"),
        ("id-plus", "SN1+CN=admin", "'+'"),
        ("id-bidi", "SN1\u{202E}gpj.exe", "U+202E"),
        ("id-escape", "SN1\u{1b}[2J", "U+001B"),
        ("id-bell", "SN1\u{7}", "U+0007"),
        ("id-zero-width", "SN\u{200B}1", "U+200B"),
        ("id-65-chars", long.as_str(), "65 characters"),
        ("id-leading-space", " SN1", "leading or trailing space"),
        ("id-empty", "", "empty"),
        ("id-non-ascii", "Ger\u{e4}t-1", "not allowed"),
        ("id-homoglyph", "S\u{39d}-1", "not allowed"),
    ] {
        c.refused(case, PROFILE, &good, Some(id), 3, &["device id", needle]);
    }
    // No device id at all (generic-iot takes it from the input only).
    c.refused(
        "id-missing",
        PROFILE,
        &good,
        None,
        3,
        &["no device id", "--device-id"],
    );
    // The boundary passes: 64 characters (its own key: the ledger allows one device id per key).
    let good64 = openssl_csr(&d, "good-64", "ec:prime256v1", "/CN=corpus", &[]);
    c.issued("id-64-chars", PROFILE, &good64, Some(&"A".repeat(64)));
    // A hostile CSR subject is never copied: generic-iot builds the subject from its template.
    let hostile_subject = p256_csr(&d.join("hostile-cn.csr"), "SN1,O=Evil");
    assert_self_signature(&hostile_subject, true);
    if let Some(cert) = c.issued(
        "csr-subject-ignored",
        PROFILE,
        &hostile_subject,
        Some("SN-0003"),
    ) {
        let s = c.subject(&cert);
        if s != "subject=O=certfab development,CN=SN-0003" {
            c.fail("csr-subject-ignored", format!("unexpected subject {s}"));
        }
    }

    // Device id taken from the CSR CN (a copy of generic-iot with device_id.from: csr.CN).
    // This is also how a NUL reaches certfab: argv cannot carry one, a CSR can.
    let base = fs::read_to_string(common::repo().join("profiles/generic-iot.yaml")).unwrap();
    let cn_profile = d.join("from-csr-cn.yaml");
    fs::write(
        &cn_profile,
        format!(
            "{}\ndevice_id:\n  from: csr.CN\n",
            base.replace("name: generic-iot", "name: from-csr-cn")
        ),
    )
    .unwrap();
    let cn_profile = cn_profile.to_str().unwrap().to_string();
    let p = p256_csr(&d.join("cn-ok.csr"), "SN-0004");
    assert_self_signature(&p, true);
    c.issued("cn-control", &cn_profile, &p, None);
    for (case, cn, needle) in [
        ("cn-comma", "SN1,O=Evil", "','"),
        ("cn-nul", "SN1\0admin", "U+0000"),
        ("cn-bidi", "SN1\u{202E}gpj.exe", "U+202E"),
        ("cn-newline", "SN1\nCN=admin", "U+000A"),
        ("cn-65-chars", long.as_str(), "65 characters"),
    ] {
        let p = p256_csr(&d.join(format!("{case}.csr")), cn);
        assert_self_signature(&p, true);
        c.refused(case, &cn_profile, &p, None, 3, &["device id", needle]);
    }

    // 6. Structurally weak RSA-2048 moduli, made in Rust.
    let (roca, fermat) = weak.join().expect("weak RSA key generation");
    assert_self_signature(&roca, true);
    c.refused(
        "rsa-roca",
        PROFILE,
        &roca,
        Some("SN-1"),
        3,
        &["RSA key refused", "ROCA"],
    );
    assert_self_signature(&fermat, true);
    c.refused(
        "rsa-fermat",
        PROFILE,
        &fermat,
        Some("SN-1"),
        3,
        &["RSA key refused", "Fermat"],
    );

    eprintln!(
        "policy corpus: {} cases in {:.1?}",
        c.cases,
        started.elapsed()
    );
    assert!(
        c.failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        c.failures.len(),
        c.cases,
        c.failures.join("\n\n")
    );
}

/// The corpus generators themselves: the ROCA construction must produce what the detector
/// looks for (checked independently of certfab, residue by residue).
#[test]
fn roca_construction_has_the_fingerprint() {
    let n = roca_prime() * roca_prime();
    assert_eq!(n.bits(), 2048);
    for r in ROCA_PRIMES {
        let residue = num_traits::ToPrimitive::to_u32(&(&n % r)).unwrap();
        let g = 65537 % r;
        let mut x = 1u32;
        let mut found = false;
        loop {
            found |= x == residue;
            x = x * g % r;
            if x == 1 {
                break;
            }
        }
        assert!(found, "n mod {r} is outside <65537>");
    }
}
