//! Public keys, signature algorithms and signature verification: the pure cryptography that
//! every other module leans on. Nothing here touches a token, a file or the clock.

mod ecdsa_der;
mod keyfile;
mod pubkey;
mod sigalg;
mod signer;
mod soft;

pub use ecdsa_der::{der_ecdsa_to_raw, raw_ecdsa_to_der};
pub use keyfile::encode_key_pem;
pub use pubkey::{KeyKind, PublicKey};
pub use sigalg::{HashAlg, SignatureAlgorithm};
pub use signer::{BackendError, SignError, Signer};
pub use soft::SoftSigner;

use sha2::Digest;

/// A DER decoding error without the bytes it met: the kind of problem, what was expected and
/// where. `der`'s own message quotes the tag or byte found, which is the input's content.
pub fn der_detail(e: der::Error) -> String {
    use der::ErrorKind as K;
    let what = match e.kind() {
        K::TagUnexpected {
            expected: Some(t), ..
        } => format!("expected {t}, found another tag"),
        K::TagUnexpected { expected: None, .. } | K::TagUnknown { .. } => {
            "unexpected or unknown tag".into()
        }
        K::OidUnknown { .. } => "unknown OID".into(),
        K::Incomplete { .. } => "truncated".into(),
        K::TrailingData { .. } => "trailing data after the structure".into(),
        K::Length { tag } => format!("bad length for {tag}"),
        K::Noncanonical { tag } => format!("non-canonical {tag} encoding"),
        K::Value { tag } => format!("bad {tag} value"),
        K::Utf8(_) => "invalid UTF-8 string".into(),
        other => other.to_string(),
    };
    match e.position() {
        Some(at) => format!("{what} at byte {at}"),
        None => what,
    }
}

/// Why a key or a signature could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The public key structure does not decode.
    #[error("malformed public key: {0}")]
    MalformedKey(String),
    /// An EC key given with explicit curve parameters instead of a named curve.
    #[error(
        "EC key uses explicit curve parameters; only named curves (P-256, P-384) are accepted"
    )]
    ExplicitCurve,
    /// A named curve certfab does not accept.
    #[error("EC curve {0} is not accepted; use P-256 or P-384")]
    UnsupportedCurve(String),
    /// The EC point is not on the curve, is the identity, or is compressed.
    #[error("EC public key point is invalid: {0}")]
    BadPoint(String),
    /// A key algorithm certfab does not accept.
    #[error("public key algorithm {0} is not accepted; use ECDSA P-256/P-384, RSA or Ed25519")]
    UnsupportedKeyAlgorithm(String),
    /// A signature algorithm certfab does not accept.
    #[error("signature algorithm {0} is not accepted{1}")]
    UnsupportedSignature(String, &'static str),
    /// Key and signature algorithm do not belong together.
    #[error("signature algorithm {alg} does not fit a {key} key")]
    AlgorithmMismatch {
        /// Signature algorithm name.
        alg: String,
        /// Key kind.
        key: String,
    },
    /// The signature is malformed or does not verify.
    #[error("signature does not verify")]
    BadSignature,
}

/// SHA-256 of `data`, as bytes.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(data).into()
}

/// RFC 5280 §4.2.1.2 method 1 key identifier: SHA-1 of the subjectPublicKey BIT STRING value.
/// SHA-1 is used here as an identifier, not for security.
pub fn key_identifier(subject_public_key: &[u8]) -> Vec<u8> {
    sha1::Sha1::digest(subject_public_key).to_vec()
}
