//! A signing key on the token, held by one worker with its own session.

use super::quirks::RsaVia;
use super::{find, labels, Hsm, HsmError, Pkcs11Uri, SignPurpose};
use crate::crypto::{raw_ecdsa_to_der, HashAlg, PublicKey, SignatureAlgorithm};
use crate::crypto::{CryptoError, SignError, Signer};
use const_oid::db::rfc5912 as oids;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use der::asn1::{BitString, ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use std::sync::Mutex;

/// A private key on the token, resolved once, with the session that uses it.
///
/// Implements [`Signer`]: ECDSA is hashed on the host and signed with `CKM_ECDSA` (SoftHSM
/// has no `CKM_ECDSA_SHA256`), and the raw `r‖s` is converted to DER. RSA uses `CKM_RSA_PKCS`
/// over a host-built DigestInfo, or `CKM_RSA_PKCS_PSS` over the host hash.
pub struct HsmKey<'h> {
    hsm: &'h Hsm,
    uri: Pkcs11Uri,
    public: PublicKey,
    alg: SignatureAlgorithm,
    /// Where RSA signatures are hashed on this token (`quirks::Quirks::rsa_via`).
    via: RsaVia,
    live: Mutex<Live>,
}

struct Live {
    session: Session,
    handle: ObjectHandle,
    generation: u64,
}

impl<'h> HsmKey<'h> {
    pub(super) fn open(
        hsm: &'h Hsm,
        uri: &Pkcs11Uri,
        expected: Option<(&PublicKey, &str)>,
    ) -> Result<Self, HsmError> {
        // A token lost before or while the key is opened (the audit checkpoint after a kill)
        // is recovered like one lost while signing.
        let (session, handle, public, generation) = hsm.recovering(|_| {
            let (session, generation) = hsm.open_session()?;
            let (handle, public) = resolve(hsm, &session, uri)?;
            Ok((session, handle, public, generation))
        })?;
        if let Some((want, cert)) = expected {
            if *want != public {
                return Err(HsmError::KeyMismatch {
                    uri: uri.to_string(),
                    cert: cert.into(),
                });
            }
        }
        let alg = public.default_signature();
        let via = rsa_via(hsm, uri, alg)?;
        let key = Self {
            hsm,
            uri: uri.clone(),
            public,
            alg,
            via,
            live: Mutex::new(Live {
                session,
                handle,
                generation,
            }),
        };
        // The public object could be stale or swapped: prove the private key matches it.
        key.self_test()?;
        Ok(key)
    }

    /// Signs a random challenge and verifies it with the public key read from the token.
    fn self_test(&self) -> Result<(), HsmError> {
        let mut nonce = [0u8; 32];
        getrandom::getrandom(&mut nonce).map_err(|e| HsmError::Other(e.to_string()))?;
        let sig = self
            .sign_recovering(&nonce, SignPurpose::SelfTest)
            .map_err(|e| match e {
                KeyError::Hsm(h) => h,
                KeyError::Crypto(c) => HsmError::Other(c.to_string()),
            })?;
        self.public
            .verify(self.alg, &nonce, &sig)
            .map_err(|_| HsmError::KeyMismatch {
                uri: self.uri.to_string(),
                cert: "its own public key object on the token".into(),
            })
    }

    /// Uses RSASSA-PSS instead of PKCS#1 v1.5 (RSA keys only). Refused when the token lists
    /// no RSA-PSS mechanism for signing (tpm2-pkcs11 lists none).
    pub fn use_pss(&mut self) -> Result<(), HsmError> {
        if let SignatureAlgorithm::RsaPkcs1(h) = self.alg {
            let alg = SignatureAlgorithm::RsaPss(h);
            self.via = rsa_via(self.hsm, &self.uri, alg)?;
            self.alg = alg;
        }
        Ok(())
    }

    /// The URI this key was found by.
    pub fn uri(&self) -> &Pkcs11Uri {
        &self.uri
    }

