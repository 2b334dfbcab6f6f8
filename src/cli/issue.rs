use super::Ctx;
use crate::error::{Error, ExitCode};
use crate::site::issue::IssueRequest;
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
    #[arg(long)]
    out: PathBuf,
    /// Also put the root (last certificate of the configured chain) into chain.pem.
    #[arg(long)]
    with_root: bool,
}

pub(super) fn run(ctx: &Ctx, a: IssueArgs) -> Result<ExitCode, Error> {
    let o = crate::site::issue::issue(
        &ctx.site,
        &IssueRequest {
            profile: a.profile,
            csr: a.csr,
            pubkey: a.pubkey,
            device_id: a.device_id,
            vars: a.vars,
            out: a.out,
            with_root: a.with_root,
        },
    )?;
    ctx.print(
        &serde_json::to_value(&o).unwrap_or_default(),
        &format!(
            "{} {} for device {} (serial {}, {}, valid until {})\n  {}\n  {}",
            if o.already_issued {
                "already issued:"
            } else {
                "issued"
            },
            o.profile,
            o.device_id,
            o.serial,
            o.key_type,
            o.not_after,
            o.cert.display(),
            o.chain.display()
        ),
    );
    Ok(ExitCode::Ok)
}
