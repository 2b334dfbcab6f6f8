//! The hash-chained audit log: how an event is appended, what its hash covers, and the check
//! of the whole chain. Signed checkpoints of the chain head are stored here too; signing and
//! checking their signatures is [`crate::auditlog`]'s job.
//!
//! Hash material, version 2 (every row written since schema 3): the SHA-256 of the compact
//! JSON array
//! `["certfab-audit-v2", prev_hash, seq, station, station_seq, at, operator, kind, batch_id,
//! device_id, detail]` (nulls for absent values, `detail` as the stored JSON text, a string).
//! Version 1 (rows written before schema 3, which keep verifying as they were): the SHA-256
//! of `prev\nseq\nat\nstation\nkind\nbatch\ndevice\ndetail`. Once a v2 row exists, a v1 row
//! after it is refused (no downgrade).

use super::db::{p, Conn, Row, Tx};
use super::LedgerError;
use std::collections::BTreeMap;

/// Who appends and when. The chain head itself is read inside each write transaction (see
/// [`append`]): on a central ledger other stations append between two of ours.
#[derive(Debug, Clone)]
pub struct AuditHead {
    /// Hash of the last event (64 zeros before the first).
    pub hash: String,
    /// Sequence number of the last event of this station.
    pub station_seq: i64,
    /// Sequence number of the last event.
    pub seq: i64,
    /// Who is recorded as acting (station operator, or the OS user).
    pub operator: Option<String>,
    /// When: the ledger's clock.
    pub(super) clock: std::sync::Arc<dyn crate::clock::Clock>,
    /// The write transaction in which `hash` and `station_seq` were read from the database:
    /// inside it they stay true (the writers' lock is held), so a group of events costs one
    /// read of the head, not one per event.
    pub(super) read_in: Option<u64>,
}

impl Default for AuditHead {
    fn default() -> Self {
        Self {
            hash: String::new(),
            station_seq: 0,
            seq: 0,
            operator: None,
            clock: std::sync::Arc::new(crate::clock::SystemClock),
            read_in: None,
        }
    }
}

/// The first `prev_hash`.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl AuditHead {
    pub(super) fn load(
        conn: &Conn,
        station: &str,
        clock: std::sync::Arc<dyn crate::clock::Clock>,
    ) -> Result<Self, LedgerError> {
        let hash: Option<String> = conn.opt(
            "SELECT hash FROM audit ORDER BY seq DESC LIMIT 1",
            &[],
            |r| r.get(0),
        )?;
        let station_seq: i64 = conn.one(
            "SELECT COALESCE(MAX(station_seq), 0) FROM audit WHERE station = ?1",
            p![station],
            |r| r.get(0),
        )?;
        Ok(Self {
            hash: hash.unwrap_or_else(|| GENESIS.into()),
            station_seq,
            seq: 0,
            operator: default_operator(),
            clock,
            read_in: None,
        })
    }
}

