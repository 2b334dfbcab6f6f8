//! Building the to-be-signed certificate and assembling the signed one. Used for device
//! certificates and for the CA ceremony alike: one builder, different extension sets.

use super::{no_expiry, x509_time};
use crate::crypto::SignatureAlgorithm;
use der::asn1::{BitStringRef, Ia5String, OctetString};
use der::{Decode, Encode, Header, Length, Reader, SliceReader, Tag};
use time::OffsetDateTime;
use x509_cert::ext::pkix::name::{GeneralName, OtherName};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;
use x509_cert::{TbsCertificate, Version};

/// Everything that goes into a TBSCertificate.
#[derive(Debug, Clone)]
pub struct CertSpec {
    /// Serial number bytes (positive, minimal).
    pub serial: Vec<u8>,
    /// Signature algorithm the issuer will use.
    pub signature: SignatureAlgorithm,
    /// Issuer name, exactly as in the issuer certificate.
    pub issuer: Name,
    /// Subject name.
    pub subject: Name,
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter; `None` = 99991231235959Z.
    pub not_after: Option<OffsetDateTime>,
    /// Subject public key, SPKI DER.
    pub spki: Vec<u8>,
    /// Extensions, in order.
    pub extensions: Vec<Extension>,
}

/// A building error (values that cannot be encoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode certificate: {0}")]
pub struct BuildError(pub String);

impl From<der::Error> for BuildError {
    fn from(e: der::Error) -> Self {
        Self(e.to_string())
    }
}

/// Encodes the TBSCertificate.
pub fn build_tbs(spec: &CertSpec) -> Result<Vec<u8>, BuildError> {
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&spec.serial)?,
        signature: spec.signature.identifier(),
        issuer: spec.issuer.clone(),
        validity: Validity {
            not_before: x509_time(spec.not_before)?,
            not_after: match spec.not_after {
                Some(t) => x509_time(t)?,
                None => no_expiry()?,
            },
        },
        subject: spec.subject.clone(),
        subject_public_key_info: spki::SubjectPublicKeyInfoOwned::from_der(&spec.spki)?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: if spec.extensions.is_empty() {
            None
        } else {
            Some(spec.extensions.clone())
        },
    };
    Ok(tbs.to_der()?)
}

/// Wraps TBS bytes and a signature into a Certificate, DER: the TBS exactly as built (never
/// re-encoded), the algorithm, the signature. Only the TBS's outer SEQUENCE is checked here;
/// its content is checked by lint's independent parser before anything is signed. Decoding the
/// TBS into an owned x509-cert tree and encoding the whole certificate again, as this did
/// before, gave the same bytes and cost a sixth of certfab's own instructions per certificate
/// (twice per certificate: lint and sign; docs/performance.md).
pub fn assemble(tbs: &[u8], alg: SignatureAlgorithm, sig: &[u8]) -> Result<Vec<u8>, BuildError> {
    let mut r = SliceReader::new(tbs)?;
    let header = Header::decode(&mut r)?;
    header.tag.assert_eq(Tag::Sequence)?;
    r.read_slice(header.length)?;
    r.finish(())?;
    let alg = alg.identifier().to_der()?;
    let sig = BitStringRef::from_bytes(sig)?.to_der()?;
    let body = Length::try_from(tbs.len() + alg.len() + sig.len())?;
    let outer = Header::new(Tag::Sequence, body)?;
    let mut der = Vec::with_capacity(tbs.len() + alg.len() + sig.len() + 4);
    outer.encode_to_vec(&mut der)?;
    der.extend_from_slice(tbs);
    der.extend_from_slice(&alg);
    der.extend_from_slice(&sig);
    Ok(der)
}

fn ext<T: Encode>(
    oid: der::asn1::ObjectIdentifier,
    critical: bool,
    v: &T,
) -> Result<Extension, BuildError> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(v.to_der()?)?,
    })
}

/// basicConstraints, always critical.
pub fn basic_constraints(ca: bool, path_len: Option<u8>) -> Result<Extension, BuildError> {
    ext(
        const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS,
        true,
        &BasicConstraints {
            ca,
            path_len_constraint: path_len,
        },
    )
}

/// keyUsage, critical.
pub fn key_usage(bits: flagset::FlagSet<KeyUsages>) -> Result<Extension, BuildError> {
    ext(
        const_oid::db::rfc5280::ID_CE_KEY_USAGE,
        true,
        &KeyUsage(bits),
    )
}

