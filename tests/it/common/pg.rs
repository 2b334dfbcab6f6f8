//! A PostgreSQL cluster of the test's own: initdb in a temp dir, a free loopback port, TLS with
//! a CA made here (so the ledger connects with `sslmode=verify-full`), run as the `postgres`
//! user when the tests run as root (PostgreSQL refuses to run as root; CI runs as root), and
//! stopped when dropped. hsm-fixtures/setup-host.sh installs the server from Debian's packages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running cluster.
pub struct PgCluster {
    /// Holds the data directory, its socket, TLS files and secrets.
    pub dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    /// The CA that issued the server's certificate (the ledger's `sslrootcert`).
    pub ca: PathBuf,
    /// The WAL's own directory when it is not in the data directory
    /// ([`PgCluster::start_with_waldir`]); removed after the server stops.
    _waldir: Option<tempfile::TempDir>,
}

/// A ledger database in a cluster: its URL for the site config and a password file.
pub struct PgLedger {
    /// `postgresql://ROLE@localhost:PORT/DB?sslmode=verify-full&sslrootcert=…`.
    pub url: String,
    /// The role's password, 0600 (for `ledger_password: file:…`).
    pub password_file: PathBuf,
    pub db: String,
    pub role: String,
}

/// The directory with initdb and pg_ctl: on PATH, else the newest under /usr/lib/postgresql.
fn pg_bin() -> PathBuf {
    if let Ok(o) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if p.join("initdb").exists() {
            return p;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.retain(|p| p.join("initdb").exists());
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .expect("PostgreSQL is not installed: run hsm-fixtures/setup-host.sh")
}

fn is_root() -> bool {
    // The owner of /proc/self is this process's user.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn chown_postgres(p: &Path) {
    if is_root() {
        let o = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(p)
            .output()
            .expect("chown");
        assert!(o.status.success(), "chown {}: {:?}", p.display(), o);
    }
}

fn write_private(p: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
        .expect("create private file");
    f.write_all(text.as_bytes()).expect("write private file");
}

fn openssl(args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A random password (hex) for a test role.
fn password() -> String {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("random");
    hex::encode(b)
}

impl PgCluster {
    /// initdb, TLS, start on a free port.
    pub fn start() -> Self {
        Self::start_with_waldir(None)
    }

    /// As [`PgCluster::start`], with the write-ahead log in a new directory under `wal_parent`
    /// (initdb `--waldir`): the benchmark puts it on tmpfs to stand for a log device whose
    /// flush takes microseconds (NVMe, battery-backed cache), so what a station costs apart
    /// from this disk's 0.3–3.6 ms flushes can be measured. Never for a real ledger.
    pub fn start_with_waldir(wal_parent: Option<&Path>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // The server runs as postgres: it must reach its directory under root's temp dir.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .expect("chmod");
        let bin = pg_bin();
        let data = dir.path().join("data");
        let tls = dir.path().join("tls");
        std::fs::create_dir(&tls).expect("tls dir");
        let ca = tls.join("ca.pem");
        let ca_key = tls.join("ca.key");
        let d = |p: &Path| p.to_str().expect("utf-8 path").to_string();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &d(&ca_key),
            "-out",
            &d(&ca),
            "-days",
            "2",
            "-subj",
            "/CN=certfab test PostgreSQL CA",
        ]);
        let key = tls.join("server.key");
        let csr = tls.join("server.csr");
        let crt = tls.join("server.crt");
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &d(&key),
            "-out",
            &d(&csr),
            "-subj",
            "/CN=localhost",
        ]);
        let ext = tls.join("ext.cnf");
        std::fs::write(
            &ext,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &d(&csr),
            "-CA",
            &d(&ca),
            "-CAkey",
            &d(&ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &d(&ext),
            "-out",
            &d(&crt),
        ]);
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod key");
        let pwfile = dir.path().join("super.pw");
        write_private(&pwfile, &password());
        chown_postgres(&tls);
        chown_postgres(&pwfile);
        std::fs::create_dir(&data).expect("data dir");
        chown_postgres(&data);
        let waldir = wal_parent.map(|parent| {
            let w = tempfile::tempdir_in(parent).expect("WAL tempdir");
            std::fs::set_permissions(
                w.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o711),
            )
            .expect("chmod WAL dir");
            // initdb fills an empty directory the server's user owns.
            std::fs::create_dir(w.path().join("wal")).expect("WAL dir");
            chown_postgres(&w.path().join("wal"));
            w
        });
        let wal_arg = waldir
            .as_ref()
            .map(|w| format!("--waldir={}", d(&w.path().join("wal"))));
        let me = Self {
            dir,
            port: free_port(),
            bin,
            ca,
            _waldir: waldir,
        };
        let mut initdb_args = vec!["-D".to_string(), d(&data)];
        initdb_args.extend(wal_arg);
        let initdb_args: Vec<&str> = initdb_args.iter().map(String::as_str).collect();
        let o = me.as_server(
            &me.bin.join("initdb"),
            &[
                &initdb_args[..],
                &[
                    "-U",
                    "certfab_test_super",
                    &format!("--pwfile={}", d(&pwfile)),
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
            ]
            .concat(),
        );
        assert!(
            o.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // Only TLS from loopback with a password; the superuser through the socket in the data
        // directory.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all ::1/128 scram-sha-256\n",
        )
        .expect("pg_hba.conf");
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nmax_connections = 200\n",
            me.port, d(&data), d(&crt), d(&key)
        );
        let mut c = std::fs::read_to_string(data.join("postgresql.conf")).expect("read conf");
        c.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), c).expect("write conf");
        chown_postgres(&data);
        me.start_server();
        me
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs a server program as postgres when root.
    fn as_server(&self, prog: &Path, args: &[&str]) -> Output {
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(prog);
            c
        } else {
            Command::new(prog)
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run a PostgreSQL program")
    }

    /// pg_ctl start, waiting until it accepts connections.
    pub fn start_server(&self) {
        let data = self.data();
        let log = data.join("server.log");
        let o = self.as_server(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            o.status.success(),
            "pg_ctl start: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// pg_ctl stop with `mode` (smart, fast, immediate).
    pub fn stop_server(&self, mode: &str) -> Output {
        let data = self.data();
        self.as_server(
            &self.bin.join("pg_ctl"),
            &["-D", data.to_str().unwrap(), "-m", mode, "-w", "stop"],
        )
    }

    /// psql as the superuser through the socket, stopping at the first error.
    pub fn psql(&self, db: &str, sql: &str) -> Output {
        Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.data())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "certfab_test_super",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .expect("psql")
    }

    /// [`PgCluster::psql`] that must succeed; its stdout.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let o = self.psql(db, sql);
        assert!(
            o.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A value from one query (`-At`).
    pub fn value(&self, db: &str, sql: &str) -> String {
        let o = Command::new(self.bin.join("psql"))
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.data())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "certfab_test_super",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(
            o.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// A new database owned by a new login role (what docs/central-ledger.md has a site create).
    pub fn ledger(&self, name: &str) -> PgLedger {
        let role = format!("{name}_owner");
        let pw = password();
        self.sql(
            "postgres",
            &format!("CREATE ROLE {role} LOGIN PASSWORD '{pw}'"),
        );
        self.sql("postgres", &format!("CREATE DATABASE {name} OWNER {role}"));
        self.sql(name, &format!("ALTER SCHEMA public OWNER TO {role}"));
        let password_file = self.dir.path().join(format!("{role}.pw"));
        write_private(&password_file, &pw);
        PgLedger {
            url: self.url(&role, name),
            password_file,
            db: name.to_string(),
            role,
        }
    }

    /// Another login role on `ledger`'s database, for least-privilege tests.
    pub fn role(&self, ledger: &PgLedger, role: &str) -> PgLedger {
        let pw = password();
        self.sql(
            "postgres",
            &format!("CREATE ROLE {role} LOGIN PASSWORD '{pw}'"),
        );
        let password_file = self.dir.path().join(format!("{role}.pw"));
        write_private(&password_file, &pw);
        PgLedger {
            url: self.url(role, &ledger.db),
            password_file,
            db: ledger.db.clone(),
            role: role.to_string(),
        }
    }

    /// The ledger URL for `role` on database `db`, TLS verified against the test CA.
    pub fn url(&self, role: &str, db: &str) -> String {
        format!(
            "postgresql://{role}@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}",
            self.port,
            self.ca.display()
        )
    }
}

/// A site config for another station of `line` on a central ledger: the line's config with
/// its own station id and serial prefix, and `ledger:` pointing at `ledger` (password from its
/// file). Returns the config's path (beside the line's, so relative paths still hold).
pub fn station_config(
    line: &super::Line,
    name: &str,
    station_id: &str,
    prefix: u8,
    ledger: &PgLedger,
) -> PathBuf {
    let text = std::fs::read_to_string(line.config()).expect("read line config");
    let text = with_ledger(&text, ledger)
        .replace("  id: dev-line\n", &format!("  id: {station_id}\n"))
        .replace(
            "  serial_prefix: 1\n",
            &format!("  serial_prefix: {prefix}\n"),
        );
    let path = line.file(&format!("{name}.yaml"));
    std::fs::write(&path, text).expect("write station config");
    path
}

/// The config text with `ledger:` replaced by `ledger`'s URL and password source.
pub fn with_ledger(text: &str, ledger: &PgLedger) -> String {
    let mut out = String::new();
    let mut replaced = false;
    for l in text.lines() {
        if l.starts_with("ledger:") {
            out.push_str(&format!(
                "ledger: \"{}\"\nledger_password: file:{}\n",
                ledger.url,
                ledger.password_file.display()
            ));
            replaced = true;
        } else if !l.starts_with("ledger_password:") {
            out.push_str(l);
            out.push('\n');
        }
    }
    assert!(replaced, "the config has no ledger: line");
    out
}

/// The test process's one cluster for lines on PostgreSQL ([`super::Backend::Postgres`]):
/// started on first use, a database of its own per line ([`PgCluster::fresh_ledger`]). A
/// static is never dropped, so a watcher started with it (in a session of its own, so a
/// Ctrl-C of the tests does not take it first) stops the server and removes its directory
/// once this process is gone, however it ended.
pub fn shared() -> &'static PgCluster {
    static SHARED: std::sync::OnceLock<PgCluster> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let c = PgCluster::start();
        let pidfile = c.data().join("postmaster.pid");
        let script = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 1; done; \
             pm=$(head -n 1 '{pidfile}'); kill -QUIT \"$pm\" 2>/dev/null; \
             while kill -0 \"$pm\" 2>/dev/null; do sleep 0.2; done; rm -rf '{dir}'",
            me = std::process::id(),
            pidfile = pidfile.display(),
            dir = c.dir.path().display(),
        );
        // `setsid --fork` returns once the watcher runs in its own session.
        let started = Command::new("setsid")
            .args(["--fork", "sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("start the shared cluster's watcher");
        assert!(started.success(), "setsid: {started}");
        c
    })
}

