//! Where a ledger lives (the site config's `ledger:`): a SQLite file, or a PostgreSQL database named by a
//! `postgresql://user@host:port/db?sslmode=verify-full…` URL (docs/central-ledger.md). The
//! password never comes from the URL or argv: it comes from a secret source, like the PIN.

use crate::secret::SecretSource;
use std::path::{Path, PathBuf};

/// The site config's `ledger:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerLocation {
    /// The embedded default: one file on this PC.
    Sqlite(PathBuf),
    /// A central ledger shared by every station of a site.
    Postgres(PgTarget),
}

impl LedgerLocation {
    /// `ledger:` as written: a `postgresql://` (or `postgres://`) URL, else a path relative to
    /// `base`. `password` is `ledger_password:`, refused for a file.
    pub fn parse(value: &str, base: &Path, password: Option<SecretSource>) -> Result<Self, String> {
        if value.starts_with("postgresql://") || value.starts_with("postgres://") {
            return PgTarget::parse(value, base, password).map(Self::Postgres);
        }
        if value.contains("://") {
            return Err("is a URL certfab does not know; write a file path (SQLite) or postgresql://user@host:port/database?sslmode=verify-full".into());
        }
        if password.is_some() {
            return Err("ledger_password is set, but the ledger is a SQLite file, which has no password; remove ledger_password or set ledger: to a postgresql:// URL".into());
        }
        Ok(Self::Sqlite(base.join(value)))
    }

    /// The SQLite file, if that is the back end.
    pub fn sqlite(&self) -> Option<&Path> {
        match self {
            Self::Sqlite(p) => Some(p),
            Self::Postgres(_) => None,
        }
    }
}

impl From<&Path> for LedgerLocation {
    fn from(p: &Path) -> Self {
        Self::Sqlite(p.to_path_buf())
    }
}

impl From<&PathBuf> for LedgerLocation {
    fn from(p: &PathBuf) -> Self {
        Self::Sqlite(p.clone())
    }
}

impl From<PathBuf> for LedgerLocation {
    fn from(p: PathBuf) -> Self {
        Self::Sqlite(p)
    }
}

impl From<&LedgerLocation> for LedgerLocation {
    fn from(l: &LedgerLocation) -> Self {
        l.clone()
    }
}

/// How a ledger is named in messages: a path, or the URL without secrets.
impl std::fmt::Display for LedgerLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "{}", p.display()),
            Self::Postgres(t) => write!(f, "{t}"),
        }
    }
}

/// TLS to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgTls {
    /// `sslmode=verify-full`: the server's certificate must chain to `root` (else the system's
    /// trust store) and name the host; optionally a client certificate.
    VerifyFull {
        root: Option<PathBuf>,
        client: Option<(PathBuf, PathBuf)>,
    },
    /// `sslmode=disable`: only to a loopback address, where no network is crossed.
    Disable,
}

/// A PostgreSQL ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTarget {
    pub user: String,
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub tls: PgTls,
    /// `ledger_password:` (none: the server must not ask, e.g. client-certificate login).
    pub password: Option<SecretSource>,
    /// `ledger_manifest_wait:`: how long a `manifest build` waits for another one on this
    /// ledger before it stops with exit 5 ([`DEFAULT_MANIFEST_WAIT`] unless set).
    pub manifest_wait: std::time::Duration,
}

/// A manifest build's wait for another build on the same central ledger, when the site config
/// does not set `ledger_manifest_wait:`: long enough for a run-end manifest of a busy shift.
pub const DEFAULT_MANIFEST_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The URL without secrets, as messages show it.
impl std::fmt::Display for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(
            f,
            "postgresql://{}@{host}:{}/{}",
            self.user, self.port, self.dbname
        )
    }
}

fn pct_decode(s: &str, what: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("the {what} has a bad %-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("the {what} is not UTF-8"))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|a| a.is_loopback())
            .unwrap_or(false)
}

impl PgTarget {
    /// Parses the URL; relative certificate paths are relative to `base` (the config's
    /// directory).
    pub fn parse(url: &str, base: &Path, password: Option<SecretSource>) -> Result<Self, String> {
        let rest = url
            .strip_prefix("postgresql://")
            .or_else(|| url.strip_prefix("postgres://"))
            .ok_or("is not a postgresql:// URL")?;
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (auth, hostpath) = main.rsplit_once('@').ok_or(
            "names no role: write postgresql://ROLE@HOST:PORT/DATABASE (the station's database role)",
        )?;
        if auth.contains(':') {
            // Not shown: it is a password.
            return Err("contains a password; a password never goes in the config: remove it from the URL and set ledger_password: env:NAME or file:PATH".into());
        }
        let user = pct_decode(auth, "role")?;
        if user.is_empty() {
            return Err("names no role before @".into());
        }
        let (hostport, db) = hostpath
            .split_once('/')
            .ok_or("names no database: write postgresql://ROLE@HOST:PORT/DATABASE")?;
        let dbname = pct_decode(db, "database name")?;
        if dbname.is_empty() {
            return Err("names no database after the host".into());
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("has an unclosed [ in its host")?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() || host.contains(',') {
            return Err("needs exactly one host name or address".into());
        }
        let port = match port {
            None => 5432,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or("has a port that is not a number from 1 to 65535")?,
        };
        let mut mode = None;
        let mut root = None;
        let mut cert = None;
        let mut key = None;
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = pct_decode(v, k)?;
            match k {
                "sslmode" => mode = Some(v),
                "sslrootcert" => root = Some(base.join(v)),
                "sslcert" => cert = Some(base.join(v)),
                "sslkey" => key = Some(base.join(v)),
                "password" => {
                    return Err("contains a password; a password never goes in the config: remove it from the URL and set ledger_password: env:NAME or file:PATH".into())
                }
                other => {
                    return Err(format!(
                        "has a parameter certfab does not use ({other}); it takes sslmode, sslrootcert, sslcert and sslkey"
                    ))
                }
            }
        }
        let tls = match mode.as_deref().unwrap_or("verify-full") {
            "verify-full" => PgTls::VerifyFull {
                root,
                client: match (cert, key) {
                    (Some(c), Some(k)) => Some((c, k)),
                    (None, None) => None,
                    _ => return Err("names only one of sslcert and sslkey; a client certificate needs both".into()),
                },
            },
            "disable" if is_loopback(&host) => PgTls::Disable,
            "disable" => return Err(format!(
                "has sslmode=disable for {host}, which is not a loopback address: the ledger's records and the password would cross the network in the clear; use sslmode=verify-full"
            )),
            other => return Err(format!(
                "has sslmode={other}; certfab takes verify-full (the server's certificate is checked against sslrootcert and must name the host) or, on loopback only, disable"
            )),
        };
        Ok(Self {
            user,
            host,
            port,
            dbname,
            tls,
            password,
            manifest_wait: DEFAULT_MANIFEST_WAIT,
        })
    }
}
