//! Shared test support: a development line (SoftHSM token in a temp dir, built by the same
//! hsm-fixtures/dev-line.sh users run, once per test process, and copied for each test), the
//! certfab binary, the Python that runs the test checkers, and OpenSSL helpers.
#![allow(dead_code)]

pub mod pg;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A development line in its own temp dir.
pub struct Line {
    pub dir: tempfile::TempDir,
    /// The central ledger's cluster when the line runs on one (`CERTFAB_TEST_LEDGER=postgres`,
    /// or [`Line::on_postgres`]); stopped after the line.
    pub pg: Option<(pg::PgCluster, pg::PgLedger)>,
    /// The line's own database in the test process's shared cluster ([`pg::shared`]), when it
    /// runs on [`Backend::Postgres`] through [`on_backend`] or `CERTFAB_TEST_LEDGER`.
    pub shared_pg: Option<pg::PgLedger>,
}

/// The ledger engines a test can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The line's `ledger.sqlite` (the default).
    Sqlite,
    /// A database of its own in the test process's one PostgreSQL cluster.
    Postgres,
}

thread_local! {
    /// The back end [`Line::new`] (and [`Line::fresh`], [`Line::on`]) give a line made on this
    /// thread; set by [`on_backend`]. Each test runs on a thread of its own, so one test's
    /// choice is never another's.
    static BACKEND: std::cell::Cell<Option<Backend>> = const { std::cell::Cell::new(None) };
}

/// Runs the test `f` with every line it makes on `backend`: how [`both_ledgers!`] runs an
/// existing test, unchanged, on PostgreSQL as well.
pub fn on_backend(backend: Backend, f: fn()) {
    BACKEND.with(|b| b.set(Some(backend)));
    f();
    BACKEND.with(|b| b.set(None));
}

