//! `certfab ledger import STATION.sqlite`: a station's SQLite ledger moved into the central
//! ledger (docs/central-ledger.md "Importing a station ledger").
//!
//! Everything is decided and written in one write transaction on the central ledger, under
//! the writers' lock: the station's batches, devices, certificates, rejections, attempts,
//! status changes, revoked keys, CRLs and manifests are checked against what the central
//! ledger holds, every conflict is collected (not just the first), and only when there is none
//! are they inserted. A conflict refuses the whole import; nothing is written.
//!
//! The station's audit events are kept verbatim (own sequence numbers and hashes) in
//! `imported_audit`, not re-chained: re-hashing them would make the station's signed
//! checkpoints and any copy of its log kept elsewhere uncheckable against what the central
//! ledger holds. One `ledger_imported` event in the central chain carries the station chain's
//! first hash (its ledger id) and head, so an edit of an imported event breaks either the
//! imported chain or that pin, and `log verify` reports it.

use super::audit::{self, ChainVerifier, GENESIS};
use super::db::{p, Conn, FromValue, Value};
use super::{stamp, Ledger, LedgerError, LedgerLocation};
use std::collections::BTreeMap;
use std::path::Path;

impl FromValue for Value {
    fn from_value(v: &Value) -> Result<Self, String> {
        Ok(v.clone())
    }
}

/// Why an import did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The site's ledger is a SQLite file, not a central ledger.
    #[error("ledger import moves a station's SQLite ledger into a central (PostgreSQL) ledger, and this site's ledger: is the SQLite file {0}; set ledger: to the central ledger's postgresql:// URL (docs/central-ledger.md) and run the import there")]
    NotCentral(String),
    /// The station ledger cannot be imported as it is.
    #[error("{path}: {msg}")]
    Source {
        path: String,
        /// What is wrong, and the fix.
        msg: String,
    },
    /// What the station ledger holds conflicts with the central ledger: each conflict named.
    #[error("{path}: not imported, {} conflict{} with the central ledger (nothing was written):\n  {}", .conflicts.len(), if .conflicts.len() == 1 { "" } else { "s" }, .conflicts.join("\n  "))]
    Conflicts {
        path: String,
        /// One line per conflict.
        conflicts: Vec<String>,
    },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl ImportError {
    /// A configuration or unusable file is exit 2, conflicts are refused input (exit 3), a
    /// ledger failure is the ledger's code.
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            Self::NotCentral(_) | Self::Source { .. } => crate::exit::ExitCode::Usage,
            Self::Conflicts { .. } => crate::exit::ExitCode::Rejected,
            Self::Ledger(e) => e.exit_code(),
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportReport {
    /// The import's number on the central ledger.
    pub import: i64,
    /// The station ledger file.
    pub source: String,
    /// The station ledger's id (the hash of its first audit event).
    pub ledger_id: String,
    /// Stations whose events it holds.
    pub stations: Vec<String>,
    /// The station chain's head, pinned by the central chain's `ledger_imported` event.
    pub head_seq: i64,
    pub head_hash: String,
    /// Rows imported per table.
    pub counts: BTreeMap<String, u64>,
    /// True when this file had been imported already, up to the same head: nothing written.
    pub already_imported: bool,
    /// When it was imported.
    pub imported_at: String,
}

/// A table copied as it is, in the station's row order.
struct Table {
    name: &'static str,
    cols: &'static [&'static str],
    /// Index of the batch id column, remapped when a station's standing batch is merged.
    batch_col: Option<usize>,
}

const BATCH_COLS: &[&str] = &[
    "id",
    "input_key",
    "profile",
    "profile_sha256",
    "ca",
    "source",
    "out_dir",
    "station",
    "created_at",
    "finished_at",
    "tenant",
];

const DEVICES: Table = Table {
    name: "devices",
    cols: &[
        "profile",
        "device_id",
        "batch_id",
        "state",
        "spki_sha256",
        "serial",
        "key_origin",
        "input_line",
        "updated_at",
        "id_key",
    ],
    batch_col: Some(2),
};

