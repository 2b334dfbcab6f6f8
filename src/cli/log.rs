//! `certfab log checkpoint|verify|show`: parsing and printing; the work is in
//! [`crate::auditlog`] and [`crate::ledger`].

use super::Ctx;
use crate::auditlog::{self, CheckpointTrust};
use crate::error::{Error, ExitCode};
use crate::x509::CaCert;
use clap::Subcommand;
use std::path::PathBuf;

/// `certfab log …`
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Sign the current head of the audit chain in the HSM (the manifest/audit signer).
    Checkpoint {
        /// Also write the signed checkpoint to this file (must not exist), to keep elsewhere.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check the audit chain from its first event and every checkpoint signature.
    Verify {
        /// A checkpoint file exported earlier (repeatable): also checked, and catches
        /// checkpoints removed from the ledger.
        #[arg(long = "checkpoint")]
        checkpoints: Vec<PathBuf>,
        /// Trusted root(s), PEM (default: the site config's roots).
        #[arg(long)]
        trust: Option<PathBuf>,
        /// The audit signer's certificate checkpoints must be signed by (default: the site
        /// config's signer.cert).
        #[arg(long)]
        signer_cert: Option<PathBuf>,
    },
    /// Print audit events as JSON lines (a JSON array with --json).
    Show {
        /// Only events with seq greater than this.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Only events of this kind (e.g. revoked, login_failed).
        #[arg(long)]
        kind: Option<String>,
    },
}

pub(super) fn run(ctx: &Ctx, cmd: LogCommand) -> Result<ExitCode, Error> {
    match cmd {
        LogCommand::Checkpoint { out } => {
            let doc = crate::site::manifests::checkpoint(&ctx.site, out.as_deref())?;
            let s = &doc.statement;
            ctx.print(
                &serde_json::json!({"checkpoint": doc, "out": out}),
                &format!(
                    "checkpoint {} signed: ledger {} head event {} ({}){}",
                    s.checkpoint,
                    s.ledger_id,
                    s.head_seq,
                    s.head_hash,
                    out.as_ref()
                        .map(|o| format!("\n  {}", o.display()))
                        .unwrap_or_default()
                ),
            );
            Ok(ExitCode::Ok)
        }
        LogCommand::Verify {
            checkpoints,
            trust,
            signer_cert,
        } => {
            let (cfg, ledger) = ctx.site.read_ledger()?;
            let roots =
                crate::manifest::Trust::resolve(trust.as_deref(), ctx.site.path_opt())?.roots;
            let pinned = match (&signer_cert, &cfg.signer) {
                (Some(p), _) => Some(CaCert::load(p)?),
                (None, Some(s)) => Some(CaCert::load(&s.cert)?),
                (None, None) => None,
            };
            let external = checkpoints
                .iter()
                .map(|p| Ok((p.display().to_string(), auditlog::read_doc(p)?)))
                .collect::<Result<Vec<_>, Error>>()?;
            let r = auditlog::verify(
                &ledger,
                &CheckpointTrust {
                    roots,
                    signer: pinned,
                },
                &external,
            )?;
            let mut human = match (&r.chain, r.ok) {
                (Some(c), true) => format!(
                    "audit log OK: {} events ({} with v1 hashes), {} checkpoints good, signed up to event {}; {} events not yet checkpointed",
                    c.events, c.v1_events, r.checkpoints.len(), r.checkpointed_seq, r.not_checkpointed
                ),
                _ => format!("audit log FAILED verification ({} problems):", r.problems.len()),
            };
            for p in &r.problems {
                human.push_str(&format!("\n  {}", crate::text::neutralize(&p.to_string())));
            }
            ctx.print(&serde_json::json!(r), &human);
            Ok(if r.ok {
                ExitCode::Ok
            } else {
                ExitCode::Rejected
            })
        }
        LogCommand::Show { after, kind } => {
            let (_, ledger) = ctx.site.read_ledger()?;
            use std::io::Write;
            let events = ledger.audit_events()?;
            if ctx.json {
                let picked: Vec<_> = events
                    .iter()
                    .filter(|e| e.seq > after && kind.as_deref().is_none_or(|k| k == e.kind))
                    .collect();
                ctx.print(&serde_json::json!(picked), "");
                return Ok(ExitCode::Ok);
            }
            let mut out = std::io::stdout().lock();
            for e in events {
                if e.seq > after && kind.as_deref().is_none_or(|k| k == e.kind) {
                    // A closed pipe (| head) ends the listing quietly.
                    if writeln!(out, "{}", serde_json::to_string(&e).unwrap_or_default()).is_err() {
                        break;
                    }
                }
            }
            Ok(ExitCode::Ok)
        }
    }
}
