//! Ledger records of station mode: device state after signing (installing, installed,
//! install_unconfirmed), identities superseded on purpose, and one row per device attempt.

use super::db::{p, Tx};
use super::{audit, stamp, DeviceState, Ledger, LedgerError, Signed};

/// What [`Ledger::set_device_state`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The device is now in the requested state.
    Applied,
    /// The device's install was already proven; it keeps this state.
    Kept(DeviceState),
}

/// One device attempt at a station, as recorded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attempt {
    /// The shift (batch) it belongs to.
    pub batch_id: String,
    /// Operator, if given.
    pub operator: Option<String>,
    /// Profile name.
    pub profile: String,
    /// Device id, when identify got that far.
    pub device_id: Option<String>,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// pass, fail or refused.
    pub outcome: String,
    /// The step it ended at.
    pub step: String,
    pub reason: String,
    /// Certificate serial involved, hex.
    pub serial: Option<String>,
    /// Time spent waiting for the adapter/device.
    pub device_ms: u64,
    /// certfab's own time (total minus device time).
    pub certfab_ms: u64,
}

/// A device state transition a station commits together with another record (a signature,
/// an attempt), so that one durable commit carries both (docs/station.md "Durable commits").
#[derive(Debug, Clone)]
pub struct StateChange {
    /// signed, installing, install_unconfirmed or installed.
    pub to: DeviceState,
    /// The audit event kind (`install_started`, `installed`, `install_failed`, ...).
    pub kind: &'static str,
    /// The audit event's detail.
    pub detail: serde_json::Value,
}

/// The body of [`Ledger::set_device_state`] inside an open transaction: the state change and
/// its audit event, returned for the caller to append with the transaction's other events
/// (one statement for all of them).
///
/// The usual case is one statement: the update applies unless the install is already proven;
/// only when it changed no row is the current state read (to record it as kept, or to find
/// the device missing). Every writer holds the writers' lock, so nothing changes in between.
fn set_state_in(
    tx: &Tx<'_>,
    at: &str,
    profile: &str,
    device_id: &str,
    change: &StateChange,
) -> Result<(Transition, serde_json::Value), LedgerError> {
    debug_assert!(matches!(
        change.to,
        DeviceState::Signed
            | DeviceState::Installing
            | DeviceState::InstallUnconfirmed
            | DeviceState::Installed
    ));
    let n = tx.exec(
        "UPDATE devices SET state = ?3, updated_at = ?4 WHERE profile = ?1 AND device_id = ?2
           AND state NOT IN (?5, ?6)",
        p![
            profile,
            device_id,
            change.to,
            at,
            DeviceState::Installed,
            DeviceState::Exported
        ],
    )?;
    let transition = match n {
        1 => Transition::Applied,
        0 => {
            let current: DeviceState = tx.one(
                "SELECT state FROM devices WHERE profile = ?1 AND device_id = ?2",
                p![profile, device_id],
                |r| r.get(0),
            )?;
            if !current.is_proven() {
                return Err(LedgerError::Data(format!(
                    "device {device_id} in state {} was not updated",
                    current.as_str()
                )));
            }
            Transition::Kept(current)
        }
        n => {
            return Err(LedgerError::Data(format!(
                "device {device_id} changed {n} rows, not one"
            )))
        }
    };
    let mut detail = change.detail.clone();
    if let (Transition::Kept(state), Some(obj)) = (&transition, detail.as_object_mut()) {
        obj.insert("state_kept".into(), state.as_str().into());
    }
    Ok((transition, detail))
}

impl Ledger {
    /// Moves a device to `change.to` (one of the states a station moves a signed device
    /// through: signed, installing, install_unconfirmed, installed) with the audit event
    /// `change.kind`, unless its install is already proven ([`DeviceState::is_proven`]): then
    /// the row is left exactly as it is, and the event is recorded with `state_kept`.
    pub fn set_device_state(
        &mut self,
        batch_id: &str,
        profile: &str,
        device_id: &str,
        change: &StateChange,
    ) -> Result<Transition, LedgerError> {
        let tx = self.conn.begin()?;
        let at = stamp(&*self.clock);
        let (transition, detail) = set_state_in(&tx, &at, profile, device_id, change)?;
        audit::append(
            &tx,
            &mut self.head,
            &self.station,
            change.kind,
            Some(batch_id),
            Some(device_id),
            &detail,
        )?;
        tx.commit()?;
        Ok(transition)
    }

