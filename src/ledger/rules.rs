//! The exactly-one-identity rules (DESIGN.md invariant 5) as one decision over what the ledger
//! holds, written once for two callers: [`Ledger::reserve`](super::Ledger::reserve) asks the
//! database inside its write transaction, and a dry run
//! ([`Ledger::preview_reserve`](super::Ledger::preview_reserve)) asks a read-only connection
//! overlaid with the rows its earlier input lines would have reserved. A dry run therefore
//! refuses what a run would refuse, for the same reason, without writing anything.

use super::db::{p, Conn};
use super::{DeviceState, Intent, LedgerError, Reserve};
use std::collections::HashMap;

/// A device row as the rules need it.
pub(super) struct Existing {
    pub state: DeviceState,
    pub spki_sha256: String,
    pub batch_id: String,
    pub line: Option<i64>,
    pub serial: Option<String>,
}

/// What the rules ask of the ledger.
pub(super) trait Lookup {
    /// The row of (`profile`, `device_id`).
    fn device(&self, profile: &str, device_id: &str) -> Result<Option<Existing>, LedgerError>;
    /// The recorded spelling of the device whose folded identity is `id_key`.
    fn spelling(&self, profile: &str, id_key: &str) -> Result<Option<String>, LedgerError>;
    /// The signed certificate of (`profile`, `device_id`) with `serial`.
    fn signed_der(
        &self,
        profile: &str,
        device_id: &str,
        serial: Option<&str>,
    ) -> Result<Option<Vec<u8>>, LedgerError>;
    /// Whether a certificate of this key was revoked.
    fn key_revoked(&self, spki_sha256: &str) -> Result<bool, LedgerError>;
    /// A live device other than `device_id` holding this key, as (profile, device id).
    fn key_elsewhere(
        &self,
        spki_sha256: &str,
        device_id: &str,
    ) -> Result<Option<(String, String)>, LedgerError>;
}

/// The database itself (inside the reservation's transaction, or read-only).
pub(super) struct Db<'c>(pub &'c Conn);

