//! CA key generation and certificate import on the token: the key ceremony's token half.

use super::{find, Hsm, HsmError, Pkcs11Uri};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, CertificateType, ObjectClass};
use der::Encode;

/// Key algorithms a CA key can be generated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum CaKeyAlgorithm {
    /// ECDSA on NIST P-256
    P256,
    /// ECDSA on NIST P-384
    P384,
    /// RSA 2048
    Rsa2048,
    /// RSA 3072
    Rsa3072,
    /// RSA 4096
    Rsa4096,
}

/// Generates a CA key pair in the token under `uri`'s label.
///
/// The private key is created with an explicit template: token object, private, sensitive,
/// never extractable, sign only (no decrypt, unwrap or derive). The template says nothing
/// about the public half's usage (CKA_VERIFY, CKA_ENCRYPT): using a public key needs no
/// secret, and tpm2-pkcs11 refuses any value there that differs from what it derives from the
/// TPM object's attributes ("attr mismatch: 0x10a", docs/hsm-compat.md).
///
/// What the token made is read back and checked (sensitive, never extractable, can sign,
/// cannot decrypt, unwrap or derive), then the key signs a challenge through the normal
/// lookup path. If any of that fails the key pair is destroyed again, so a refused keygen
/// leaves nothing behind. CKA_ID is then set on both halves to the RFC 5280 key identifier,
/// so certificates pair with keys by id. Returns the new key's CKA_ID.
pub fn generate_ca_key(
    hsm: &Hsm,
    uri: &Pkcs11Uri,
    alg: CaKeyAlgorithm,
) -> Result<Vec<u8>, HsmError> {
    let label = uri
        .object
        .clone()
        .ok_or_else(|| HsmError::Other(format!("{uri} has no object=LABEL for the new key")))?;
    let in_call = hsm.in_call();
    let (session, generation) = hsm.open_session()?;
    let by_label = Pkcs11Uri {
        object: Some(label.clone()),
        ..Default::default()
    };
    if !find(&session, ObjectClass::PRIVATE_KEY, &by_label)?.is_empty()
        || !find(&session, ObjectClass::PUBLIC_KEY, &by_label)?.is_empty()
    {
        return Err(HsmError::Exists(label));
    }
    let mut tmp_id = [0u8; 16];
    getrandom::getrandom(&mut tmp_id).map_err(|e| HsmError::Other(e.to_string()))?;
    let (mut public_t, private_t) = key_templates(&label, &tmp_id);
    let mech = match alg {
        CaKeyAlgorithm::P256 | CaKeyAlgorithm::P384 => {
            let curve = if alg == CaKeyAlgorithm::P256 {
                const_oid::db::rfc5912::SECP_256_R_1
            } else {
                const_oid::db::rfc5912::SECP_384_R_1
            };
            let params = curve.to_der().map_err(|e| HsmError::Other(e.to_string()))?;
            public_t.push(Attribute::EcParams(params));
            Mechanism::EccKeyPairGen
        }
        CaKeyAlgorithm::Rsa2048 | CaKeyAlgorithm::Rsa3072 | CaKeyAlgorithm::Rsa4096 => {
            let bits: u64 = match alg {
                CaKeyAlgorithm::Rsa2048 => 2048,
                CaKeyAlgorithm::Rsa3072 => 3072,
                _ => 4096,
            };
            public_t.push(Attribute::ModulusBits(bits.into()));
            public_t.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            Mechanism::RsaPkcsKeyPairGen
        }
    };
    let (pub_h, priv_h) = session
        .generate_key_pair(&mech, &public_t, &private_t)
        .map_err(HsmError::call)?;
    let read_back = check_new_key(&session, priv_h);
    // The self-test below goes through the recovery loop, which may re-initialise the module
    // (a token lost under it): that waits for every call to end, this one's included.
    drop(in_call);
    let checked = read_back.and_then(|()| {
        // Read the key back through the normal path: finds it, checks it again, and proves
        // the private half signs for the public half with a challenge.
        let tmp_uri = Pkcs11Uri {
            token: None,
            object: Some(label.clone()),
            id: Some(tmp_id.to_vec()),
            ..Default::default()
        };
        let key = hsm.key(&tmp_uri, None)?;
        Ok(crate::crypto::key_identifier(
            &crate::crypto::Signer::public_key(&key).subject_public_key(),
        ))
    });
    let ski = match checked {
        Ok(ski) => ski,
        Err(e) => {
            if let Err(left) = discard(hsm, session, generation, (pub_h, priv_h), &tmp_id) {
                return Err(HsmError::Other(format!(
                    "{e}; the new key pair '{label}' (CKA_ID {}) could not be deleted again ({left}): delete it by hand (pkcs11-tool --delete-object --type privkey --id {0})",
                    hex::encode(tmp_id)
                )));
            }
            return Err(HsmError::KeygenUnsafe {
                token: hsm.token_label(),
                label,
                what: match e {
                    HsmError::KeygenUnsafe { what, .. } => what,
                    other => format!("that failed the read-back and signing self-test ({other})"),
                },
            });
        }
    };
    let _in_call = hsm.in_call();
    let set = [Attribute::Id(ski.clone())];
    if session.update_attributes(pub_h, &set).is_ok()
        && session.update_attributes(priv_h, &set).is_ok()
    {
        Ok(ski)
    } else {
        Ok(tmp_id.to_vec())
    }
}

