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
mod ledger;
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
    /// The ledger itself: import a station's SQLite ledger into the central one; burn a dead
    /// process's intents.
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
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
        site: crate::site::SiteRef::new(cli.config.clone()),
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
        Command::Ledger(c) => ledger::run(&ctx, c),
        Command::Manifest(c) => manifest::run(&ctx, c),
        Command::Export(a) => export::run(&ctx, a),
        Command::Audit(a) => audit::run(&ctx, a),
        Command::Profile(c) => profile::run(&ctx, c),
        Command::Completions(a) => completions::completions(a),
        Command::Man(a) => completions::man(&ctx, a),
    }
}

pub(crate) struct Ctx {
    site: crate::site::SiteRef,
    json: bool,
}

impl Ctx {
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
