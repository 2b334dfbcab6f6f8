//! The CA key ceremony, signing half: self-sign a root, make a CSR for an issuing CA whose key
//! is on the token, and sign an issuing CA certificate. Key generation and certificate import
//! are in [`crate::hsm`]. Every signature here is made by a [`Signer`] (the HSM in practice)
//! and verified before it is returned.

use crate::config::CaRef;
use crate::csr::PolicyError;
pub use crate::x509::{CaCert, CaError};

use crate::crypto::{SignError, Signer};
use crate::x509::{self, BuildError, CertSpec};
use der::{Decode, Encode};
use time::OffsetDateTime;
use x509_cert::ext::pkix::KeyUsages;
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo};

/// Validity and constraints of a CA certificate.
#[derive(Debug, Clone)]
pub struct CaParams {
    /// Subject (ignored when signing a CSR unless given explicitly).
    pub subject: Option<Name>,
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter; None = 99991231235959Z.
    pub not_after: Option<OffsetDateTime>,
    /// pathLenConstraint.
    pub path_len: Option<u8>,
    /// Serial prefix byte.
    pub serial_prefix: u8,
}

/// A ceremony step that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CeremonyError {
    /// Encoding.
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The CSR is unacceptable.
    #[error("issuing-CA CSR refused: {0}")]
    Csr(#[from] PolicyError),
    /// The issuer cannot issue this.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// Invalid parameter.
    #[error("{0}")]
    Param(String),
}

impl CeremonyError {
    /// The token's failures keep their own code; a refused CSR is rejected input (exit 3);
    /// everything else in a ceremony, a malformed signature included, is exit 2.
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            Self::Sign(crate::crypto::SignError::Backend(b)) => b.exit_code(),
            Self::Csr(_) => crate::exit::ExitCode::Rejected,
            _ => crate::exit::ExitCode::Usage,
        }
    }
}

fn ca_extensions(
    key_id: &[u8],
    issuer_key_id: &[u8],
    path_len: Option<u8>,
) -> Result<Vec<x509_cert::ext::Extension>, BuildError> {
    Ok(vec![
        x509::basic_constraints(true, path_len)?,
        x509::key_usage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)?,
        x509::subject_key_id(key_id)?,
        x509::authority_key_id(issuer_key_id)?,
    ])
}

fn sign_and_verify<S: Signer>(spec: &CertSpec, signer: &S) -> Result<Vec<u8>, CeremonyError> {
    let tbs = x509::build_tbs(spec)?;
    let sig = signer.sign(&tbs)?;
    signer
        .public_key()
        .verify(spec.signature, &tbs, &sig)
        .map_err(|_| {
            CeremonyError::Param(
                "the token's signature does not verify with its own public key".into(),
            )
        })?;
    Ok(x509::assemble(&tbs, spec.signature, &sig)?)
}

/// Self-signs a root CA certificate with `signer`.
pub fn self_sign<S: Signer>(signer: &S, params: &CaParams) -> Result<Vec<u8>, CeremonyError> {
    let subject = params
        .subject
        .clone()
        .ok_or_else(|| CeremonyError::Param("a root needs --subject".into()))?;
    let key_id = crate::crypto::key_identifier(&signer.public_key().subject_public_key());
    let spec = CertSpec {
        serial: x509::new_serial(params.serial_prefix)
            .map_err(|e| CeremonyError::Param(e.to_string()))?,
        signature: signer.algorithm(),
        issuer: subject.clone(),
        subject,
        not_before: params.not_before,
        not_after: params.not_after,
        spki: signer.public_key().spki_der().to_vec(),
        extensions: ca_extensions(&key_id, &key_id, params.path_len)?,
    };
    sign_and_verify(&spec, signer)
}

/// A PKCS#10 CSR for the key behind `signer` (an issuing CA whose key is on the token).
pub fn make_csr<S: Signer>(signer: &S, subject: Name) -> Result<Vec<u8>, CeremonyError> {
    let info = CertReqInfo {
        version: x509_cert::request::Version::V1,
        subject,
        public_key: spki::SubjectPublicKeyInfoOwned::from_der(signer.public_key().spki_der())
            .map_err(BuildError::from)?,
        attributes: Default::default(),
    };
    let tbs = info.to_der().map_err(BuildError::from)?;
    let sig = signer.sign(&tbs)?;
    signer
        .public_key()
        .verify(signer.algorithm(), &tbs, &sig)
        .map_err(|_| {
            CeremonyError::Param(
                "the token's CSR signature does not verify with its own public key".into(),
            )
        })?;
    let req = CertReq {
        info,
        algorithm: signer.algorithm().identifier(),
        signature: der::asn1::BitString::from_bytes(&sig).map_err(BuildError::from)?,
    };
    Ok(req.to_der().map_err(BuildError::from)?)
}

