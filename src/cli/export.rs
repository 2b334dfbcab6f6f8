use super::Ctx;
use crate::error::{Error, ExitCode};
use crate::export::{self, ExportInput, ExportOptions, Format};
use crate::site::read_input;
use std::path::{Path, PathBuf};

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
    let input = verified_input(ctx, &a.manifest, a.trust.as_deref())?;
    let mut settings = std::collections::BTreeMap::new();
    for s in &a.set {
        let (k, v) = s
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| {
                Error::Usage(format!(
                    "--set '{s}' must be KEY=VALUE (e.g. aws.region=eu-west-1)"
                ))
            })?;
        settings.insert(k.to_string(), v.to_string());
    }
    let verification_cert_pem = match &a.verification_cert {
        Some(p) => Some(
            String::from_utf8(read_input(p, "verification certificate")?).map_err(|_| {
                Error::Input {
                    path: p.display().to_string(),
                    msg: "not a PEM text file".into(),
                    code: ExitCode::Usage,
                }
            })?,
        ),
        None => None,
    };
    let mut opts = ExportOptions {
        max_rows: a.max_rows,
        settings,
        verification_cert_pem,
        claim: None,
    };
    if a.format.needs_signer() {
        // Each entry is signed by the manifest signer while rendering; nothing is written
        // until every entry is signed, and existing files are refused before writing.
        let site = ctx.site()?;
        site.login()?;
        let signer = site.signer(site.clock.now())?;
        let summary = export::export_signed(a.format, &input, &opts, &signer, &a.out, a.force)?;
        ctx.print(
            &serde_json::to_value(&summary).unwrap_or_default(),
            &summary.text(),
        );
        return Ok(ExitCode::Ok);
    }
    // Everything that can be refused is refused before the HSM signs a claim.
    export::preflight(a.format, &input, &opts, &a.out, a.force)?;
    if a.format.needs_claim() {
        opts.claim = Some(claim(ctx, &a, &input)?);
    }
    let summary = export::export(a.format, &input, &opts, &a.out, a.force)?;
    ctx.print(
        &serde_json::to_value(&summary).unwrap_or_default(),
        &summary.text(),
    );
    Ok(ExitCode::Ok)
}

/// The export's input, only from a manifest whose signature, chain, Merkle root and counts
/// verify against the trusted roots: an unverified manifest is refused here.
fn verified_input(ctx: &Ctx, manifest: &Path, trust: Option<&Path>) -> Result<ExportInput, Error> {
    let trust = crate::manifest::Trust::resolve(trust, ctx.config.as_deref())?;
    let verified = crate::manifest::verify(manifest, &trust)?;
    Ok(ExportInput::from(&verified))
}

fn claim(ctx: &Ctx, a: &ExportArgs, input: &ExportInput) -> Result<export::ClaimMaterial, Error> {
    let passphrase = match (&a.key_passphrase, a.plain_keys) {
        (Some(_), true) => {
            return Err(Error::Usage(
                "--key-passphrase and --plain-keys exclude each other".into(),
            ))
        }
        (Some(src), false) => Some(
            crate::secret::SecretSource::parse(src, Path::new("."))?.read("Claim key passphrase")?,
        ),
        (None, true) => None,
        (None, false) => {
            return Err(Error::Usage(
                "aws-fleet-claim writes the claim's private key encrypted: give --key-passphrase env:NAME or file:PATH (or --plain-keys to write it unencrypted, explicitly)".into(),
            ))
        }
    };
    let site = ctx.site()?;
    let profile = crate::profile::Profile::load(&site.config.profile_path(&a.claim_profile))?;
    let claim_id = match &a.claim_id {
        Some(id) => id.clone(),
        None => export::claim::default_claim_id(input)?,
    };
    crate::site::issue_claim(
        &site,
        &profile,
        &claim_id,
        passphrase.as_ref(),
        a.kdf_iterations,
    )
}
