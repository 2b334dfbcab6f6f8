//! Shared test support: a fresh development line (SoftHSM token in a temp dir, built by the
//! same hsm-fixtures/dev-line.sh users run), the certfab binary, and OpenSSL helpers.
#![allow(dead_code)]

pub mod pg;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A development line in its own temp dir.
pub struct Line {
    pub dir: tempfile::TempDir,
    /// The central ledger's cluster when the line runs on one (`CERTFAB_TEST_LEDGER=postgres`,
    /// or [`Line::on_postgres`]); stopped after the line.
    pub pg: Option<(pg::PgCluster, pg::PgLedger)>,
}

/// The tokens of the matrix (`hsm-fixtures/dev-line.sh --token`, docs/hsm-compat.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    SoftHsm,
    Tpm2,
    Kryoptic,
    P11Kit,
}

impl Token {
    /// The name dev-line.sh takes and writes to DIR/token-kind.
    pub fn name(self) -> &'static str {
        match self {
            Token::SoftHsm => "softhsm",
            Token::Tpm2 => "tpm2",
            Token::Kryoptic => "kryoptic",
            Token::P11Kit => "p11-kit",
        }
    }
}

/// Ends the servers a line started (swtpm, p11-kit server), also when a test fails.
impl Drop for Line {
    fn drop(&mut self) {
        let stop = self.path().join("stop");
        if stop.exists() {
            let _ = Command::new(stop).output();
        }
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_certfab")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl Line {
    /// Builds a fresh line with hsm-fixtures/dev-line.sh (on SoftHSM, its default).
    pub fn new() -> Self {
        Self::build(None)
    }

    /// Builds a fresh line on `token` with hsm-fixtures/dev-line.sh --token.
    pub fn on(token: Token) -> Self {
        Self::build(Some(token))
    }

    fn build(token: Option<Token>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(repo().join("hsm-fixtures/dev-line.sh"));
        if let Some(t) = token {
            cmd.args(["--token", t.name()]);
        }
        let out = cmd
            .arg(dir.path())
            .env("CERTFAB", bin())
            .output()
            .expect("run dev-line.sh");
        if !out.status.success() {
            // A line that failed half-way may have started its servers: end them.
            let stop = dir.path().join("stop");
            if stop.exists() {
                let _ = Command::new(stop).output();
            }
        }
        assert!(
            out.status.success(),
            "dev-line.sh failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut line = Self { dir, pg: None };
        if std::env::var("CERTFAB_TEST_LEDGER").as_deref() == Ok("postgres") {
            line.move_to_postgres();
        }
        line
    }

    /// A fresh SoftHSM line whose ledger is a central PostgreSQL ledger in a cluster of its
    /// own.
    pub fn on_postgres() -> Self {
        let mut line = Self::new();
        if line.pg.is_none() {
            line.move_to_postgres();
        }
        line
    }

    /// Points the line's config at a new database in a new cluster (the SQLite ledger the
    /// line has not used yet is left alone).
    fn move_to_postgres(&mut self) {
        let cluster = pg::PgCluster::start();
        let ledger = cluster.ledger("certfab");
        let text = std::fs::read_to_string(self.config()).expect("read line config");
        std::fs::write(self.config(), pg::with_ledger(&text, &ledger)).expect("write config");
        self.pg = Some((cluster, ledger));
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.path().join("certfab.yaml")
    }

    /// Runs certfab with this line's config.
    pub fn certfab(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--config")
            .arg(self.config())
            .args(args)
            .env_remove("CERTFAB_CONFIG")
            .output()
            .expect("run certfab")
    }

    /// Runs pkcs11-tool against this line's token, logged in.
    pub fn pkcs11_tool(&self, args: &[&str]) -> Output {
        let pin = std::fs::read_to_string(self.path().join("pin")).unwrap();
        Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", self.path().join("softhsm2.conf"))
            .args([
                "--module",
                &softhsm_module(),
                "--token-label",
                "certfab-dev",
                "--login",
                "--pin",
                pin.trim(),
            ])
            .args(args)
            .output()
            .expect("run pkcs11-tool")
    }

    /// The line's PKCS#11 module and the environment its site config gives it, read from
    /// certfab.yaml, so independent tools (pkcs11-tool) reach the same token.
    pub fn module_and_env(&self) -> (String, Vec<(String, String)>) {
        let text = std::fs::read_to_string(self.config()).unwrap();
        let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let p = &yaml["pkcs11"];
        let module = p["module"].as_str().expect("pkcs11.module").to_string();
        let env = p["env"]
            .as_mapping()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().unwrap().to_string(),
                            v.as_str().unwrap().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        (module, env)
    }

    /// Runs pkcs11-tool against this line's token through whatever module the line uses
    /// (SoftHSM, tpm2-pkcs11, kryoptic, p11-kit-client), logged in.
    pub fn pkcs11_tool_any(&self, args: &[&str]) -> Output {
        let pin = std::fs::read_to_string(self.path().join("pin")).unwrap();
        let (module, env) = self.module_and_env();
        Command::new("pkcs11-tool")
            .envs(env)
            .args([
                "--module",
                &module,
                "--token-label",
                "certfab-dev",
                "--login",
                "--pin",
                pin.trim(),
            ])
            .args(args)
            .output()
            .expect("run pkcs11-tool")
    }

    /// A file path inside the line dir.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// Runs `certfab --json batch` of `count` host-generated keys named by `id_template` into
    /// `out`, with `extra` flags (how keys are stored, …); asserts it succeeded and returns its
    /// summary.
    pub fn host_batch(
        &self,
        profile: &str,
        count: usize,
        id_template: &str,
        out: &Path,
        extra: &[&str],
    ) -> serde_json::Value {
        let count = count.to_string();
        let mut args = vec![
            "--json",
            "batch",
            "--profile",
            profile,
            "--count",
            &count,
            "--keygen",
            "host",
            "--id-template",
            id_template,
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ok_json(&self.certfab(&args))
    }

    /// Runs `certfab --json manifest build` of `batches` (with `--profile` if given) into `out`.
    pub fn manifest_build(&self, batches: &[&str], profile: Option<&str>, out: &Path) -> Output {
        let mut args = vec!["--json", "manifest", "build"];
        for b in batches {
            args.extend(["--batch", b]);
        }
        if let Some(p) = profile {
            args.extend(["--profile", p]);
        }
        args.extend(["--out", out.to_str().unwrap()]);
        self.certfab(&args)
    }

    /// Runs `certfab GLOBAL… ca verification-cert --ca CA --cn CN --out OUT`.
    pub fn run_verification_cert(&self, global: &[&str], ca: &str, cn: &str, out: &Path) -> Output {
        let mut args = global.to_vec();
        args.extend([
            "ca",
            "verification-cert",
            "--ca",
            ca,
            "--cn",
            cn,
            "--out",
            out.to_str().unwrap(),
        ]);
        self.certfab(&args)
    }

    /// Runs `certfab --json ca verification-cert --ca issuing --cn CODE --out OUT`, asserts it
    /// succeeded and that OpenSSL verifies the result under the issuing CA; returns its summary.
    pub fn verification_cert(&self, code: &str, out: &Path) -> serde_json::Value {
        let summary = ok_json(&self.run_verification_cert(&["--json"], "issuing", code, out));
        let v = openssl_verify(&self.file("ca/issuing.pem"), &[], &["-partial_chain"], out);
        assert!(v.status.success(), "{}", text(&v));
        summary
    }

    /// Has the root sign an issuing-CA certificate (pathLen 0) for the CSR at `csr` with
    /// `validity`, into `out`; asserts it succeeded.
    pub fn root_signs_ca(&self, csr: &Path, validity: &str, out: &Path) {
        ok(&self.certfab(&[
            "ca",
            "sign",
            "--issuer-key",
            "root",
            "--csr",
            csr.to_str().unwrap(),
            "--validity",
            validity,
            "--path-len",
            "0",
            "--out",
            out.to_str().unwrap(),
        ]));
    }

    /// `openssl verify` of a device certificate against this line's root, with the issuing CA
    /// as the intermediate.
    pub fn verify_device(&self, cert: &Path) -> Output {
        openssl_verify(
            &self.file("ca/root.pem"),
            &[&self.file("ca/issuing.pem")],
            &[],
            cert,
        )
    }
}

/// `certfab issue` arguments: device `id` under `profile` from `csr`, into `out`.
pub fn issue_args<'a>(profile: &'a str, csr: &'a Path, id: &'a str, out: &'a Path) -> [&'a str; 9] {
    [
        "issue",
        "--profile",
        profile,
        "--csr",
        csr.to_str().unwrap(),
        "--device-id",
        id,
        "--out",
        out.to_str().unwrap(),
    ]
}

/// Asserts the command succeeded; returns its stdout.
pub fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", text(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts the command succeeded; returns its stdout parsed as JSON.
pub fn ok_json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(o)).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

/// Its stdout parsed as JSON, whatever the exit status (for commands that report a refusal
/// in JSON; the caller checks the status).
pub fn stdout_json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

pub fn softhsm_module() -> String {
    for m in [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    ] {
        if Path::new(m).exists() {
            return m.into();
        }
    }
    panic!("SoftHSM2 not installed");
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs openssl with args, returning the output.
pub fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl")
}

/// `openssl verify` of `cert` with `ca` as the trust anchor, `untrusted` as intermediates and
/// `extra` options (e.g. `-partial_chain`, `-purpose sslclient`).
pub fn openssl_verify(ca: &Path, untrusted: &[&Path], extra: &[&str], cert: &Path) -> Output {
    let mut args = vec!["verify", "-CAfile", ca.to_str().unwrap()];
    for u in untrusted {
        args.extend(["-untrusted", u.to_str().unwrap()]);
    }
    args.extend_from_slice(extra);
    args.push(cert.to_str().unwrap());
    openssl(&args)
}

/// `openssl x509 -noout ARGS` on a PEM certificate file (e.g. `-subject`, `-serial`); asserts
/// it succeeded and returns its output.
pub fn openssl_x509(cert: &Path, args: &[&str]) -> String {
    let mut all = vec!["x509", "-in", cert.to_str().unwrap(), "-noout"];
    all.extend_from_slice(args);
    ok(&openssl(&all))
}

/// The SHA-256 fingerprint OpenSSL computes for a PEM certificate file: lower-case hex, no
/// colons.
pub fn openssl_sha256_fingerprint(cert: &Path) -> String {
    openssl_x509(cert, &["-fingerprint", "-sha256"])
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase()
}

/// Makes a device key with OpenSSL: `keyspec` is e.g. "ec:prime256v1", "rsa:2048", "ED25519".
pub fn openssl_key(dir: &Path, name: &str, keyspec: &str) -> PathBuf {
    let key = dir.join(format!("{name}.key"));
    let k = key.to_str().unwrap();
    let gen = match keyspec.split_once(':') {
        Some(("ec", curve)) => {
            let opt = format!("ec_paramgen_curve:{curve}");
            openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", &opt, "-out", k])
        }
        Some(("rsa", bits)) => {
            let opt = format!("rsa_keygen_bits:{bits}");
            openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", &opt, "-out", k])
        }
        _ => openssl(&["genpkey", "-algorithm", keyspec, "-out", k]),
    };
    assert!(gen.status.success(), "{}", text(&gen));
    key
}

/// Makes a CSR for an existing key with OpenSSL; `extra` goes to `openssl req`.
pub fn openssl_req(key: &Path, csr: &Path, subj: &str, extra: &[&str]) -> PathBuf {
    let mut args = vec![
        "req",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-subj",
        subj,
        "-out",
        csr.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = openssl(&args);
    assert!(o.status.success(), "openssl {args:?}\n{}", text(&o));
    csr.to_path_buf()
}

/// Makes a device key and CSR with OpenSSL.
pub fn openssl_csr(dir: &Path, name: &str, keyspec: &str, subj: &str, extra: &[&str]) -> PathBuf {
    let key = openssl_key(dir, name, keyspec);
    openssl_req(&key, &dir.join(format!("{name}.csr")), subj, extra)
}

/// Writes `dir/name`: a copy of a shipped profile with text replacements applied, for tests
/// that need one field changed.
pub fn derived_profile(
    dir: &Path,
    name: &str,
    base: &str,
    replacements: &[(&str, &str)],
) -> PathBuf {
    let mut text = std::fs::read_to_string(repo().join("profiles").join(base)).unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "{base} has no {from:?}");
        text = text.replace(from, to);
    }
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A fresh P-256 key's CSR (PEM) with subject CN=`cn`, made in Rust (fast, for big inputs).
pub fn rust_csr_pem(cn: &str) -> String {
    use der::EncodePem;
    use std::str::FromStr;
    use x509_cert::builder::{Builder, RequestBuilder};
    let sk = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let subject = x509_cert::name::Name::from_str(&format!("CN={cn}")).unwrap();
    let req = RequestBuilder::new(subject, &sk)
        .unwrap()
        .build::<p256::ecdsa::DerSignature>()
        .unwrap();
    req.to_pem(der::pem::LineEnding::LF).unwrap()
}

/// A fresh P-256 public key, SPKI PEM.
pub fn rust_pubkey_pem() -> String {
    use p256::pkcs8::EncodePublicKey;
    p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng)
        .public_key()
        .to_public_key_pem(p256::pkcs8::LineEnding::LF)
        .unwrap()
}

/// Opens the line's ledger read-only for assertions.
pub fn ledger(line: &Line) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        line.file("ledger.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap()
}