/// Signs a subordinate CA certificate for the key in `csr`, with the issuer's token key.
pub fn sign_ca<S: Signer>(
    issuer_signer: &S,
    issuer: &CaCert,
    csr: &[u8],
    params: &CaParams,
) -> Result<Vec<u8>, CeremonyError> {
    issuer.check_usable(params.not_before)?;
    if let Some(pl) = issuer.path_len {
        if pl == 0 {
            return Err(CeremonyError::Param(
                "the issuer's pathLenConstraint is 0: it may sign only end-entity certificates, not CAs".into(),
            ));
        }
        if params.path_len.is_none_or(|p| p >= pl) {
            return Err(CeremonyError::Param(format!(
                "the issuer's pathLenConstraint is {pl}; pass --path-len {} or lower",
                pl - 1
            )));
        }
    }
    sign_csr_under(issuer_signer, issuer, csr, params, "the new CA", |key_id| {
        ca_extensions(key_id, &issuer.key_id, params.path_len)
    })
}

/// Signs the key in `csr` under `issuer` with the extensions `extensions(key_id)` builds: the
/// CSR's subject unless `params` overrides it, validity nested inside the issuer's (a no-expiry
/// certificate only under a no-expiry issuer). `what` names the new certificate in errors.
fn sign_csr_under<S: Signer>(
    issuer_signer: &S,
    issuer: &CaCert,
    csr: &[u8],
    params: &CaParams,
    what: &str,
    extensions: impl FnOnce(&[u8]) -> Result<Vec<x509_cert::ext::Extension>, BuildError>,
) -> Result<Vec<u8>, CeremonyError> {
    let req = crate::csr::parse_csr(csr)?;
    if let Some(issuer_na) = issuer.not_after {
        if params.not_after.is_none_or(|na| na > issuer_na) {
            return Err(CeremonyError::Param(format!(
                "{what} would outlive its issuer (notAfter {}); shorten --validity",
                crate::clock::rfc3339(issuer_na)
            )));
        }
    }
    let key_id = crate::crypto::key_identifier(&req.public_key.subject_public_key());
    let spec = CertSpec {
        serial: x509::new_serial(params.serial_prefix)
            .map_err(|e| CeremonyError::Param(e.to_string()))?,
        signature: issuer_signer.algorithm(),
        issuer: issuer.subject.clone(),
        subject: params.subject.clone().unwrap_or(req.subject),
        not_before: params.not_before.max(issuer.not_before),
        not_after: params.not_after,
        spki: req.public_key.spki_der().to_vec(),
        extensions: extensions(&key_id)?,
    };
    // The signer was opened against the issuer certificate's key, so this also proves the
    // new certificate verifies under the issuer certificate.
    sign_and_verify(&spec, issuer_signer)
}

/// Longest verification code accepted: X.520's upper bound for a commonName.
pub const VERIFICATION_CODE_MAX: usize = 64;

/// A proof-of-possession ("verification") certificate for registering a CA with a cloud:
/// an end-entity certificate whose subject is only `CN=<code>` (AWS IoT's registration code
/// from GetRegistrationCode, Azure DPS's verification code), signed by the CA's key.
///
/// Its key pair is made here and dropped (zeroized) when this returns: the certificate
/// proves only that the CA key signed the code, and authenticates nobody.
pub fn verification_cert<S: Signer>(
    signer: &S,
    issuer: &CaCert,
    code: &str,
    not_before: OffsetDateTime,
    validity: time::Duration,
    serial_prefix: u8,
) -> Result<Vec<u8>, CeremonyError> {
    if code.is_empty()
        || code.len() > VERIFICATION_CODE_MAX
        || !code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(CeremonyError::Param(format!(
            "--cn must be the platform's verification code: 1..{VERIFICATION_CODE_MAX} letters, digits, '-', '_' or '.' (AWS: aws iot get-registration-code; Azure DPS: generateVerificationCode)"
        )));
    }
    issuer.check_usable(not_before)?;
    let mut not_after = not_before + validity;
    if let Some(ca_na) = issuer.not_after {
        not_after = not_after.min(ca_na);
    }
    let key = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let spki = {
        use p256::pkcs8::EncodePublicKey;
        key.public_key()
            .to_public_key_der()
            .map_err(|e| CeremonyError::Param(e.to_string()))?
            .as_bytes()
            .to_vec()
    };
    drop(key);
    let subject = x509::name(&[(
        crate::x509::AttrType {
            name: "CN".into(),
            oid: const_oid::db::rfc4519::CN,
            printable: false,
        },
        code.to_string(),
    )])?;
    let pk = crate::crypto::PublicKey::from_spki_der(&spki)
        .map_err(|e| CeremonyError::Param(e.to_string()))?;
    let spec = CertSpec {
        serial: x509::new_serial(serial_prefix).map_err(|e| CeremonyError::Param(e.to_string()))?,
        signature: signer.algorithm(),
        issuer: issuer.subject.clone(),
        subject,
        not_before,
        not_after: Some(not_after),
        spki,
        extensions: vec![
            x509::basic_constraints(false, None)?,
            x509::key_usage(KeyUsages::DigitalSignature.into())?,
            x509::subject_key_id(&crate::crypto::key_identifier(&pk.subject_public_key()))?,
            x509::authority_key_id(&issuer.key_id)?,
        ],
    };
    sign_and_verify(&spec, signer)
}