/// The operator recorded when none is given: `CERTFAB_OPERATOR`, else the login name, else
/// the numeric user id.
pub fn default_operator() -> Option<String> {
    ["CERTFAB_OPERATOR", "USER", "LOGNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .map(|v| clean_operator(&v))
        .find(|v| !v.is_empty())
        .or_else(|| {
            use std::os::unix::fs::MetadataExt;
            // The owner of /proc/self is this process's user.
            std::fs::metadata("/proc/self")
                .ok()
                .map(|m| format!("uid:{}", m.uid()))
        })
}

/// Operator names are recorded as given, minus control characters (they reach terminals).
pub fn clean_operator(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(128).collect()
}

/// One event's fields, as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEvent {
    /// Global sequence number (1, 2, …).
    pub seq: i64,
    /// Hash material version.
    pub v: i64,
    /// RFC 3339 UTC.
    pub at: String,
    /// Station id.
    pub station: String,
    /// Sequence number within the station.
    pub station_seq: Option<i64>,
    pub operator: Option<String>,
    /// Event kind.
    pub kind: String,
    /// Batch or shift.
    pub batch_id: Option<String>,
    pub device_id: Option<String>,
    /// JSON text.
    pub detail: String,
    /// Hash of the event before.
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

impl AuditEvent {
    /// The SHA-256 this event's content must hash to (hex), per its version.
    pub fn expected_hash(&self) -> Option<String> {
        let material = match self.v {
            1 => format!(
                "{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
                self.prev_hash,
                self.seq,
                self.at,
                self.station,
                self.kind,
                self.batch_id.as_deref().unwrap_or(""),
                self.device_id.as_deref().unwrap_or(""),
                self.detail
            ),
            2 => material_v2(
                &self.prev_hash,
                self.seq,
                &self.station,
                self.station_seq?,
                &self.at,
                self.operator.as_deref(),
                &self.kind,
                self.batch_id.as_deref(),
                self.device_id.as_deref(),
                &self.detail,
            ),
            _ => return None,
        };
        Some(hex::encode(crate::crypto::sha256(material.as_bytes())))
    }
}

#[allow(clippy::too_many_arguments)]
fn material_v2(
    prev: &str,
    seq: i64,
    station: &str,
    station_seq: i64,
    at: &str,
    operator: Option<&str>,
    kind: &str,
    batch: Option<&str>,
    device: Option<&str>,
    detail: &str,
) -> String {
    // Serialised from borrowed values: the same text as a `json!` array (compact, the same
    // escaping), without copying every field into a `Value` first. Once per event written and
    // once per event checked, so it is on every certificate's path twice.
    serde_json::to_string(&(
        "certfab-audit-v2",
        prev,
        seq,
        station,
        station_seq,
        at,
        operator,
        kind,
        batch,
        device,
        detail,
    ))
    .unwrap_or_default()
}

/// Appends one v2 event inside the caller's write transaction and advances `head`. The
/// previous hash and this station's last number are read from the database in that
/// transaction, which holds the writers' lock (SQLite's file lock, PostgreSQL's advisory
/// lock): with many stations on one ledger there is still one chain, in commit order
/// (docs/central-ledger.md "One audit chain").
pub(super) fn append(
    tx: &Tx<'_>,
    head: &mut AuditHead,
    station: &str,
    kind: &str,
    batch: Option<&str>,
    device: Option<&str>,
    detail: &serde_json::Value,
) -> Result<(), LedgerError> {
    append_text(tx, head, station, kind, batch, device, &detail.to_string())
}

/// [`append`] with the detail already serialised.
fn append_text(
    tx: &Tx<'_>,
    head: &mut AuditHead,
    station: &str,
    kind: &str,
    batch: Option<&str>,
    device: Option<&str>,
    detail: &str,
) -> Result<(), LedgerError> {
    let at = super::stamp(&*head.clock);
    read_head(tx, head, station)?;
    let row = next_row(head, station, &at, kind, batch, device, detail);
    tx.exec("INSERT INTO audit (seq, v, at, station, station_seq, operator, kind, batch_id, device_id, detail, prev_hash, hash)
         VALUES (?1, 2, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        &row,
    )?;
    Ok(())
}

/// Reads the chain's head and this station's last number into `head`, once per transaction
/// (inside it they stay true: the writers' lock is held).
fn read_head(tx: &Tx<'_>, head: &mut AuditHead, station: &str) -> Result<(), LedgerError> {
    if head.read_in == Some(tx.id()) {
        return Ok(());
    }
    // Read with the lock when the transaction began (PostgreSQL), or now: the chain's head and
    // this station's last number in one round trip.
    let (last, prev, station_seq): (Option<i64>, Option<String>, i64) =
        match tx.prefetched_head(station) {
            Some(h) => h,
            None => tx.one(
                "SELECT h.seq, h.hash,
                (SELECT COALESCE(MAX(station_seq), 0) FROM audit WHERE station = ?1)
         FROM (SELECT 1 AS one) AS o
         LEFT JOIN (SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1) AS h ON TRUE",
                p![station],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?,
        };
    head.seq = last.unwrap_or(0);
    head.hash = prev.unwrap_or_else(|| GENESIS.into());
    head.station_seq = station_seq;
    head.read_in = Some(tx.id());
    Ok(())
}

/// The next event's row (seq, at, station, station_seq, operator, kind, batch, device,
/// detail, prev_hash, hash), the head moved past it.
fn next_row(
    head: &mut AuditHead,
    station: &str,
    at: &str,
    kind: &str,
    batch: Option<&str>,
    device: Option<&str>,
    detail: &str,
) -> Vec<super::db::Value> {
    let seq = head.seq + 1;
    let station_seq = head.station_seq + 1;
    let material = material_v2(
        &head.hash,
        seq,
        station,
        station_seq,
        at,
        head.operator.as_deref(),
        kind,
        batch,
        device,
        detail,
    );
    let hash = hex::encode(crate::crypto::sha256(material.as_bytes()));
    let row = p![
        seq,
        at,
        station,
        station_seq,
        head.operator,
        kind,
        batch,
        device,
        detail,
        head.hash,
        hash
    ]
    .to_vec();
    head.hash = hash;
    head.seq = seq;
    head.station_seq = station_seq;
    row
}

/// One event of [`append_many`].
pub(super) struct Event<'a> {
    pub kind: &'a str,
    pub batch: Option<&'a str>,
    pub device: Option<&'a str>,
    /// The detail object, serialised (a group's callers write it from a struct: no `Value`
    /// map per event).
    pub detail: String,
}

/// [`append`] of several events in order, as one statement (a group's or a transition's
/// events in one round trip). The chain is the one `append` would make, event by event.
pub(super) fn append_many(
    tx: &Tx<'_>,
    head: &mut AuditHead,
    station: &str,
    events: &[Event<'_>],
) -> Result<(), LedgerError> {
    match events {
        [] => return Ok(()),
        [e] => {
            return append_text(tx, head, station, e.kind, e.batch, e.device, &e.detail);
        }
        _ => {}
    }
    read_head(tx, head, station)?;
    let at = super::stamp(&*head.clock);
    let mut params = Vec::with_capacity(events.len() * 11);
    for e in events {
        params.extend(next_row(
            head, station, &at, e.kind, e.batch, e.device, &e.detail,
        ));
    }
    tx.exec(
        &format!(
            "INSERT INTO audit (seq, v, at, station, station_seq, operator, kind, batch_id, device_id, detail, prev_hash, hash)
             VALUES {}",
            tx.values(
                events.len(),
                &["BIGINT", "=2", "", "", "BIGINT", "", "", "", "", "", "", ""]
            )
        ),
        &params,
    )?;
    Ok(())
}

/// A problem found in the chain: the first event that does not fit, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("audit event {seq}: {problem}")]
pub struct ChainBreak {
    /// Sequence number of the event (or the position where one is missing).
    pub seq: i64,
    /// What does not fit.
    pub problem: String,
}

/// What a chain check found when the chain is intact.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ChainReport {
    /// Events in the chain.
    pub events: u64,
    /// Of those, written with hash material version 1 (before schema 3).
    pub v1_events: u64,
    /// Last event's sequence number (0 when empty).
    pub head_seq: i64,
    /// Last event's hash.
    pub head_hash: String,
    /// Events per station.
    pub stations: BTreeMap<String, u64>,
}

/// A checkpoint statement signed for the number [`Ledger::store_checkpoint`] gave it.
pub struct SignedCheckpoint {
    pub head_seq: i64,
    pub head_hash: String,
    pub at: String,
    /// The checkpoint document's text.
    pub statement: String,
    pub signer_sha256: String,
}

const EVENT_SELECT: &str =
    "SELECT seq, v, at, station, station_seq, operator, kind, batch_id, device_id, detail, prev_hash, hash
     FROM audit ORDER BY seq";

/// One event from a row of `seq … hash` in [`EVENT_SELECT`]'s column order (the ledger's
/// own chain, or a station chain kept verbatim by `ledger import`).
pub(super) fn event_row(r: &Row) -> Result<AuditEvent, LedgerError> {
    Ok(AuditEvent {
        seq: r.get(0)?,
        v: r.get(1)?,
        at: r.get(2)?,
        station: r.get(3)?,
        station_seq: r.get(4)?,
        operator: r.get(5)?,
        kind: r.get(6)?,
        batch_id: r.get(7)?,
        device_id: r.get(8)?,
        detail: r.get(9)?,
        prev_hash: r.get(10)?,
        hash: r.get(11)?,
    })
}

/// Reads every event in `seq` order (for small logs and tests; checks stream instead).
pub(crate) fn events(conn: &Conn) -> Result<Vec<AuditEvent>, LedgerError> {
    conn.map(EVENT_SELECT, &[], event_row)
}

/// The chain check, one event at a time (a million-device ledger has millions of events; they
/// are never all in memory): contiguous sequence numbers, each event's `prev_hash` is the hash
/// before it, each hash matches its content, per-station numbers count up by one, and no v1
/// event follows a v2 one.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    report: ChainReport,
    seen_v2: bool,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            report: ChainReport {
                head_hash: GENESIS.into(),
                ..Default::default()
            },
            seen_v2: false,
        }
    }
}

