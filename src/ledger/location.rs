//! Connecting to a central ledger (the `ledger:` URL is parsed in [`crate::config`]), and
//! what a PostgreSQL failure means for the line.

use super::LedgerError;
use crate::config::{PgTarget, PgTls};
use std::path::Path;

impl PgTarget {
    /// Connects (TLS as configured; the password read from its source just now and handed to
    /// the driver only). `application_name` shows the station in `pg_stat_activity`.
    pub(crate) fn connect(&self, station: &str) -> Result<postgres::Client, LedgerError> {
        use secrecy::ExposeSecret;
        let shown = self.to_string();
        let open_err = |msg: String| LedgerError::Open {
            path: shown.clone(),
            msg,
        };
        let mut cfg = postgres::Config::new();
        let app: String = format!("certfab {station}")
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .take(60)
            .collect();
        cfg.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(&app)
            .connect_timeout(std::time::Duration::from_secs(10))
            .keepalives(true)
            .keepalives_idle(std::time::Duration::from_secs(30))
            // A writer waits for the others' write lock at most this long, then fails closed.
            .options("-c lock_timeout=60s");
        if let Some(src) = &self.password {
            let pw = src
                .read("ledger password")
                .map_err(|e| LedgerError::Secret(e.to_string()))?;
            cfg.password(pw.expose_secret());
        }
        let client = match &self.tls {
            PgTls::Disable => {
                cfg.ssl_mode(postgres::config::SslMode::Disable);
                cfg.connect(postgres::NoTls)
            }
            PgTls::VerifyFull { root, client } => {
                use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
                let tls_err = |what: &str, e: openssl::error::ErrorStack| {
                    open_err(format!("TLS set-up: {what}: {e}"))
                };
                let mut b = SslConnector::builder(SslMethod::tls_client())
                    .map_err(|e| tls_err("OpenSSL", e))?;
                b.set_verify(SslVerifyMode::PEER);
                if let Some(r) = root {
                    b.set_ca_file(r).map_err(|e| {
                        tls_err(&format!("cannot load sslrootcert {}", r.display()), e)
                    })?;
                }
                if let Some((c, k)) = client {
                    check_key_private(k).map_err(open_err)?;
                    b.set_certificate_chain_file(c)
                        .map_err(|e| tls_err(&format!("cannot load sslcert {}", c.display()), e))?;
                    b.set_private_key_file(k, SslFiletype::PEM)
                        .map_err(|e| tls_err(&format!("cannot load sslkey {}", k.display()), e))?;
                    b.check_private_key()
                        .map_err(|e| tls_err("sslkey is not the key of sslcert", e))?;
                }
                cfg.ssl_mode(postgres::config::SslMode::Require);
                cfg.connect(postgres_openssl::MakeTlsConnector::new(b.build()))
            }
        };
        client.map_err(|e| open_err(server_message(&e)))
    }
}

/// A client key readable by others is refused, as PIN files are.
fn check_key_private(p: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(p).map_err(|e| format!("cannot read sslkey {}: {e}", p.display()))?;
    let mode = m.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "sslkey {} has mode {mode:o}: group or others can read it; run chmod 600 {}",
            p.display(),
            p.display()
        ));
    }
    Ok(())
}

/// What a PostgreSQL failure means for the line, and the fix. The driver's messages carry no
/// password.
pub(crate) fn server_message(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let msg = db.message();
        return match code {
            c if c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03") => format!(
                "the ledger database went away ({msg}); stopped before the next signature. When it is back, run the same command again (a batch resumes)"
            ),
            "28P01" | "28000" => format!(
                "the server refused the login ({msg}); check the role in ledger: and the password in ledger_password"
            ),
            "3D000" => format!("{msg}; create it as docs/central-ledger.md shows"),
            "42501" => format!(
                "the ledger role lacks a privilege ({msg}); grant it as docs/central-ledger.md shows (schema changes are run by the owner role)"
            ),
            "55P03" => format!(
                "waited too long for the ledger's write lock ({msg}); another certfab holds it: check pg_stat_activity, then run again"
            ),
            _ => format!("the ledger database refused a statement ({code}: {msg})"),
        };
    }
    // The driver's top message is terse ("error performing TLS handshake"); its causes say why.
    let mut full = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        full.push_str(": ");
        full.push_str(&c.to_string());
        cause = c.source();
    }
    if full.contains("TLS") {
        return format!(
            "{full}; the server's certificate must chain to sslrootcert (or the system's trust store) and name the host of the URL"
        );
    }
    if e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()) {
        return format!(
            "the ledger database is unreachable or went away ({full}); stopped before the next signature. When it is back, run the same command again (a batch resumes)"
        );
    }
    full
}