    /// Records one verified signature (as [`Ledger::record_group`] does for a group) and, in
    /// the same transaction, the device's next state: a station commits the certificate and
    /// `installing` once, just before the certificate leaves the process for the device.
    pub fn record_signed_with(
        &mut self,
        batch_id: &str,
        s: &Signed,
        then: &StateChange,
    ) -> Result<Transition, LedgerError> {
        let tx = self.conn.begin()?;
        let at = stamp(&*self.clock);
        let sha = hex::encode(crate::crypto::sha256(&s.der));
        let n = tx.exec(
            "UPDATE certificates SET state = 'signed', der = ?3, cert_sha256 = ?4, signed_at = ?5
             WHERE issuer_key_id = ?1 AND serial = ?2 AND state = 'intent'",
            p![s.issuer_key_id, s.serial, s.der, sha, at],
        )?;
        if n != 1 {
            // As in record_group: the intent was burned meanwhile, nothing leaves the process.
            return Err(LedgerError::Data(format!(
                "the intent of serial {} is no longer open (burned after this process lost its lease); the certificate was discarded, run the command again",
                s.serial
            )));
        }
        // The device goes from `signing` (its intent, this process's) straight to `then`:
        // `signed` would be overwritten in the same transaction, and a device being signed
        // has no proven install to keep.
        let n = tx.exec(
            "UPDATE devices SET state = ?3, updated_at = ?4 WHERE profile = ?1 AND device_id = ?2",
            p![s.profile, s.device_id, then.to, at],
        )?;
        if n != 1 {
            return Err(LedgerError::Data(format!(
                "device {} changed {n} rows, not one",
                s.device_id
            )));
        }
        audit::append_many(
            &tx,
            &mut self.head,
            &self.station,
            &[
                audit::Event {
                    kind: "issued",
                    batch: Some(batch_id),
                    device: Some(&s.device_id),
                    detail: serde_json::json!({"serial": s.serial, "cert_sha256": sha}).to_string(),
                },
                audit::Event {
                    kind: then.kind,
                    batch: Some(batch_id),
                    device: Some(&s.device_id),
                    detail: then.detail.to_string(),
                },
            ],
        )?;
        tx.commit()?;
        Ok(Transition::Applied)
    }

    /// Marks the device's current certificate superseded so a new identity can be issued;
    /// returns the superseded serial.
    pub fn supersede(
        &mut self,
        batch_id: &str,
        profile: &str,
        device_id: &str,
        reason: &str,
        operator: Option<&str>,
    ) -> Result<Option<String>, LedgerError> {
        let tx = self.conn.begin()?;
        let cert: Option<(String, String)> = tx.opt(
            "SELECT c.issuer_key_id, c.serial FROM devices d JOIN certificates c
               ON c.profile = d.profile AND c.device_id = d.device_id AND c.serial = d.serial
             WHERE d.profile = ?1 AND d.device_id = ?2 AND c.state = 'signed'",
            p![profile, device_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let at = stamp(&*self.clock);
        if let Some((ikid, serial)) = &cert {
            tx.exec(
                "INSERT INTO cert_status (issuer_key_id, serial, status, reason, at)
                 VALUES (?1, ?2, 'superseded', ?3, ?4) ON CONFLICT DO NOTHING",
                p![ikid, serial, reason, at],
            )?;
        }
        tx.exec("UPDATE devices SET state = 'superseded', updated_at = ?3 WHERE profile = ?1 AND device_id = ?2",
            p![profile, device_id, at],
        )?;
        audit::append(
            &tx,
            &mut self.head,
            &self.station,
            "superseded",
            Some(batch_id),
            Some(device_id),
            &serde_json::json!({"serial": cert.as_ref().map(|c| &c.1), "reason": reason, "operator": operator}),
        )?;
        tx.commit()?;
        Ok(cert.map(|c| c.1))
    }

    /// Records a finished attempt (and its audit event) in one transaction.
    pub fn record_attempt(&mut self, a: &Attempt) -> Result<(), LedgerError> {
        self.record_attempt_with(a, None).map(|_| ())
    }

    /// Records a finished attempt (and its audit event) and, in the same transaction, the
    /// device's state at its end (`installed` after a proof, `install_unconfirmed` or `signed`
    /// after a failure): one durable commit before the verdict is shown or sent to the fixture.
    pub fn record_attempt_with(
        &mut self,
        a: &Attempt,
        change: Option<&StateChange>,
    ) -> Result<Option<Transition>, LedgerError> {
        let tx = self.conn.begin()?;
        let mut events = Vec::with_capacity(2);
        let transition = match (change, a.device_id.as_deref()) {
            (Some(change), Some(device_id)) => {
                let at = stamp(&*self.clock);
                let (transition, detail) = set_state_in(&tx, &at, &a.profile, device_id, change)?;
                events.push(audit::Event {
                    kind: change.kind,
                    batch: Some(&a.batch_id),
                    device: Some(device_id),
                    detail: detail.to_string(),
                });
                Some(transition)
            }
            (Some(_), None) => {
                return Err(LedgerError::Data(
                    "a device state change without a device id".into(),
                ))
            }
            (None, _) => None,
        };
        tx.exec("INSERT INTO attempts (batch_id, station, operator, profile, device_id, started_at, finished_at,
                                   outcome, step, reason, serial, device_ms, certfab_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            p![
                a.batch_id, self.station, a.operator, a.profile, a.device_id, a.started_at,
                a.finished_at, a.outcome, a.step, a.reason, a.serial, a.device_ms as i64,
                a.certfab_ms as i64
            ],
        )?;
        let kind = format!("device_{}", a.outcome);
        events.push(audit::Event {
            kind: &kind,
            batch: Some(&a.batch_id),
            device: a.device_id.as_deref(),
            detail: serde_json::json!({"operator": a.operator, "step": a.step, "reason": a.reason, "serial": a.serial}).to_string(),
        });
        audit::append_many(&tx, &mut self.head, &self.station, &events)?;
        tx.commit()?;
        Ok(transition)
    }

    /// Records a station event that is not about one device (shift start/stop, adapter
    /// restarts) in the audit chain.
    pub fn station_event(
        &mut self,
        batch_id: &str,
        kind: &str,
        detail: &serde_json::Value,
    ) -> Result<(), LedgerError> {
        let tx = self.conn.begin()?;
        audit::append(
            &tx,
            &mut self.head,
            &self.station,
            kind,
            Some(batch_id),
            None,
            detail,
        )?;
        tx.commit()?;
        Ok(())
    }
}
