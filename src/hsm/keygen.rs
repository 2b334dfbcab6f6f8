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
/// never extractable, sign only (no decrypt, unwrap or derive). CKA_ID is then set on both
/// halves to the RFC 5280 key identifier, so certificates pair with keys by id.
/// Returns the new key's CKA_ID.
pub fn generate_ca_key(
    hsm: &Hsm,
    uri: &Pkcs11Uri,
    alg: CaKeyAlgorithm,
) -> Result<Vec<u8>, HsmError> {
    let label = uri
        .object
        .clone()
        .ok_or_else(|| HsmError::Other(format!("{uri} has no object=LABEL for the new key")))?;
    let (session, _) = hsm.open_session()?;
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
    let common = |private: bool| {
        vec![
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(tmp_id.to_vec()),
            Attribute::Private(private),
        ]
    };
    let mut public_t = common(false);
    public_t.extend([
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
    ]);
    let mut private_t = common(true);
    private_t.extend([
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ]);
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
    // Read the key back through the normal path (checks the template took effect).
    let tmp_uri = Pkcs11Uri {
        token: None,
        object: Some(label.clone()),
        id: Some(tmp_id.to_vec()),
        ..Default::default()
    };
    let key = hsm.key(&tmp_uri, None)?;
    let ski = crate::crypto::key_identifier(
        &crate::signer::Signer::public_key(&key).subject_public_key(),
    );
    drop(key);
    let set = [Attribute::Id(ski.clone())];
    if session.update_attributes(pub_h, &set).is_ok()
        && session.update_attributes(priv_h, &set).is_ok()
    {
        Ok(ski)
    } else {
        Ok(tmp_id.to_vec())
    }
}

/// Stores a CA certificate on the token beside its key (same label and CKA_ID), after
/// checking that the key is the certificate's.
pub fn import_certificate(
    hsm: &Hsm,
    key_uri: &Pkcs11Uri,
    cert: &crate::ca::CaCert,
) -> Result<(), HsmError> {
    let key = hsm.key(key_uri, Some((&cert.public_key, &cert.source)))?;
    drop(key);
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
            Attribute::Subject(cert.subject_der.clone()),
            Attribute::Value(cert.der.clone()),
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