impl Lookup for Db<'_> {
    fn device(&self, profile: &str, device_id: &str) -> Result<Option<Existing>, LedgerError> {
        self.0.opt(
            "SELECT state, spki_sha256, batch_id, input_line, serial FROM devices WHERE profile = ?1 AND device_id = ?2",
            p![profile, device_id],
            |r| {
                Ok(Existing {
                    state: r.get(0)?,
                    spki_sha256: r.get(1)?,
                    batch_id: r.get(2)?,
                    line: r.get(3)?,
                    serial: r.get(4)?,
                })
            },
        )
    }

    fn spelling(&self, profile: &str, id_key: &str) -> Result<Option<String>, LedgerError> {
        self.0.opt(
            "SELECT device_id FROM devices WHERE profile = ?1 AND id_key = ?2",
            p![profile, id_key],
            |r| r.get(0),
        )
    }

    fn signed_der(
        &self,
        profile: &str,
        device_id: &str,
        serial: Option<&str>,
    ) -> Result<Option<Vec<u8>>, LedgerError> {
        self.0.opt(
            "SELECT der FROM certificates WHERE profile = ?1 AND device_id = ?2 AND serial = ?3 AND state = 'signed'",
            p![profile, device_id, serial],
            |r| r.get(0),
        )
    }

    fn key_revoked(&self, spki_sha256: &str) -> Result<bool, LedgerError> {
        Ok(self
            .0
            .opt(
                "SELECT 1 FROM revoked_keys WHERE spki_sha256 = ?1",
                p![spki_sha256],
                |_| Ok(()),
            )?
            .is_some())
    }

    fn key_elsewhere(
        &self,
        spki_sha256: &str,
        device_id: &str,
    ) -> Result<Option<(String, String)>, LedgerError> {
        self.0.opt(
            "SELECT profile, device_id FROM devices WHERE spki_sha256 = ?1 AND device_id != ?2
               AND state NOT IN ('superseded', 'revoked') LIMIT 1",
            p![spki_sha256, device_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }
}

/// What the ledger would do with `it` in batch `batch_id`. [`Reserve::Reserved`] means the
/// caller inserts the intent (or, in a dry run, remembers that it would have).
pub(super) fn decide(
    db: &impl Lookup,
    batch_id: &str,
    it: &Intent,
) -> Result<Reserve, LedgerError> {
    let existing = db.device(&it.profile, &it.device_id)?;
    // One identity per folded id: another spelling of a recorded device is refused.
    let other_spelling = if existing.is_none() {
        db.spelling(&it.profile, &crate::identity::key(&it.device_id))?
    } else {
        None
    };
    if let Some(other) = other_spelling {
        return Ok(Reserve::Refused(format!(
            "device id {} is the same identity as {other}, already in the ledger (ids are compared after Unicode NFKC, case folding and the confusable skeleton); use the recorded spelling",
            it.device_id
        )));
    }
    match &existing {
        // Re-issuable: a failed signature, or an identity explicitly superseded or revoked (a
        // revoked key itself is refused below).
        Some(e) if !e.state.is_reissuable() => {
            let first_line = e.line.unwrap_or(0) as u64;
            let same_key = e.spki_sha256 == it.spki_sha256;
            if e.state == DeviceState::Signing || (e.batch_id == batch_id && first_line != it.line)
            {
                return Ok(if same_key {
                    Reserve::Duplicate { first_line }
                } else {
                    Reserve::Refused(format!(
                        "device id {} appears again with a different key (first on line {first_line})",
                        it.device_id
                    ))
                });
            }
            if !same_key {
                return Ok(Reserve::Refused(format!(
                    "device {} already has a live certificate (serial {}) for another key; a new key for an existing device needs an explicit supersede",
                    it.device_id,
                    e.serial.as_deref().unwrap_or("?")
                )));
            }
            return Ok(
                match db.signed_der(&it.profile, &it.device_id, e.serial.as_deref())? {
                    Some(der) => Reserve::AlreadyIssued { der },
                    None => Reserve::Refused(format!(
                        "device {} is in state {} without a certificate",
                        it.device_id, e.state
                    )),
                },
            );
        }
        _ => {}
    }
    if db.key_revoked(&it.spki_sha256)? {
        return Ok(Reserve::Refused(format!(
            "this public key's certificate was revoked; a revoked key is never certified again (device {} needs a new key)",
            it.device_id
        )));
    }
    Ok(match db.key_elsewhere(&it.spki_sha256, &it.device_id)? {
        Some((p, d)) => Reserve::Refused(format!(
            "this public key is already certified for device {d} (profile {p}); one device id per key"
        )),
        None => Reserve::Reserved,
    })
}

/// The read-only database (none: no ledger yet) overlaid with the intents a dry run would
/// have reserved so far: they answer as the rows [`Ledger::reserve`](super::Ledger::reserve)
/// would have inserted (state `signing`, this batch, their line).
pub(super) struct Overlay<'c> {
    db: Option<Db<'c>>,
    batch_id: String,
    /// (profile, device id) → (key, line, serial) of the reserved intent.
    devices: HashMap<(String, String), (String, u64, String)>,
    /// (profile, folded id) → the spelling reserved.
    spellings: HashMap<(String, String), String>,
    /// Key → the (profile, device id)s reserved with it.
    keys: HashMap<String, Vec<(String, String)>>,
}

impl<'c> Overlay<'c> {
    pub fn new(db: Option<Db<'c>>, batch_id: &str) -> Self {
        Self {
            db,
            batch_id: batch_id.to_string(),
            devices: HashMap::new(),
            spellings: HashMap::new(),
            keys: HashMap::new(),
        }
    }

    /// Remembers `it` as reserved.
    pub fn reserve(&mut self, it: &Intent) {
        let id = (it.profile.clone(), it.device_id.clone());
        self.spellings
            .entry((it.profile.clone(), crate::identity::key(&it.device_id)))
            .or_insert_with(|| it.device_id.clone());
        self.keys
            .entry(it.spki_sha256.clone())
            .or_default()
            .push(id.clone());
        self.devices
            .insert(id, (it.spki_sha256.clone(), it.line, it.serial.clone()));
    }

    fn mine(&self, profile: &str, device_id: &str) -> Option<&(String, u64, String)> {
        self.devices
            .get(&(profile.to_string(), device_id.to_string()))
    }
}