/// extKeyUsage, non-critical.
pub fn extended_key_usage(oids: &[der::asn1::ObjectIdentifier]) -> Result<Extension, BuildError> {
    ext(
        const_oid::db::rfc5280::ID_CE_EXT_KEY_USAGE,
        false,
        &ExtendedKeyUsage(oids.to_vec()),
    )
}

/// subjectKeyIdentifier.
pub fn subject_key_id(id: &[u8]) -> Result<Extension, BuildError> {
    ext(
        const_oid::db::rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER,
        false,
        &SubjectKeyIdentifier(OctetString::new(id)?),
    )
}

/// authorityKeyIdentifier with the key identifier only.
pub fn authority_key_id(id: &[u8]) -> Result<Extension, BuildError> {
    ext(
        const_oid::db::rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER,
        false,
        &AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(id)?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        },
    )
}

/// subjectAltName; critical when the subject is empty (RFC 5280 §4.2.1.6).
pub fn subject_alt_name(names: Vec<GeneralName>, critical: bool) -> Result<Extension, BuildError> {
    ext(
        const_oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME,
        critical,
        &SubjectAltName(names),
    )
}

/// An IA5 string (dNSName, URI, rfc822Name), refusing non-ASCII.
pub fn ia5(s: &str) -> Result<Ia5String, BuildError> {
    Ia5String::new(s).map_err(|_| BuildError(format!("{s:?} is not ASCII (IA5String)")))
}

#[derive(der::Sequence)]
struct HardwareModuleName {
    hw_type: der::asn1::ObjectIdentifier,
    hw_serial_num: OctetString,
}

/// RFC 4108 hardwareModuleName otherName (used by IEEE 802.1AR IDevIDs).
pub fn hardware_module_name(
    hw_type: der::asn1::ObjectIdentifier,
    serial: &[u8],
) -> Result<GeneralName, BuildError> {
    let hmn = HardwareModuleName {
        hw_type,
        hw_serial_num: OctetString::new(serial)?,
    };
    Ok(GeneralName::OtherName(OtherName {
        type_id: der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.8.4"),
        value: der::Any::encode_from(&hmn)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Signer, SoftSigner};
    use std::str::FromStr;
    use x509_cert::Certificate;

    fn tbs() -> Vec<u8> {
        let key = SoftSigner::generate_p256();
        build_tbs(&CertSpec {
            serial: vec![0x42, 0x01, 0x02],
            signature: key.algorithm(),
            issuer: Name::from_str("CN=Issuer,O=certfab").unwrap(),
            subject: Name::from_str("CN=SN-1").unwrap(),
            not_before: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
            not_after: None,
            spki: key.public_key().spki_der().to_vec(),
            extensions: vec![basic_constraints(false, None).unwrap()],
        })
        .unwrap()
    }

    /// The certificate assembled around the TBS bytes is byte for byte what x509-cert makes by
    /// decoding the TBS and encoding the whole certificate (what `assemble` did before), for a
    /// short and a long (RSA-size) signature.
    #[test]
    fn assemble_equals_the_decoded_and_re_encoded_certificate() {
        let tbs = tbs();
        for sig in [vec![0x30; 71], vec![0xa5; 384]] {
            let alg = SignatureAlgorithm::Ecdsa(crate::crypto::HashAlg::Sha256);
            let reference = Certificate {
                tbs_certificate: TbsCertificate::from_der(&tbs).unwrap(),
                signature_algorithm: alg.identifier(),
                signature: der::asn1::BitString::from_bytes(&sig).unwrap(),
            }
            .to_der()
            .unwrap();
            assert_eq!(assemble(&tbs, alg, &sig).unwrap(), reference);
        }
    }

    /// Bytes that are not exactly one SEQUENCE are refused, not wrapped into a certificate.
    #[test]
    fn assemble_refuses_what_is_not_one_tbs_sequence() {
        let alg = SignatureAlgorithm::Ecdsa(crate::crypto::HashAlg::Sha256);
        let tbs = tbs();
        let mut trailing = tbs.clone();
        trailing.push(0);
        assert!(assemble(&trailing, alg, &[1]).is_err());
        assert!(assemble(&tbs[..tbs.len() - 1], alg, &[1]).is_err());
        assert!(assemble(&[0x04, 0x01, 0x00], alg, &[1]).is_err());
        assert!(assemble(&[], alg, &[1]).is_err());
    }
}
