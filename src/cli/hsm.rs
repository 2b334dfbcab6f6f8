use super::Ctx;
use crate::error::{Error, ExitCode};
use clap::Subcommand;
use std::fmt::Write;

/// `certfab hsm …`
#[derive(Debug, Subcommand)]
pub enum HsmCommand {
    /// Initialise a new token in a free slot (development/test lines). PINs come from
    /// env:NAME or file:PATH sources, never from the command line.
    InitToken {
        /// Token label.
        #[arg(long)]
        label: String,
        /// Security officer PIN source (env:NAME, file:PATH, prompt).
        #[arg(long)]
        so_pin: String,
        /// User PIN source (env:NAME, file:PATH, prompt).
        #[arg(long)]
        pin: String,
    },
    /// List slots, tokens, mechanisms and key objects (public attributes only; never the PIN).
    Info {
        /// Do not log in: list public objects only.
        #[arg(long)]
        no_login: bool,
    },
    /// Measure the token's raw signing rate with 1..N sessions.
    Bench {
        /// Key: a pkcs11: URI, a label on the site token, or a CA name from the site config.
        #[arg(long)]
        key: String,
        /// Session counts to measure, e.g. 1,2,4.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        sessions: Vec<usize>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
}

pub(super) fn run(ctx: &Ctx, cmd: HsmCommand) -> Result<ExitCode, Error> {
    match cmd {
        HsmCommand::InitToken { label, so_pin, pin } => {
            let slot = crate::site::token::init_token(&ctx.site, &label, &so_pin, &pin)?;
            ctx.print(
                &serde_json::json!({"label": label, "slot": slot}),
                &format!("initialised token '{label}' in slot {slot}"),
            );
        }
        HsmCommand::Info { no_login } => {
            let t = crate::site::token::info(&ctx.site, no_login)?;
            let info = &t.info;
            let mut h = String::new();
            let _ = writeln!(h, "module: {} ({})", t.module.display(), info.library);
            for t2 in &info.tokens {
                let _ = writeln!(
                    h,
                    "slot {}{}: token '{}' ({} {}, serial {})  [{}]",
                    t2.slot,
                    if t2.selected { " (selected)" } else { "" },
                    t2.label,
                    t2.manufacturer,
                    t2.model,
                    t2.serial,
                    t2.pin_state.join(", ")
                );
                let _ = writeln!(h, "  mechanisms: {}", t2.mechanisms.join(" "));
                if t2.selected && !t.logged_in {
                    let _ = writeln!(h, "  (not logged in: private objects hidden)");
                }
                for o in &t2.objects {
                    let flags = [
                        o.sensitive
                            .map(|b| if b { "sensitive" } else { "NOT-sensitive" }),
                        o.extractable
                            .map(|b| if b { "EXTRACTABLE" } else { "non-extractable" }),
                        o.sign.map(|b| if b { "sign" } else { "no-sign" }),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(",");
                    let _ = writeln!(
                        h,
                        "  {:<12} label={:<20} id={} {} {}",
                        o.class,
                        o.label,
                        if o.id.is_empty() { "-" } else { &o.id },
                        o.key.as_deref().unwrap_or(""),
                        flags
                    );
                }
            }
            ctx.print(
                &serde_json::to_value(info).unwrap_or_default(),
                h.trim_end(),
            );
        }
        HsmCommand::Bench {
            key,
            sessions,
            seconds,
        } => {
            let b = crate::site::token::bench(&ctx.site, &key, &sessions, seconds)?;
            let mut h = format!("raw signing rate of {} on '{}':\n", b.uri, b.token);
            for r in &b.results {
                let _ = writeln!(
                    h,
                    "  {} session(s): {:>9.1} signatures/s  ({} in {:.2}s, mean latency {:.3} ms)",
                    r.sessions, r.per_second, r.signatures, r.seconds, r.mean_latency_ms
                );
            }
            ctx.print(
                &serde_json::json!({"key": b.uri, "algorithm": b.algorithm, "results": b.results}),
                h.trim_end(),
            );
        }
    }
    Ok(ExitCode::Ok)
}
