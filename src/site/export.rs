//! `certfab export`: the manifest verified against the trusted roots (an unverified manifest
//! has no way in), then the format rendered; the formats that need the token open the site
//! for it (the manifest signer for `microchip-jws`, the fleet claim for `aws-fleet-claim`),
//! after everything that can be refused without it.

use super::{issue_claim, SiteRef};
use crate::error::Error;
use crate::export::{self, ExportInput, ExportOptions, Format, Summary};
use std::path::{Path, PathBuf};

/// The fleet claim an `aws-fleet-claim` export issues.
#[derive(Debug, Clone)]
pub struct ClaimArgs {
    /// The claim profile (path or name).
    pub profile: String,
    /// The claim's ledger id (default `fleet-claim-<batch>`).
    pub claim_id: Option<String>,
    /// Passphrase source for the claim key (`env:NAME`, `file:PATH`).
    pub key_passphrase: Option<String>,
    /// Write the claim key unencrypted (explicit).
    pub plain_keys: bool,
    /// PBKDF2 iterations for the encrypted claim key.
    pub kdf_iterations: u32,
}

/// What `certfab export` was asked.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// The format.
    pub format: Format,
    /// The manifest (its signature at MANIFEST.jws).
    pub manifest: PathBuf,
    /// Roots to verify it against (default: the site config's).
    pub trust: Option<PathBuf>,
    /// Output directory.
    pub out: PathBuf,
    /// Replace existing files.
    pub force: bool,
    /// At most this many devices per row file.
    pub max_rows: Option<usize>,
    /// `KEY=VALUE` settings overriding the profile's `cloud:` section, as given.
    pub set: Vec<String>,
    /// The verification certificate from `certfab ca verification-cert`.
    pub verification_cert: Option<PathBuf>,
    /// For `aws-fleet-claim`.
    pub claim: ClaimArgs,
}

/// Verifies the manifest and writes the export.
pub fn export(site: &SiteRef, req: ExportRequest) -> Result<Summary, Error> {
    let input = verified_input(site, &req.manifest, req.trust.as_deref())?;
    let mut settings = std::collections::BTreeMap::new();
    for s in &req.set {
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
    let verification_cert_pem = match &req.verification_cert {
        Some(p) => Some(
            String::from_utf8(super::read_input(p, "verification certificate")?).map_err(|_| {
                Error::Input {
                    path: p.display().to_string(),
                    msg: "not a PEM text file".into(),
                    code: crate::error::ExitCode::Usage,
                }
            })?,
        ),
        None => None,
    };
    let mut opts = ExportOptions {
        max_rows: req.max_rows,
        settings,
        verification_cert_pem,
        claim: None,
    };
    if req.format.needs_signer() {
        // Each entry is signed by the manifest signer while rendering; nothing is written
        // until every entry is signed, and existing files are refused before writing.
        let site = site.open()?;
        site.login()?;
        let signer = site.signer(site.clock.now())?;
        return Ok(export::export_signed(
            req.format, &input, &opts, &signer, &req.out, req.force,
        )?);
    }
    // Everything that can be refused is refused before the HSM signs a claim.
    export::preflight(req.format, &input, &opts, &req.out, req.force)?;
    if req.format.needs_claim() {
        opts.claim = Some(claim(site, &req.claim, &input)?);
    }
    Ok(export::export(
        req.format, &input, &opts, &req.out, req.force,
    )?)
}

/// The export's input, only from a manifest whose signature, chain, Merkle root and counts
/// verify against the trusted roots.
fn verified_input(
    site: &SiteRef,
    manifest: &Path,
    trust: Option<&Path>,
) -> Result<ExportInput, Error> {
    let trust = crate::manifest::Trust::resolve(trust, site.path_opt())?;
    // One streamed verifying pass keeps only what is bounded (count, first device, which
    // cloud values differ); the exporters read the devices again from the file.
    let mut stream = export::stream::DeviceStream::new(manifest.to_path_buf(), String::new());
    let verified =
        crate::manifest::verify::verify_file_with(manifest, None, &trust, |d| stream.observe(&d))?;
    stream.sha256 = verified.sha256.clone();
    Ok(ExportInput::streamed(&verified, stream))
}

fn claim(
    site: &SiteRef,
    a: &ClaimArgs,
    input: &ExportInput,
) -> Result<crate::issue::ClaimMaterial, Error> {
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
    let site = site.open()?;
    let profile = site.profile(&a.profile)?;
    let claim_id = match &a.claim_id {
        Some(id) => id.clone(),
        None => export::claim::default_claim_id(input)?,
    };
    issue_claim(
        &site,
        &profile,
        &claim_id,
        passphrase.as_ref(),
        a.kdf_iterations,
    )
}
