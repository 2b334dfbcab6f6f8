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
    let dry_run = a.dry_run;
    let req = IssueRequest {
        profile: a.profile,
        csr: a.csr,
        pubkey: a.pubkey,
        device_id: a.device_id,
        vars: a.vars,
        out: a.out,
        with_root: a.with_root,
    };
    if dry_run {
        return super::dryrun::issue(ctx, &req);
    }
    let o = crate::site::issue::issue(&ctx.site, &req)?;
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