impl ChainVerifier {
    /// Checks the next event.
    pub fn push(&mut self, e: &AuditEvent) -> Result<(), ChainBreak> {
        let report = &mut self.report;
        let brk = |problem: String| ChainBreak {
            seq: e.seq,
            problem,
        };
        if e.seq != report.head_seq + 1 {
            return Err(ChainBreak {
                seq: report.head_seq + 1,
                problem: format!(
                    "missing: the event after {} is numbered {}",
                    report.head_seq, e.seq
                ),
            });
        }
        if e.prev_hash != report.head_hash {
            return Err(brk(format!(
                "its previous hash does not match event {}'s hash",
                report.head_seq
            )));
        }
        match e.v {
            1 if self.seen_v2 => {
                return Err(brk(
                    "hash version 1 after version 2 events (downgrade)".into()
                ))
            }
            1 => report.v1_events += 1,
            2 => self.seen_v2 = true,
            v => return Err(brk(format!("unknown hash version {v}"))),
        }
        let n = report.stations.entry(e.station.clone()).or_insert(0);
        *n += 1;
        if e.v == 2 && e.station_seq != Some(*n as i64) {
            return Err(brk(format!(
                "station {} sequence number is {:?}, expected {n}",
                e.station, e.station_seq
            )));
        }
        if e.expected_hash().as_deref() != Some(e.hash.as_str()) {
            return Err(brk("content does not match its hash (edited)".into()));
        }
        report.events += 1;
        report.head_seq = e.seq;
        report.head_hash = e.hash.clone();
        Ok(())
    }