/// Destroys a key pair that failed its checks. tpm2-pkcs11 refuses C_DestroyObject
/// (CKR_FUNCTION_FAILED) on a key whose C_Sign just failed, until the module is finalized:
/// then the module is re-initialised and the pair found again by its temporary CKA_ID.
fn discard(
    hsm: &Hsm,
    session: cryptoki::session::Session,
    generation: u64,
    (pub_h, priv_h): (
        cryptoki::object::ObjectHandle,
        cryptoki::object::ObjectHandle,
    ),
    tmp_id: &[u8],
) -> Result<(), HsmError> {
    if session.destroy_object(priv_h).is_ok() && session.destroy_object(pub_h).is_ok() {
        return Ok(());
    }
    drop(session);
    hsm.recover(generation)?;
    let (session, _) = hsm.open_session()?;
    let by_id = Pkcs11Uri {
        id: Some(tmp_id.to_vec()),
        ..Default::default()
    };
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        for h in find(&session, class, &by_id)? {
            session.destroy_object(h).map_err(HsmError::call)?;
        }
    }
    Ok(())
}

/// The public and private key templates of a CA key (without the algorithm's parameters).
///
/// One template for every token: tpm2-pkcs11 maps CKA_VERIFY onto the TPM's decrypt bit and
/// CKA_ENCRYPT onto its sign bit and fails C_GenerateKeyPair when the public template states
/// either, so the public half states no usage at all.
fn key_templates(label: &str, id: &[u8]) -> (Vec<Attribute>, Vec<Attribute>) {
    let common = |private: bool| {
        vec![
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
            Attribute::Private(private),
        ]
    };
    let public_t = common(false);
    let mut private_t = common(true);
    private_t.extend([
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ]);
    (public_t, private_t)
}

/// Reads the new private key's protection back from the token.
///
/// Required: CKA_SENSITIVE, CKA_ALWAYS_SENSITIVE and CKA_SIGN true, CKA_EXTRACTABLE false
/// and CKA_NEVER_EXTRACTABLE true. CKA_DECRYPT, CKA_UNWRAP and CKA_DERIVE must be false
/// when the token reports them; a token that does not know an attribute cannot do that
/// operation. CKA_ENCRYPT on a private key is not checked: PKCS#11 has no encryption with a
/// private key, and tpm2-pkcs11 reports it TRUE for every signing key because the TPM has a
/// single sign/encrypt bit (docs/hsm-compat.md).
fn check_new_key(
    session: &cryptoki::session::Session,
    handle: cryptoki::object::ObjectHandle,
) -> Result<(), HsmError> {
    use cryptoki::object::AttributeType as T;
    let attrs = session
        .get_attributes(
            handle,
            &[
                T::Sensitive,
                T::AlwaysSensitive,
                T::Extractable,
                T::NeverExtractable,
                T::Sign,
                T::Decrypt,
                T::Unwrap,
                T::Derive,
            ],
        )
        .map_err(HsmError::call)?;
    let mut seen = std::collections::BTreeMap::new();
    for a in &attrs {
        let (name, value) = match a {
            Attribute::Sensitive(v) => ("CKA_SENSITIVE", *v),
            Attribute::AlwaysSensitive(v) => ("CKA_ALWAYS_SENSITIVE", *v),
            Attribute::Extractable(v) => ("CKA_EXTRACTABLE", *v),
            Attribute::NeverExtractable(v) => ("CKA_NEVER_EXTRACTABLE", *v),
            Attribute::Sign(v) => ("CKA_SIGN", *v),
            Attribute::Decrypt(v) => ("CKA_DECRYPT", *v),
            Attribute::Unwrap(v) => ("CKA_UNWRAP", *v),
            Attribute::Derive(v) => ("CKA_DERIVE", *v),
            _ => continue,
        };
        seen.insert(name, value);
    }
    let mut wrong = Vec::new();
    for (name, want) in [
        ("CKA_SENSITIVE", true),
        ("CKA_ALWAYS_SENSITIVE", true),
        ("CKA_EXTRACTABLE", false),
        ("CKA_NEVER_EXTRACTABLE", true),
        ("CKA_SIGN", true),
    ] {
        match seen.get(name) {
            Some(v) if *v == want => {}
            Some(v) => wrong.push(format!("{name}={v}")),
            None => wrong.push(format!("{name} unreadable")),
        }
    }
    for name in ["CKA_DECRYPT", "CKA_UNWRAP", "CKA_DERIVE"] {
        if seen.get(name) == Some(&true) {
            wrong.push(format!("{name}=true"));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(HsmError::KeygenUnsafe {
            token: String::new(),
            label: String::new(),
            what: format!("with {}", wrong.join(", ")),
        })
    }
}

/// A certificate as the token stores it: PKCS#11 needs its DER and subject, and certfab
/// checks its public key against the key before storing it. The hsm layer knows no X.509
/// beyond these bytes (the caller parses the certificate).
pub struct CertObject<'a> {
    /// Certificate DER (`CKA_VALUE`).
    pub der: &'a [u8],
    /// Subject name DER (`CKA_SUBJECT`).
    pub subject_der: &'a [u8],
    /// Its public key, which must be the token key's.
    pub public_key: &'a crate::crypto::PublicKey,
    /// Where it came from, for the mismatch message.
    pub source: &'a str,
}

