//! `certfab renew`: key rotation for a device in the field. The device must be known and not
//! revoked; the new key must differ from its current key and never have been certified for
//! another device (nor revoked). The old certificate is marked superseded and the new one goes
//! through the same pipeline and ledger intents as any issuance, in a batch of its own with
//! source `renew`, so `manifest build --batch` of that batch carries it.
//!
//! The old certificate stays valid until it expires or is revoked: the device may still need
//! it until the new one is installed. Once the device uses the new one, revoke the old with
//! `certfab revoke --serial OLD --reason superseded`.

use super::LifecycleError;
use crate::crypto::Signer;
use crate::issue::{self, IssueContext, IssuingCa, KeySource, Request};
use crate::ledger::{BatchSpec, DeviceState, Ledger};
use crate::profile::Profile;
use crate::x509::SerialSource;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// A renewal's inputs besides the ledger.
pub struct Renewal<'a, S: Signer> {
    pub profile: &'a Profile,
    /// The issuing CA.
    pub ca: &'a IssuingCa,
    /// The CA key in the HSM.
    pub signer: &'a S,
    /// Station serial prefix.
    pub serial_prefix: u8,
    /// Where the new serial comes from.
    pub serials: &'a dyn SerialSource,
    pub device_id: &'a str,
    /// The device's new CSR (PEM or DER).
    pub csr: Vec<u8>,
    /// Template values (`var.X`).
    pub vars: BTreeMap<String, String>,
    /// Issuance time.
    pub now: OffsetDateTime,
}

/// A renewal done.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Renewed {
    pub device_id: String,
    pub profile: String,
    /// The renewal batch.
    pub batch_id: String,
    /// Serial of the certificate superseded.
    pub old_serial: String,
    /// Serial of the new certificate.
    pub new_serial: String,
    /// The new certificate, DER.
    #[serde(skip)]
    pub der: Vec<u8>,
    /// This exact renewal had been done before: the certificate issued then is returned.
    pub already: bool,
}

/// Renews a device's certificate for a new key.
pub fn renew<S: Signer>(
    ledger: &mut Ledger,
    r: &Renewal<'_, S>,
) -> Result<Renewed, LifecycleError> {
    let p = r.profile;
    let certs = ledger.device_certificates(r.device_id, Some(&p.name))?;
    let Some(old) = certs
        .iter()
        .find(|c| c.current)
        .or_else(|| certs.last())
        .cloned()
    else {
        return Err(LifecycleError::Refused(format!(
            "device '{}' has no certificate in profile {} in this ledger; only known devices are renewed (issue it first)",
            r.device_id, p.name
        )));
    };
    if old.device_state == DeviceState::Revoked {
        return Err(LifecycleError::Refused(format!(
            "device '{}' is revoked (serial {}); a revoked device is not renewed. Issue it a new identity explicitly if it is trusted again",
            r.device_id, old.serial
        )));
    }

    let ctx = IssueContext {
        profile: p,
        ca: &r.ca.cert,
        signature: r.signer.algorithm(),
        serial_prefix: r.serial_prefix,
        now: r.now,
        serials: r.serials,
    };
    let req = Request {
        device_id: Some(r.device_id.to_string()),
        key: KeySource::Csr(r.csr.clone()),
        vars: r.vars.clone(),
    };
    let prepared = issue::prepare(&ctx, &req)?;
    let new_spki = hex::encode(crate::crypto::sha256(prepared.public_key.spki_der()));

    let key = format!(
        "renew\n{}\n{}\n{}\n{new_spki}",
        hex::encode(p.sha256),
        &r.ca.name,
        r.device_id
    );
    let spec = BatchSpec {
        input_key: hex::encode(crate::crypto::sha256(key.as_bytes())),
        profile: p.name.clone(),
        profile_sha256: hex::encode(p.sha256),
        ca: r.ca.name.clone(),
        source: serde_json::json!({"source": {"kind": "renew", "device_id": r.device_id,
            "old_serial": old.serial, "spki_sha256": new_spki}, "profile_path": p.path})
        .to_string(),
        out_dir: String::new(),
        tenant: p.tenant.clone(),
    };
    let old_spki = match &old.spki_sha256 {
        Some(s) => s.clone(),
        None => super::spki_sha256(&old.der)?,
    };
    if old_spki == new_spki {
        // The same renewal run again after it succeeded: hand back what it issued.
        if old.current
            && ledger.batch_input_key(&old.batch_id)?.as_deref() == Some(spec.input_key.as_str())
        {
            return Ok(Renewed {
                device_id: r.device_id.into(),
                profile: p.name.clone(),
                batch_id: old.batch_id.clone(),
                old_serial: certs
                    .iter()
                    .rev()
                    .find(|c| c.serial != old.serial)
                    .map(|c| c.serial.clone())
                    .unwrap_or_default(),
                new_serial: old.serial.clone(),
                der: old.der.clone(),
                already: true,
            });
        }
        return Err(LifecycleError::Refused(format!(
            "the CSR's key is device '{}''s current key; a renewal needs a new key pair made on the device",
            r.device_id
        )));
    }
    if let Some(holder) = ledger.key_used_elsewhere(&new_spki, &p.name, r.device_id)? {
        return Err(LifecycleError::Refused(format!(
            "the CSR's key is already certified for {holder}; one key, one device: make a new key pair on device '{}'",
            r.device_id
        )));
    }
    if certs
        .iter()
        .any(|c| c.spki_sha256.as_deref() == Some(new_spki.as_str()))
    {
        return Err(LifecycleError::Refused(format!(
            "the CSR's key was certified for device '{}' before; a renewal needs a key never used",
            r.device_id
        )));
    }

    let (batch, _) = ledger.ensure_batch(&spec)?;
    ledger.supersede(
        &batch.id,
        &p.name,
        r.device_id,
        &format!("renewed with a new key (spki {new_spki})"),
        None,
    )?;
    let der =
        issue::record::issue_one(ledger, &batch.id, 1, p, &r.ca.cert, prepared, r.signer)?.der;
    let new_serial = {
        use der::Decode;
        let c = x509_cert::Certificate::from_der(&der)
            .map_err(|e| LifecycleError::Corrupt(e.to_string()))?;
        hex::encode(c.tbs_certificate.serial_number.as_bytes())
    };
    ledger.record_event(
        "renewed",
        Some(&batch.id),
        Some(r.device_id),
        &serde_json::json!({"profile": p.name, "old_serial": old.serial, "new_serial": new_serial,
            "old_spki_sha256": old_spki, "spki_sha256": new_spki}),
    )?;
    if let Some(status) = ledger.status(&batch.id)? {
        ledger.finish_batch(&batch.id, &status.counts)?;
    }
    Ok(Renewed {
        device_id: r.device_id.into(),
        profile: p.name.clone(),
        batch_id: batch.id,
        old_serial: old.serial,
        new_serial,
        der,
        already: false,
    })
}
