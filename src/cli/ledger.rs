//! `certfab ledger import|recover`: parsing and printing; the work is in [`crate::site::ledger`].

use super::Ctx;
use crate::error::{Error, ExitCode};
use clap::Subcommand;
use std::path::PathBuf;

/// `certfab ledger …`
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Move a station's SQLite ledger into the central ledger of the site config: devices,
    /// certificates, rejections, manifests and its audit chain, in one transaction. Any
    /// conflict with the central ledger (device, key, serial, batch, CRL number) refuses the
    /// whole import, each conflict named (exit 3); a file imported before is a no-op.
    Import {
        /// The station's ledger file (its `ledger:` path); no certfab may be running on it.
        station_ledger: PathBuf,
    },
    /// Burn the intents of certfab processes that are gone (serial reserved, signature never
    /// recorded), so their devices are issued afresh; a live process's intents are left
    /// alone. Prints what was burned; one audit event records it.
    Recover,
}

pub(super) fn run(ctx: &Ctx, cmd: LedgerCommand) -> Result<ExitCode, Error> {
    match cmd {
        LedgerCommand::Import { station_ledger } => {
            let r = crate::site::ledger::import(&ctx.site, &station_ledger)?;
            let human = if r.already_imported {
                format!(
                    "{} was imported already (import {}, {}), up to its event {}: nothing written",
                    r.source, r.import, r.imported_at, r.head_seq
                )
            } else {
                let counts = r
                    .counts
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(t, n)| format!("{n} {t}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "imported {} as import {} (stations {}): {counts}\n  its audit chain up to event {} ({}) is pinned in the central chain",
                    r.source,
                    r.import,
                    r.stations.join(", "),
                    r.head_seq,
                    r.head_hash
                )
            };
            ctx.print(&serde_json::json!(r), &human);
            Ok(ExitCode::Ok)
        }
        LedgerCommand::Recover => {
            let r = crate::site::ledger::recover(&ctx.site)?;
            let mut human = format!(
                "{} intent{} of dead processes burned",
                r.burned.len(),
                if r.burned.len() == 1 { "" } else { "s" }
            );
            for b in &r.burned {
                let who = match (&b.lease, &b.station, &b.host, &b.pid) {
                    (Some(l), Some(s), Some(h), Some(p)) => {
                        format!(" (lease {l}: station {s}, host {h}, pid {p})")
                    }
                    _ => String::new(),
                };
                human.push_str(&format!(
                    "\n  burned serial {} of CA key {}: device {} (profile {}){who}",
                    b.serial, b.issuer_key_id, b.device_id, b.profile
                ));
            }
            for l in &r.live {
                human.push_str(&format!(
                    "\n  left alone: lease {} (station {}, host {}, pid {}, since {}) holds {} intent{}: its process is alive",
                    l.lease,
                    l.station,
                    l.host,
                    l.pid,
                    l.started_at,
                    l.intents,
                    if l.intents == 1 { "" } else { "s" }
                ));
            }
            ctx.print(&serde_json::json!(r), &human);
            Ok(ExitCode::Ok)
        }
    }
}