/// The extended key usage that marks a certfab document signer (manifests, audit checkpoints):
/// `2.25.24015586874786451635927182553189455071`, an OID from the UUID arc (ITU-T X.667,
/// UUID 12113bd9-9f92-4f00-a46b-31aaefb814df), so no registration is needed. Verification
/// requires it, so no device certificate (which never carries it) can sign a manifest.
pub const SIGNER_EKU: &str = "2.25.24015586874786451635927182553189455071";

/// The content octets of [`SIGNER_EKU`]'s DER encoding (its arcs exceed 32 bits, which
/// `const-oid` cannot hold, so it is encoded here).
pub fn signer_eku_der() -> Vec<u8> {
    let uuid: u128 = 24015586874786451635927182553189455071;
    let mut arc = Vec::new();
    let mut v = uuid;
    arc.push((v & 0x7f) as u8);
    v >>= 7;
    while v > 0 {
        arc.push(0x80 | (v & 0x7f) as u8);
        v >>= 7;
    }
    arc.reverse();
    let mut out = vec![2 * 40 + 25];
    out.extend(arc);
    out
}

fn signer_eku_extension() -> Result<x509_cert::ext::Extension, BuildError> {
    let oid = signer_eku_der();
    // ExtKeyUsageSyntax ::= SEQUENCE SIZE (1..MAX) OF KeyPurposeId
    let mut value = vec![0x30, (oid.len() + 2) as u8, 0x06, oid.len() as u8];
    value.extend(oid);
    Ok(x509_cert::ext::Extension {
        extn_id: const_oid::db::rfc5280::ID_CE_EXT_KEY_USAGE,
        critical: false,
        extn_value: der::asn1::OctetString::new(value)?,
    })
}

/// Signs an end-entity certificate for a document-signing key (the manifest and audit signer):
/// basicConstraints CA:FALSE, keyUsage digitalSignature only and extendedKeyUsage
/// [`SIGNER_EKU`], so the key can sign manifests but can never issue a certificate. `params.path_len` must be `None`.
pub fn sign_end_entity<S: Signer>(
    issuer_signer: &S,
    issuer: &CaCert,
    csr: &[u8],
    params: &CaParams,
) -> Result<Vec<u8>, CeremonyError> {
    issuer.check_usable(params.not_before)?;
    if params.path_len.is_some() {
        return Err(CeremonyError::Param(
            "--path-len applies to CA certificates only; drop it with --end-entity".into(),
        ));
    }
    sign_csr_under(
        issuer_signer,
        issuer,
        csr,
        params,
        "the certificate",
        |key_id| {
            Ok(vec![
                x509::basic_constraints(false, None)?,
                x509::key_usage(KeyUsages::DigitalSignature.into())?,
                signer_eku_extension()?,
                x509::subject_key_id(key_id)?,
                x509::authority_key_id(&issuer.key_id)?,
            ])
        },
    )
}

/// A CA's certificates, checked, and the signature algorithm its key signs with: everything
/// about the issuing side that needs no token. The token key is proven to match the
/// certificate when it is opened (`Site::issuer`), so these are also what it will sign with.
pub struct CaCerts {
    /// The CA's certificate.
    pub cert: CaCert,
    /// Certificates above it, nearest first.
    pub chain: Vec<CaCert>,
    /// The algorithm of its signatures (the key type's default; RSASSA-PSS with `rsa_pss`).
    pub signature: crate::crypto::SignatureAlgorithm,
}

/// Loads a CA's certificate and chain and checks them at `now` (usable, each signed by the
/// next), without opening the token: what `--dry-run` and `Site::issuer` share.
pub fn ca_certs(ca: &CaRef, now: OffsetDateTime) -> Result<CaCerts, CaError> {
    let (cert, chain) = CaCert::load_with_chain(&ca.cert, &ca.chain)?;
    cert.check_usable(now)?;
    let mut below = &cert;
    for c in &chain {
        below.check_signed_by(c)?;
        below = c;
    }
    let mut signature = cert.public_key.default_signature();
    if ca.rsa_pss {
        if let crate::crypto::SignatureAlgorithm::RsaPkcs1(h) = signature {
            signature = crate::crypto::SignatureAlgorithm::RsaPss(h);
        }
    }
    Ok(CaCerts {
        cert,
        chain,
        signature,
    })
}