    /// The result after the last event.
    pub fn finish(self) -> ChainReport {
        self.report
    }
}

/// Checks a whole chain held in memory (see [`ChainVerifier`]); returns the first break.
#[cfg(test)]
pub fn verify_events(events: &[AuditEvent]) -> Result<ChainReport, ChainBreak> {
    let mut v = ChainVerifier::default();
    for e in events {
        v.push(e)?;
    }
    Ok(v.finish())
}

/// A checkpoint as stored: the signed statement (JWS compact) and what it says.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckpointRow {
    /// Checkpoint number (1, 2, …).
    pub id: i64,
    /// Station that made it.
    pub station: String,
    /// Chain head it covers.
    pub head_seq: i64,
    /// Hash of that event.
    pub head_hash: String,
    pub at: String,
    /// The signed statement, JWS compact serialization.
    pub statement: String,
    /// SHA-256 of the signer's certificate.
    pub signer_sha256: String,
}

impl super::Ledger {
    /// The station id this connection records events as.
    pub fn station(&self) -> &str {
        &self.station
    }

    /// Sets the operator recorded with the events this connection writes from now on.
    pub fn set_operator(&mut self, operator: Option<&str>) {
        if let Some(op) = operator.map(clean_operator).filter(|o| !o.is_empty()) {
            self.head.operator = Some(op);
        }
    }