    /// Signs `msg` with the key's algorithm: the host hashes (and for PKCS#1 v1.5 builds the
    /// DigestInfo), the token signs once, recovering a lost token in between.
    fn sign_recovering(&self, msg: &[u8], purpose: SignPurpose) -> Result<Vec<u8>, KeyError> {
        let pss = |h: HashAlg| {
            let (hash_alg, mgf) = match h {
                HashAlg::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
                HashAlg::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
                HashAlg::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
            };
            PkcsPssParams {
                hash_alg,
                mgf,
                s_len: (h.output_len() as u64).into(),
            }
        };
        let (mechanism, data) = match (self.alg, self.via) {
            (SignatureAlgorithm::Ecdsa(h), _) => (Mechanism::Ecdsa, h.digest(msg)),
            (SignatureAlgorithm::RsaPkcs1(h), RsaVia::HostHash) => {
                let mut di = h.digest_info_prefix().to_vec();
                di.extend_from_slice(&h.digest(msg));
                (Mechanism::RsaPkcs, di)
            }
            (SignatureAlgorithm::RsaPkcs1(h), RsaVia::TokenHash) => (
                match h {
                    HashAlg::Sha256 => Mechanism::Sha256RsaPkcs,
                    HashAlg::Sha384 => Mechanism::Sha384RsaPkcs,
                    HashAlg::Sha512 => Mechanism::Sha512RsaPkcs,
                },
                msg.to_vec(),
            ),
            (SignatureAlgorithm::RsaPss(h), RsaVia::HostHash) => {
                (Mechanism::RsaPkcsPss(pss(h)), h.digest(msg))
            }
            (SignatureAlgorithm::RsaPss(h), RsaVia::TokenHash) => (
                match h {
                    HashAlg::Sha256 => Mechanism::Sha256RsaPkcsPss(pss(h)),
                    HashAlg::Sha384 => Mechanism::Sha384RsaPkcsPss(pss(h)),
                    HashAlg::Sha512 => Mechanism::Sha512RsaPkcsPss(pss(h)),
                },
                msg.to_vec(),
            ),
            (SignatureAlgorithm::Ed25519, _) => {
                return Err(HsmError::UnsupportedKey {
                    uri: self.uri.to_string(),
                    what: "Ed25519".into(),
                }
                .into())
            }
        };
        let raw = self.sign_raw(&mechanism, &data, purpose)?;
        Ok(match self.alg {
            SignatureAlgorithm::Ecdsa(_) => raw_ecdsa_to_der(&raw, raw.len() / 2)?,
            _ => raw,
        })
    }

    /// One `C_Sign` of `data`, through the recovery loop: a session of a module generation
    /// that no longer exists (another worker re-opened the token) is replaced before use, and
    /// after a re-open the key found again must be the same key.
    /// Each signature returned is counted for the `token_signatures` audit event.
    fn sign_raw(
        &self,
        mechanism: &Mechanism,
        data: &[u8],
        purpose: SignPurpose,
    ) -> Result<Vec<u8>, HsmError> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        self.hsm.recovering(|reopen| {
            if reopen || live.generation != self.hsm.generation() {
                self.reopen(&mut live)?;
            }
            let sig = live
                .session
                .sign(mechanism, live.handle, data)
                .map_err(HsmError::call)?;
            self.hsm.count_signature(&self.uri, purpose);
            Ok(sig)
        })
    }

    /// A new session on the current module generation, with the key found again.
    fn reopen(&self, live: &mut Live) -> Result<(), HsmError> {
        let (session, generation) = self.hsm.open_session()?;
        let (handle, public) = resolve(self.hsm, &session, &self.uri)?;
        if public != self.public {
            return Err(HsmError::KeyMismatch {
                uri: self.uri.to_string(),
                cert: "the key found before recovery".into(),
            });
        }
        let old = std::mem::replace(
            live,
            Live {
                session,
                handle,
                generation,
            },
        );
        if old.generation != generation {
            // Its context is gone; closing it now could close another worker's session
            // that got the same handle.
            std::mem::forget(old.session);
        }
        Ok(())
    }
}

