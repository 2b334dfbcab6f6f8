//! `certfab revoke`, `revoke list`, `crl` and `renew` on a site: the ledger and, where a CA
//! key signs, an issuing session; the work itself is in `lifecycle/`.

use super::files::{parse_vars, read_input, write_cert_files};
use super::SiteRef;
use crate::error::{Error, ExitCode};
use crate::ledger::CrlRecord;
use crate::lifecycle::revoke::{Revoked, Target};
use crate::lifecycle::{self, LifecycleError, Reason, RevokedEntry};
use std::path::PathBuf;

/// Revokes a device's current certificate, or one by serial, with `reason` (recorded with
/// `comment` in the audit log).
pub fn revoke(
    site: &SiteRef,
    target: &Target,
    reason: Reason,
    comment: Option<&str>,
) -> Result<Revoked, Error> {
    let cfg = site.config()?;
    let mut ledger = super::open_ledger_as(&cfg, None, None, site.clock())?;
    Ok(lifecycle::revoke::revoke(
        &mut ledger,
        target,
        reason,
        comment,
    )?)
}

/// The formats `revoke list` renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    /// The entries as JSON.
    Json,
    /// `aws iot update-certificate --new-status REVOKED` lines.
    Aws,
    /// Azure DPS bulk enrollment bodies disabling each device.
    Azure,
}

impl ListFormat {
    /// The name recorded in the audit event and printed.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Aws => "aws",
            Self::Azure => "azure",
        }
    }
}

/// A revocation list rendered (and its export recorded in the audit log).
#[derive(Debug, Clone)]
pub struct RevocationList {
    /// The entries listed.
    pub entries: Vec<RevokedEntry>,
    /// The one tenant they belong to, if the site declares tenants.
    pub tenant: Option<String>,
    /// The rendered text.
    pub text: String,
}

/// Lists revoked certificates (of `profile`, of `tenant`) as `format`, writing them to `out`
/// when given (which must not exist). The export is recorded before anything is written.
pub fn revoke_list(
    site: &SiteRef,
    profile: Option<&str>,
    tenant: Option<&str>,
    format: ListFormat,
    out: Option<&std::path::Path>,
) -> Result<RevocationList, Error> {
    let cfg = site.config()?;
    let mut ledger = super::open_ledger_as(&cfg, None, None, site.clock())?;
    let mut entries = lifecycle::revocations(&ledger, profile)?;
    if let Some(t) = tenant {
        entries.retain(|e| e.tenant.as_deref() == Some(t));
    }
    let tenant = lifecycle::tenant::single_tenant(
        "the revocation list",
        entries.iter().map(|e| e.tenant.as_deref()),
    )
    .map_err(|e| LifecycleError::Usage(e.to_string()))?;
    let text = match format {
        ListFormat::Json => serde_json::to_string_pretty(&entries).unwrap_or_default() + "\n",
        ListFormat::Aws => lifecycle::revocations::aws_script(&entries),
        ListFormat::Azure => {
            serde_json::to_string_pretty(&lifecycle::revocations::azure_bulk(&entries))
                .unwrap_or_default()
                + "\n"
        }
    };
    ledger.record_event(
        "revocations_exported",
        None,
        None,
        &serde_json::json!({"format": format.name(), "profile": profile, "tenant": tenant,
            "entries": entries.len(), "sha256": hex::encode(crate::crypto::sha256(text.as_bytes())),
            "out": out}),
    )?;
    if let Some(path) = out {
        crate::output::write_new(path, text.as_bytes())?;
    }
    Ok(RevocationList {
        entries,
        tenant,
        text,
    })
}

/// What `certfab crl` was asked.
#[derive(Debug, Clone)]
pub struct CrlRequest {
    /// The CA that signs for this profile now …
    pub profile: Option<String>,
    /// … or a CA by its site config name.
    pub ca: Option<String>,
    /// `--next-update`, as given (e.g. `7d`).
    pub next_update: String,
    /// Output file (must not exist).
    pub out: PathBuf,
    /// DER instead of PEM.
    pub der: bool,
}

