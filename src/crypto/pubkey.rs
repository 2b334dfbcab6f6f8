//! Device and CA public keys parsed from SubjectPublicKeyInfo, with the checks that make a key
//! acceptable at all (named curve, point on curve, sane RSA structure). Policy on top of that
//! (which kinds a profile allows, RSA size, ROCA, Fermat) lives in `csr::keypolicy`.

use super::{CryptoError, HashAlg, SignatureAlgorithm};
use const_oid::db::{rfc5912 as oids, rfc8410};
use der::{Decode, Encode, Tagged};
use rsa::BigUint;
use signature::hazmat::PrehashVerifier;
use signature::Verifier;
use spki::SubjectPublicKeyInfoRef;

/// The kind of a key, as profiles name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// ECDSA on NIST P-256
    P256,
    /// ECDSA on NIST P-384
    P384,
    /// RSA with a modulus of this many bits
    Rsa(usize),
    Ed25519,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::P256 => f.write_str("ECDSA P-256"),
            Self::P384 => f.write_str("ECDSA P-384"),
            Self::Rsa(bits) => write!(f, "RSA-{bits}"),
            Self::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// A parsed public key, with the exact SPKI DER it came from.
#[derive(Clone, Debug)]
pub struct PublicKey {
    spki: Vec<u8>,
    key: Inner,
}