const CERTIFICATES: Table = Table {
    name: "certificates",
    cols: &[
        "issuer_key_id",
        "serial",
        "profile",
        "device_id",
        "batch_id",
        "state",
        "tbs",
        "der",
        "cert_sha256",
        "reason",
        "created_at",
        "signed_at",
        "spki_sha256",
    ],
    batch_col: Some(4),
};

/// Tables whose rows cannot conflict once devices, certificates and batches do not.
const PLAIN: &[Table] = &[
    Table {
        name: "attempts",
        cols: &[
            "batch_id",
            "station",
            "operator",
            "profile",
            "device_id",
            "started_at",
            "finished_at",
            "outcome",
            "step",
            "reason",
            "serial",
            "device_ms",
            "certfab_ms",
        ],
        batch_col: Some(0),
    },
    Table {
        name: "cert_status",
        cols: &["issuer_key_id", "serial", "status", "reason", "at"],
        batch_col: None,
    },
    Table {
        name: "identity_fold_collisions",
        cols: &["profile", "device_id", "id_key", "same_as", "found_at"],
        batch_col: None,
    },
    Table {
        name: "crls",
        cols: &[
            "issuer_key_id",
            "number",
            "ca",
            "this_update",
            "next_update",
            "entries",
            "der",
            "sha256",
        ],
        batch_col: None,
    },
];

const MANIFEST_COLS: &str = "id, sequence, batches, path, sha256, merkle_root, count, range_first, range_last, prev_sha256, signer_kid, state, created_at, completed_at";

fn rows(src: &Conn, sql: &str, n: usize) -> Result<Vec<Vec<Value>>, LedgerError> {
    src.map(sql, &[], |r| (0..n).map(|i| r.get::<Value>(i)).collect())
}

fn insert(tx: &Conn, table: &str, cols: &[&str], vals: &[Value]) -> Result<(), LedgerError> {
    let marks = (1..=cols.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    tx.exec(
        &format!("INSERT INTO {table} ({}) VALUES ({marks})", cols.join(", ")),
        vals,
    )?;
    Ok(())
}

fn text(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Null => String::new(),
        Value::Blob(b) => hex::encode(b),
    }
}

fn short(h: &str) -> String {
    if h.len() > 16 {
        format!("{}…", &h[..16])
    } else {
        h.to_string()
    }
}

/// The device states whose key is in use (the live-key rule of `devices_live_key`).
const DEAD_STATES: &str = "('superseded', 'revoked')";

