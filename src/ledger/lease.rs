//! Leases on a central ledger: how the intents of a live process are told apart from those of
//! a dead one (docs/central-ledger.md "Leases").
//!
//! A process that opens a PostgreSQL ledger for writing inserts a `leases` row and holds a
//! session-level advisory lock on its id for as long as its connection lives; every intent it
//! commits names that lease. PostgreSQL releases a session's locks when the session ends, for
//! whatever reason (exit, SIGKILL, a lost network, a server restart), so "the lock can be
//! taken" is exactly "no live connection holds this lease": no heartbeat to tune, no clock to
//! trust. The next process that opens the ledger (or `certfab ledger recover`) burns the
//! intents of every lease it can lock. A process whose connection was cut while it was
//! alive cannot record anything afterwards: its connection is gone and it fails closed; a
//! signature it obtained for a burned intent is discarded (record refuses a burned intent).

use super::db::{p, Conn, LEASE_NS};
use super::LedgerError;

/// A lease whose process is gone, with the intents it left.
#[derive(Debug, Clone)]
pub(super) struct Dead {
    /// None: intents without a lease (imported from a station ledger).
    pub id: Option<i64>,
    pub station: Option<String>,
    pub host: Option<String>,
    pub pid: Option<i64>,
}

fn lock_key(id: i64) -> Result<i32, LedgerError> {
    i32::try_from(id).map_err(|_| LedgerError::Data(format!("lease id {id} is out of range")))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| !c.is_control())
                .take(255)
                .collect()
        })
        .unwrap_or_default()
}

/// Inserts this process's lease and locks it for the life of the connection.
pub(super) fn take(conn: &Conn, station: &str, at: &str) -> Result<i64, LedgerError> {
    let id: i64 = conn.one(
        "INSERT INTO leases (station, host, pid, started_at) VALUES (?1, ?2, ?3, ?4) RETURNING id",
        p![station, hostname(), i64::from(std::process::id()), at],
        |r| r.get(0),
    )?;
    conn.exec(
        "SELECT pg_advisory_lock(?1, ?2)",
        p![i64::from(LEASE_NS), i64::from(lock_key(id)?)],
    )?;
    Ok(id)
}

/// The leases other than `own` that have open intents and no live process.
pub(super) fn dead(conn: &Conn, own: i64) -> Result<Vec<Dead>, LedgerError> {
    let candidates = conn.map(
        "SELECT DISTINCT c.lease, l.station, l.host, l.pid FROM certificates c
           LEFT JOIN leases l ON l.id = c.lease
         WHERE c.state = 'intent' AND (c.lease IS NULL OR c.lease <> ?1)",
        p![own],
        |r| {
            Ok(Dead {
                id: r.get(0)?,
                station: r.get(1)?,
                host: r.get(2)?,
                pid: r.get(3)?,
            })
        },
    )?;
    let mut out = Vec::new();
    for d in candidates {
        let Some(id) = d.id else {
            out.push(d);
            continue;
        };
        let key = lock_key(id)?;
        let free: bool = conn.one(
            "SELECT pg_try_advisory_lock(?1, ?2)",
            p![i64::from(LEASE_NS), i64::from(key)],
            |r| r.get(0),
        )?;
        if free {
            // Nobody holds it: its process is gone. Released at once; no new process ever
            // takes an old lease id.
            conn.exec(
                "SELECT pg_advisory_unlock(?1, ?2)",
                p![i64::from(LEASE_NS), i64::from(key)],
            )?;
            out.push(d);
        }
    }
    Ok(out)
}

/// Marks a dead lease closed once its intents are burned (inside that transaction).
pub(super) fn close(tx: &Conn, d: &Dead, at: &str) -> Result<(), LedgerError> {
    if let Some(id) = d.id {
        tx.exec(
            "UPDATE leases SET closed_at = ?2, closed_reason = 'process gone: its open intents were burned'
             WHERE id = ?1 AND closed_at IS NULL",
            p![id, at],
        )?;
    }
    Ok(())
}