#[derive(Clone, Debug)]
enum Inner {
    P256(p256::PublicKey),
    P384(p384::PublicKey),
    Rsa(rsa::RsaPublicKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// Largest RSA modulus certfab will parse; bigger keys only cost time.
const RSA_MAX_BITS: usize = 8192;

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(spki: &[u8]) -> Result<Self, CryptoError> {
        let info = SubjectPublicKeyInfoRef::from_der(spki).map_err(|e| {
            CryptoError::MalformedKey(format!("SubjectPublicKeyInfo: {}", super::der_detail(e)))
        })?;
        let bits = info.subject_public_key.as_bytes().ok_or_else(|| {
            CryptoError::MalformedKey("public key BIT STRING has unused bits".into())
        })?;
        let key = match info.algorithm.oid {
            oids::ID_EC_PUBLIC_KEY => {
                let params = info
                    .algorithm
                    .parameters
                    .ok_or_else(|| CryptoError::MalformedKey("EC key without curve".into()))?;
                if params.tag() != der::Tag::ObjectIdentifier {
                    return Err(CryptoError::ExplicitCurve);
                }
                let curve: const_oid::ObjectIdentifier = params.decode_as().map_err(|e| {
                    CryptoError::MalformedKey(format!("EC curve: {}", super::der_detail(e)))
                })?;
                if bits.first() != Some(&0x04) {
                    return Err(CryptoError::BadPoint(
                        "only uncompressed points (0x04 prefix) are accepted".into(),
                    ));
                }
                match curve {
                    oids::SECP_256_R_1 => Inner::P256(
                        p256::PublicKey::from_sec1_bytes(bits)
                            .map_err(|_| CryptoError::BadPoint("not on P-256".into()))?,
                    ),
                    oids::SECP_384_R_1 => Inner::P384(
                        p384::PublicKey::from_sec1_bytes(bits)
                            .map_err(|_| CryptoError::BadPoint("not on P-384".into()))?,
                    ),
                    other => {
                        let name = const_oid::db::DB.by_oid(&other).unwrap_or("unknown");
                        return Err(CryptoError::UnsupportedCurve(format!("{name} ({other})")));
                    }
                }
            }
            oids::RSA_ENCRYPTION => {
                let p = rsa::pkcs1::RsaPublicKey::from_der(bits).map_err(|e| {
                    CryptoError::MalformedKey(format!("RSA public key: {}", super::der_detail(e)))
                })?;
                let n = BigUint::from_bytes_be(p.modulus.as_bytes());
                let e = BigUint::from_bytes_be(p.public_exponent.as_bytes());
                if n.bits() > RSA_MAX_BITS {
                    return Err(CryptoError::MalformedKey(format!(
                        "RSA modulus of {} bits is larger than {RSA_MAX_BITS}",
                        n.bits()
                    )));
                }
                // The rsa crate refuses e < 3 and e > 2^33; policy refuses every e but 65537
                // later with a clearer message, so build the key unchecked here.
                Inner::Rsa(rsa::RsaPublicKey::new_unchecked(n, e))
            }
            rfc8410::ID_ED_25519 => {
                if info.algorithm.parameters.is_some() {
                    return Err(CryptoError::MalformedKey(
                        "Ed25519 key with parameters".into(),
                    ));
                }
                let raw: [u8; 32] = bits
                    .try_into()
                    .map_err(|_| CryptoError::MalformedKey("Ed25519 key is not 32 bytes".into()))?;
                Inner::Ed25519(
                    ed25519_dalek::VerifyingKey::from_bytes(&raw)
                        .map_err(|_| CryptoError::BadPoint("not a valid Ed25519 point".into()))?,
                )
            }
            other => {
                let name = const_oid::db::DB.by_oid(&other).unwrap_or("unknown");
                return Err(CryptoError::UnsupportedKeyAlgorithm(format!(
                    "{name} ({other})"
                )));
            }
        };
        // Keep canonical DER so equal keys compare equal byte for byte.
        let spki = info
            .to_der()
            .map_err(|e| CryptoError::MalformedKey(e.to_string()))?;
        Ok(Self { spki, key })
    }

    /// The SubjectPublicKeyInfo, DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The raw subjectPublicKey bits (what key identifiers hash).
    pub fn subject_public_key(&self) -> Vec<u8> {
        SubjectPublicKeyInfoRef::from_der(&self.spki)
            .ok()
            .and_then(|i| i.subject_public_key.as_bytes().map(<[u8]>::to_vec))
            .unwrap_or_default()
    }

    /// What kind of key this is.
    pub fn kind(&self) -> KeyKind {
        match &self.key {
            Inner::P256(_) => KeyKind::P256,
            Inner::P384(_) => KeyKind::P384,
            Inner::Rsa(k) => KeyKind::Rsa(rsa::traits::PublicKeyParts::n(k).bits()),
            Inner::Ed25519(_) => KeyKind::Ed25519,
        }
    }

    /// RSA modulus and exponent, for key policy.
    pub fn rsa_parts(&self) -> Option<(&BigUint, &BigUint)> {
        use rsa::traits::PublicKeyParts;
        match &self.key {
            Inner::Rsa(k) => Some((k.n(), k.e())),
            _ => None,
        }
    }

    /// The signature algorithm this key signs certificates with by default.
    pub fn default_signature(&self) -> SignatureAlgorithm {
        match self.key {
            Inner::P256(_) => SignatureAlgorithm::Ecdsa(HashAlg::Sha256),
            Inner::P384(_) => SignatureAlgorithm::Ecdsa(HashAlg::Sha384),
            Inner::Rsa(_) => SignatureAlgorithm::RsaPkcs1(HashAlg::Sha256),
            Inner::Ed25519(_) => SignatureAlgorithm::Ed25519,
        }
    }

    /// Whether `alg` is a signature algorithm this key can make.
    pub fn fits(&self, alg: SignatureAlgorithm) -> bool {
        matches!(
            (&self.key, alg),
            (
                Inner::P256(_) | Inner::P384(_),
                SignatureAlgorithm::Ecdsa(_)
            ) | (
                Inner::Rsa(_),
                SignatureAlgorithm::RsaPkcs1(_) | SignatureAlgorithm::RsaPss(_)
            ) | (Inner::Ed25519(_), SignatureAlgorithm::Ed25519)
        )
    }

    /// Verifies a DER ECDSA signature over a message given as its hash (`digest`, made with
    /// `alg`'s hash): the streamed counterpart of [`PublicKey::verify`] for documents too large
    /// to hold. Only ECDSA signs a host-side hash.
    pub fn verify_digest(
        &self,
        alg: SignatureAlgorithm,
        digest: &[u8],
        sig: &[u8],
    ) -> Result<(), CryptoError> {
        if !self.fits(alg) {
            return Err(CryptoError::AlgorithmMismatch {
                alg: alg.to_string(),
                key: self.kind().to_string(),
            });
        }
        let bad = |_| CryptoError::BadSignature;
        match (&self.key, alg) {
            (Inner::P256(k), SignatureAlgorithm::Ecdsa(h)) if digest.len() == h.output_len() => {
                let sig = p256::ecdsa::Signature::from_der(sig).map_err(bad)?;
                p256::ecdsa::VerifyingKey::from(k)
                    .verify_prehash(digest, &sig)
                    .map_err(bad)
            }
            (Inner::P384(k), SignatureAlgorithm::Ecdsa(h)) if digest.len() == h.output_len() => {
                let sig = p384::ecdsa::Signature::from_der(sig).map_err(bad)?;
                p384::ecdsa::VerifyingKey::from(k)
                    .verify_prehash(digest, &sig)
                    .map_err(bad)
            }
            _ => Err(CryptoError::BadSignature),
        }
    }

    /// Verifies an X.509-encoded signature (DER ECDSA, PKCS#1/PSS, Ed25519) over `msg`.
    pub fn verify(
        &self,
        alg: SignatureAlgorithm,
        msg: &[u8],
        sig: &[u8],
    ) -> Result<(), CryptoError> {
        if !self.fits(alg) {
            return Err(CryptoError::AlgorithmMismatch {
                alg: alg.to_string(),
                key: self.kind().to_string(),
            });
        }
        let bad = |_| CryptoError::BadSignature;
        match (&self.key, alg) {
            (Inner::P256(_) | Inner::P384(_), SignatureAlgorithm::Ecdsa(h)) => {
                if let Some(alg) = ring_ecdsa(&self.key, h) {
                    // ring verifies ECDSA several times faster than the pure-Rust curves, and
                    // batch issuance verifies every certificate it signs.
                    return ring::signature::UnparsedPublicKey::new(alg, self.subject_public_key())
                        .verify(msg, sig)
                        .map_err(|_| CryptoError::BadSignature);
                }
                match &self.key {
                    Inner::P256(k) => {
                        let sig = p256::ecdsa::Signature::from_der(sig).map_err(bad)?;
                        p256::ecdsa::VerifyingKey::from(k)
                            .verify_prehash(&h.digest(msg), &sig)
                            .map_err(bad)
                    }
                    Inner::P384(k) => {
                        let sig = p384::ecdsa::Signature::from_der(sig).map_err(bad)?;
                        p384::ecdsa::VerifyingKey::from(k)
                            .verify_prehash(&h.digest(msg), &sig)
                            .map_err(bad)
                    }
                    _ => Err(CryptoError::BadSignature),
                }
            }
            (Inner::Rsa(k), SignatureAlgorithm::RsaPkcs1(h)) => {
                let sig = rsa::pkcs1v15::Signature::try_from(sig).map_err(bad)?;
                let k = k.clone();
                match h {
                    HashAlg::Sha256 => rsa_verify(
                        rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(k),
                        msg,
                        &sig,
                    ),
                    HashAlg::Sha384 => rsa_verify(
                        rsa::pkcs1v15::VerifyingKey::<sha2::Sha384>::new(k),
                        msg,
                        &sig,
                    ),
                    HashAlg::Sha512 => rsa_verify(
                        rsa::pkcs1v15::VerifyingKey::<sha2::Sha512>::new(k),
                        msg,
                        &sig,
                    ),
                }
            }
            (Inner::Rsa(k), SignatureAlgorithm::RsaPss(h)) => {
                let sig = rsa::pss::Signature::try_from(sig).map_err(bad)?;
                let k = k.clone();
                match h {
                    HashAlg::Sha256 => {
                        rsa_verify(rsa::pss::VerifyingKey::<sha2::Sha256>::new(k), msg, &sig)
                    }
                    HashAlg::Sha384 => {
                        rsa_verify(rsa::pss::VerifyingKey::<sha2::Sha384>::new(k), msg, &sig)
                    }
                    HashAlg::Sha512 => {
                        rsa_verify(rsa::pss::VerifyingKey::<sha2::Sha512>::new(k), msg, &sig)
                    }
                }
            }
            (Inner::Ed25519(k), SignatureAlgorithm::Ed25519) => {
                let sig = ed25519_dalek::Signature::from_slice(sig).map_err(bad)?;
                k.verify_strict(msg, &sig).map_err(bad)
            }
            _ => Err(CryptoError::BadSignature),
        }
    }
}

/// ring's ECDSA verifier for this curve and hash, where ring has one.
fn ring_ecdsa(
    key: &Inner,
    h: HashAlg,
) -> Option<&'static ring::signature::EcdsaVerificationAlgorithm> {
    use ring::signature as r;
    match (key, h) {
        (Inner::P256(_), HashAlg::Sha256) => Some(&r::ECDSA_P256_SHA256_ASN1),
        (Inner::P256(_), HashAlg::Sha384) => Some(&r::ECDSA_P256_SHA384_ASN1),
        (Inner::P384(_), HashAlg::Sha256) => Some(&r::ECDSA_P384_SHA256_ASN1),
        (Inner::P384(_), HashAlg::Sha384) => Some(&r::ECDSA_P384_SHA384_ASN1),
        _ => None,
    }
}

fn rsa_verify<S>(key: impl Verifier<S>, msg: &[u8], sig: &S) -> Result<(), CryptoError> {
    key.verify(msg, sig).map_err(|_| CryptoError::BadSignature)
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.spki == other.spki
    }
}
impl Eq for PublicKey {}