/// Signs a CRL of the CA's revoked certificates with its token key and writes it.
pub fn crl(site: &SiteRef, req: &CrlRequest) -> Result<CrlRecord, Error> {
    let validity = crate::profile::parse_duration(&req.next_update)
        .map_err(|e| Error::Usage(format!("--next-update: {e}")))?;
    if validity <= time::Duration::ZERO {
        return Err(Error::Usage("--next-update must be positive".into()));
    }
    crate::output::check_free(&[&req.out])?;
    let site = site.open()?;
    let (ca_ref, profile) = match (&req.profile, &req.ca) {
        (Some(p), _) => {
            let profile = site.profile(p)?;
            (site.ca_ref(&profile)?, Some(profile))
        }
        (None, Some(name)) => (
            site.config
                .ca(name)
                .map_err(|e| Error::Usage(format!("--ca: {e}")))?,
            None,
        ),
        (None, None) => return Err(Error::Usage("pass --profile or --ca".into())),
    };
    let mut session = site.issuing_session(profile.as_ref(), &ca_ref, None)?;
    let (der, rec) = lifecycle::crl::issue_crl(
        &mut session.ledger,
        &ca_ref.name,
        &session.ca.cert,
        &session.key,
        session.now,
        validity,
    )?;
    let bytes = if req.der {
        der
    } else {
        lifecycle::crl::pem(&der).into_bytes()
    };
    crate::output::write_new(&req.out, &bytes)?;
    Ok(rec)
}

/// What `certfab renew` was asked.
#[derive(Debug, Clone)]
pub struct RenewRequest {
    pub device: String,
    /// Its profile (default: the one profile the device has a certificate in).
    pub profile: Option<String>,
    /// The device's CSR for its new key.
    pub csr: PathBuf,
    /// `NAME=VALUE` for `{var.NAME}`, as given.
    pub vars: Vec<String>,
    /// Output directory for cert.pem and chain.pem.
    pub out: PathBuf,
    /// Put the root into chain.pem too.
    pub with_root: bool,
}

/// A renewal done and its files written.
#[derive(Debug, Clone)]
pub struct RenewOutcome {
    /// What the ledger recorded.
    pub renewal: lifecycle::renew::Renewed,
    /// The CA's name in the site config.
    pub ca: String,
    /// cert.pem.
    pub cert: PathBuf,
    /// chain.pem.
    pub chain: PathBuf,
}

/// Renews a known device's certificate for the key in its new CSR, and writes cert.pem and
/// chain.pem.
pub fn renew(site: &SiteRef, req: &RenewRequest) -> Result<RenewOutcome, Error> {
    let cert_path = req.out.join("cert.pem");
    let chain_path = req.out.join("chain.pem");
    crate::output::check_free(&[&cert_path, &chain_path])?;
    let csr = read_input(&req.csr, "CSR")?;
    let vars = parse_vars(&req.vars, "var.")?;
    let site = site.open()?;
    let profile_name = match req.profile.clone() {
        Some(p) => p,
        None => {
            let l = crate::ledger::Ledger::open_read(&site.config.ledger, &site.config.station_id)?;
            let mut names: Vec<String> = l
                .device_certificates(&req.device, None)?
                .into_iter()
                .map(|c| c.profile)
                .collect();
            names.sort();
            names.dedup();
            match names.len() {
                1 => names.remove(0),
                0 => {
                    return Err(LifecycleError::Refused(format!(
                    "device '{}' has no certificate in the ledger; only known devices are renewed",
                    req.device
                ))
                    .into())
                }
                _ => {
                    return Err(Error::Usage(format!(
                        "device '{}' has certificates in profiles {}; pass --profile",
                        req.device,
                        names.join(", ")
                    )))
                }
            }
        }
    };
    let profile = site.profile(&profile_name)?;
    let ca_ref = site.ca_ref(&profile)?;
    let mut session = site.issuing_session(Some(&profile), &ca_ref, None)?;
    let r = lifecycle::renew::renew(
        &mut session.ledger,
        &lifecycle::renew::Renewal {
            profile: &profile,
            ca: &session.ca,
            signer: &session.key,
            serial_prefix: site.config.serial_prefix,
            serials: &*site.serials,
            device_id: &req.device,
            csr,
            vars,
            now: session.now,
        },
    )
    .map_err(|e| match e {
        LifecycleError::Issue(crate::issue::IssueError::Policy(p)) => Error::Input {
            path: req.csr.display().to_string(),
            msg: format!("refused: {p}"),
            code: ExitCode::Rejected,
        },
        other => other.into(),
    })?;
    write_cert_files(&session.ca, &r.der, req.with_root, &cert_path, &chain_path)?;
    Ok(RenewOutcome {
        renewal: r,
        ca: ca_ref.name,
        cert: cert_path,
        chain: chain_path,
    })
}
