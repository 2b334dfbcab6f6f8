//! What cloud platforms need to stop trusting revoked devices, from the ledger:
//! AWS IoT Core `UpdateCertificate` to REVOKED per certificate id (the SHA-256 of the DER), and
//! Azure DPS individual-enrollment bulk updates with `provisioningStatus: "disabled"`.
//!
//! Sources: AWS IoT API `UpdateCertificate`
//! (<https://docs.aws.amazon.com/iot/latest/apireference/API_UpdateCertificate.html>; the CLI is
//! `aws iot update-certificate --certificate-id ID --new-status REVOKED`); Azure DPS
//! `Individual Enrollment - Run Bulk Operation`, api-version 2021-10-01, at most 10 enrollments
//! per call
//! (<https://learn.microsoft.com/en-us/rest/api/iot-dps/service/individual-enrollment/run-bulk-operation>).

use super::LifecycleError;
use crate::ledger::Ledger;

/// One revoked certificate, as exports need it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RevokedEntry {
    pub device_id: String,
    pub profile: String,
    /// Tenant of the batch that issued it.
    pub tenant: Option<String>,
    /// Serial, hex.
    pub serial: String,
    /// Issuing CA key identifier, hex.
    pub issuer_key_id: String,
    /// SHA-256 of the certificate DER, hex: AWS IoT's certificate id.
    pub cert_sha256: String,
    /// RFC 5280 reason name.
    pub reason: String,
    /// When it was revoked.
    pub at: String,
    /// The certificate (PEM), for platforms that identify it by content.
    #[serde(skip)]
    pub cert_pem: String,
}

/// Revoked certificates (of `profile`, or all), oldest revocation first.
pub fn revocations(
    ledger: &Ledger,
    profile: Option<&str>,
) -> Result<Vec<RevokedEntry>, LifecycleError> {
    Ok(ledger
        .revoked_certificates(profile, None)?
        .into_iter()
        .map(|c| {
            let (reason, at) = c.revoked.clone().unwrap_or_default();
            RevokedEntry {
                cert_pem: crate::x509::pem(&c.der),
                device_id: c.device_id,
                profile: c.profile,
                tenant: c.tenant,
                serial: c.serial,
                issuer_key_id: c.issuer_key_id,
                cert_sha256: c.cert_sha256,
                reason,
                at,
            }
        })
        .collect())
}

/// A shell script of `aws iot update-certificate … --new-status REVOKED` lines, one per
/// certificate, commented with the device and reason.
pub fn aws_script(entries: &[RevokedEntry]) -> String {
    let mut s = String::from(
        "#!/bin/sh\n# certfab revocations for AWS IoT Core: mark each certificate REVOKED.\nset -e\n",
    );
    for e in entries {
        s.push_str(&format!(
            "# device {} serial {} ({}, {})\naws iot update-certificate --certificate-id {} --new-status REVOKED\n",
            e.device_id, e.serial, e.reason, e.at, e.cert_sha256
        ));
    }
    s
}

/// Azure DPS bulk-operation bodies (`POST /enrollments?api-version=2021-10-01`), at most 10
/// enrollments each, that set each revoked device's individual enrollment to
/// `provisioningStatus: "disabled"`. `mode: "update"` replaces the enrollment, so the
/// attestation (the device certificate) is repeated; the registration id is the device id.
pub fn azure_bulk(entries: &[RevokedEntry]) -> Vec<serde_json::Value> {
    entries
        .chunks(10)
        .map(|chunk| {
            serde_json::json!({
                "mode": "update",
                "enrollments": chunk.iter().map(|e| serde_json::json!({
                    "registrationId": e.device_id,
                    "attestation": {
                        "type": "x509",
                        "x509": {"clientCertificates": {"primary": {"certificate": e.cert_pem}}}
                    },
                    "provisioningStatus": "disabled"
                })).collect::<Vec<_>>()
            })
        })
        .collect()
}
