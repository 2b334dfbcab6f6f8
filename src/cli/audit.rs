use super::Ctx;
use crate::audit::{self, Severity, Sources};
use crate::error::{Error, ExitCode};
use clap::Args;
use std::path::PathBuf;

/// `certfab audit …`
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// A ledger to audit (repeatable); opened read-only. Default with --config: the site's.
    #[arg(long = "ledger", value_name = "LEDGER.sqlite")]
    ledgers: Vec<PathBuf>,
    /// A signed manifest to check against the ledgers (repeatable); its signature is read
    /// from MANIFEST.jws and verified against the self-signed roots among the CAs.
    #[arg(long = "manifest", value_name = "M.jsonl")]
    manifests: Vec<PathBuf>,
    /// A CA certificate file (PEM with one or more certificates, or DER; repeatable). Default
    /// with --config: every CA in the site config and its chain.
    #[arg(long = "ca", value_name = "CA.pem")]
    cas: Vec<PathBuf>,
    /// A directory searched recursively for device certificate files that every one must be
    /// in a ledger (e.g. a batch --out; repeatable).
    #[arg(long = "certs", value_name = "DIR")]
    cert_dirs: Vec<PathBuf>,
    /// Profiles (*.yaml) to compare certificates with. Default with --config: profiles_dir.
    #[arg(long, value_name = "DIR")]
    profiles: Option<PathBuf>,
    /// Report certificates (and CAs) expiring within this many days.
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    expiring_days: i64,
    /// Exit 3 when any finding is at or above this severity.
    #[arg(long, default_value = "high", value_parser = ["info", "low", "medium", "high", "critical"])]
    fail_on: String,
    /// A checkpoint exported earlier (`certfab log checkpoint --out`; repeatable): checked
    /// against the ledger it names, which also catches checkpoints removed from it.
    #[arg(long = "checkpoint", value_name = "FILE")]
    checkpoints: Vec<PathBuf>,
    /// The audit signer certificate checkpoints must be signed by. Default with --config:
    /// the site's signer.cert; otherwise any signer under a given root.
    #[arg(long, value_name = "SIGNER.pem")]
    signer_cert: Option<PathBuf>,
    /// Also write the report as one self-contained HTML file (must not exist).
    #[arg(long, value_name = "REPORT.html")]
    html: Option<PathBuf>,
    /// A call log of OpenSC's pkcs11-spy captured in front of the token: every signature in
    /// it must be accounted for by the ledger's token_signatures events (docs/audit.md).
    #[arg(long, value_name = "FILE")]
    spy_log: Option<PathBuf>,
}

pub(super) fn run(ctx: &Ctx, a: AuditArgs) -> Result<ExitCode, Error> {
    let fail_on: Severity = a.fail_on.parse().map_err(Error::Usage)?;
    if !(0..=36_500).contains(&a.expiring_days) {
        return Err(Error::Usage("--expiring-days must be 0..=36500".into()));
    }
    let src = Sources {
        ledgers: a.ledgers.into_iter().map(Into::into).collect(),
        manifests: a.manifests,
        cas: a.cas,
        cert_dirs: a.cert_dirs,
        profiles_dir: a.profiles,
        ca_tenants: Default::default(),
        signer_cert: a.signer_cert,
        checkpoints: a.checkpoints,
    };
    let report = crate::site::audit::audit(
        &ctx.site,
        src,
        a.expiring_days,
        fail_on,
        a.html.as_deref(),
        a.spy_log.as_deref(),
    )?;
    if let (Some(h), false) = (&a.html, ctx.json) {
        eprintln!("HTML report written to {}", h.display());
    }
    // Written as it is serialized, the findings read back one at a time: a large ledger's
    // report is never held whole. A reader that stops early (`| head`) is not an error; a
    // stdout that cannot be written is.
    use std::io::Write;
    let out_err = |msg: String| Error::Output {
        path: "stdout".into(),
        msg,
    };
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    if ctx.json {
        match audit::report::write_json(&report, fail_on, &mut w) {
            Err(e) if e.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe) => {}
            Err(e) if e.is_io() => return Err(out_err(e.to_string())),
            Err(e) => return Err(out_err(format!("cannot encode the JSON report: {e}"))),
            Ok(()) => {}
        }
    } else {
        let text = audit::report::text(&report, fail_on)?;
        match writeln!(w, "{}", text.trim_end()).and_then(|()| w.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(out_err(e.to_string()))
            }
            _ => {}
        }
    }
    Ok(if report.fails(fail_on) {
        ExitCode::Rejected
    } else {
        ExitCode::Ok
    })
}