/// A signature attempt's failure before it is handed out as a [`SignError`]: the retry loop
/// and the self-test need the token's own error, not a boxed one.
enum KeyError {
    Hsm(HsmError),
    Crypto(CryptoError),
}

impl From<HsmError> for KeyError {
    fn from(e: HsmError) -> Self {
        Self::Hsm(e)
    }
}

impl From<CryptoError> for KeyError {
    fn from(e: CryptoError) -> Self {
        Self::Crypto(e)
    }
}

impl From<KeyError> for SignError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Hsm(h) => h.into(),
            KeyError::Crypto(c) => c.into(),
        }
    }
}

impl Signer for HsmKey<'_> {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.alg
    }

    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        Ok(self.sign_recovering(msg, SignPurpose::Document)?)
    }

    fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, SignError> {
        // ECDSA is hashed on the host anyway (`CKM_ECDSA`): the token signs the same bytes.
        let SignatureAlgorithm::Ecdsa(h) = self.alg else {
            return Err(SignError::Crypto(CryptoError::UnsupportedSignature(
                format!("{:?}", self.alg),
                " over a streamed hash (only ECDSA keys sign one)",
            )));
        };
        if digest.len() != h.output_len() {
            return Err(SignError::Crypto(CryptoError::BadSignature));
        }
        let raw = self
            .sign_raw(&Mechanism::Ecdsa, digest, SignPurpose::Document)
            .map_err(KeyError::from)?;
        Ok(raw_ecdsa_to_der(&raw, raw.len() / 2).map_err(KeyError::from)?)
    }
}

/// How this token makes `alg` signatures with the key at `uri` (docs/hsm-compat.md).
fn rsa_via(hsm: &Hsm, uri: &Pkcs11Uri, alg: SignatureAlgorithm) -> Result<RsaVia, HsmError> {
    hsm.quirks()
        .rsa_via(alg, |m| hsm.signs_with(m))
        .map_err(|why| HsmError::NoMechanism {
            uri: uri.to_string(),
            why,
        })
}

/// Finds the single private key the URI names, checks it cannot leave the token, and reads
/// its public key (from the matching public-key object, or the private key's own attributes).
fn resolve(
    hsm: &Hsm,
    session: &Session,
    uri: &Pkcs11Uri,
) -> Result<(ObjectHandle, PublicKey), HsmError> {
    if !uri.names_object() {
        return Err(HsmError::Other(format!(
            "{uri} names no key; add object=LABEL or id=%xx to the URI"
        )));
    }
    let handles = find(session, ObjectClass::PRIVATE_KEY, uri)?;
    let handle = match handles.as_slice() {
        [h] => *h,
        [] => {
            return Err(HsmError::KeyNotFound {
                uri: uri.to_string(),
                token: hsm.token_label(),
                present: labels(session, ObjectClass::PRIVATE_KEY),
            })
        }
        many => {
            return Err(HsmError::AmbiguousKey {
                uri: uri.to_string(),
                count: many.len(),
            })
        }
    };
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::KeyType,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Sign,
                AttributeType::Id,
                AttributeType::AlwaysAuthenticate,
            ],
        )
        .map_err(HsmError::call)?;
    let mut key_type = None;
    let mut id = Vec::new();
    for a in &attrs {
        match a {
            Attribute::KeyType(k) => key_type = Some(*k),
            Attribute::Sensitive(false) => {
                return Err(HsmError::KeyNotProtected {
                    uri: uri.to_string(),
                    why: "not CKA_SENSITIVE".into(),
                })
            }
            Attribute::Extractable(true) => {
                return Err(HsmError::KeyNotProtected {
                    uri: uri.to_string(),
                    why: "CKA_EXTRACTABLE".into(),
                })
            }
            Attribute::Sign(false) => {
                return Err(HsmError::Other(format!(
                    "key {uri} is not allowed to sign (CKA_SIGN false)"
                )))
            }
            Attribute::Id(v) => id = v.clone(),
            Attribute::AlwaysAuthenticate(true) => {
                return Err(HsmError::AlwaysAuthenticate {
                    uri: uri.to_string(),
                })
            }
            _ => {}
        }
    }
    let public = public_key(session, handle, key_type, &id, uri)?;
    Ok((handle, public))
}