impl Lookup for Overlay<'_> {
    fn device(&self, profile: &str, device_id: &str) -> Result<Option<Existing>, LedgerError> {
        match (self.mine(profile, device_id), &self.db) {
            (Some((spki, line, serial)), _) => Ok(Some(Existing {
                state: DeviceState::Signing,
                spki_sha256: spki.clone(),
                batch_id: self.batch_id.clone(),
                line: Some(*line as i64),
                serial: Some(serial.clone()),
            })),
            (None, Some(db)) => db.device(profile, device_id),
            (None, None) => Ok(None),
        }
    }

    fn spelling(&self, profile: &str, id_key: &str) -> Result<Option<String>, LedgerError> {
        match (
            self.spellings
                .get(&(profile.to_string(), id_key.to_string())),
            &self.db,
        ) {
            (Some(s), _) => Ok(Some(s.clone())),
            (None, Some(db)) => db.spelling(profile, id_key),
            (None, None) => Ok(None),
        }
    }

    fn signed_der(
        &self,
        profile: &str,
        device_id: &str,
        serial: Option<&str>,
    ) -> Result<Option<Vec<u8>>, LedgerError> {
        // Nothing is signed in a dry run: only the database has certificates.
        match &self.db {
            Some(db) => db.signed_der(profile, device_id, serial),
            None => Ok(None),
        }
    }

    fn key_revoked(&self, spki_sha256: &str) -> Result<bool, LedgerError> {
        match &self.db {
            Some(db) => db.key_revoked(spki_sha256),
            None => Ok(false),
        }
    }

    fn key_elsewhere(
        &self,
        spki_sha256: &str,
        device_id: &str,
    ) -> Result<Option<(String, String)>, LedgerError> {
        if let Some(found) = self
            .keys
            .get(spki_sha256)
            .and_then(|v| v.iter().find(|(_, d)| d != device_id))
        {
            return Ok(Some(found.clone()));
        }
        let Some(db) = &self.db else {
            return Ok(None);
        };
        // A row the dry run would have overwritten (a re-issued device) no longer holds its
        // old key.
        let rows = db.0.map(
            "SELECT profile, device_id FROM devices WHERE spki_sha256 = ?1 AND device_id != ?2
               AND state NOT IN ('superseded', 'revoked')",
            p![spki_sha256, device_id],
            |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)),
        )?;
        for (profile, d) in rows {
            if self.mine(&profile, &d).is_none() {
                return Ok(Some((profile, d)));
            }
        }
        Ok(None)
    }
}

/// One reservation group's view of the ledger: every row the rules can ask about for these
/// intents (their device ids, folded ids and keys), read in four queries per profile inside
/// the write transaction, then kept up to date with the group's own reservations as
/// [`Ledger::reserve`](super::Ledger::reserve) makes them. The transaction holds the writers'
/// lock, so no other process changes these rows meanwhile: the answers are the ones [`Db`]
/// would give, for a few round trips per group instead of four per device (what a remote
/// ledger's batch rate is made of). The database's unique indexes still guard every insert.
pub(super) struct Group<'c> {
    db: Db<'c>,
    /// (profile, device id) → the row, and its folded id.
    devices: HashMap<(String, String), Existing>,
    /// (profile, folded id) → the recorded spelling.
    spellings: HashMap<(String, String), String>,
    /// Keys whose certificate was revoked.
    revoked: std::collections::HashSet<String>,
    /// Key → every (profile, device id) read or reserved with it (its row says whether it
    /// still holds the key, and whether it is live).
    keys: HashMap<String, Vec<(String, String)>>,
}

