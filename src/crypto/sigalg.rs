//! Signature algorithms certfab signs and verifies with, and their X.509 AlgorithmIdentifiers.

use super::CryptoError;
use const_oid::db::rfc5912 as oids;
use const_oid::ObjectIdentifier;
use der::asn1::{AnyRef, Null};
use der::{Decode, Encode, Tagged};
use rsa::pkcs1::RsaPssParams;
use spki::{AlgorithmIdentifierOwned, AlgorithmIdentifierRef};

/// Hash functions used with signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// SHA-256
    Sha256,
    /// SHA-384
    Sha384,
    /// SHA-512
    Sha512,
}

impl HashAlg {
    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            Self::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Self::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Self::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// The hash's OID.
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            Self::Sha256 => oids::ID_SHA_256,
            Self::Sha384 => oids::ID_SHA_384,
            Self::Sha512 => oids::ID_SHA_512,
        }
    }

    /// DER DigestInfo prefix for PKCS#1 v1.5 signatures made over a host-side hash.
    pub fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Self::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Self::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Self::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }

    fn from_oid(oid: ObjectIdentifier) -> Option<Self> {
        [Self::Sha256, Self::Sha384, Self::Sha512]
            .into_iter()
            .find(|h| h.oid() == oid)
    }
}

/// A signature algorithm certfab accepts, in a CSR or for its own signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// ecdsa-with-SHA256/384/512
    Ecdsa(HashAlg),
    /// sha{256,384,512}WithRSAEncryption (PKCS#1 v1.5)
    RsaPkcs1(HashAlg),
    /// RSASSA-PSS with MGF1 over the same hash and salt length equal to the hash length
    RsaPss(HashAlg),
    /// Ed25519 (pure)
    Ed25519,
}

impl std::fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = |h: &HashAlg| match h {
            HashAlg::Sha256 => "SHA256",
            HashAlg::Sha384 => "SHA384",
            HashAlg::Sha512 => "SHA512",
        };
        match self {
            Self::Ecdsa(x) => write!(f, "ecdsa-with-{}", h(x)),
            Self::RsaPkcs1(x) => write!(f, "{}WithRSAEncryption", h(x).to_lowercase()),
            Self::RsaPss(x) => write!(f, "RSASSA-PSS-{}", h(x)),
            Self::Ed25519 => write!(f, "Ed25519"),
        }
    }
}

/// Algorithms that are recognised only to be refused with a helpful name.
const REFUSED: &[(ObjectIdentifier, &str)] = &[
    (oids::SHA_1_WITH_RSA_ENCRYPTION, "sha1WithRSAEncryption"),
    (oids::MD_5_WITH_RSA_ENCRYPTION, "md5WithRSAEncryption"),
    (oids::MD_2_WITH_RSA_ENCRYPTION, "md2WithRSAEncryption"),
    (
        ObjectIdentifier::new_unwrap("1.2.840.10045.4.1"),
        "ecdsa-with-SHA1",
    ),
    (oids::ECDSA_WITH_SHA_224, "ecdsa-with-SHA224"),
    (oids::DSA_WITH_SHA_1, "dsa-with-SHA1"),
    (oids::DSA_WITH_SHA_224, "dsa-with-SHA224"),
    (oids::DSA_WITH_SHA_256, "dsa-with-SHA256"),
    (oids::SHA_224_WITH_RSA_ENCRYPTION, "sha224WithRSAEncryption"),
];

impl SignatureAlgorithm {
    /// Identifies the algorithm of an X.509 AlgorithmIdentifier, refusing weak or unknown ones.
    pub fn from_identifier(id: &AlgorithmIdentifierRef<'_>) -> Result<Self, CryptoError> {
        let no_params = id.parameters.is_none();
        let null_params = id
            .parameters
            .map(|p| p.is_null() || p.value().is_empty() && p.tag() == der::Tag::Null)
            .unwrap_or(true);
        let alg = match id.oid {
            oids::ECDSA_WITH_SHA_256 if no_params => Self::Ecdsa(HashAlg::Sha256),
            oids::ECDSA_WITH_SHA_384 if no_params => Self::Ecdsa(HashAlg::Sha384),
            oids::ECDSA_WITH_SHA_512 if no_params => Self::Ecdsa(HashAlg::Sha512),
            oids::SHA_256_WITH_RSA_ENCRYPTION if null_params => Self::RsaPkcs1(HashAlg::Sha256),
            oids::SHA_384_WITH_RSA_ENCRYPTION if null_params => Self::RsaPkcs1(HashAlg::Sha384),
            oids::SHA_512_WITH_RSA_ENCRYPTION if null_params => Self::RsaPkcs1(HashAlg::Sha512),
            oids::ID_RSASSA_PSS => Self::RsaPss(pss_hash(id.parameters)?),
            const_oid::db::rfc8410::ID_ED_25519 if no_params => Self::Ed25519,
            oid => {
                if let Some((_, name)) = REFUSED.iter().find(|(o, _)| *o == oid) {
                    let why = if name.starts_with("dsa-with") {
                        ": DSA is obsolete"
                    } else {
                        ": its hash is too weak; sign with SHA-256 or stronger"
                    };
                    return Err(CryptoError::UnsupportedSignature(name.to_string(), why));
                }
                let name = const_oid::db::DB
                    .by_oid(&oid)
                    .map(|n| format!("{n} ({oid})"))
                    .unwrap_or_else(|| oid.to_string());
                return Err(CryptoError::UnsupportedSignature(
                    format!("{name} with these parameters"),
                    "",
                ));
            }
        };
        Ok(alg)
    }

