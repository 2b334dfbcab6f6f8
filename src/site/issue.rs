//! `certfab issue`: one device through the pipeline and the ledger, then cert.pem and
//! chain.pem. Refusals that need no token (output already there, unreadable input) come
//! before the login.

use super::files::{parse_vars, read_input, write_cert_files};
use super::SiteRef;
use crate::crypto::Signer;
use crate::error::{Error, ExitCode};
use crate::issue::{self, IssueContext, IssueError, KeySource, Request};
use std::path::PathBuf;

/// What `certfab issue` was asked.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// Profile: a path, or a name in the site's `profiles_dir`.
    pub profile: String,
    /// The device's CSR file (PEM or DER).
    pub csr: Option<PathBuf>,
    /// The device's public key file, when it cannot make a CSR.
    pub pubkey: Option<PathBuf>,
    /// Device id (default: per the profile's `device_id.from`).
    pub device_id: Option<String>,
    /// `NAME=VALUE` for `{var.NAME}`, as given.
    pub vars: Vec<String>,
    /// Output directory for cert.pem and chain.pem (a dry run only checks they are free).
    pub out: Option<PathBuf>,
    /// Put the root into chain.pem too.
    pub with_root: bool,
}

/// What was issued (or found issued), as `certfab issue --json` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IssueOutcome {
    pub device_id: String,
    /// Serial, hex.
    pub serial: String,
    /// The ledger already had this device with this key: nothing was signed.
    pub already_issued: bool,
    /// The standing batch it went into (what `manifest build --batch` takes).
    pub batch: Option<String>,
    /// Profile name.
    pub profile: String,
    /// SHA-256 of the profile file, hex.
    pub profile_sha256: String,
    /// The CA's name in the site config.
    pub ca: String,
    /// Where the key was made.
    pub key_origin: String,
    /// Key type, e.g. `EC P-256`.
    pub key_type: String,
    /// notBefore, RFC 3339.
    pub not_before: String,
    /// notAfter, RFC 3339 (`99991231235959Z` for no expiry).
    pub not_after: String,
    /// SHA-256 of the certificate DER, hex.
    pub cert_sha256: String,
    /// SHA-256 of the device's SPKI, hex.
    pub spki_sha256: String,
    /// cert.pem.
    pub cert: PathBuf,
    /// chain.pem.
    pub chain: PathBuf,
}

/// Issues one device certificate through the ledger and writes cert.pem and chain.pem.
pub fn issue(site: &SiteRef, req: &IssueRequest) -> Result<IssueOutcome, Error> {
    let site = site.open()?;
    let profile = site.profile(&req.profile)?;
    let out = req
        .out
        .as_ref()
        .ok_or_else(|| Error::Usage("certfab issue needs --out DIR".into()))?;
    let cert_path = out.join("cert.pem");
    let chain_path = out.join("chain.pem");
    crate::output::check_free(&[&cert_path, &chain_path])?;
    let (request, input_name) = request(req)?;
    let ca_ref = site.ca_ref(&profile)?;
    // Through the ledger: intent before signature, exactly one certificate per device and key.
    let mut session = site.issuing_session(Some(&profile), &ca_ref, None)?;
    let ctx = IssueContext {
        profile: &profile,
        ca: &session.ca.cert,
        signature: session.key.algorithm(),
        serial_prefix: site.config.serial_prefix,
        now: session.now,
        serials: &*site.serials,
    };
    let prepared = issue::prepare(&ctx, &request).map_err(|e| with_input(e, &input_name))?;
    let device_id = prepared.device_id.clone();
    let key_origin = prepared.key_origin;
    let key_type = prepared.public_key.kind().to_string();
    let spki_sha256 = hex::encode(crate::crypto::sha256(prepared.public_key.spki_der()));
    let recorded = issue::record::single(
        &mut session.ledger,
        &profile,
        &session.ca.name,
        &session.ca.cert,
        prepared,
        &session.key,
    )?;
    let der = recorded.der;
    write_cert_files(&session.ca, &der, req.with_root, &cert_path, &chain_path)?;
    let batch = session
        .ledger
        .device(&profile.name, &device_id)?
        .map(|d| d.batch_id);
    let tbs = {
        use der::Decode;
        x509_cert::Certificate::from_der(&der)
            .map_err(|e| Error::Usage(e.to_string()))?
            .tbs_certificate
    };
    Ok(IssueOutcome {
        device_id,
        serial: hex::encode(tbs.serial_number.as_bytes()),
        already_issued: recorded.already,
        batch,
        profile: profile.name.clone(),
        profile_sha256: hex::encode(profile.sha256),
        ca: ca_ref.name,
        key_origin: key_origin.as_str().into(),
        key_type,
        not_before: crate::x509::time_of(&tbs.validity.not_before)
            .map(crate::clock::rfc3339)
            .unwrap_or_default(),
        not_after: crate::x509::time_of(&tbs.validity.not_after)
            .map(crate::clock::rfc3339)
            .unwrap_or_else(|| "99991231235959Z".into()),
        cert_sha256: hex::encode(crate::crypto::sha256(&der)),
        spki_sha256,
        cert: cert_path,
        chain: chain_path,
    })
}

/// A policy refusal names the input file it came from.
fn with_input(e: IssueError, input: &str) -> Error {
    match e {
        IssueError::Policy(p) => Error::Input {
            path: input.into(),
            msg: format!("refused: {p}"),
            code: ExitCode::Rejected,
        },
        other => other.into(),
    }
}

/// `certfab issue --dry-run`: the checks, the lint and the ledger's decision of a run, from the
/// site config, the CA certificates and the ledger read-only; no token is opened and nothing
/// is reserved, signed or written.
pub fn dry_run(site: &SiteRef, req: &IssueRequest) -> Result<crate::batch::IssuePreview, Error> {
    if let Some(out) = &req.out {
        crate::output::check_free(&[&out.join("cert.pem"), &out.join("chain.pem")])?;
    }
    let (request, input_name) = request(req)?;
    let offline = super::open_offline(site, &req.profile)?;
    crate::batch::dry_run_issue(&offline, &request, &*site.serials).map_err(|e| match e {
        crate::batch::DryRunError::Issue(i) => with_input(i, &input_name),
        other => other.into(),
    })
}

/// The issue request the library takes, and the input's name for error messages.
fn request(req: &IssueRequest) -> Result<(Request, String), Error> {
    let (key, input) = match (&req.csr, &req.pubkey) {
        (Some(p), _) => (KeySource::Csr(read_input(p, "CSR")?), p),
        (None, Some(p)) => (KeySource::PublicKey(read_input(p, "public key")?), p),
        (None, None) => return Err(Error::Usage("pass --csr or --pubkey".into())),
    };
    let request = Request {
        device_id: req.device_id.clone(),
        key,
        vars: parse_vars(&req.vars, "var.")?,
    };
    Ok((request, input.display().to_string()))
}
