//! Command-line definitions (clap derive) and the printing of results. No certificate logic
//! lives here: each command calls the library and prints what it returns.

/// `println!` that ignores a closed stdout (`certfab … | head`): a reader that has seen enough
/// is not an error, and must not become a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod audit;
mod batch;
mod ca;
mod completions;
mod dryrun;
mod export;
mod hsm;
mod issue;
mod lifecycle;
mod log;
mod manifest;
mod profile;
mod station;

use crate::error::{Error, ExitCode};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// certfab: HSM-backed certificate factory for manufacturing lines.
#[derive(Debug, Parser)]
#[command(name = "certfab", version, about, long_about = None)]
pub struct Cli {
    /// Site config (certfab.yaml). Also CERTFAB_CONFIG.
    #[arg(long, global = true, env = "CERTFAB_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print a machine-readable JSON result on stdout; messages go to stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect and measure the PKCS#11 token.
    #[command(subcommand)]
    Hsm(hsm::HsmCommand),
    /// CA key ceremony: generate keys in the token, self-sign, CSR, sign, import.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Issue one device certificate.
    Issue(issue::IssueArgs),
    /// Issue for many devices with a crash-safe ledger; `batch status`, `batch resume`.
    Batch(batch::BatchArgs),
    /// Run a station: identify, sign, install, prove and lock devices one after another.
    Station(station::StationArgs),
    /// Revoke a device's certificate (or one by serial); `revoke list` for cloud exports.
    Revoke(lifecycle::RevokeArgs),
    /// Make a CRL signed by a CA key in the HSM.
    Crl(lifecycle::CrlArgs),
    /// Rotate a device's key in the field: a new certificate that supersedes the old.
    Renew(lifecycle::RenewArgs),
    /// The tamper-evident audit log: signed checkpoints, verification, events.
    #[command(subcommand)]
    Log(log::LogCommand),
    /// Signed manifests of batches and shifts: build, verify, show, merge.
    #[command(subcommand)]
    Manifest(manifest::ManifestCommand),
    /// Cloud pre-registration files from a verified manifest (docs/exports.md).
    Export(export::ExportArgs),
    /// Cross-check ledgers, manifests, certificate files and CA certificates; report findings
    /// (text, --json, --html) and exit 3 when one is at or above --fail-on.
    Audit(audit::AuditArgs),
    /// Device-class profiles: `profile show P` prints one resolved, every default visible.
    #[command(subcommand)]
    Profile(profile::ProfileCommand),
    /// Print a shell completion script (bash, zsh or fish) on stdout.
    Completions(completions::CompletionsArgs),
    /// Write the man pages (one per command) into a directory; for packaging and docs/man.
    #[command(hide = true)]
    Man(completions::ManArgs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    let ctx = Ctx {
        config: cli.config,
        json: cli.json,
    };
    match cli.command {
        Command::Hsm(c) => hsm::run(&ctx, c),
        Command::Ca(c) => ca::run(&ctx, c),
        Command::Issue(a) => issue::run(&ctx, a),
        Command::Batch(a) => batch::run(&ctx, a),
        Command::Station(a) => station::run(&ctx, a),
        Command::Revoke(a) => lifecycle::revoke(&ctx, a),
        Command::Crl(a) => lifecycle::crl(&ctx, a),
        Command::Renew(a) => lifecycle::renew(&ctx, a),
        Command::Log(c) => log::run(&ctx, c),
        Command::Manifest(c) => manifest::run(&ctx, c),
        Command::Export(a) => export::run(&ctx, a),
        Command::Audit(a) => audit::run(&ctx, a),
        Command::Profile(c) => profile::run(&ctx, c),
        Command::Completions(a) => completions::completions(a),
        Command::Man(a) => completions::man(&ctx, a),
    }
}

pub(crate) struct Ctx {
    config: Option<PathBuf>,
    json: bool,
}

impl Ctx {
    fn site(&self) -> Result<crate::site::Site, Error> {
        let path = self
            .config
            .as_ref()
            .ok_or(Error::Config(crate::config::ConfigError::Missing))?;
        crate::site::Site::open(path)
    }

