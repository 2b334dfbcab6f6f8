//! `certfab ledger recover`: the intents of dead processes burned on demand, and a report of
//! what was burned and which live processes' intents were left alone (docs/central-ledger.md
//! "Leases"). Opening a ledger for writing already burns what it can
//! ([`Ledger::open`]); recover asks again (a process may have died since), records one
//! `ledger_recovered` audit event, and says what happened.

use super::db::{p, Conn};
use super::lease::{self, Dead};
use super::{audit, Ledger, LedgerError};

/// An intent burned: its serial is never used; its device is issued afresh.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BurnedIntent {
    pub profile: String,
    pub device_id: String,
    /// CA key identifier, hex.
    pub issuer_key_id: String,
    /// Serial, hex.
    pub serial: String,
    /// The dead process's lease (none on a SQLite ledger or for intents without one).
    pub lease: Option<i64>,
    pub station: Option<String>,
    pub host: Option<String>,
    pub pid: Option<i64>,
}

/// A process whose lease is held (it is alive) with intents in flight: left alone.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveLease {
    pub lease: i64,
    pub station: String,
    pub host: String,
    pub pid: i64,
    pub started_at: String,
    /// Its open intents.
    pub intents: u64,
}

/// What `ledger recover` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecoverReport {
    /// Intents burned by this process (at open and now).
    pub burned: Vec<BurnedIntent>,
    /// Live processes' intents, untouched.
    pub live: Vec<LiveLease>,
}

/// The intents the burn about to run in `tx` takes (all on SQLite, or one dead lease's).
pub(super) fn intents_to_burn(
    tx: &Conn,
    lease: Option<&Dead>,
) -> Result<Vec<BurnedIntent>, LedgerError> {
    let row = |r: &super::db::Row| {
        Ok(BurnedIntent {
            profile: r.get(0)?,
            device_id: r.get(1)?,
            issuer_key_id: r.get(2)?,
            serial: r.get(3)?,
            lease: lease.and_then(|d| d.id),
            station: lease.and_then(|d| d.station.clone()),
            host: lease.and_then(|d| d.host.clone()),
            pid: lease.and_then(|d| d.pid),
        })
    };
    match lease {
        None => tx.map(
            "SELECT profile, device_id, issuer_key_id, serial FROM certificates WHERE state = 'intent' ORDER BY rowid",
            &[],
            row,
        ),
        Some(d) => tx.map(
            "SELECT profile, device_id, issuer_key_id, serial FROM certificates
             WHERE state = 'intent' AND lease IS NOT DISTINCT FROM ?1 ORDER BY rowid",
            p![d.id],
            row,
        ),
    }
}

impl Ledger {
    /// Burns the intents of every process that is gone (asked again now: one may have died
    /// since this ledger was opened), records a `ledger_recovered` event naming what was
    /// burned and which live leases were left alone, and reports both.
    pub fn recover(&mut self) -> Result<RecoverReport, LedgerError> {
        if let Some(own) = self.lease {
            for dead in lease::dead(&self.conn, own)? {
                self.burn_interrupted(Some(dead))?;
            }
        }
        let live = match self.lease {
            None => Vec::new(),
            Some(own) => self.conn.map(
                "SELECT l.id, l.station, l.host, l.pid, l.started_at, COUNT(*) FROM certificates c
                   JOIN leases l ON l.id = c.lease
                 WHERE c.state = 'intent' AND c.lease <> ?1
                 GROUP BY l.id, l.station, l.host, l.pid, l.started_at ORDER BY l.id",
                p![own],
                |r| {
                    Ok(LiveLease {
                        lease: r.get(0)?,
                        station: r.get(1)?,
                        host: r.get(2)?,
                        pid: r.get(3)?,
                        started_at: r.get(4)?,
                        intents: r.get::<i64>(5)? as u64,
                    })
                },
            )?,
        };
        let burned = std::mem::take(&mut self.burned);
        let tx = self.conn.begin()?;
        audit::append(
            &tx,
            &mut self.head,
            &self.station,
            "ledger_recovered",
            None,
            None,
            &serde_json::json!({
                "burned": burned.len(),
                "serials": burned.iter().map(|b| serde_json::json!({
                    "issuer_key_id": b.issuer_key_id, "serial": b.serial,
                    "profile": b.profile, "device_id": b.device_id, "lease": b.lease,
                })).collect::<Vec<_>>(),
                "live_leases": live.iter().map(|l| serde_json::json!({
                    "lease": l.lease, "station": l.station, "host": l.host, "pid": l.pid,
                    "intents": l.intents,
                })).collect::<Vec<_>>(),
            }),
        )?;
        tx.commit()?;
        Ok(RecoverReport { burned, live })
    }
}