fn public_key(
    session: &Session,
    private: ObjectHandle,
    key_type: Option<KeyType>,
    id: &[u8],
    uri: &Pkcs11Uri,
) -> Result<PublicKey, HsmError> {
    // Prefer the public-key object with the same CKA_ID (and label when the URI gives one).
    let mut pub_uri = uri.clone();
    if !id.is_empty() {
        pub_uri.id = Some(id.to_vec());
    }
    let source = find(session, ObjectClass::PUBLIC_KEY, &pub_uri)?
        .first()
        .copied()
        .unwrap_or(private);
    let bad = |what: &str| HsmError::UnsupportedKey {
        uri: uri.to_string(),
        what: what.into(),
    };
    let spki = match key_type {
        Some(KeyType::EC) => {
            let a = session
                .get_attributes(source, &[AttributeType::EcParams, AttributeType::EcPoint])
                .map_err(HsmError::call)?;
            let (mut params, mut point) = (None, None);
            for x in a {
                match x {
                    Attribute::EcParams(p) => params = Some(p),
                    Attribute::EcPoint(p) => point = Some(p),
                    _ => {}
                }
            }
            let params = params.ok_or_else(|| bad("EC key without CKA_EC_PARAMS"))?;
            let point = point.ok_or_else(|| {
                bad("EC private key without a public-key object holding CKA_EC_POINT")
            })?;
            let curve = ObjectIdentifier::from_der(&params)
                .map_err(|_| bad("EC key with explicit or unreadable curve parameters"))?;
            // CKA_EC_POINT is a DER OCTET STRING per the spec; some tokens return it bare.
            let point = OctetString::from_der(&point)
                .map(|o| o.into_bytes())
                .unwrap_or(point);
            spki_der(oids::ID_EC_PUBLIC_KEY, Some(der::Any::from(&curve)), &point)?
        }
        Some(KeyType::RSA) => {
            let a = session
                .get_attributes(
                    source,
                    &[AttributeType::Modulus, AttributeType::PublicExponent],
                )
                .map_err(HsmError::call)?;
            let (mut n, mut e) = (None, None);
            for x in a {
                match x {
                    Attribute::Modulus(v) => n = Some(v),
                    Attribute::PublicExponent(v) => e = Some(v),
                    _ => {}
                }
            }
            let n = n.ok_or_else(|| bad("RSA key without CKA_MODULUS"))?;
            let e = e.ok_or_else(|| bad("RSA key without CKA_PUBLIC_EXPONENT"))?;
            let pk = rsa::pkcs1::RsaPublicKey {
                modulus: der::asn1::UintRef::new(&n).map_err(|_| bad("bad RSA modulus"))?,
                public_exponent: der::asn1::UintRef::new(&e)
                    .map_err(|_| bad("bad RSA exponent"))?,
            };
            let der = pk.to_der().map_err(|_| bad("bad RSA key"))?;
            spki_der(
                oids::RSA_ENCRYPTION,
                Some(der::Any::from(der::asn1::Null)),
                &der,
            )?
        }
        Some(other) => return Err(bad(&format!("{other}"))),
        None => return Err(bad("no CKA_KEY_TYPE")),
    };
    PublicKey::from_spki_der(&spki).map_err(|e| bad(&e.to_string()))
}

pub(crate) fn spki_der(
    oid: ObjectIdentifier,
    params: Option<der::Any>,
    key: &[u8],
) -> Result<Vec<u8>, HsmError> {
    let info = spki::SubjectPublicKeyInfoOwned {
        algorithm: spki::AlgorithmIdentifierOwned {
            oid,
            parameters: params,
        },
        subject_public_key: BitString::from_bytes(key)
            .map_err(|e| HsmError::Other(e.to_string()))?,
    };
    info.to_der().map_err(|e| HsmError::Other(e.to_string()))
}
