use super::Ctx;
use crate::error::{Error, ExitCode};
use crate::export::Format;
use crate::site::export::{ClaimArgs, ExportRequest};
use std::io::Write as _;
use std::path::PathBuf;

/// `certfab export`
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Output format (docs/exports.md describes each and what consumes it).
    #[arg(long, value_enum)]
    format: Format,
    /// The manifest (its signature is read from MANIFEST.jws); verified before anything else.
    #[arg(long)]
    manifest: PathBuf,
    /// Root certificate(s) to verify the manifest against (default: the site config's roots).
    #[arg(long)]
    trust: Option<PathBuf>,
    /// Output directory (created); existing files in it are refused unless --force.
    #[arg(long)]
    out: PathBuf,
    /// At most N devices per row file; more are split into -0001, -0002, … files.
    #[arg(long, value_name = "N")]
    max_rows: Option<usize>,
    /// A platform setting, overriding the profile's cloud: section (e.g. aws.region=eu-west-1).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Verification certificate from `certfab ca verification-cert` (CA registration).
    #[arg(long)]
    verification_cert: Option<PathBuf>,
    /// Replace files that already exist in --out.
    #[arg(long)]
    force: bool,
    /// aws-fleet-claim: the claim certificate's profile (path or name).
    #[arg(long, default_value = "aws-fleet-claim")]
    claim_profile: String,
    /// aws-fleet-claim: the claim's device id in the ledger (default fleet-claim-<batch>).
    #[arg(long)]
    claim_id: Option<String>,
    /// aws-fleet-claim: passphrase source for the claim key: env:NAME or file:PATH.
    #[arg(long)]
    key_passphrase: Option<String>,
    /// aws-fleet-claim: write the claim key unencrypted (explicit; else --key-passphrase).
    #[arg(long)]
    plain_keys: bool,
    /// PBKDF2-SHA256 iterations for the encrypted claim key.
    #[arg(long, default_value_t = 2048)]
    kdf_iterations: u32,
}

pub(super) fn run(ctx: &Ctx, a: ExportArgs) -> Result<ExitCode, Error> {
    let summary = crate::site::export::export(
        &ctx.site,
        ExportRequest {
            format: a.format,
            manifest: a.manifest,
            trust: a.trust,
            out: a.out,
            force: a.force,
            max_rows: a.max_rows,
            set: a.set,
            verification_cert: a.verification_cert,
            claim: ClaimArgs {
                profile: a.claim_profile,
                claim_id: a.claim_id,
                key_passphrase: a.key_passphrase,
                plain_keys: a.plain_keys,
                kdf_iterations: a.kdf_iterations,
            },
        },
    )?;
    // Streamed: an export of 100,000 files lists each one, read back as it is printed.
    let mut out = std::io::stdout().lock();
    if ctx.json {
        let _ = summary.write_json(&mut out, true);
        let _ = writeln!(out);
    } else {
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
        summary
            .each_line(|l| {
                // As `Ctx::print` does: line feeds are the layout, anything else unsafe is
                // escaped.
                let _ = writeln!(out, "{}", crate::text::escape_keep_lines(l));
                Ok(())
            })
            .map_err(Error::from)?;
        let _ = out.flush();
    }
    Ok(ExitCode::Ok)
}