impl Ledger {
    /// Imports the station SQLite ledger at `path` into this central ledger (see the module
    /// doc). The station ledger is opened as its own writer would open it (its lock taken, so
    /// a station still running on it is refused; brought to this schema; intents a crashed
    /// run left burned), then only read.
    pub fn import_station(&mut self, path: &Path) -> Result<ImportReport, ImportError> {
        let shown = path.display().to_string();
        if let LedgerLocation::Sqlite(p) = &self.location {
            return Err(ImportError::NotCentral(p.display().to_string()));
        }
        let source_err = |msg: String| ImportError::Source {
            path: shown.clone(),
            msg,
        };
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() && m.len() > 0 => {}
            Ok(m) if m.is_file() => {
                return Err(source_err(
                    "is empty: there is no station ledger to import".into(),
                ))
            }
            Ok(_) => {
                return Err(source_err(
                    "is not a file: name the station's ledger.sqlite".into(),
                ))
            }
            Err(e) => {
                return Err(source_err(format!(
                    "cannot be read ({e}); name the station's SQLite ledger file"
                )))
            }
        }
        let src = Ledger::open_with_clock(
            LedgerLocation::Sqlite(path.to_path_buf()),
            &self.station,
            self.clock.clone(),
        )
        .map_err(|e| match e {
            LedgerError::Locked(_) => source_err(
                "is in use by a certfab process (a station or batch still running on it); stop it, then import".into(),
            ),
            e => ImportError::Ledger(e),
        })?;
        let s = &src.conn;
        let chain = src.verify_chain()?.map_err(|b| {
            source_err(format!(
                "its audit chain does not verify ({b}); an import keeps the chain as it is, so a broken one cannot be imported. Check it with certfab log verify on the station"
            ))
        })?;
        let ledger_id = src
            .ledger_id()?
            .ok_or_else(|| source_err("holds no audit events: nothing to import".into()))?;
        let pending: Vec<String> = s.map(
            "SELECT path FROM manifests WHERE state = 'pending'",
            &[],
            |r| r.get(0),
        )?;
        if let Some(m) = pending.first() {
            return Err(source_err(format!(
                "has a manifest still pending ({m}): run certfab manifest build with the station's site config to finish or abandon it, then import"
            )));
        }
        let at = stamp(&*self.clock);
        let tx = self.conn.begin()?;
        if let Some((id, head_hash, when)) = tx.opt(
            "SELECT id, head_hash, imported_at FROM imports WHERE ledger_id = ?1",
            p![ledger_id],
            |r| Ok((r.get::<i64>(0)?, r.get::<String>(1)?, r.get::<String>(2)?)),
        )? {
            if head_hash == chain.head_hash {
                return Ok(ImportReport {
                    import: id,
                    source: shown,
                    ledger_id,
                    stations: chain.stations.keys().cloned().collect(),
                    head_seq: chain.head_seq,
                    head_hash,
                    counts: BTreeMap::new(),
                    already_imported: true,
                    imported_at: when,
                });
            }
            return Err(ImportError::Conflicts {
                path: shown,
                conflicts: vec![format!(
                    "this ledger was imported on {when} (import {id}) and has recorded events since; a ledger is imported once. Point the station at the central ledger instead, and keep this file as a record"
                )],
            });
        }

