//! A CA certificate as issuance and the ceremony need it: parsed once, checked for being a usable
//! CA at start-up.

use super::{attr_text, pem, split_signed, time_of, MATTER_VID};
use crate::crypto::PublicKey;
use der::{Decode, Encode};
use std::path::Path;
use time::OffsetDateTime;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::name::Name;
use x509_cert::Certificate;

/// A parsed CA certificate.
#[derive(Debug, Clone)]
pub struct CaCert {
    /// Where it came from (path), for messages.
    pub source: String,
    pub der: Vec<u8>,
    /// Subject name.
    pub subject: Name,
    /// Subject name, DER.
    pub subject_der: Vec<u8>,
    pub public_key: PublicKey,
    /// Key identifier (its SKI extension, or computed by RFC 5280 method 1).
    pub key_id: Vec<u8>,
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter; `None` for 99991231235959Z.
    pub not_after: Option<OffsetDateTime>,
    /// basicConstraints CA flag.
    pub is_ca: bool,
    /// pathLenConstraint.
    pub path_len: Option<u8>,
    /// keyUsage allows keyCertSign (or has no keyUsage).
    pub can_sign_certs: bool,
    /// Matter vendor id in the subject, if any.
    pub matter_vid: Option<String>,
    /// [`CaCert::is_self_signed`], worked out once: a station asks it for every device's
    /// chain, and a P-384 root's signature check costs about a millisecond in ring.
    self_signed: std::sync::OnceLock<bool>,
}

/// Why a CA certificate cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// Unreadable.
    #[error("cannot read CA certificate {0}: {1}")]
    Read(String, String),
    /// Not a certificate.
    #[error("CA certificate {0} does not parse: {1}")]
    Parse(String, String),
    /// Not a CA.
    #[error(
        "{0} is not a CA certificate ({1}); point the profile at the issuing CA's certificate"
    )]
    NotCa(String, String),
    /// Expired or not yet valid.
    #[error("CA certificate {0} {1}; roll over to a new CA (certfab ca) before issuing")]
    Validity(String, String),
    /// The chain does not link.
    #[error("CA chain: {0}")]
    Chain(String),
}

impl CaError {
    /// A CA certificate that cannot be used is a configuration error (exit 2).
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        crate::exit::ExitCode::Usage
    }
}

impl CaCert {
    /// Loads a certificate and the chain above it (nearest first), as a site config names them.
    pub fn load_with_chain(
        cert: &Path,
        chain: &[std::path::PathBuf],
    ) -> Result<(Self, Vec<Self>), CaError> {
        let c = Self::load(cert)?;
        let above = chain
            .iter()
            .map(|p| Self::load(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((c, above))
    }

    /// Reads a PEM or DER certificate file.
    pub fn load(path: &Path) -> Result<Self, CaError> {
        let src = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| CaError::Read(src.clone(), e.to_string()))?;
        let der = if bytes.starts_with(b"-----") {
            pem_rfc7468::decode_vec(&bytes)
                .map_err(|e| CaError::Parse(src.clone(), e.to_string()))?
                .1
        } else {
            bytes
        };
        Self::from_der(der, src)
    }

    /// Parses DER.
    pub fn from_der(der: Vec<u8>, source: String) -> Result<Self, CaError> {
        let perr = |e: &dyn std::fmt::Display| CaError::Parse(source.clone(), e.to_string());
        let cert = Certificate::from_der(&der).map_err(|e| perr(&e))?;
        let tbs = &cert.tbs_certificate;
        let spki = tbs.subject_public_key_info.to_der().map_err(|e| perr(&e))?;
        let public_key = PublicKey::from_spki_der(&spki).map_err(|e| perr(&e))?;
        let bc = tbs
            .get::<BasicConstraints>()
            .map_err(|e| perr(&e))?
            .map(|(_, b)| b);
        let ku = tbs.get::<KeyUsage>().map_err(|e| perr(&e))?.map(|(_, k)| k);
        let ski = tbs
            .get::<SubjectKeyIdentifier>()
            .map_err(|e| perr(&e))?
            .map(|(_, s)| s);
        let key_id = ski
            .map(|s| s.0.as_bytes().to_vec())
            .unwrap_or_else(|| crate::crypto::key_identifier(&public_key.subject_public_key()));
        let not_before =
            time_of(&tbs.validity.not_before).ok_or_else(|| perr(&"notBefore is 9999-12-31"))?;
        Ok(Self {
            subject_der: tbs.subject.to_der().map_err(|e| perr(&e))?,
            subject: tbs.subject.clone(),
            public_key,
            key_id,
            not_before,
            not_after: time_of(&tbs.validity.not_after),
            is_ca: bc.as_ref().is_some_and(|b| b.ca),
            path_len: bc.and_then(|b| b.path_len_constraint),
            can_sign_certs: ku.is_none_or(|k| k.0.contains(KeyUsages::KeyCertSign)),
            matter_vid: attr_text(&tbs.subject, MATTER_VID),
            der,
            source,
            self_signed: std::sync::OnceLock::new(),
        })
    }

    /// Refuses a certificate that is not a CA, or not valid at `now`.
    pub fn check_usable(&self, now: OffsetDateTime) -> Result<(), CaError> {
        if !self.is_ca {
            return Err(CaError::NotCa(
                self.source.clone(),
                "basicConstraints CA is not TRUE".into(),
            ));
        }
        if !self.can_sign_certs {
            return Err(CaError::NotCa(
                self.source.clone(),
                "keyUsage lacks keyCertSign".into(),
            ));
        }
        if now < self.not_before {
            return Err(CaError::Validity(
                self.source.clone(),
                format!(
                    "is not valid before {}",
                    crate::clock::rfc3339(self.not_before)
                ),
            ));
        }
        if let Some(na) = self.not_after {
            if now >= na {
                return Err(CaError::Validity(
                    self.source.clone(),
                    format!("expired at {}", crate::clock::rfc3339(na)),
                ));
            }
        }
        Ok(())
    }

    /// Verifies that `self` was signed by `issuer`.
    pub fn check_signed_by(&self, issuer: &CaCert) -> Result<(), CaError> {
        let (tbs, alg, sig) =
            split_signed(&self.der).map_err(|e| CaError::Chain(format!("{}: {e}", self.source)))?;
        let alg = crate::crypto::SignatureAlgorithm::from_identifier(&alg)
            .map_err(|e| CaError::Chain(format!("{}: {e}", self.source)))?;
        issuer.public_key.verify(alg, tbs, sig).map_err(|_| {
            CaError::Chain(format!(
                "{} is not signed by {}; list the chain nearest-first",
                self.source, issuer.source
            ))
        })
    }

    /// Whether this is a self-signed root (subject = issuer, signature by its own key).
    pub fn is_self_signed(&self) -> bool {
        *self.self_signed.get_or_init(|| {
            use der::Decode;
            let issuer_is_subject = x509_cert::Certificate::from_der(&self.der)
                .is_ok_and(|c| c.tbs_certificate.issuer == c.tbs_certificate.subject);
            issuer_is_subject && self.check_signed_by(self).is_ok()
        })
    }

    /// The chain a device gets after its leaf: this CA and the certificates above it, without
    /// a self-signed root at the top unless `with_root` (relying parties hold the root).
    pub fn device_chain_pem(&self, above: &[CaCert], with_root: bool) -> String {
        let mut pem = self.pem();
        for c in above {
            if with_root || !c.is_self_signed() {
                pem.push_str(&c.pem());
            }
        }
        pem
    }

    /// PEM text.
    pub fn pem(&self) -> String {
        pem(&self.der)
    }
}