/// Gives each named test of the calling module a twin in its `postgres` module that runs it,
/// unchanged, with every line on a PostgreSQL ledger of its own (`MODULE::postgres::NAME`);
/// the test itself stays the SQLite run. `NAME::VARIANT` twins one variant of a test that a
/// module's own macro runs several ways (station.rs: `NAME::sim`). Tests read and edit the ledger through
/// [`Line::ledger_query`] and [`Line::ledger_exec`], which reach either engine.
#[macro_export]
macro_rules! postgres_twins {
    ($($name:ident $(:: $variant:ident)?),* $(,)?) => {
        /// The PostgreSQL runs of this module's ledger tests ([`crate::common::on_backend`]).
        mod postgres {
            $(
                #[test]
                fn $name() {
                    $crate::common::on_backend(
                        $crate::common::Backend::Postgres,
                        super::$name $(:: $variant)?,
                    )
                }
            )*
        }
    };
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

/// Runs hsm-fixtures/dev-line.sh into `dir` (on `token`, SoftHSM by default); panics with its
/// output if it fails, after ending any server a half-built line started.
fn build_line(token: Option<Token>, dir: &Path) {
    if let Err(e) = try_build_line(token, dir) {
        panic!("{e}");
    }
}

fn try_build_line(token: Option<Token>, dir: &Path) -> Result<(), String> {
    let mut cmd = Command::new(repo().join("hsm-fixtures/dev-line.sh"));
    if let Some(t) = token {
        cmd.args(["--token", t.name()]);
    }
    let out = cmd
        .arg(dir)
        .env("CERTFAB", bin())
        .output()
        .map_err(|e| format!("cannot run hsm-fixtures/dev-line.sh: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    // A line that failed half-way may have started its servers: end them.
    let stop = dir.join("stop");
    if stop.exists() {
        let _ = Command::new(stop).output();
    }
    Err(format!(
        "dev-line.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// The SoftHSM dev line this test process copies for every [`Line::new`]: built by
/// hsm-fixtures/dev-line.sh on first use, under target/tmp/dev-lines/PID (cargo's scratch
/// space for integration tests), and never handed to a test itself. Templates of test
/// processes that have ended are removed here. A build that failed fails every test that
/// wanted a copy, with the script's output, without building again.
pub fn template() -> &'static Path {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = TEMPLATE.get_or_init(|| {
        let dir = process_scratch("dev-lines")?;
        try_build_line(None, &dir)?;
        Ok(dir)
    });
    match built {
        Ok(dir) => dir,
        Err(e) => panic!("the shared dev line could not be built: {e}"),
    }
}

/// target/tmp/KIND/PID for this test process (not created), after removing what test
/// processes that have ended left under target/tmp/KIND.
fn process_scratch(kind: &str) -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(kind);
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let name = e.file_name();
            let pid = name.to_str().and_then(|n| n.parse::<u32>().ok());
            if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = root.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(dir)
}

/// Copies a built line from `from` into the existing empty dir `to` as `cp -a` would (modes
/// kept: the PIN files stay 0600, the token store 0700), then points the copy's own files at
/// itself: dev-line.sh writes absolute paths (certfab.yaml's SOFTHSM2_CONF, softhsm2.conf's
/// token dir), which would otherwise still name the template's token.
pub fn copy_line(from: &Path, to: &Path) {
    copy_tree(from, to)
        .unwrap_or_else(|e| panic!("copy dev line {} to {}: {e}", from.display(), to.display()));
    let (old, new) = (from.to_str().unwrap(), to.to_str().unwrap());
    for e in std::fs::read_dir(to).unwrap().flatten() {
        if !e.file_type().unwrap().is_file() {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        if text.contains(old) {
            std::fs::write(e.path(), text.replace(old, new)).unwrap();
        }
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let kind = e.file_type()?;
        if kind.is_dir() {
            std::fs::create_dir(&dst)?;
            copy_tree(&src, &dst)?;
            std::fs::set_permissions(&dst, std::fs::metadata(&src)?.permissions())?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else {
            // std::fs::copy keeps the permission bits.
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// `java` running one of the test harnesses in tests/java (Hono's and the JDK's own code
/// paths), compiled once per test process by javac into target/tmp/java/PID. Launching a
/// `.java` source file compiles it on every run (~3 CPU-seconds each); a compiled class with
/// the client compiler only and a serial collector starts in a tenth of that, and the
/// harnesses run the same code either way.
pub fn java(class: &str) -> Command {
    static CLASSES: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = CLASSES.get_or_init(|| {
        let dir = process_scratch("java")?;
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let sources: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/java"))
            .map_err(|e| e.to_string())?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "java"))
            .collect();
        let o = Command::new("javac")
            .arg("-d")
            .arg(&dir)
            .args(&sources)
            .output()
            .map_err(|e| format!("run javac (JDK 11+): {e}"))?;
        if !o.status.success() {
            return Err(format!("javac failed: {}", text(&o)));
        }
        Ok(dir)
    });
    let dir = match built {
        Ok(dir) => dir,
        Err(e) => panic!("the Java test harnesses could not be compiled: {e}"),
    };
    let mut cmd = Command::new("java");
    cmd.args(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-cp"])
        .arg(dir)
        .arg(class);
    cmd
}

/// The Python that runs the test-only checkers (botocore, jwcrypto, parliament, …): the
/// virtual environment hsm-fixtures/setup-host.sh makes under target/pyenv, so the tests
/// never depend on, or change, the packages of the system's interpreter.
pub fn python() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is target/tmp")
        .to_path_buf();
    let py = target.join("pyenv/bin/python3");
    assert!(
        py.exists(),
        "{} does not exist: run hsm-fixtures/setup-host.sh, which makes the test checkers' virtual environment",
        py.display()
    );
    py
}

impl Line {
    /// A SoftHSM line of its own: a copy of the line this test process built once with
    /// hsm-fixtures/dev-line.sh ([`template`]), in a temp dir. Every copy has the same CA keys,
    /// certificates and PINs, and its own token store, ledger and files, so what one test does
    /// to its line (a locked PIN, a deleted key, a ledger) no other test sees. Building a line
    /// runs a dozen certfab commands against the token; copying one is a few file copies.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_line(template(), dir.path());
        Self::with_ledger_from_env(dir)
    }

    /// The back end a line made now gets: the test's choice ([`on_backend`]), else
    /// `CERTFAB_TEST_LEDGER=postgres` for every line, else SQLite.
    pub fn backend_wanted() -> Backend {
        if let Some(b) = BACKEND.with(|b| b.get()) {
            return b;
        }
        if std::env::var("CERTFAB_TEST_LEDGER").as_deref() == Ok("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// The line as the tests run it: on its SQLite ledger, or on a database of its own in the
    /// process's shared cluster (see [`Line::backend_wanted`]).
    fn with_ledger_from_env(dir: tempfile::TempDir) -> Self {
        let mut line = Self {
            dir,
            pg: None,
            shared_pg: None,
        };
        if Self::backend_wanted() == Backend::Postgres {
            let ledger = pg::shared().fresh_ledger();
            let text = std::fs::read_to_string(line.config()).expect("read line config");
            std::fs::write(line.config(), pg::with_ledger(&text, &ledger)).expect("write config");
            line.shared_pg = Some(ledger);
        }
        line
    }

    /// A SoftHSM line whose ledger is a central PostgreSQL ledger in a cluster of its own
    /// (which the test may stop and start: fault tests).
    pub fn on_postgres() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_line(template(), dir.path());
        let mut line = Self {
            dir,
            pg: None,
            shared_pg: None,
        };
        line.move_to_postgres();
        line
    }

    /// The engine this line's ledger is on.
    pub fn backend(&self) -> Backend {
        if self.pg.is_some() || self.shared_pg.is_some() {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// The cluster and database of a line on PostgreSQL.
    pub fn pg_ledger(&self) -> Option<(&pg::PgCluster, &pg::PgLedger)> {
        match (&self.pg, &self.shared_pg) {
            (Some((c, l)), _) => Some((c, l)),
            (None, Some(l)) => Some((pg::shared(), l)),
            (None, None) => None,
        }
    }

    /// The rows of one query on the line's ledger, whichever engine it is on, each column as
    /// text: integers in decimal, bytes in lower-case hex, NULL as `NULL`. The SQL must mean
    /// the same in both dialects (values written into it; no placeholders).
    pub fn ledger_query(&self, sql: &str) -> Vec<Vec<String>> {
        match self.pg_ledger() {
            Some((c, l)) => c.query(&l.db, sql),
            None => sqlite_query(&self.file("ledger.sqlite"), sql),
        }
    }

    /// The one value of a query that returns one row of one column.
    pub fn ledger_value(&self, sql: &str) -> String {
        let rows = self.ledger_query(sql);
        assert!(
            rows.len() == 1 && rows[0].len() == 1,
            "{sql} returned {rows:?}, not one value"
        );
        rows[0][0].clone()
    }

    /// A count (or any integer) from the ledger.
    pub fn ledger_count(&self, sql: &str) -> i64 {
        let v = self.ledger_value(sql);
        v.parse()
            .unwrap_or_else(|_| panic!("{sql} returned {v:?}, not an integer"))
    }

    /// A bytes literal in the line's ledger's SQL dialect (tamper statements).
    pub fn sql_bytes(&self, b: &[u8]) -> String {
        match self.backend() {
            Backend::Sqlite => format!("x'{}'", hex::encode(b)),
            Backend::Postgres => format!("'\\x{}'::bytea", hex::encode(b)),
        }
    }

    /// Everything the ledger stores, as bytes to search (a secret must not be in it): the
    /// SQLite file, or a `pg_dump` of the line's database.
    pub fn ledger_bytes(&self) -> Vec<u8> {
        match self.pg_ledger() {
            Some((c, l)) => c.dump(&l.db),
            None => std::fs::read(self.file("ledger.sqlite")).expect("read ledger.sqlite"),
        }
    }

    /// Runs statements on the line's ledger as its owner would (tamper tests: rows edited
    /// behind certfab's back), on either engine.
    pub fn ledger_exec(&self, sql: &str) {
        match self.pg_ledger() {
            Some((c, l)) => c.exec(&l.db, sql),
            None => {
                let db = rusqlite::Connection::open(self.file("ledger.sqlite")).unwrap();
                db.execute_batch(sql)
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
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

    /// A line built for this test alone by hsm-fixtures/dev-line.sh (SoftHSM), for a test that
    /// checks the ceremony itself or needs CA keys no other line has.
    pub fn fresh() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        build_line(None, dir.path());
        Self::with_ledger_from_env(dir)
    }

    /// A line built for this test alone on `token` with hsm-fixtures/dev-line.sh --token.
    pub fn on(token: Token) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        build_line(Some(token), dir.path());
        Self::with_ledger_from_env(dir)
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

    /// SIGKILLs the line's p11-kit server and every process it forked (one per client
    /// connection: killing the listener alone interrupts no running client).
    pub fn kill_remote_token(&self) {
        let pid = std::fs::read_to_string(self.file("p11-kit.pid")).unwrap();
        let pid = pid.trim();
        let children = Command::new("ps")
            .args(["-o", "pid=", "--ppid", pid])
            .output()
            .unwrap();
        let mut pids = vec![pid.to_string()];
        pids.extend(
            String::from_utf8_lossy(&children.stdout)
                .split_whitespace()
                .map(str::to_string),
        );
        assert!(
            pids.len() >= 2,
            "no per-connection process to kill: {pids:?}"
        );
        let k = Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .output()
            .unwrap();
        assert!(k.status.success(), "{}", text(&k));
        // Dead and reaped before anything restarts it: dev-line.sh takes a server whose pid
        // is still there for a live one.
        let start = Instant::now();
        while pids
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists())
        {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{pids:?} outlived SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the line's server again, as a user would: dev-line.sh on the same directory
    /// restarts what is not running.
    pub fn restart_remote_token(&self) {
        let o = Command::new(repo().join("hsm-fixtures/dev-line.sh"))
            .arg(self.path())
            .env("CERTFAB", bin())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
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

/// The rows of `sql` on a SQLite file, each column as text (see [`Line::ledger_query`]).
pub fn sqlite_query(path: &Path, sql: &str) -> Vec<Vec<String>> {
    use rusqlite::types::ValueRef;
    let db =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut st = db.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let n = st.column_count();
    let rows = st
        .query_map([], |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        ValueRef::Null => "NULL".to_string(),
                        ValueRef::Integer(v) => v.to_string(),
                        ValueRef::Real(v) => v.to_string(),
                        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                        ValueRef::Blob(b) => hex::encode(b),
                    })
                })
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.map(|r| r.unwrap_or_else(|e| panic!("{sql}: {e}")))
        .collect()
}

/// Opens the line's ledger read-only for assertions.
pub fn ledger(line: &Line) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        line.file("ledger.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap()
}

/// OpenSC's pkcs11-spy, which logs every PKCS#11 call to the module behind it.
pub fn pkcs11_spy() -> &'static str {
    [
        "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so",
        "/usr/lib/aarch64-linux-gnu/pkcs11-spy.so",
        "/usr/lib/pkcs11/pkcs11-spy.so",
    ]
    .into_iter()
    .find(|m| Path::new(m).exists())
    .expect("pkcs11-spy.so (opensc) is not installed")
}

/// Points a SoftHSM line's site config at pkcs11-spy in front of SoftHSM, logging to `log`
/// (with times in UTC, as `certfab audit --spy-log` reads them).
pub fn spy_on(line: &Line, log: &Path) {
    let text = std::fs::read_to_string(line.config()).unwrap();
    let module = softhsm_module();
    let conf = format!(
        "    SOFTHSM2_CONF: {}",
        line.file("softhsm2.conf").display()
    );
    assert!(text.contains(&module) && text.contains(&conf), "{text}");
    let text = text.replace(
        &format!("module: {module}"),
        &format!("module: {}", pkcs11_spy()),
    );
    let text = text.replace(
        &conf,
        &format!(
            "{conf}\n    PKCS11SPY: {module}\n    PKCS11SPY_OUTPUT: {}\n    TZ: UTC",
            log.display()
        ),
    );
    std::fs::write(line.config(), text).unwrap();
}
