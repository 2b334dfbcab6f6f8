//! Ledger records of manifests: which devices a manifest covers, its place in the ledger's
//! chain, and the two-step write that keeps files and ledger in agreement after a crash
//! (`pending` before the file is written, `complete` with the devices marked exported after).

use super::db::{p, Row, ToValue, Value};
use super::states::sql_list;
use super::{stamp, DeviceState, KeyOrigin, Ledger, LedgerError};

/// A device the ledger can put in a manifest: it has a signed, live certificate.
#[derive(Debug, Clone)]
pub struct ExportRow {
    /// Profile name.
    pub profile: String,
    pub device_id: String,
    /// Ledger state now.
    pub state: DeviceState,
    /// Where the key was made.
    pub key_origin: KeyOrigin,
    /// Serial, hex.
    pub serial: String,
    /// SHA-256 of the SPKI, hex.
    pub spki_sha256: String,
    /// Batch that issued the current certificate.
    pub batch_id: String,
    /// Station of that batch.
    pub station: String,
    /// Certificate DER.
    pub der: Vec<u8>,
    /// Key identifier of the CA that signed it, hex.
    pub issuer_key_id: String,
}

/// A manifest as recorded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ManifestRow {
    /// Row id.
    pub id: i64,
    /// Place in the ledger's chain.
    pub sequence: u64,
    /// Batches covered.
    pub batches: Vec<String>,
    pub path: String,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// Merkle root, hex.
    pub merkle_root: String,
    pub count: u64,
    /// Ledger-wide device numbers covered.
    pub range_first: u64,
    /// Last one.
    pub range_last: u64,
    /// Previous manifest's SHA-256.
    pub prev_sha256: Option<String>,
    /// Signer key id.
    pub signer_kid: String,
    /// pending, complete or abandoned.
    pub state: String,
    /// When built.
    pub created_at: String,
}

/// A manifest about to be written, with the devices it claims.
#[derive(Debug, Clone)]
pub struct PendingManifest {
    /// Row fields (id and state are ignored).
    pub row: ManifestRow,
    /// (profile, device id, serial, state before export).
    pub devices: Vec<(String, String, String, DeviceState)>,
}

const COLS: &str = "id, sequence, batches, path, sha256, merkle_root, count, range_first, range_last, prev_sha256, signer_kid, state, created_at";

fn row(r: &Row) -> Result<ManifestRow, LedgerError> {
    let batches: String = r.get(2)?;
    Ok(ManifestRow {
        id: r.get(0)?,
        sequence: r.get::<i64>(1)? as u64,
        batches: serde_json::from_str(&batches).unwrap_or_default(),
        path: r.get(3)?,
        sha256: r.get(4)?,
        merkle_root: r.get(5)?,
        count: r.get::<i64>(6)? as u64,
        range_first: r.get::<i64>(7)? as u64,
        range_last: r.get::<i64>(8)? as u64,
        prev_sha256: r.get(9)?,
        signer_kid: r.get(10)?,
        state: r.get(11)?,
        created_at: r.get(12)?,
    })
}

/// The advisory lock a manifest build holds on a central ledger ("cfmb", key 1): one build at
/// a time reads the chain's last manifest and appends the next.
const BUILD_LOCK: (i64, i64) = (0x6366_6d62, 1);

impl Ledger {
    /// Waits (at most the site's `ledger_manifest_wait:`, 120 s unless set) until no other process builds a manifest on this ledger,
    /// and holds that until [`Ledger::unlock_manifest_builds`]: two builds would otherwise
    /// both chain to the same last manifest, and one would take the other's pending manifest
    /// for a crashed run's. A SQLite ledger's file lock already admits one process.
    pub fn lock_manifest_builds(&self) -> Result<(), LedgerError> {
        if !self.conn.is_pg() {
            return Ok(());
        }
        let wait = match &self.location {
            super::LedgerLocation::Postgres(t) => t.manifest_wait,
            super::LedgerLocation::Sqlite(_) => return Ok(()),
        };
        let start = std::time::Instant::now();
        loop {
            let got: bool = self.conn.one(
                "SELECT pg_try_advisory_lock(CAST(?1 AS INTEGER), CAST(?2 AS INTEGER))",
                p![BUILD_LOCK.0, BUILD_LOCK.1],
                |r| r.get(0),
            )?;
            if got {
                return Ok(());
            }
            if start.elapsed() >= wait {
                let holder: Option<String> = self
                    .conn
                    .opt(
                        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                         WHERE l.locktype = 'advisory' AND l.granted AND CAST(l.classid AS BIGINT) = ?1
                           AND CAST(l.objid AS BIGINT) = ?2 AND l.objsubid = 2",
                        p![BUILD_LOCK.0, BUILD_LOCK.1],
                        |r| r.get(0),
                    )
                    .ok()
                    .flatten();
                return Err(LedgerError::ManifestBusy {
                    path: self.location.to_string(),
                    holder: holder.unwrap_or_else(|| "another certfab process".into()),
                    waited_s: wait.as_secs(),
                });
            }
            let left = wait.saturating_sub(start.elapsed());
            std::thread::sleep(left.min(std::time::Duration::from_millis(200)));
        }
    }

