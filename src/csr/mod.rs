//! Device requests: CSR and public-key input parsing, proof of possession, key policy and name
//! policy. Everything a device sends is hostile until these checks pass.

mod keypolicy;
mod names;

pub use keypolicy::check_key;
pub use names::check_name;

use crate::crypto::{CryptoError, PublicKey, SignatureAlgorithm};
use der::asn1::ObjectIdentifier;
use der::{Decode, Encode};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::request::CertReq;

/// Input larger than this is refused before any parsing.
pub const MAX_INPUT: usize = 64 * 1024;

const EXTENSION_REQUEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.14");

/// Why a request is refused. Every message says what was wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Input over [`MAX_INPUT`].
    #[error("input is {0} bytes, over the 64 KiB limit; a CSR is normally under 4 KiB")]
    TooLarge(usize),
    /// PEM with another label. The label found is not quoted: the input may be any file
    /// (a refusal reason is recorded in the ledger and must not leak what it holds).
    #[error("the PEM label is not {expected}; give the {what} itself")]
    WrongPemLabel {
        /// CSR or public key.
        what: &'static str,
        expected: String,
    },
    /// Not DER/PEM of the expected type.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// CSR or public key.
        what: &'static str,
        /// Decoder message.
        detail: String,
    },
    /// Key or signature problem.
    #[error("{0}")]
    Crypto(#[from] CryptoError),
    /// Proof of possession failed.
    #[error("the CSR's self-signature does not verify (no proof of possession of the private key); regenerate the CSR on the device")]
    BadProofOfPossession,
    /// Key kind not allowed by the profile.
    #[error("{kind} keys are not allowed by profile '{profile}'; it accepts {allowed}")]
    KeyNotAllowed {
        /// Key kind.
        kind: String,
        profile: String,
        /// Allowed kinds.
        allowed: String,
    },
    /// Weak RSA key.
    #[error("RSA key refused: {0}")]
    WeakRsa(String),
    /// Name policy violation.
    #[error("{attr} value \"{value}\" refused: {why}")]
    Name {
        /// Attribute.
        attr: String,
        /// The value, escaped ([`crate::text::escape`]).
        value: String,
        why: String,
    },
    /// Requested extension refused.
    #[error("the CSR requests {0}")]
    Extension(String),
    /// Device id missing or unusable.
    #[error("{0}")]
    DeviceId(String),
    /// Template could not render.
    #[error("{0}")]
    Template(String),
}

/// A parsed, self-signature-verified CSR.
#[derive(Debug, Clone)]
pub struct Csr {
    /// Subject as requested.
    pub subject: Name,
    /// The device's public key.
    pub public_key: PublicKey,
    /// Extensions from the extensionRequest attribute.
    pub requested: Vec<Extension>,
}

/// Strips PEM armour (checking the label) or passes DER through; enforces the size limit.
pub fn decode_input(
    bytes: &[u8],
    labels: &[&str],
    what: &'static str,
) -> Result<Vec<u8>, PolicyError> {
    if bytes.len() > MAX_INPUT {
        return Err(PolicyError::TooLarge(bytes.len()));
    }
    let text_start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    if bytes[text_start..].starts_with(b"-----BEGIN ") {
        let (label, der) =
            pem_rfc7468::decode_vec(&bytes[text_start..]).map_err(|e| PolicyError::Malformed {
                what,
                detail: format!("PEM: {e}"),
            })?;
        if !labels.contains(&label) {
            return Err(PolicyError::WrongPemLabel {
                what,
                expected: labels
                    .iter()
                    .map(|l| format!("'{l}'"))
                    .collect::<Vec<_>>()
                    .join(" or "),
            });
        }
        Ok(der)
    } else if bytes.first() == Some(&0x30) {
        Ok(bytes.to_vec())
    } else {
        Err(PolicyError::Malformed {
            what,
            detail: "neither PEM (-----BEGIN …) nor DER (which starts with a SEQUENCE)".into(),
        })
    }
}