    /// Records an event that is not part of issuance (login, HSM error, revocation, export,
    /// checkpoint…) in the audit chain, in its own transaction.
    pub fn record_event(
        &mut self,
        kind: &str,
        batch: Option<&str>,
        device: Option<&str>,
        detail: &serde_json::Value,
    ) -> Result<(), LedgerError> {
        let tx = self.conn.begin()?;
        append(
            &tx,
            &mut self.head,
            &self.station,
            kind,
            batch,
            device,
            detail,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records `kind` (e.g. `site-config`, `profile`) file `name` with hash `sha256`, and an
    /// audit event `config_changed` when it differs from the hash last seen (or is new).
    /// Returns whether it changed.
    pub fn note_config(
        &mut self,
        kind: &str,
        name: &str,
        path: &str,
        sha256: &str,
    ) -> Result<bool, LedgerError> {
        let tx = self.conn.begin()?;
        let old: Option<String> = tx.opt(
            "SELECT sha256 FROM config_seen WHERE kind = ?1 AND name = ?2",
            p![kind, name],
            |r| r.get(0),
        )?;
        if old.as_deref() == Some(sha256) {
            return Ok(false);
        }
        tx.exec(
            "INSERT INTO config_seen (kind, name, sha256, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind, name) DO UPDATE SET sha256 = excluded.sha256, at = excluded.at",
            p![kind, name, sha256, super::stamp(&*self.clock)],
        )?;
        append(
            &tx,
            &mut self.head,
            &self.station,
            "config_changed",
            None,
            None,
            &serde_json::json!({"kind": kind, "name": name, "path": path, "old_sha256": old, "sha256": sha256}),
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// The chain's events, in order (all in memory: for tests and small logs).
    pub fn audit_events(&self) -> Result<Vec<AuditEvent>, LedgerError> {
        events(&self.conn)
    }

    /// Calls `f` with each event in order, one at a time, until it returns false.
    pub fn each_audit_event(
        &self,
        mut f: impl FnMut(AuditEvent) -> bool,
    ) -> Result<(), LedgerError> {
        self.conn.each(EVENT_SELECT, &[], |r| Ok(f(event_row(&r)?)))
    }

    /// Checks the whole chain, streaming (see [`ChainVerifier`]).
    pub fn verify_chain(&self) -> Result<Result<ChainReport, ChainBreak>, LedgerError> {
        let mut v = ChainVerifier::default();
        let mut broke = None;
        self.each_audit_event(|e| match v.push(&e) {
            Ok(()) => true,
            Err(b) => {
                broke = Some(b);
                false
            }
        })?;
        Ok(match broke {
            Some(b) => Err(b),
            None => Ok(v.finish()),
        })
    }

    /// The current head: (seq, hash); (0, zeros) when empty.
    pub fn audit_head(&self) -> Result<(i64, String), LedgerError> {
        Ok(self
            .conn
            .opt(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                &[],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .unwrap_or((0, GENESIS.into())))
    }

    /// Stores a signed checkpoint and records it as an audit event, so removing a checkpoint
    /// row is itself detected by the next checkpoint. The checkpoint's number is the row's id,
    /// chosen inside the transaction that inserts it (on PostgreSQL under the writers' lock), and
    /// `sign` makes the statement for that number there: two stations checkpointing at once get
    /// consecutive numbers, each row with its own statement's columns.
    pub fn store_checkpoint<E: From<LedgerError>>(
        &mut self,
        sign: impl FnOnce(i64) -> Result<SignedCheckpoint, E>,
    ) -> Result<i64, E> {
        let tx = self.conn.begin()?;
        let id: i64 = tx.one(
            "SELECT COALESCE(MAX(id), 0) + 1 FROM checkpoints",
            &[],
            |r| r.get(0),
        )?;
        let c = sign(id)?;
        tx.exec(
            "INSERT INTO checkpoints (id, station, head_seq, head_hash, at, statement, signer_sha256)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            p![
                id,
                self.station,
                c.head_seq,
                c.head_hash,
                c.at,
                c.statement,
                c.signer_sha256
            ],
        )?;
        append(
            &tx,
            &mut self.head,
            &self.station,
            "checkpoint",
            None,
            None,
            &serde_json::json!({"checkpoint": id, "head_seq": c.head_seq, "head_hash": c.head_hash,
                "statement_sha256": hex::encode(crate::crypto::sha256(c.statement.as_bytes()))}),
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Every stored checkpoint, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<CheckpointRow>, LedgerError> {
        self.conn.map(
            "SELECT id, station, head_seq, head_hash, at, statement, signer_sha256 FROM checkpoints ORDER BY id",
            &[],
            |r| {
            Ok(CheckpointRow {
                id: r.get(0)?,
                station: r.get(1)?,
                head_seq: r.get(2)?,
                head_hash: r.get(3)?,
                at: r.get(4)?,
                statement: r.get(5)?,
                signer_sha256: r.get(6)?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash material is the text the `json!` array made before (events written by earlier
    /// versions must still verify): escapes, non-ASCII, nulls and large numbers alike.
    #[test]
    fn material_v2_is_the_json_array_text() {
        for (op, batch, device, detail) in [
            (None, None, None, "{}"),
            (
                Some("op \"1\"\n"),
                Some("b/\\x"),
                Some("Gerät\u{7}\u{2028}"),
                "{\"serial\":\"0a\"}",
            ),
        ] {
            let reference = serde_json::json!([
                "certfab-audit-v2",
                "ab\u{0}",
                i64::MAX,
                "st\tation",
                -3i64,
                "2026-01-01T00:00:00Z",
                op,
                "issued",
                batch,
                device,
                detail
            ])
            .to_string();
            assert_eq!(
                material_v2(
                    "ab\u{0}",
                    i64::MAX,
                    "st\tation",
                    -3,
                    "2026-01-01T00:00:00Z",
                    op,
                    "issued",
                    batch,
                    device,
                    detail
                ),
                reference
            );
        }
    }

    fn v1(prev: &str, seq: i64, kind: &str) -> AuditEvent {
        let mut e = AuditEvent {
            seq,
            v: 1,
            at: "2026-01-01T00:00:00Z".into(),
            station: "s".into(),
            station_seq: Some(seq),
            operator: None,
            kind: kind.into(),
            batch_id: Some("b".into()),
            device_id: None,
            detail: "{}".into(),
            prev_hash: prev.into(),
            hash: String::new(),
        };
        e.hash = e.expected_hash().unwrap();
        e
    }

    fn v2(prev: &str, seq: i64, station_seq: i64) -> AuditEvent {
        let mut e = AuditEvent {
            v: 2,
            operator: Some("op".into()),
            station_seq: Some(station_seq),
            ..v1(prev, seq, "issued")
        };
        e.hash = e.expected_hash().unwrap();
        e
    }

    #[test]
    fn old_rows_verify_and_new_ones_chain_on() {
        let a = v1(GENESIS, 1, "batch_started");
        let b = v1(&a.hash, 2, "issued");
        let c = v2(&b.hash, 3, 3);
        let r = verify_events(&[a.clone(), b.clone(), c.clone()]).unwrap();
        assert_eq!((r.events, r.v1_events, r.head_seq), (3, 2, 3));
        // v1 material does not cover the operator; v2 does.
        let mut b2 = b.clone();
        b2.operator = Some("x".into());
        assert!(verify_events(&[a.clone(), b2, c.clone()]).is_ok());
        let mut c2 = c.clone();
        c2.operator = Some("x".into());
        assert!(verify_events(&[a.clone(), b.clone(), c2]).is_err());
        // A v1 row after a v2 row is a downgrade.
        let d = v1(&c.hash, 4, "issued");
        let e = verify_events(&[a.clone(), b.clone(), c.clone(), d]).unwrap_err();
        assert!(e.problem.contains("downgrade"), "{e}");
        // Per-station numbers must count up.
        let c3 = v2(&b.hash, 3, 7);
        assert!(verify_events(&[a, b, c3])
            .unwrap_err()
            .problem
            .contains("sequence number"));
    }
}