/// Stores a CA certificate on the token beside its key (same label and CKA_ID), after
/// checking that the key is the certificate's.
pub fn import_certificate(
    hsm: &Hsm,
    key_uri: &Pkcs11Uri,
    cert: &CertObject<'_>,
) -> Result<(), HsmError> {
    let key = hsm.key(key_uri, Some((cert.public_key, cert.source)))?;
    drop(key);
    let _in_call = hsm.in_call();
    let (session, _) = hsm.open_session()?;
    let keys = find(&session, ObjectClass::PRIVATE_KEY, key_uri)?;
    let id = keys
        .first()
        .and_then(|h| {
            session
                .get_attributes(*h, &[cryptoki::object::AttributeType::Id])
                .ok()
        })
        .and_then(|a| match a.into_iter().next() {
            Some(Attribute::Id(id)) => Some(id),
            _ => None,
        })
        .unwrap_or_default();
    let label = key_uri.object.clone().unwrap_or_default();
    let existing = find(
        &session,
        ObjectClass::CERTIFICATE,
        &Pkcs11Uri {
            object: Some(label.clone()),
            ..Default::default()
        },
    )?;
    for h in existing {
        session.destroy_object(h).map_err(HsmError::call)?;
    }
    session
        .create_object(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Label(label.into_bytes()),
            Attribute::Id(id),
            Attribute::Subject(cert.subject_der.to_vec()),
            Attribute::Value(cert.der.to_vec()),
        ])
        .map_err(HsmError::call)?;
    Ok(())
}

/// Initialises a fresh token in the first free slot and sets its user PIN (development and
/// test lines: production tokens are initialised by the security officer's own tooling).
/// PINs come from secret sources, never from argv.
pub fn init_token(
    module: &std::path::Path,
    label: &str,
    so_pin: &secrecy::SecretString,
    user_pin: &secrecy::SecretString,
) -> Result<u64, HsmError> {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    let ctx = Pkcs11::new(module).map_err(|e| HsmError::Module {
        path: module.to_path_buf(),
        detail: e.to_string(),
    })?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(HsmError::call)?;
    for slot in ctx.get_slots_with_token().map_err(HsmError::call)? {
        let info = ctx.get_token_info(slot).map_err(HsmError::call)?;
        if info.token_initialized() {
            if info.label().trim() == label {
                return Err(HsmError::Exists(label.into()));
            }
            continue;
        }
        ctx.init_token(slot, so_pin, label)
            .map_err(HsmError::call)?;
        // SoftHSM moves the new token to a new slot id: find it by label.
        let slot = ctx
            .get_slots_with_token()
            .map_err(HsmError::call)?
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s)
                    .is_ok_and(|i| i.label().trim() == label)
            })
            .unwrap_or(slot);
        let session = ctx.open_rw_session(slot).map_err(HsmError::call)?;
        session
            .login(cryptoki::session::UserType::So, Some(so_pin))
            .map_err(HsmError::call)?;
        session.init_pin(user_pin).map_err(HsmError::call)?;
        session.logout().map_err(HsmError::call)?;
        return Ok(slot.id());
    }
    Err(HsmError::Other("no free slot for a new token".into()))
}