    /// Lets the next manifest build go (see [`Ledger::lock_manifest_builds`]).
    pub fn unlock_manifest_builds(&self) -> Result<(), LedgerError> {
        if self.conn.is_pg() {
            self.conn.exec(
                "SELECT pg_advisory_unlock(CAST(?1 AS INTEGER), CAST(?2 AS INTEGER))",
                p![BUILD_LOCK.0, BUILD_LOCK.1],
            )?;
        }
        Ok(())
    }

    /// This ledger's id: the hash of its first audit event (unique per ledger file, since it
    /// covers the time, station and batch of the first write).
    pub fn ledger_id(&self) -> Result<Option<String>, LedgerError> {
        self.conn
            .opt("SELECT hash FROM audit WHERE seq = 1", &[], |r| r.get(0))
    }

    /// The profile file hash a batch was issued under.
    pub fn batch_profile_sha256(&self, batch_id: &str) -> Result<Option<String>, LedgerError> {
        self.conn.opt(
            "SELECT profile_sha256 FROM batches WHERE id = ?1",
            p![batch_id],
            |r| r.get(0),
        )
    }

    /// Devices of the batches `batch_ids` with a live signed certificate that no complete manifest holds
    /// yet (a certificate goes into one manifest per ledger, even if the device's state later
    /// moves back from `exported`, e.g. a re-install at a station), in issuance order.
    pub fn exportable_devices(&self, batch_ids: &[String]) -> Result<Vec<ExportRow>, LedgerError> {
        let mut out = Vec::new();
        self.each_exportable_device(batch_ids, |d| {
            out.push(d);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`Ledger::exportable_devices`] one row at a time, none held (a manifest of a million
    /// devices is built in flat memory); `f` fails to stop.
    pub fn each_exportable_device(
        &self,
        batch_ids: &[String],
        mut f: impl FnMut(ExportRow) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        if batch_ids.is_empty() {
            return Ok(());
        }
        let marks = (1..=batch_ids.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let ids: Vec<Value> = batch_ids.iter().map(|b| b.to_value()).collect();
        self.conn.each(
            &format!(
                "SELECT d.profile, d.device_id, d.state, d.key_origin, d.serial, d.spki_sha256,
                    d.batch_id, b.station, c.der, c.issuer_key_id
             FROM devices d
             JOIN certificates c ON c.profile = d.profile AND c.device_id = d.device_id
                  AND c.serial = d.serial AND c.state = 'signed'
             JOIN batches b ON b.id = d.batch_id
             WHERE d.batch_id IN ({marks})
               AND d.state IN ({})
               AND NOT EXISTS (SELECT 1 FROM manifest_devices md
                               JOIN manifests m ON m.id = md.manifest_id AND m.state = 'complete'
                               WHERE md.profile = d.profile AND md.device_id = d.device_id
                                 AND md.serial = d.serial)
             ORDER BY c.rowid",
                sql_list(DeviceState::IN_MANIFEST)
            ),
            &ids,
            |r| {
                f(ExportRow {
                    profile: r.get(0)?,
                    device_id: r.get(1)?,
                    state: r.get(2)?,
                    key_origin: r.get(3)?,
                    serial: r.get(4)?,
                    spki_sha256: r.get(5)?,
                    batch_id: r.get(6)?,
                    station: r.get(7)?,
                    der: r.get(8)?,
                    issuer_key_id: r.get(9)?,
                })?;
                Ok(true)
            },
        )
    }

    /// How many devices of `batch_id` are already exported.
    pub fn exported_count(&self, batch_id: &str) -> Result<u64, LedgerError> {
        let n: i64 = self.conn.one(
            "SELECT COUNT(*) FROM devices WHERE batch_id = ?1 AND state = 'exported'",
            p![batch_id],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// The last complete manifest of this ledger's own chain (the one the next chains to;
    /// manifests imported with a station ledger keep the station's chain).
    pub fn last_manifest(&self) -> Result<Option<ManifestRow>, LedgerError> {
        let sql = format!(
            "SELECT {COLS} FROM manifests WHERE state = 'complete' AND import_id IS NULL ORDER BY sequence DESC LIMIT 1"
        );
        self.conn.opt(&sql, &[], row)
    }

    /// This ledger's own manifests in a state, oldest first.
    pub fn manifests(&self, state: &str) -> Result<Vec<ManifestRow>, LedgerError> {
        let sql = format!(
            "SELECT {COLS} FROM manifests WHERE state = ?1 AND import_id IS NULL ORDER BY id"
        );
        self.conn.map(&sql, p![state], row)
    }

    /// Records a manifest as pending, with the devices it claims, before its file is written.
    pub fn begin_manifest(&mut self, p: &PendingManifest) -> Result<i64, LedgerError> {
        self.begin_manifest_with(&p.row, p.devices.iter().cloned().map(Ok))
    }

    /// [`Ledger::begin_manifest`] with the devices (profile, device id, serial, state before
    /// export) read one at a time, e.g. from a spill file, so none are held; an `Err` item
    /// rolls everything back.
    pub fn begin_manifest_with(
        &mut self,
        r: &ManifestRow,
        devices: impl IntoIterator<Item = Result<(String, String, String, DeviceState), LedgerError>>,
    ) -> Result<i64, LedgerError> {
        let tx = self.conn.begin()?;
        let id: i64 = tx.one("INSERT INTO manifests (sequence, batches, path, sha256, merkle_root, count, range_first,
                                    range_last, prev_sha256, signer_kid, state, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending', ?11) RETURNING id",
            p![
                r.sequence as i64,
                serde_json::to_string(&r.batches).unwrap_or_default(),
                r.path,
                r.sha256,
                r.merkle_root,
                r.count as i64,
                r.range_first as i64,
                r.range_last as i64,
                r.prev_sha256,
                r.signer_kid,
                r.created_at
            ],
            |r| r.get(0),
        )?;
        for d in devices {
            let (profile, device, serial, before) = d?;
            tx.exec("INSERT INTO manifest_devices (manifest_id, profile, device_id, serial, state_before)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                p![id, profile, device, serial, before],
            )?;
        }
        tx.commit()?;
        Ok(id)
    }

    /// Completes a pending manifest whose file is in place: its devices become `exported` and
    /// a `manifest_built` audit event is chained, in one transaction. Returns how many devices
    /// changed state (a device superseded or revoked meanwhile keeps that state).
    pub fn complete_manifest(&mut self, id: i64) -> Result<u64, LedgerError> {
        let tx = self.conn.begin()?;
        let r = tx.one(
            &format!("SELECT {COLS} FROM manifests WHERE id = ?1 AND state = 'pending'"),
            p![id],
            row,
        )?;
        let at = stamp(&*self.clock);
        let n = tx.exec(&format!(
                "UPDATE devices SET state = 'exported', updated_at = ?2
                 WHERE (profile, device_id, serial) IN
                       (SELECT profile, device_id, serial FROM manifest_devices WHERE manifest_id = ?1)
                   AND state IN ({})",
                sql_list(DeviceState::IN_MANIFEST)
            ),
            p![id, at],
        )? as u64;
        tx.exec(
            "UPDATE manifests SET state = 'complete', completed_at = ?2 WHERE id = ?1",
            p![id, at],
        )?;
        let batch = r.batches.first().cloned();
        super::audit::append(
            &tx,
            &mut self.head,
            &self.station,
            "manifest_built",
            batch.as_deref(),
            None,
            &serde_json::json!({
                "sequence": r.sequence, "batches": r.batches, "path": r.path, "sha256": r.sha256,
                "merkle_root": r.merkle_root, "count": r.count, "prev_sha256": r.prev_sha256,
                "signer_kid": r.signer_kid, "exported": n,
            }),
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Marks a pending manifest whose file never landed as abandoned (its devices stay
    /// exportable), with an audit event.
    pub fn abandon_manifest(&mut self, id: i64, reason: &str) -> Result<(), LedgerError> {
        let tx = self.conn.begin()?;
        let (path, sha): (String, String) = tx.one(
            "SELECT path, sha256 FROM manifests WHERE id = ?1 AND state = 'pending'",
            p![id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.exec(
            "UPDATE manifests SET state = 'abandoned', completed_at = ?2 WHERE id = ?1",
            p![id, stamp(&*self.clock)],
        )?;
        super::audit::append(
            &tx,
            &mut self.head,
            &self.station,
            "manifest_abandoned",
            None,
            None,
            &serde_json::json!({"path": path, "sha256": sha, "reason": reason}),
        )?;
        tx.commit()?;
        Ok(())
    }
}
