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
        HsmCommand::InitToken { label, so_pin, pin } => init_token(ctx, &label, &so_pin, &pin),
        other => with_site(ctx, other),
    }
}

/// The site's token does not exist yet: the config is used for the module only.
fn init_token(ctx: &Ctx, label: &str, so_pin: &str, pin: &str) -> Result<ExitCode, Error> {
    let path = ctx
        .config
        .as_ref()
        .ok_or(Error::Config(crate::config::ConfigError::Missing))?;
    let config = crate::config::SiteConfig::load(path)?;
    config.apply_module_env();
    let cwd = std::path::Path::new(".");
    let so = crate::secret::SecretSource::parse(so_pin, cwd)?.read("Security officer PIN")?;
    let user = crate::secret::SecretSource::parse(pin, cwd)?.read("User PIN")?;
    let slot = crate::hsm::init_token(&config.module, label, &so, &user)?;
    ctx.print(
        &serde_json::json!({"label": label, "slot": slot}),
        &format!("initialised token '{label}' in slot {slot}"),
    );
    Ok(ExitCode::Ok)
}

fn with_site(ctx: &Ctx, cmd: HsmCommand) -> Result<ExitCode, Error> {
    let site = ctx.site()?;
    match cmd {
        HsmCommand::InitToken { .. } => Err(Error::Usage("init-token does not open a site".into())),
        HsmCommand::Info { no_login } => {
            if !no_login && site.config.pin.is_some() {
                site.login()?;
            }
            let info = crate::hsm::info(&site.hsm)?;
            let mut h = String::new();
            let _ = writeln!(
                h,
                "module: {} ({})",
                site.config.module.display(),
                info.library
            );
            for t in &info.tokens {
                let _ = writeln!(
                    h,
                    "slot {}{}: token '{}' ({} {}, serial {})  [{}]",
                    t.slot,
                    if t.selected { " (selected)" } else { "" },
                    t.label,
                    t.manufacturer,
                    t.model,
                    t.serial,
                    t.pin_state.join(", ")
                );
                let _ = writeln!(h, "  mechanisms: {}", t.mechanisms.join(" "));
                if t.selected && !site.hsm.logged_in() {
                    let _ = writeln!(h, "  (not logged in: private objects hidden)");
                }
                for o in &t.objects {
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
                &serde_json::to_value(&info).unwrap_or_default(),
                h.trim_end(),
            );
            Ok(ExitCode::Ok)
        }
        HsmCommand::Bench {
            key,
            sessions,
            seconds,
        } => {
            site.login()?;
            let uri = match site.config.cas.get(&key) {
                Some(ca) => ca.key.clone(),
                None => site.key_uri(&key)?,
            };
            let mut results = Vec::new();
            let mut h = format!(
                "raw signing rate of {uri} on '{}':\n",
                site.hsm.token_label()
            );
            for n in sessions {
                if n == 0 {
                    return Err(Error::Usage("--sessions values must be at least 1".into()));
                }
                let r = crate::hsm::bench(
                    &site.hsm,
                    &uri,
                    n,
                    std::time::Duration::from_secs_f64(seconds),
                )?;
                let _ = writeln!(
                    h,
                    "  {} session(s): {:>9.1} signatures/s  ({} in {:.2}s, mean latency {:.3} ms)",
                    r.sessions, r.per_second, r.signatures, r.seconds, r.mean_latency_ms
                );
                results.push(r);
            }
            let key_alg = site.hsm.key(&uri, None)?;
            let alg = crate::crypto::Signer::algorithm(&key_alg).to_string();
            ctx.print(
                &serde_json::json!({"key": uri.to_string(), "algorithm": alg, "results": results}),
                h.trim_end(),
            );
            Ok(ExitCode::Ok)
        }
    }
}