/// Parses a CSR (PEM or DER), checks its signature algorithm and key structure, and verifies
/// its self-signature (proof of possession).
pub fn parse_csr(bytes: &[u8]) -> Result<Csr, PolicyError> {
    let der = decode_input(
        bytes,
        &["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"],
        "CSR",
    )?;
    let malformed = |e: der::Error| PolicyError::Malformed {
        what: "CSR",
        detail: crate::crypto::der_detail(e),
    };
    let (tbs, alg, sig) = crate::x509::split_signed(&der).map_err(malformed)?;
    let req = CertReq::from_der(&der).map_err(malformed)?;
    if req.info.version != x509_cert::request::Version::V1 {
        return Err(PolicyError::Malformed {
            what: "CSR",
            detail: "version is not v1 (0)".into(),
        });
    }
    let signature_algorithm = SignatureAlgorithm::from_identifier(&alg)?;
    let spki = req.info.public_key.to_der().map_err(malformed)?;
    let public_key = PublicKey::from_spki_der(&spki)?;
    public_key
        .verify(signature_algorithm, tbs, sig)
        .map_err(|e| match e {
            CryptoError::AlgorithmMismatch { .. } => PolicyError::Crypto(e),
            _ => PolicyError::BadProofOfPossession,
        })?;
    let mut requested = Vec::new();
    for attr in req.info.attributes.iter() {
        if attr.oid != EXTENSION_REQUEST {
            continue;
        }
        if attr.values.len() != 1 {
            return Err(PolicyError::Malformed {
                what: "CSR",
                detail: "extensionRequest attribute must hold exactly one value".into(),
            });
        }
        for v in attr.values.iter() {
            let exts: Vec<Extension> = v.decode_as().map_err(malformed)?;
            requested.extend(exts);
        }
    }
    if req
        .info
        .attributes
        .iter()
        .filter(|a| a.oid == EXTENSION_REQUEST)
        .count()
        > 1
    {
        return Err(PolicyError::Malformed {
            what: "CSR",
            detail: "more than one extensionRequest attribute".into(),
        });
    }
    for (i, e) in requested.iter().enumerate() {
        if requested[..i].iter().any(|p| p.extn_id == e.extn_id) {
            return Err(PolicyError::Extension(format!(
                "extension {} twice; a valid CSR lists each extension once",
                oid_name(e.extn_id)
            )));
        }
    }
    Ok(Csr {
        subject: req.info.subject,
        public_key,
        requested,
    })
}

/// Parses a SubjectPublicKeyInfo (PEM `PUBLIC KEY` or DER).
pub fn parse_public_key(bytes: &[u8]) -> Result<PublicKey, PolicyError> {
    let der = decode_input(bytes, &["PUBLIC KEY"], "public key")?;
    Ok(PublicKey::from_spki_der(&der)?)
}

/// Checks the extensions a CSR requests against the profile: CA:TRUE and unknown critical
/// extensions are refused; allow-listed ones are returned for copying; the rest are ignored.
pub fn requested_extensions(
    csr: &Csr,
    allowed: &[ObjectIdentifier],
) -> Result<Vec<Extension>, PolicyError> {
    use const_oid::db::rfc5280 as r;
    let mut copy = Vec::new();
    for e in &csr.requested {
        if e.extn_id == r::ID_CE_BASIC_CONSTRAINTS {
            let bc = x509_cert::ext::pkix::BasicConstraints::from_der(e.extn_value.as_bytes())
                .map_err(|err| {
                    PolicyError::Extension(format!("a malformed basicConstraints ({err})"))
                })?;
            if bc.ca {
                return Err(PolicyError::Extension(
                    "basicConstraints CA:TRUE; device certificates are never CAs. Fix the device's CSR template".into(),
                ));
            }
        }
        if allowed.contains(&e.extn_id) {
            copy.push(e.clone());
        } else if e.critical
            && ![
                r::ID_CE_BASIC_CONSTRAINTS,
                r::ID_CE_KEY_USAGE,
                r::ID_CE_EXT_KEY_USAGE,
                r::ID_CE_SUBJECT_ALT_NAME,
            ]
            .contains(&e.extn_id)
        {
            return Err(PolicyError::Extension(format!(
                "critical extension {} that the profile does not allow; remove it from the CSR or add its OID to csr.allowed_extensions",
                oid_name(e.extn_id)
            )));
        }
    }
    Ok(copy)
}

fn oid_name(oid: ObjectIdentifier) -> String {
    match const_oid::db::DB.by_oid(&oid) {
        Some(n) => format!("{n} ({oid})"),
        None => oid.to_string(),
    }
}