/// `?first, ?first+1, …` for `n` values.
fn list(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl<'c> Group<'c> {
    pub fn read(db: &'c Conn, intents: &[Intent]) -> Result<Self, LedgerError> {
        let mut g = Group {
            db: Db(db),
            devices: HashMap::new(),
            spellings: HashMap::new(),
            revoked: Default::default(),
            keys: HashMap::new(),
        };
        let cols = "SELECT profile, device_id, state, spki_sha256, batch_id, input_line, serial, id_key FROM devices";
        let mut by_profile: HashMap<&str, Vec<&Intent>> = HashMap::new();
        for it in intents {
            by_profile.entry(&it.profile).or_default().push(it);
        }
        let mut keys: Vec<&str> = intents.iter().map(|i| i.spki_sha256.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        let key_values: Vec<_> = keys
            .iter()
            .map(|k| super::db::ToValue::to_value(*k))
            .collect();
        for (profile, its) in &by_profile {
            let mut ids: Vec<String> = its.iter().map(|i| i.device_id.clone()).collect();
            ids.sort_unstable();
            ids.dedup();
            let mut folded: Vec<String> = its
                .iter()
                .map(|i| crate::identity::key(&i.device_id))
                .collect();
            folded.sort_unstable();
            folded.dedup();
            for (column, values) in [("device_id", &ids), ("id_key", &folded)] {
                let sql = format!(
                    "{cols} WHERE profile = ?1 AND {column} IN ({})",
                    list(2, values.len())
                );
                let mut params = vec![super::db::ToValue::to_value(*profile)];
                params.extend(values.iter().map(super::db::ToValue::to_value));
                g.load(&sql, &params)?;
            }
        }
        if !keys.is_empty() {
            let sql = format!("{cols} WHERE spki_sha256 IN ({})", list(1, keys.len()));
            g.load(&sql, &key_values)?;
            let sql = format!(
                "SELECT spki_sha256 FROM revoked_keys WHERE spki_sha256 IN ({})",
                list(1, keys.len())
            );
            for k in db.map(&sql, &key_values, |r| r.get::<String>(0))? {
                g.revoked.insert(k);
            }
        }
        Ok(g)
    }

    fn load(&mut self, sql: &str, params: &[super::db::Value]) -> Result<(), LedgerError> {
        let rows = self.db.0.map(sql, params, |r| {
            Ok((
                r.get::<String>(0)?,
                r.get::<String>(1)?,
                Existing {
                    state: r.get(2)?,
                    spki_sha256: r.get(3)?,
                    batch_id: r.get(4)?,
                    line: r.get(5)?,
                    serial: r.get(6)?,
                },
                r.get::<Option<String>>(7)?,
            ))
        })?;
        for (profile, device_id, row, id_key) in rows {
            let id = (profile.clone(), device_id.clone());
            if self.devices.contains_key(&id) {
                continue;
            }
            if let Some(k) = id_key {
                self.spellings
                    .entry((profile, k))
                    .or_insert_with(|| device_id.clone());
            }
            self.keys
                .entry(row.spki_sha256.clone())
                .or_default()
                .push(id.clone());
            self.devices.insert(id, row);
        }
        Ok(())
    }

    /// Takes in the row [`Ledger::reserve`](super::Ledger::reserve) writes for `it`.
    pub fn reserve(&mut self, batch_id: &str, it: &Intent) {
        let id = (it.profile.clone(), it.device_id.clone());
        self.spellings
            .entry((it.profile.clone(), crate::identity::key(&it.device_id)))
            .or_insert_with(|| it.device_id.clone());
        self.keys
            .entry(it.spki_sha256.clone())
            .or_default()
            .push(id.clone());
        self.devices.insert(
            id,
            Existing {
                state: DeviceState::Signing,
                spki_sha256: it.spki_sha256.clone(),
                batch_id: batch_id.to_string(),
                line: Some(it.line as i64),
                serial: Some(it.serial.clone()),
            },
        );
    }
}

impl Lookup for Group<'_> {
    fn device(&self, profile: &str, device_id: &str) -> Result<Option<Existing>, LedgerError> {
        Ok(self
            .devices
            .get(&(profile.to_string(), device_id.to_string()))
            .map(|e| Existing {
                state: e.state,
                spki_sha256: e.spki_sha256.clone(),
                batch_id: e.batch_id.clone(),
                line: e.line,
                serial: e.serial.clone(),
            }))
    }

    fn spelling(&self, profile: &str, id_key: &str) -> Result<Option<String>, LedgerError> {
        Ok(self
            .spellings
            .get(&(profile.to_string(), id_key.to_string()))
            .cloned())
    }

    fn signed_der(
        &self,
        profile: &str,
        device_id: &str,
        serial: Option<&str>,
    ) -> Result<Option<Vec<u8>>, LedgerError> {
        // Only a device already issued asks: read its certificate then.
        self.db.signed_der(profile, device_id, serial)
    }

    fn key_revoked(&self, spki_sha256: &str) -> Result<bool, LedgerError> {
        Ok(self.revoked.contains(spki_sha256))
    }

    fn key_elsewhere(
        &self,
        spki_sha256: &str,
        device_id: &str,
    ) -> Result<Option<(String, String)>, LedgerError> {
        let Some(holders) = self.keys.get(spki_sha256) else {
            return Ok(None);
        };
        Ok(holders
            .iter()
            .find(|(p, d)| {
                d != device_id
                    && self.devices.get(&(p.clone(), d.clone())).is_some_and(|e| {
                        e.spki_sha256 == spki_sha256
                            && !matches!(e.state, DeviceState::Superseded | DeviceState::Revoked)
                    })
            })
            .cloned())
    }
}