    /// Prints a result: JSON on stdout with --json, else the human text.
    fn print(&self, value: &serde_json::Value, human: &str) {
        if self.json {
            outln!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            // Values in `human` are escaped where it is built; this keeps any control character
            // that slipped through from reaching the terminal (line feeds are the layout).
            outln!("{}", crate::text::escape_keep_lines(human));
        }
    }
}

/// Reads a file named on the command line: a regular file or a pipe (`--csr /dev/stdin`),
/// never a device or directory; at most one byte past the 64 KiB limit, so an endless pipe
/// cannot exhaust memory. The messages never quote the content.
fn read_input(path: &std::path::Path, what: &str) -> Result<Vec<u8>, Error> {
    use crate::input::{read_user_file, Pipes, ReadError};
    read_user_file(path, crate::csr::MAX_INPUT, Pipes::Allowed).map_err(|e| Error::Input {
        path: path.display().to_string(),
        code: match e {
            ReadError::TooLarge(_) => ExitCode::Rejected,
            _ => ExitCode::Usage,
        },
        msg: match e {
            ReadError::TooLarge(_) => {
                format!("{what} is over the 64 KiB limit; refused before parsing")
            }
            e => format!("cannot read {what}: {e}"),
        },
    })
}

/// `--var NAME=VALUE` flags as a map from `{prefix}NAME` to VALUE.
fn parse_vars(
    vars: &[String],
    prefix: &str,
) -> Result<std::collections::BTreeMap<String, String>, Error> {
    let mut map = std::collections::BTreeMap::new();
    for v in vars {
        let (k, val) = v
            .split_once('=')
            .ok_or_else(|| Error::Usage(format!("--var '{v}' must be NAME=VALUE")))?;
        map.insert(format!("{prefix}{k}"), val.to_string());
    }
    Ok(map)
}

/// Writes a new device certificate as `cert_path` (the leaf) and `chain_path` (the leaf, then
/// the issuer's chain, with the root if `with_root`); both must not exist yet.
fn write_cert_files(
    issuer: &crate::site::Issuer,
    der: &[u8],
    with_root: bool,
    cert_path: &std::path::Path,
    chain_path: &std::path::Path,
) -> Result<(), Error> {
    let leaf = crate::issue::pem(der);
    let chain = format!(
        "{leaf}{}",
        issuer.cert.device_chain_pem(&issuer.chain, with_root)
    );
    use crate::output::{Access, Durability, Existing, OutDir};
    let (dir, cert_name) = crate::output::split(cert_path)?;
    let (chain_dir, chain_name) = crate::output::split(chain_path)?;
    if dir != chain_dir {
        return Err(Error::Usage(
            "cert.pem and chain.pem must be in one directory".into(),
        ));
    }
    let out = OutDir::create(dir)?;
    let cert = out.stage(cert_name, leaf.as_bytes(), Access::Shared, Durability::Now)?;
    let chain = out.stage(
        chain_name,
        chain.as_bytes(),
        Access::Shared,
        Durability::Now,
    )?;
    cert.commit(Existing::Refuse)?;
    if let Err(e) = chain.commit(Existing::Refuse) {
        // Leave no half result: a cert.pem without its chain.pem looks finished to scripts.
        let _ = out.remove(cert_name);
        return Err(e.into());
    }
    out.sync_dir()?;
    Ok(())
}

/// `--validity` and `--not-before` for CA commands.
fn validity(
    validity: &str,
    not_before: Option<&str>,
) -> Result<(time::OffsetDateTime, Option<time::OffsetDateTime>), Error> {
    let nb = match not_before {
        Some(s) => time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|e| {
            Error::Usage(format!(
                "--not-before '{s}' is not RFC 3339 (e.g. 2026-01-01T00:00:00Z): {e}"
            ))
        })?,
        None => time::OffsetDateTime::now_utc(),
    };
    let nb = nb.replace_nanosecond(0).unwrap_or(nb);
    let na = match validity {
        "none" => None,
        v => {
            let d = crate::profile::parse_duration(v)
                .map_err(|e| Error::Usage(format!("--validity: {e}")))?;
            Some(nb.checked_add(d).ok_or_else(|| {
                Error::Usage(format!(
                    "--not-before plus --validity {v} is past the last time X.509 can express"
                ))
            })?)
        }
    };
    Ok((nb, na))
}
