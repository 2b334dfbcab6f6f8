use super::{parse_vars, read_input, write_cert_files, Ctx};
use crate::error::{Error, ExitCode};
use crate::issue::{self, IssueContext, KeySource, Request};
use crate::profile::Profile;
use crate::signer::Signer;
use std::path::PathBuf;

/// `certfab issue`
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("key").required(true).args(["csr", "pubkey"])))]
pub struct IssueArgs {
    /// Device-class profile: a path, or a name in the site's profiles_dir.
    #[arg(long)]
    profile: String,
    /// The device's CSR (PEM or DER); its self-signature is verified.
    #[arg(long)]
    csr: Option<PathBuf>,
    /// The device's public key (SPKI PEM or DER), when it cannot make a CSR.
    #[arg(long)]
    pubkey: Option<PathBuf>,
    /// Device id (default: per the profile's device_id.from).
    #[arg(long)]
    device_id: Option<String>,
    /// Template value for {var.NAME}: NAME=VALUE (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Output directory: cert.pem (leaf) and chain.pem (leaf, issuing CA[, …]).
    #[arg(long, required_unless_present = "dry_run")]
    out: Option<PathBuf>,
    /// Also put the root (last certificate of the configured chain) into chain.pem.
    #[arg(long)]
    with_root: bool,
    /// Run every check and the lint and print the would-be certificate; reserve, sign and
    /// write nothing (no token or PIN needed). With --out, also check that the files are free.
    #[arg(long)]
    dry_run: bool,
}

pub(super) fn run(ctx: &Ctx, a: IssueArgs) -> Result<ExitCode, Error> {
    if a.dry_run {
        return dry_run(ctx, &a);
    }
    let out = a
        .out
        .clone()
        .ok_or_else(|| Error::Usage("certfab issue needs --out DIR".into()))?;
    let site = ctx.site()?;
    let profile = Profile::load(&site.config.profile_path(&a.profile))?;
    let cert_path = out.join("cert.pem");
    let chain_path = out.join("chain.pem");
    crate::output::check_free(&[&cert_path, &chain_path])?;
    let key = match (&a.csr, &a.pubkey) {
        (Some(p), _) => KeySource::Csr(read_input(p, "CSR")?),
        (None, Some(p)) => KeySource::PublicKey(read_input(p, "public key")?),
        (None, None) => return Err(Error::Usage("pass --csr or --pubkey".into())),
    };
    let input_name = a
        .csr
        .as_ref()
        .or(a.pubkey.as_ref())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let vars = parse_vars(&a.vars, "var.")?;
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let ca_ref = site.ca_ref(&profile)?;
    // Through the ledger: intent before signature, exactly one certificate per device and key.
    let mut ledger = site.open_ledger(Some(&profile))?;
    site.login_recorded(&mut ledger)?;
    let issuer = site.issuer_recorded(&ca_ref, now, &mut ledger)?;
    let ictx = IssueContext {
        profile: &profile,
        ca: &issuer.cert,
        signature: issuer.key.algorithm(),
        serial_prefix: site.config.serial_prefix,
        now,
    };
    let req = Request {
        device_id: a.device_id.clone(),
        key,
        vars,
    };
    let prepared = issue::prepare(&ictx, &req).map_err(|e| with_input(e, &input_name))?;
    let device_id = prepared.device_id.clone();
    let key_origin = prepared.key_origin;
    let key_type = prepared.public_key.kind().to_string();
    let spki_sha256 = hex::encode(crate::crypto::sha256(prepared.public_key.spki_der()));
    let (der, already) = crate::batch::single(
        &mut ledger,
        &profile,
        &ca_ref.name,
        &issuer.cert,
        prepared,
        &issuer.key,
    )?;
    write_cert_files(&issuer, &der, a.with_root, &cert_path, &chain_path)?;
    // The standing batch this issue went into: what `manifest build --batch` takes.
    let batch_id = ledger
        .device(&profile.name, &device_id)?
        .map(|d| d.batch_id);

    let tbs = {
        use der::Decode;
        x509_cert::Certificate::from_der(&der)
            .map_err(|e| Error::Usage(e.to_string()))?
            .tbs_certificate
    };
    let serial = hex::encode(tbs.serial_number.as_bytes());
    let nb = crate::ca::time_of(&tbs.validity.not_before)
        .map(crate::clock::rfc3339)
        .unwrap_or_default();
    let na = crate::ca::time_of(&tbs.validity.not_after)
        .map(crate::clock::rfc3339)
        .unwrap_or_else(|| "99991231235959Z".into());
    let summary = serde_json::json!({
        "device_id": device_id,
        "serial": serial,
        "already_issued": already,
        "batch": batch_id,
        "profile": profile.name,
        "profile_sha256": hex::encode(profile.sha256),
        "ca": ca_ref.name,
        "key_origin": key_origin,
        "key_type": key_type,
        "not_before": nb,
        "not_after": na,
        "cert_sha256": hex::encode(crate::crypto::sha256(&der)),
        "spki_sha256": spki_sha256,
        "cert": cert_path,
        "chain": chain_path,
    });
    ctx.print(
        &summary,
        &format!(
            "{} {} for device {device_id} (serial {serial}, {key_type}, valid until {na})\n  {}\n  {}",
            if already { "already issued:" } else { "issued" },
            profile.name,
            cert_path.display(),
            chain_path.display()
        ),
    );
    Ok(ExitCode::Ok)
}

fn dry_run(ctx: &Ctx, a: &IssueArgs) -> Result<ExitCode, Error> {
    if let Some(out) = &a.out {
        crate::output::check_free(&[&out.join("cert.pem"), &out.join("chain.pem")])?;
    }
    let (key, input_name) = match (&a.csr, &a.pubkey) {
        (Some(p), _) => (KeySource::Csr(read_input(p, "CSR")?), p),
        (None, Some(p)) => (KeySource::PublicKey(read_input(p, "public key")?), p),
        (None, None) => return Err(Error::Usage("pass --csr or --pubkey".into())),
    };
    let req = Request {
        device_id: a.device_id.clone(),
        key,
        vars: parse_vars(&a.vars, "var.")?,
    };
    let input_name = input_name.display().to_string();
    super::dryrun::issue(ctx, &a.profile, &req, |e| with_input(e, &input_name))
}

fn with_input(e: crate::issue::IssueError, input: &str) -> Error {
    match e {
        crate::issue::IssueError::Policy(p) => Error::Input {
            path: input.into(),
            msg: format!("refused: {p}"),
            code: ExitCode::Rejected,
        },
        other => other.into(),
    }
}