impl PgCluster {
    /// A new ledger database with a name no other in this cluster has.
    pub fn fresh_ledger(&self) -> PgLedger {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.ledger(&format!("line{n}"))
    }

    /// `pg_dump` of database `db` (plain SQL, data included).
    pub fn dump(&self, db: &str) -> Vec<u8> {
        let o = Command::new(self.bin.join("pg_dump"))
            .arg("-h")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-U", "certfab_test_super", db])
            .output()
            .expect("pg_dump");
        assert!(
            o.status.success(),
            "pg_dump {db}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    }

    /// Runs statements on database `db` as the superuser, in one round trip.
    pub fn exec(&self, db: &str, sql: &str) {
        self.client(db)
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A connection to database `db` as the superuser, through the socket.
    fn client(&self, db: &str) -> postgres::Client {
        postgres::Config::new()
            .host_path(self.data())
            .port(self.port)
            .user("certfab_test_super")
            .dbname(db)
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to {db}: {e}"))
    }

    /// The rows of `sql` on database `db` as the superuser, each column as text (integers in
    /// decimal, bytes in lower-case hex, NULL as `NULL`: what [`super::sqlite_query`] gives).
    pub fn query(&self, db: &str, sql: &str) -> Vec<Vec<String>> {
        self.try_query(db, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// [`PgCluster::query`], its error returned (a poll that may run before the schema exists).
    pub fn try_query(&self, db: &str, sql: &str) -> Result<Vec<Vec<String>>, postgres::Error> {
        use postgres::SimpleQueryMessage;
        let msgs = self.client(db).simple_query(sql)?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| match r.get(i) {
                            None => "NULL".to_string(),
                            Some(v) => v.strip_prefix("\\x").unwrap_or(v).to_string(),
                        })
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.stop_server("immediate");
    }
}
