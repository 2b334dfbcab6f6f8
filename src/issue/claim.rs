//! The Fleet Provisioning claim certificate for a batch: a P-256 key made on this host, a
//! certificate from the claim profile signed through the ledger like any device's (intent
//! before signature, one live claim per claim id), and the key encrypted for the export.

use super::record::{single, IssuingCa, RecordError};
use super::{prepare, IssueContext, IssueError, KeySource, Request};
use crate::crypto::Signer;
use crate::ledger::Ledger;
use crate::profile::Profile;
use crate::x509::SerialSource;
use secrecy::SecretString;
use time::OffsetDateTime;

/// A claim certificate made for a batch, ready for the exporter to render.
#[derive(Debug, Clone)]
pub struct ClaimMaterial {
    /// The claim's device id in the ledger (e.g. `fleet-claim-<batch>`).
    pub claim_id: String,
    /// Claim certificate, PEM.
    pub cert_pem: String,
    /// Claim certificate followed by its CA chain (without a self-signed root), PEM.
    pub chain_pem: String,
    /// The claim private key as PKCS#8 PEM: encrypted unless plain keys were asked for.
    pub key_pem: zeroize::Zeroizing<String>,
    /// Whether `key_pem` is encrypted.
    pub key_encrypted: bool,
}

/// What a claim needs besides the ledger and the CA.
pub struct ClaimRequest<'a> {
    /// The claim profile (`profiles/aws-fleet-claim.yaml` by default).
    pub profile: &'a Profile,
    /// The claim's device id in the ledger.
    pub claim_id: &'a str,
    /// Encrypts the claim key; `None` only on an explicit request for a plain key.
    pub passphrase: Option<&'a SecretString>,
    /// PBKDF2 iterations for the encrypted key.
    pub kdf_iterations: u32,
    /// Station serial prefix.
    pub serial_prefix: u8,
    /// Issuance time.
    pub now: OffsetDateTime,
}

/// Why a claim was not issued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    /// The claim profile or the key cannot be used.
    #[error("{0}")]
    Usage(String),
    /// The claim profile refuses the certificate.
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// The ledger refused or failed, or the signature did.
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl ClaimError {
    /// Usage 2; issuance and the ledger their own.
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            Self::Usage(_) => crate::exit::ExitCode::Usage,
            Self::Issue(e) => e.exit_code(),
            Self::Record(e) => e.exit_code(),
        }
    }
}

/// Refuses a claim profile that does not allow the key certfab makes for the claim (P-256),
/// before anything is opened.
pub fn check_profile(profile: &Profile) -> Result<(), ClaimError> {
    if !profile.keys.p256 {
        return Err(ClaimError::Usage(format!(
            "claim profile {} does not allow P-256, the key type certfab generates",
            profile.path.display()
        )));
    }
    Ok(())
}

/// Issues the claim certificate `req.claim_id` under `req.profile` with `key`, and returns it
/// with its key, encrypted before anything is signed so a signed claim never lacks its key.
pub fn issue_claim<S: Signer>(
    ledger: &mut Ledger,
    ca: &IssuingCa,
    key: &S,
    serials: &dyn SerialSource,
    req: &ClaimRequest<'_>,
) -> Result<ClaimMaterial, ClaimError> {
    let profile = req.profile;
    check_profile(profile)?;
    let claim_key = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let spki = {
        use p256::pkcs8::EncodePublicKey;
        claim_key
            .public_key()
            .to_public_key_der()
            .map_err(|e| ClaimError::Usage(format!("claim key: {e}")))?
    };
    let key_pem = crate::crypto::encode_key_pem(&claim_key, req.passphrase, req.kdf_iterations)
        .map_err(|e| ClaimError::Usage(format!("claim key: {e}")))?;
    drop(claim_key);
    let ctx = IssueContext {
        profile,
        ca: &ca.cert,
        signature: key.algorithm(),
        serial_prefix: req.serial_prefix,
        now: req.now,
        serials,
    };
    let request = Request {
        device_id: Some(req.claim_id.to_string()),
        key: KeySource::PublicKey(spki.as_bytes().to_vec()),
        vars: Default::default(),
    };
    let prepared = prepare(&ctx, &request)?;
    let recorded = single(ledger, profile, &ca.name, &ca.cert, prepared, key)?;
    Ok(ClaimMaterial {
        claim_id: req.claim_id.to_string(),
        cert_pem: crate::x509::pem(&recorded.der),
        chain_pem: ca.chain_pem(&recorded.der, false),
        key_pem,
        key_encrypted: req.passphrase.is_some(),
    })
}