    /// The AlgorithmIdentifier to put in certificates signed with this algorithm.
    pub fn identifier(self) -> AlgorithmIdentifierOwned {
        let (oid, parameters) = match self {
            Self::Ecdsa(HashAlg::Sha256) => (oids::ECDSA_WITH_SHA_256, None),
            Self::Ecdsa(HashAlg::Sha384) => (oids::ECDSA_WITH_SHA_384, None),
            Self::Ecdsa(HashAlg::Sha512) => (oids::ECDSA_WITH_SHA_512, None),
            Self::RsaPkcs1(h) => {
                let oid = match h {
                    HashAlg::Sha256 => oids::SHA_256_WITH_RSA_ENCRYPTION,
                    HashAlg::Sha384 => oids::SHA_384_WITH_RSA_ENCRYPTION,
                    HashAlg::Sha512 => oids::SHA_512_WITH_RSA_ENCRYPTION,
                };
                (oid, Some(der::Any::from(Null)))
            }
            Self::RsaPss(h) => {
                let params = match h {
                    HashAlg::Sha256 => RsaPssParams::new::<sha2::Sha256>(32),
                    HashAlg::Sha384 => RsaPssParams::new::<sha2::Sha384>(48),
                    HashAlg::Sha512 => RsaPssParams::new::<sha2::Sha512>(64),
                };
                // Encoding fixed, well-formed parameters cannot fail.
                let der = params.to_der().unwrap_or_default();
                (oids::ID_RSASSA_PSS, der::Any::from_der(&der).ok())
            }
            Self::Ed25519 => (const_oid::db::rfc8410::ID_ED_25519, None),
        };
        AlgorithmIdentifierOwned { oid, parameters }
    }

    /// The hash used, if any (Ed25519 hashes internally).
    pub fn hash(self) -> Option<HashAlg> {
        match self {
            Self::Ecdsa(h) | Self::RsaPkcs1(h) | Self::RsaPss(h) => Some(h),
            Self::Ed25519 => None,
        }
    }
}

fn pss_hash(params: Option<AnyRef<'_>>) -> Result<HashAlg, CryptoError> {
    let bad = || {
        CryptoError::UnsupportedSignature(
            "RSASSA-PSS with these parameters".into(),
            ": use MGF1 with the same SHA-2 hash and a salt as long as the hash",
        )
    };
    let params = params.ok_or_else(bad)?;
    let der = params.to_der().map_err(|_| bad())?;
    let p = RsaPssParams::try_from(der.as_slice()).map_err(|_| bad())?;
    let hash = HashAlg::from_oid(p.hash.oid).ok_or_else(bad)?;
    let mgf_hash = p
        .mask_gen
        .parameters
        .map(|a| a.oid)
        .and_then(HashAlg::from_oid);
    if p.mask_gen.oid != oids::ID_MGF_1
        || mgf_hash != Some(hash)
        || p.salt_len as usize != hash.output_len()
    {
        return Err(bad());
    }
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_round_trip() {
        for alg in [
            SignatureAlgorithm::Ecdsa(HashAlg::Sha256),
            SignatureAlgorithm::Ecdsa(HashAlg::Sha384),
            SignatureAlgorithm::RsaPkcs1(HashAlg::Sha256),
            SignatureAlgorithm::RsaPss(HashAlg::Sha384),
            SignatureAlgorithm::Ed25519,
        ] {
            let id = alg.identifier();
            let der = id.to_der().unwrap();
            let back = AlgorithmIdentifierRef::from_der(&der).unwrap();
            assert_eq!(SignatureAlgorithm::from_identifier(&back).unwrap(), alg);
        }
    }

    #[test]
    fn sha1_is_refused_by_name() {
        let id = AlgorithmIdentifierRef {
            oid: oids::SHA_1_WITH_RSA_ENCRYPTION,
            parameters: None,
        };
        let err = SignatureAlgorithm::from_identifier(&id).unwrap_err();
        assert!(err.to_string().contains("sha1WithRSAEncryption"), "{err}");
    }

    #[test]
    fn digest_info_prefix_matches_der() {
        for h in [HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512] {
            let p = h.digest_info_prefix();
            // last byte is the OCTET STRING length = hash length
            assert_eq!(p[p.len() - 1] as usize, h.output_len());
            assert_eq!(p[1] as usize + 2, p.len() + h.output_len());
        }
    }
}
