//! `certfab revoke`, `certfab crl`, `certfab renew`: parsing and printing only; the work is in
//! [`crate::lifecycle`].

use super::Ctx;
use crate::error::{Error, ExitCode};
use crate::lifecycle::revoke::Target;
use crate::lifecycle::Reason;
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
    let r = crate::site::lifecycle::revoke(&ctx.site, &target, reason, a.comment.as_deref())?;
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
    use crate::site::lifecycle::ListFormat as F;
    let fmt = match format {
        ListFormat::Json => F::Json,
        ListFormat::Aws => F::Aws,
        ListFormat::Azure => F::Azure,
    };
    let l = crate::site::lifecycle::revoke_list(
        &ctx.site,
        profile.as_deref(),
        tenant.as_deref(),
        fmt,
        out.as_deref(),
    )?;
    let fmt = fmt.name();
    let tenant = l.tenant;
    let entries = l.entries;
    let text = l.text;
    match &out {
        Some(path) => {
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
    let rec = crate::site::lifecycle::crl(
        &ctx.site,
        &crate::site::lifecycle::CrlRequest {
            profile: a.profile,
            ca: a.ca,
            next_update: a.next_update,
            out: a.out.clone(),
            der: a.der,
        },
    )?;
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
    let o = crate::site::lifecycle::renew(
        &ctx.site,
        &crate::site::lifecycle::RenewRequest {
            device: a.device,
            profile: a.profile,
            csr: a.csr,
            vars: a.vars,
            out: a.out,
            with_root: a.with_root,
        },
    )?;
    let r = &o.renewal;
    ctx.print(
        &serde_json::json!({"renewal": r, "ca": o.ca, "cert": o.cert, "chain": o.chain,
            "cert_sha256": hex::encode(crate::crypto::sha256(&r.der))}),
        &format!(
            "{} device {} (profile {}): serial {} supersedes {}; batch {}\n  {}\n  {}\nRevoke the old certificate once the device uses the new one: certfab revoke --serial {} --reason superseded",
            if r.already { "already renewed:" } else { "renewed" },
            r.device_id,
            r.profile,
            r.new_serial,
            r.old_serial,
            r.batch_id,
            o.cert.display(),
            o.chain.display(),
            r.old_serial
        ),
    );
    Ok(ExitCode::Ok)
}
