//! The signing seam: one small trait that the PKCS#11 key and the software test key both
//! implement (rcgen's `SigningKey` shape), so the issuance pipeline never knows which it has.

use crate::crypto::{CryptoError, PublicKey, SignatureAlgorithm};

/// Something that signs certificate and CSR bodies.
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
}

/// Why a signature could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The token refused or failed (the CKR code and call are kept).
    #[error(transparent)]
    Hsm(#[from] crate::hsm::HsmError),
    /// The signature came back malformed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}
