//! `certfab revoke`, `certfab crl`, `certfab renew`: parsing and printing only; the work is in
//! [`crate::lifecycle`].

use super::{parse_vars, read_input, write_cert_files, Ctx};
use crate::config::SiteConfig;
use crate::error::{Error, ExitCode};
use crate::lifecycle::revoke::Target;
use crate::lifecycle::{self, LifecycleError, Reason};
use crate::profile::Profile;
use std::path::PathBuf;

/// `certfab revoke`
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
#[command(group(clap::ArgGroup::new("what").args(["device", "serial"])))]
pub struct RevokeArgs {
    /// Revoke this device's current certificate.
    #[arg(long)]
    device: Option<String>,
    /// The device's profile (needed when the device id is in several).
    #[arg(long, requires = "device")]
    profile: Option<String>,
    /// Revoke the certificate with this serial (hex; current or superseded).
    #[arg(long)]
    serial: Option<String>,
    /// RFC 5280 reason: keyCompromise, cACompromise, affiliationChanged, superseded,
    /// cessationOfOperation, privilegeWithdrawn or unspecified.
    #[arg(long)]
    reason: Option<String>,
    /// Free text recorded with the revocation in the audit log.
    #[arg(long)]
    comment: Option<String>,
    /// `revoke list`.
    #[command(subcommand)]
    list: Option<RevokeSub>,
}

/// `certfab revoke list`
#[derive(Debug, clap::Subcommand)]
pub enum RevokeSub {
    /// List revoked certificates, or the cloud operations that revoke them.
    List {
        /// Only this profile.
        #[arg(long)]
        profile: Option<String>,
        /// Only this tenant (required when the ledger holds several).
        #[arg(long)]
        tenant: Option<String>,
        /// json (entries), aws (update-certificate script) or azure (DPS bulk bodies).
        #[arg(long, value_enum, default_value = "json")]
        format: ListFormat,
        /// Write to this file (must not exist) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Output of `revoke list`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ListFormat {
    /// The entries as JSON.
    Json,
    /// `aws iot update-certificate --new-status REVOKED` lines.
    Aws,
    /// Azure DPS bulk enrollment bodies disabling each device.
    Azure,
}

fn config(ctx: &Ctx) -> Result<SiteConfig, Error> {
    let path = ctx
        .config
        .as_ref()
        .ok_or(Error::Config(crate::config::ConfigError::Missing))?;
    Ok(SiteConfig::load(path)?)
}

pub(super) fn revoke(ctx: &Ctx, a: RevokeArgs) -> Result<ExitCode, Error> {
    if let Some(RevokeSub::List {
        profile,
        tenant,
        format,
        out,
    }) = a.list
    {
        return list(ctx, profile, tenant, format, out);
    }
    let target = match (a.device, a.serial) {
        (Some(id), None) => Target::Device {
            id,
            profile: a.profile,
        },
        (None, Some(s)) => Target::Serial(s),
        _ => {
            return Err(Error::Usage(
                "say what to revoke: --device ID [--profile P] or --serial S, with --reason R"
                    .into(),
            ))
        }
    };
    let reason: Reason = a
        .reason
        .as_deref()
        .ok_or_else(|| {
            Error::Usage(format!(
                "--reason is required; one of {}",
                Reason::ALL.map(Reason::name).join(", ")
            ))
        })?
        .parse()
        .map_err(Error::Usage)?;
    let cfg = config(ctx)?;
    let mut ledger = crate::site::open_ledger(&cfg, None)?;
    let r = lifecycle::revoke::revoke(&mut ledger, &target, reason, a.comment.as_deref())?;
    let human = if r.already {
        format!(
            "already revoked: device {} serial {} ({}, {}); nothing changed",
            r.cert.device_id,
            r.cert.serial,
            r.reason,
            r.at.as_deref().unwrap_or("?")
        )
    } else {
        format!(
            "revoked device {} serial {} ({}); publish a new CRL: certfab crl --profile {} --out crl.pem",
            r.cert.device_id, r.cert.serial, r.reason, r.cert.profile
        )
    };
    ctx.print(&serde_json::json!(r), &human);
    Ok(ExitCode::Ok)
}

fn list(
    ctx: &Ctx,
    profile: Option<String>,
    tenant: Option<String>,
    format: ListFormat,
    out: Option<PathBuf>,
) -> Result<ExitCode, Error> {
    let cfg = config(ctx)?;
    let mut ledger = crate::site::open_ledger(&cfg, None)?;
    let mut entries = lifecycle::revocations(&ledger, profile.as_deref())?;
    if let Some(t) = &tenant {
        entries.retain(|e| e.tenant.as_deref() == Some(t.as_str()));
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
    let fmt = format!("{format:?}").to_lowercase();
    ledger.record_event(
        "revocations_exported",
        None,
        None,
        &serde_json::json!({"format": fmt, "profile": profile, "tenant": tenant,
            "entries": entries.len(), "sha256": hex::encode(crate::crypto::sha256(text.as_bytes())),
            "out": out}),
    )?;
    match &out {
        Some(path) => {
            crate::output::write_new(path, text.as_bytes())?;
            ctx.print(
                &serde_json::json!({"out": path, "format": fmt, "entries": entries.len(), "tenant": tenant}),
                &format!(
                    "{} revoked certificates ({fmt}) written to {}",
                    entries.len(),
                    path.display()
                ),
            );
        }
        None if ctx.json => ctx.print(
            &serde_json::json!({"format": fmt, "tenant": tenant, "entries": entries, "output": text}),
            "",
        ),
        None => print!("{text}"),
    }
    Ok(ExitCode::Ok)
}

/// `certfab crl`
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["profile", "ca"])))]
pub struct CrlArgs {
    /// The CA that signs for this profile now.
    #[arg(long)]
    profile: Option<String>,
    /// A CA by its site config name (e.g. the old CA during a rollover).
    #[arg(long)]
    ca: Option<String>,
    /// How long until nextUpdate (e.g. 7d, 12h).
    #[arg(long, default_value = "7d")]
    next_update: String,
    /// Output file (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// Write DER instead of PEM.
    #[arg(long)]
    der: bool,
}