        // Batches: a station's standing batch of single issues (same profile and CA) merges
        // into the central one with the same input; any other batch must be new.
        let batches = rows(
            s,
            &format!(
                "SELECT {} FROM batches ORDER BY rowid",
                BATCH_COLS.join(", ")
            ),
            BATCH_COLS.len(),
        )?;
        let mut conflicts = Vec::new();
        let mut merged: BTreeMap<String, String> = BTreeMap::new();
        let mut new_batches = Vec::new();
        for b in batches {
            let (id, key) = (text(&b[0]), text(&b[1]));
            let single = serde_json::from_str::<serde_json::Value>(&text(&b[5]))
                .map(|j| j["source"]["kind"] == "single")
                .unwrap_or(false);
            if let Some(other) = tx.opt(
                "SELECT id FROM batches WHERE input_key = ?1",
                p![key],
                |r| r.get::<String>(0),
            )? {
                if single {
                    merged.insert(id, other);
                    continue;
                }
                conflicts.push(format!(
                    "batch {id}: the central ledger's batch {other} was run with the same input (a re-run could not tell them apart)"
                ));
                continue;
            }
            if tx
                .opt("SELECT 1 FROM batches WHERE id = ?1", p![id], |r| {
                    r.get::<i64>(0)
                })?
                .is_some()
            {
                conflicts.push(format!(
                    "batch {id}: the central ledger has a batch with this id"
                ));
            }
            new_batches.push(b);
        }
        let devices = rows(
            s,
            &format!(
                "SELECT {} FROM devices ORDER BY rowid",
                DEVICES.cols.join(", ")
            ),
            DEVICES.cols.len(),
        )?;
        for d in &devices {
            let (profile, id, state, spki, id_key) = (
                text(&d[0]),
                text(&d[1]),
                text(&d[3]),
                text(&d[4]),
                text(&d[9]),
            );
            if let Some((other, batch, st)) = tx.opt(
                "SELECT device_id, batch_id, state FROM devices WHERE profile = ?1 AND (device_id = ?2 OR id_key = ?3)",
                p![profile, id, id_key],
                |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?, r.get::<String>(2)?)),
            )? {
                let same = if other == id {
                    String::new()
                } else {
                    format!(" as {other} (the same identity)")
                };
                conflicts.push(format!(
                    "device {id} (profile {profile}): already on the central ledger{same}, batch {batch}, state {st}"
                ));
            }
            if state == "superseded" || state == "revoked" {
                continue;
            }
            if let Some(other) = tx.opt(
                &format!("SELECT device_id FROM devices WHERE profile = ?1 AND spki_sha256 = ?2 AND state NOT IN {DEAD_STATES}"),
                p![profile, spki],
                |r| r.get::<String>(0),
            )? {
                if other != id {
                    conflicts.push(format!(
                        "key {} of device {id} (profile {profile}): the central ledger certifies it for device {other}",
                        short(&spki)
                    ));
                }
            }
            if let Some(serial) = tx.opt(
                "SELECT serial FROM revoked_keys WHERE spki_sha256 = ?1",
                p![spki],
                |r| r.get::<String>(0),
            )? {
                conflicts.push(format!(
                    "key {} of device {id} (profile {profile}): revoked on the central ledger (certificate {serial}) and never certified again",
                    short(&spki)
                ));
            }
        }
        let certs = rows(
            s,
            &format!(
                "SELECT {} FROM certificates ORDER BY rowid",
                CERTIFICATES.cols.join(", ")
            ),
            CERTIFICATES.cols.len(),
        )?;
        for c in &certs {
            let (ik, serial, device) = (text(&c[0]), text(&c[1]), text(&c[3]));
            if let Some(other) = tx.opt(
                "SELECT device_id FROM certificates WHERE issuer_key_id = ?1 AND serial = ?2",
                p![ik, serial],
                |r| r.get::<String>(0),
            )? {
                conflicts.push(format!(
                    "serial {serial} of CA key {} (device {device}): already used on the central ledger, by device {other}",
                    short(&ik)
                ));
            }
        }
        let crls = rows(
            s,
            "SELECT issuer_key_id, number FROM crls ORDER BY issuer_key_id, number",
            2,
        )?;
        for c in &crls {
            let (ik, n) = (text(&c[0]), text(&c[1]));
            if tx
                .opt(
                    "SELECT 1 FROM crls WHERE issuer_key_id = ?1 AND number = ?2",
                    &[c[0].clone(), c[1].clone()],
                    |r| r.get::<i64>(0),
                )?
                .is_some()
            {
                conflicts.push(format!(
                    "CRL number {n} of CA key {}: the central ledger has issued one with this number",
                    short(&ik)
                ));
            }
        }
        if !conflicts.is_empty() {
            return Err(ImportError::Conflicts {
                path: shown,
                conflicts,
            });
        }

        // No conflict: write it all, in this transaction.
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let remap = |mut row: Vec<Value>, col: Option<usize>| {
            if let Some(i) = col {
                if let Some(to) = merged.get(&text(&row[i])) {
                    row[i] = Value::Text(to.clone());
                }
            }
            row
        };
        for b in &new_batches {
            insert(&tx, "batches", BATCH_COLS, b)?;
        }
        counts.insert("batches".into(), new_batches.len() as u64);
        for d in devices {
            insert(
                &tx,
                DEVICES.name,
                DEVICES.cols,
                &remap(d, DEVICES.batch_col),
            )?;
            *counts.entry("devices".into()).or_default() += 1;
        }
        for c in certs {
            insert(
                &tx,
                CERTIFICATES.name,
                CERTIFICATES.cols,
                &remap(c, CERTIFICATES.batch_col),
            )?;
            *counts.entry("certificates".into()).or_default() += 1;
        }
        // A merged standing batch keeps the central row of an input line both hold (single
        // issues all use line 0); the station's is still in its imported events.
        let rej_cols = ["batch_id", "line", "device_id", "kind", "reason", "at"];
        for r in rows(
            s,
            &format!(
                "SELECT {} FROM rejections ORDER BY rowid",
                rej_cols.join(", ")
            ),
            rej_cols.len(),
        )? {
            let r = remap(r, Some(0));
            let n = tx.exec(
                "INSERT INTO rejections (batch_id, line, device_id, kind, reason, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (batch_id, line) DO NOTHING",
                &r,
            )?;
            *counts.entry("rejections".into()).or_default() += n as u64;
        }
        for t in PLAIN {
            for r in rows(
                s,
                &format!(
                    "SELECT {} FROM {} ORDER BY rowid",
                    t.cols.join(", "),
                    t.name
                ),
                t.cols.len(),
            )? {
                insert(&tx, t.name, t.cols, &remap(r, t.batch_col))?;
                *counts.entry(t.name.into()).or_default() += 1;
            }
        }
        // A key revoked on both ledgers stays revoked once.
        for r in rows(
            s,
            "SELECT spki_sha256, issuer_key_id, serial, at FROM revoked_keys ORDER BY rowid",
            4,
        )? {
            let n = tx.exec(
                "INSERT INTO revoked_keys (spki_sha256, issuer_key_id, serial, at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (spki_sha256) DO NOTHING",
                &r,
            )?;
            *counts.entry("revoked_keys".into()).or_default() += n as u64;
        }
        let stations: Vec<String> = chain.stations.keys().cloned().collect();
        let import: i64 = tx.one(
            "INSERT INTO imports (source, ledger_id, stations, head_seq, head_hash, events, imported_at, imported_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
            p![
                shown,
                ledger_id,
                serde_json::to_string(&stations).unwrap_or_default(),
                chain.head_seq,
                chain.head_hash,
                chain.events as i64,
                at,
                self.station
            ],
            |r| r.get(0),
        )?;
        // Manifests keep the station's chain (sequence, previous hash) under new row ids.
        for m in rows(
            s,
            &format!("SELECT {MANIFEST_COLS} FROM manifests ORDER BY id"),
            14,
        )? {
            let old = m[0].clone();
            let id: i64 = tx.one(
                "INSERT INTO manifests (sequence, batches, path, sha256, merkle_root, count, range_first, range_last,
                    prev_sha256, signer_kid, state, created_at, completed_at, import_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) RETURNING id",
                &[
                    m[1..].to_vec(),
                    vec![Value::Int(import)],
                ]
                .concat(),
                |r| r.get(0),
            )?;
            for md in s.map(
                "SELECT profile, device_id, serial, state_before FROM manifest_devices WHERE manifest_id = ?1 ORDER BY rowid",
                &[old],
                |r| (0..4).map(|i| r.get::<Value>(i)).collect::<Result<Vec<_>, _>>(),
            )? {
                insert(
                    &tx,
                    "manifest_devices",
                    &["manifest_id", "profile", "device_id", "serial", "state_before"],
                    &[vec![Value::Int(id)], md].concat(),
                )?;
                *counts.entry("manifest_devices".into()).or_default() += 1;
            }
            *counts.entry("manifests".into()).or_default() += 1;
        }
        let mut events = 0u64;
        s.each(
            "SELECT seq, v, at, station, station_seq, operator, kind, batch_id, device_id, detail, prev_hash, hash
             FROM audit ORDER BY seq",
            &[],
            |r| {
                let vals = (0..12)
                    .map(|i| r.get::<Value>(i))
                    .collect::<Result<Vec<_>, _>>()?;
                insert(
                    &tx,
                    "imported_audit",
                    &[
                        "import_id", "seq", "v", "at", "station", "station_seq", "operator", "kind",
                        "batch_id", "device_id", "detail", "prev_hash", "hash",
                    ],
                    &[vec![Value::Int(import)], vals].concat(),
                )?;
                events += 1;
                Ok(true)
            },
        )?;
        counts.insert("audit_events".into(), events);
        for c in rows(
            s,
            "SELECT id, station, head_seq, head_hash, at, statement, signer_sha256 FROM checkpoints ORDER BY id",
            7,
        )? {
            insert(
                &tx,
                "imported_checkpoints",
                &[
                    "import_id", "id", "station", "head_seq", "head_hash", "at", "statement",
                    "signer_sha256",
                ],
                &[vec![Value::Int(import)], c].concat(),
            )?;
            *counts.entry("checkpoints".into()).or_default() += 1;
        }
        audit::append(
            &tx,
            &mut self.head,
            &self.station,
            "ledger_imported",
            None,
            None,
            &serde_json::json!({
                "import": import, "source": shown, "ledger_id": ledger_id,
                "stations": stations, "head_seq": chain.head_seq, "head_hash": chain.head_hash,
                "events": chain.events, "counts": counts, "merged_batches": merged,
            }),
        )?;
        tx.commit()?;
        Ok(ImportReport {
            import,
            source: shown,
            ledger_id,
            stations,
            head_seq: chain.head_seq,
            head_hash: chain.head_hash,
            counts,
            already_imported: false,
            imported_at: at,
        })
    }

    /// Checks every imported station chain: its events chain from the genesis hash with
    /// matching hashes ([`ChainVerifier`]), end at the head recorded for the import, and that
    /// head is the one the central chain's `ledger_imported` event pinned. One problem per
    /// line; empty when all hold (or nothing was imported).
    pub fn verify_imports(&self) -> Result<Vec<String>, LedgerError> {
        let c = &self.conn;
        if !c.has_table("imports")? {
            return Ok(Vec::new());
        }
        let mut problems = Vec::new();
        let mut pinned: BTreeMap<i64, serde_json::Value> = BTreeMap::new();
        c.each(
            "SELECT detail FROM audit WHERE kind = 'ledger_imported' ORDER BY seq",
            &[],
            |r| {
                let d: serde_json::Value =
                    serde_json::from_str(&r.get::<String>(0)?).unwrap_or_default();
                if let Some(i) = d["import"].as_i64() {
                    pinned.insert(i, d);
                }
                Ok(true)
            },
        )?;
        let imports: Vec<(i64, String, String, i64, String, i64)> = c.map(
            "SELECT id, source, ledger_id, head_seq, head_hash, events FROM imports ORDER BY id",
            &[],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )?;
        for (id, source, ledger_id, head_seq, head_hash, events) in &imports {
            let name = format!("imported ledger {id} ({source})");
            match pinned.remove(id) {
                None => problems.push(format!(
                    "{name}: no ledger_imported event in the chain names it (an import row added or its event removed)"
                )),
                Some(d) => {
                    if d["head_hash"].as_str() != Some(head_hash)
                        || d["head_seq"].as_i64() != Some(*head_seq)
                        || d["ledger_id"].as_str() != Some(ledger_id)
                    {
                        problems.push(format!(
                            "{name}: its import record differs from what the ledger_imported event pinned"
                        ));
                    }
                }
            }
            let mut v = ChainVerifier::default();
            let mut broke = None;
            let mut first = None;
            c.each(
                "SELECT seq, v, at, station, station_seq, operator, kind, batch_id, device_id, detail, prev_hash, hash
                 FROM imported_audit WHERE import_id = ?1 ORDER BY seq",
                p![id],
                |r| {
                    let e = audit::event_row(&r)?;
                    if first.is_none() {
                        first = Some(e.hash.clone());
                    }
                    Ok(match v.push(&e) {
                        Ok(()) => true,
                        Err(b) => {
                            broke = Some(b);
                            false
                        }
                    })
                },
            )?;
            if let Some(b) = broke {
                problems.push(format!("{name}: {b}"));
                continue;
            }
            let r = v.finish();
            if r.head_seq != *head_seq || r.head_hash != *head_hash || r.events as i64 != *events {
                problems.push(format!(
                    "{name}: its events end at event {} ({}), the import pinned event {head_seq} ({}): events were removed or added",
                    r.head_seq,
                    short(&r.head_hash),
                    short(head_hash)
                ));
            }
            if first.as_deref().unwrap_or(GENESIS) != ledger_id {
                problems.push(format!(
                    "{name}: its first event is not the one its ledger id names"
                ));
            }
        }
        for id in pinned.keys() {
            problems.push(format!(
                "imported ledger {id}: the ledger_imported event names it, but its import record is gone"
            ));
        }
        Ok(problems)
    }
}
