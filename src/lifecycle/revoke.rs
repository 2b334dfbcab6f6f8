//! `certfab revoke`: find the certificate (a device's current one, or by serial), record the
//! revocation with its RFC 5280 reason, retire its key, and audit it. Revoking again is a
//! no-op that reports the first revocation.

use super::{spki_sha256, LifecycleError, Reason};
use crate::ledger::{CertRecord, Ledger};

/// What to revoke.
#[derive(Debug, Clone)]
pub enum Target {
    /// The device's current certificate (in `profile`, needed when the id is in several).
    Device {
        /// Device id.
        id: String,
        /// Profile name.
        profile: Option<String>,
    },
    /// One certificate by serial (hex, colons allowed), current or superseded.
    Serial(String),
}

/// A revocation done (or found done before).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Revoked {
    pub cert: CertRecord,
    /// The reason recorded.
    pub reason: String,
    /// When it was recorded.
    pub at: Option<String>,
    /// It was already revoked: nothing changed.
    pub already: bool,
}

/// Finds the one certificate `target` names.
pub fn find(ledger: &Ledger, target: &Target) -> Result<CertRecord, LifecycleError> {
    match target {
        Target::Device { id, profile } => {
            let certs = ledger.device_certificates(id, profile.as_deref())?;
            let mut current: Vec<CertRecord> = certs.into_iter().filter(|c| c.current).collect();
            let in_profile = profile
                .as_deref()
                .map(|p| format!(" in profile {p}"))
                .unwrap_or_default();
            match current.len() {
                0 => Err(LifecycleError::Refused(format!(
                    "no device '{id}' with a signed certificate{in_profile} in the ledger; check the id (certfab batch status lists devices) or use --serial"
                ))),
                1 => Ok(current.remove(0)),
                _ => Err(LifecycleError::Refused(format!(
                    "device '{id}' has certificates in several profiles ({}); pass --profile",
                    current.iter().map(|c| c.profile.as_str()).collect::<Vec<_>>().join(", ")
                ))),
            }
        }
        Target::Serial(s) => {
            let serial = normalize_serial(s)?;
            let mut certs = ledger.certificates_by_serial(&serial)?;
            match certs.len() {
                0 => Err(LifecycleError::Refused(format!(
                    "no certificate with serial {serial} in the ledger; copy it from `openssl x509 -serial` or certfab's output"
                ))),
                1 => Ok(certs.remove(0)),
                _ => Err(LifecycleError::Refused(format!(
                    "serial {serial} was issued by several CAs (devices {}); revoke by --device with --profile",
                    certs.iter().map(|c| c.device_id.as_str()).collect::<Vec<_>>().join(", ")
                ))),
            }
        }
    }
}

/// Lower-case hex without separators; refuses anything else.
pub fn normalize_serial(s: &str) -> Result<String, LifecycleError> {
    let t: String = s
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if t.is_empty() || t.len() > 40 || !t.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(LifecycleError::Usage(format!(
            "--serial '{s}' is not a certificate serial in hex (up to 20 bytes, colons allowed)"
        )));
    }
    Ok(t)
}

/// Revokes what `target` names for `reason`; `comment` goes into the audit event only.
pub fn revoke(
    ledger: &mut Ledger,
    target: &Target,
    reason: Reason,
    comment: Option<&str>,
) -> Result<Revoked, LifecycleError> {
    let cert = find(ledger, target)?;
    let spki = match &cert.spki_sha256 {
        Some(s) => s.clone(),
        None => spki_sha256(&cert.der)?,
    };
    match ledger.revoke(&cert, &spki, reason.name(), comment)? {
        Some((earlier, at)) => Ok(Revoked {
            cert,
            reason: earlier,
            at: Some(at),
            already: true,
        }),
        None => {
            let again = find_again(ledger, &cert)?;
            Ok(Revoked {
                at: again.revoked.as_ref().map(|r| r.1.clone()),
                cert: again,
                reason: reason.name().into(),
                already: false,
            })
        }
    }
}

fn find_again(ledger: &Ledger, cert: &CertRecord) -> Result<CertRecord, LifecycleError> {
    ledger
        .certificates_by_serial(&cert.serial)?
        .into_iter()
        .find(|c| c.issuer_key_id == cert.issuer_key_id)
        .ok_or_else(|| LifecycleError::Corrupt(format!("serial {} vanished", cert.serial)))
}