pub(super) fn crl(ctx: &Ctx, a: CrlArgs) -> Result<ExitCode, Error> {
    let validity = crate::profile::parse_duration(&a.next_update)
        .map_err(|e| Error::Usage(format!("--next-update: {e}")))?;
    if validity <= time::Duration::ZERO {
        return Err(Error::Usage("--next-update must be positive".into()));
    }
    crate::output::check_free(&[&a.out])?;
    let site = ctx.site()?;
    let (ca_ref, profile) = match (&a.profile, &a.ca) {
        (Some(p), _) => {
            let profile = Profile::load(&site.config.profile_path(p))?;
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
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let mut ledger = site.open_ledger(profile.as_ref())?;
    site.login_recorded(&mut ledger)?;
    let issuer = site.issuer_recorded(&ca_ref, now, &mut ledger)?;
    let (der, rec) = lifecycle::crl::issue_crl(
        &mut ledger,
        &ca_ref.name,
        &issuer.cert,
        &issuer.key,
        now,
        validity,
    )?;
    let bytes = if a.der {
        der
    } else {
        lifecycle::crl::pem(&der).into_bytes()
    };
    crate::output::write_new(&a.out, &bytes)?;
    ctx.print(
        &serde_json::json!({"crl": rec, "out": a.out}),
        &format!(
            "CRL number {} of CA {} with {} revoked certificates, next update {}\n  {}",
            rec.number,
            rec.ca,
            rec.entries,
            rec.next_update,
            a.out.display()
        ),
    );
    Ok(ExitCode::Ok)
}

/// `certfab renew`
#[derive(Debug, clap::Args)]
pub struct RenewArgs {
    /// The device (must have a certificate in the ledger and not be revoked).
    #[arg(long)]
    device: String,
    /// Its profile (default: the one profile the device has a certificate in).
    #[arg(long)]
    profile: Option<String>,
    /// The device's CSR for its new key (PEM or DER).
    #[arg(long)]
    csr: PathBuf,
    /// Template value for {var.NAME}: NAME=VALUE (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Output directory: cert.pem and chain.pem of the new certificate.
    #[arg(long)]
    out: PathBuf,
    /// Also put the root into chain.pem.
    #[arg(long)]
    with_root: bool,
}

pub(super) fn renew(ctx: &Ctx, a: RenewArgs) -> Result<ExitCode, Error> {
    let cert_path = a.out.join("cert.pem");
    let chain_path = a.out.join("chain.pem");
    crate::output::check_free(&[&cert_path, &chain_path])?;
    let csr = read_input(&a.csr, "CSR")?;
    let vars = parse_vars(&a.vars, "var.")?;
    let site = ctx.site()?;
    let profile_name = match a.profile.clone() {
        Some(p) => p,
        None => {
            let l = crate::ledger::Ledger::open_read(&site.config.ledger, &site.config.station_id)?;
            let mut names: Vec<String> = l
                .device_certificates(&a.device, None)?
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
                    a.device
                ))
                    .into())
                }
                _ => {
                    return Err(Error::Usage(format!(
                        "device '{}' has certificates in profiles {}; pass --profile",
                        a.device,
                        names.join(", ")
                    )))
                }
            }
        }
    };
    let profile = Profile::load(&site.config.profile_path(&profile_name))?;
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let ca_ref = site.ca_ref_at(&profile, now)?;
    let mut ledger = site.open_ledger(Some(&profile))?;
    site.login_recorded(&mut ledger)?;
    let issuer = site.issuer_recorded(&ca_ref, now, &mut ledger)?;
    let r = lifecycle::renew::renew(
        &mut ledger,
        &lifecycle::renew::Renewal {
            profile: &profile,
            ca_name: &ca_ref.name,
            ca: &issuer.cert,
            signer: &issuer.key,
            serial_prefix: site.config.serial_prefix,
            device_id: &a.device,
            csr,
            vars,
            now,
        },
    )
    .map_err(|e| match e {
        LifecycleError::Issue(crate::issue::IssueError::Policy(p)) => Error::Input {
            path: a.csr.display().to_string(),
            msg: format!("refused: {p}"),
            code: ExitCode::Rejected,
        },
        other => other.into(),
    })?;
    write_cert_files(&issuer, &r.der, a.with_root, &cert_path, &chain_path)?;
    ctx.print(
        &serde_json::json!({"renewal": r, "ca": ca_ref.name, "cert": cert_path, "chain": chain_path,
            "cert_sha256": hex::encode(crate::crypto::sha256(&r.der))}),
        &format!(
            "{} device {} (profile {}): serial {} supersedes {}; batch {}\n  {}\n  {}\nRevoke the old certificate once the device uses the new one: certfab revoke --serial {} --reason superseded",
            if r.already { "already renewed:" } else { "renewed" },
            r.device_id,
            r.profile,
            r.new_serial,
            r.old_serial,
            r.batch_id,
            cert_path.display(),
            chain_path.display(),
            r.old_serial
        ),
    );
    Ok(ExitCode::Ok)
}
