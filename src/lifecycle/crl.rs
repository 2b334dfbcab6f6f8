//! `certfab crl`: a v2 CRL (RFC 5280 §5) for one CA, built from the ledger's revocations,
//! signed by the CA key in the HSM and verified with the CA certificate before it is recorded
//! or written. Extensions: authorityKeyIdentifier and cRLNumber (monotonic per CA key, kept in
//! the ledger); each entry has its revocation date and, unless unspecified, a reasonCode.
//! Every revoked certificate of the CA is listed, also after it expires (RFC 5280 allows
//! dropping expired entries; keeping them costs little and keeps old audits simple).

use super::{LifecycleError, Reason};
use crate::crypto::SignatureAlgorithm;
use crate::crypto::Signer;
use crate::issue::IssueError;
use crate::ledger::{CrlRecord, Ledger};
use crate::x509::BuildError;
use crate::x509::CaCert;
use der::asn1::{BitString, OctetString, Uint};
use der::{Decode, Encode};
use time::OffsetDateTime;
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::pkix::{CrlNumber, KeyUsage, KeyUsages};
use x509_cert::ext::Extension;
use x509_cert::serial_number::SerialNumber;

/// One revoked certificate on the list.
#[derive(Debug, Clone)]
pub struct CrlEntry {
    /// Serial bytes.
    pub serial: Vec<u8>,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    pub reason: Reason,
}

/// The list's header values.
#[derive(Debug, Clone, Copy)]
pub struct CrlTimes {
    /// cRLNumber.
    pub number: u64,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate.
    pub next_update: OffsetDateTime,
}

fn ext<T: Encode>(oid: der::asn1::ObjectIdentifier, v: &T) -> Result<Extension, BuildError> {
    Ok(Extension {
        extn_id: oid,
        critical: false,
        extn_value: OctetString::new(v.to_der()?)?,
    })
}

/// Encodes the TBSCertList.
pub fn build_tbs(
    ca: &CaCert,
    alg: SignatureAlgorithm,
    entries: &[CrlEntry],
    t: &CrlTimes,
) -> Result<Vec<u8>, BuildError> {
    use const_oid::db::rfc5280 as oid;
    let mut revoked = Vec::with_capacity(entries.len());
    for e in entries {
        let exts = match e.reason.crl_reason() {
            Some(r) => Some(vec![ext(oid::ID_CE_CRL_REASONS, &r)?]),
            None => None,
        };
        revoked.push(RevokedCert {
            serial_number: SerialNumber::new(&e.serial)?,
            revocation_date: crate::x509::x509_time(e.revoked_at)?,
            crl_entry_extensions: exts,
        });
    }
    let number = CrlNumber(Uint::new(&t.number.to_be_bytes())?);
    let tbs = TbsCertList {
        version: x509_cert::Version::V2,
        signature: alg.identifier(),
        issuer: ca.subject.clone(),
        this_update: crate::x509::x509_time(t.this_update)?,
        next_update: Some(crate::x509::x509_time(t.next_update)?),
        revoked_certificates: if revoked.is_empty() {
            None
        } else {
            Some(revoked)
        },
        crl_extensions: Some(vec![
            crate::x509::authority_key_id(&ca.key_id)?,
            ext(oid::ID_CE_CRL_NUMBER, &number)?,
        ]),
    };
    Ok(tbs.to_der()?)
}

/// Signs a TBSCertList with the CA key and verifies the signature with the CA certificate's
/// public key before returning the CRL DER.
pub fn sign<S: Signer>(tbs: &[u8], ca: &CaCert, signer: &S) -> Result<Vec<u8>, IssueError> {
    let alg = signer.algorithm();
    let sig = signer.sign(tbs)?;
    ca.public_key
        .verify(alg, tbs, &sig)
        .map_err(|_| IssueError::VerifyFailed)?;
    let crl = CertificateList {
        tbs_cert_list: TbsCertList::from_der(tbs).map_err(BuildError::from)?,
        signature_algorithm: alg.identifier(),
        signature: BitString::from_bytes(&sig).map_err(BuildError::from)?,
    };
    Ok(crl.to_der().map_err(BuildError::from)?)
}

/// Whether the CA certificate allows signing CRLs (keyUsage cRLSign, or no keyUsage).
pub fn can_sign_crls(ca: &CaCert) -> bool {
    x509_cert::Certificate::from_der(&ca.der)
        .ok()
        .and_then(|c| c.tbs_certificate.get::<KeyUsage>().ok())
        .is_some_and(|ku| ku.is_none_or(|(_, k)| k.0.contains(KeyUsages::CRLSign)))
}

/// Builds, signs, verifies and records the next CRL of CA `ca_name`, valid from `now` for
/// `validity`. Returns the DER and what was recorded.
pub fn issue_crl<S: Signer>(
    ledger: &mut Ledger,
    ca_name: &str,
    ca: &CaCert,
    signer: &S,
    now: OffsetDateTime,
    validity: time::Duration,
) -> Result<(Vec<u8>, CrlRecord), LifecycleError> {
    if !can_sign_crls(ca) {
        return Err(LifecycleError::Usage(format!(
            "CA certificate {} has no cRLSign key usage, so relying parties would reject its CRL; re-issue the CA certificate with keyUsage keyCertSign, cRLSign (certfab ca sign does)",
            ca.source
        )));
    }
    let key_id = hex::encode(&ca.key_id);
    let mut entries = Vec::new();
    for c in ledger.revoked_certificates(None, Some(&key_id))? {
        let (reason, at) = c.revoked.clone().unwrap_or_default();
        let revoked_at = OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
            .map_err(|e| LifecycleError::Corrupt(format!("revocation time '{at}': {e}")))?;
        entries.push(CrlEntry {
            serial: hex::decode(&c.serial)
                .map_err(|e| LifecycleError::Corrupt(format!("serial {}: {e}", c.serial)))?,
            revoked_at,
            reason: reason.parse().map_err(LifecycleError::Corrupt)?,
        });
    }
    let times = CrlTimes {
        number: ledger.next_crl_number(&key_id)? as u64,
        this_update: now,
        next_update: now + validity,
    };
    let tbs = build_tbs(ca, signer.algorithm(), &entries, &times).map_err(IssueError::from)?;
    let der = sign(&tbs, ca, signer)?;
    let record = CrlRecord {
        issuer_key_id: key_id,
        number: times.number as i64,
        ca: ca_name.into(),
        this_update: crate::clock::rfc3339(times.this_update),
        next_update: crate::clock::rfc3339(times.next_update),
        entries: entries.len() as i64,
        sha256: hex::encode(crate::crypto::sha256(&der)),
    };
    ledger.record_crl(&record, &der)?;
    Ok((der, record))
}

/// PEM text of a CRL.
pub fn pem(der: &[u8]) -> String {
    pem_rfc7468::encode_string("X509 CRL", pem_rfc7468::LineEnding::LF, der).unwrap_or_default()
}
