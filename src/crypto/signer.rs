//! The signing seam: one small trait that the PKCS#11 key and the software key both implement
//! (rcgen's `SigningKey` shape), so issuance never knows which it has. It knows nothing of
//! PKCS#11: a back end's own error travels boxed (rustls' `OtherError` shape) and says which
//! exit code it means.

use super::{CryptoError, PublicKey, SignatureAlgorithm};
use crate::exit::ExitCode;

/// Something that signs certificate, CRL and CSR bodies and documents.
///
/// `sign` receives the whole message (TBS bytes), not a hash: the implementer hashes as its
/// algorithm requires (the HSM key hashes on the host and uses `CKM_ECDSA`), and returns the
/// signature exactly as X.509 encodes it (DER `Ecdsa-Sig-Value` for ECDSA).
pub trait Signer {
    /// The algorithm this key signs with.
    fn algorithm(&self) -> SignatureAlgorithm;
    /// The key's public half.
    fn public_key(&self) -> &PublicKey;
    /// Signs `msg`.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignError>;
    /// Signs a message already hashed with the key's ECDSA hash (`digest` is that hash), so a
    /// document too large to hold (a million-device manifest) is signed from a streamed hash.
    /// The signature is the one [`Signer::sign`] makes over the message itself. Keys that
    /// cannot sign a host-side hash refuse.
    fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, SignError> {
        let _ = digest;
        Err(SignError::Crypto(CryptoError::UnsupportedSignature(
            format!("{:?}", self.algorithm()),
            " over a streamed hash (only ECDSA keys sign one)",
        )))
    }
}

impl<S: Signer + ?Sized> Signer for &S {
    fn algorithm(&self) -> SignatureAlgorithm {
        (**self).algorithm()
    }
    fn public_key(&self) -> &PublicKey {
        (**self).public_key()
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        (**self).sign(msg)
    }
    fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, SignError> {
        (**self).sign_digest(digest)
    }
}

/// A signing back end's own failure (the token's, for the HSM key), kept whole so its message
/// (the failing `C_` call and the `CKR_` name) reaches the operator and its exit code `main`.
pub trait BackendError: std::error::Error + Send + Sync + 'static {
    /// The exit code this failure means (an unreachable token is not a wrong key).
    fn exit_code(&self) -> ExitCode;
}

/// Why a signature could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The key's back end refused or failed.
    #[error("{0}")]
    Backend(Box<dyn BackendError>),
    /// The signature came back malformed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl SignError {
    /// The back end's exit code; a malformed signature is a token fault (exit 4).
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Backend(b) => b.exit_code(),
            Self::Crypto(_) => ExitCode::Hsm,
        }
    }
}
