//! A software signing key. Used for the pre-issuance lint's throwaway signature and by tests
//! for logic that has nothing to do with the HSM; never for a CA certfab operates.

use super::{CryptoError, HashAlg, PublicKey, SignError, SignatureAlgorithm, Signer};
use p256::pkcs8::EncodePublicKey;
use signature::hazmat::PrehashSigner;

/// An in-memory ECDSA key.
pub enum SoftSigner {
    /// P-256 key
    P256(p256::ecdsa::SigningKey, PublicKey),
    /// P-384 key
    P384(p384::ecdsa::SigningKey, PublicKey),
}

impl SoftSigner {
    /// A fresh random P-256 key.
    pub fn generate_p256() -> Self {
        let sk = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        Self::from_p256(sk)
    }

    /// Wraps an existing P-256 key.
    pub fn from_p256(sk: p256::ecdsa::SigningKey) -> Self {
        let pk = public(sk.verifying_key());
        Self::P256(sk, pk)
    }

    /// A fresh random P-384 key.
    pub fn generate_p384() -> Self {
        let sk = p384::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let pk = public(sk.verifying_key());
        Self::P384(sk, pk)
    }
}

fn public(vk: &impl EncodePublicKey) -> PublicKey {
    let spki = vk
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .unwrap_or_default();
    // A key we just made always has a valid SPKI.
    PublicKey::from_spki_der(&spki).expect("own key encodes")
}

impl Signer for SoftSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        match self {
            Self::P256(..) => SignatureAlgorithm::Ecdsa(HashAlg::Sha256),
            Self::P384(..) => SignatureAlgorithm::Ecdsa(HashAlg::Sha384),
        }
    }

    fn public_key(&self) -> &PublicKey {
        match self {
            Self::P256(_, pk) | Self::P384(_, pk) => pk,
        }
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        let err = |_| SignError::Crypto(CryptoError::BadSignature);
        match self {
            Self::P256(sk, _) => {
                let sig: p256::ecdsa::Signature =
                    sk.sign_prehash(&HashAlg::Sha256.digest(msg)).map_err(err)?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            Self::P384(sk, _) => {
                let sig: p384::ecdsa::Signature =
                    sk.sign_prehash(&HashAlg::Sha384.digest(msg)).map_err(err)?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
        }
    }

    fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, SignError> {
        let err = |_| SignError::Crypto(CryptoError::BadSignature);
        match self {
            Self::P256(sk, _) => {
                let sig: p256::ecdsa::Signature = sk.sign_prehash(digest).map_err(err)?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            Self::P384(sk, _) => {
                let sig: p384::ecdsa::Signature = sk.sign_prehash(digest).map_err(err)?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
        }
    }
}
