//! `certfab hsm info`: what the module and its tokens hold, public attributes only.

use super::{Hsm, HsmError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use serde::Serialize;

/// Module, token, mechanisms and objects.
#[derive(Debug, Serialize)]
pub struct HsmInfo {
    /// Library description and version.
    pub library: String,
    /// Every slot with a token.
    pub tokens: Vec<TokenSummary>,
}

/// One token.
#[derive(Debug, Serialize)]
pub struct TokenSummary {
    /// Slot id.
    pub slot: u64,
    /// Token label.
    pub label: String,
    pub manufacturer: String,
    pub model: String,
    /// Serial number.
    pub serial: String,
    /// Whether this is the token the site config selects.
    pub selected: bool,
    /// PIN state flags (never the PIN).
    pub pin_state: Vec<&'static str>,
    /// Mechanism names.
    pub mechanisms: Vec<String>,
    /// Objects visible in this session (private objects only after login).
    pub objects: Vec<ObjectSummary>,
}

/// One object's public attributes.
#[derive(Debug, Serialize)]
pub struct ObjectSummary {
    /// private-key, public-key, certificate, …
    pub class: String,
    /// CKA_LABEL
    pub label: String,
    /// CKA_ID, hex
    pub id: String,
    /// Key type and size or curve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// CKA_SENSITIVE
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitive: Option<bool>,
    /// CKA_EXTRACTABLE
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extractable: Option<bool>,
    /// CKA_SIGN
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign: Option<bool>,
}

/// Lists what the module exposes.
pub fn info(hsm: &Hsm) -> Result<HsmInfo, HsmError> {
    let _in_call = hsm.in_call();
    let (ctx, selected, _) = hsm.context();
    let lib = ctx.get_library_info().map_err(HsmError::call)?;
    let library = format!(
        "{} {} ({})",
        super::quirks::token_text(lib.library_description()),
        lib.library_version(),
        super::quirks::token_text(lib.manufacturer_id())
    );
    let mut tokens = Vec::new();
    for slot in ctx.get_slots_with_token().map_err(HsmError::call)? {
        let t = ctx.get_token_info(slot).map_err(HsmError::call)?;
        if !t.token_initialized() {
            continue;
        }
        let mut pin_state = Vec::new();
        for (on, name) in [
            (t.user_pin_initialized(), "user-pin-initialized"),
            (t.user_pin_count_low(), "user-pin-count-low"),
            (t.user_pin_final_try(), "user-pin-final-try"),
            (t.user_pin_locked(), "user-pin-locked"),
            (t.user_pin_to_be_changed(), "user-pin-to-be-changed"),
            (t.login_required(), "login-required"),
        ] {
            if on {
                pin_state.push(name);
            }
        }
        let mut mechanisms: Vec<String> = ctx
            .get_mechanism_list(slot)
            .map_err(HsmError::call)?
            .iter()
            .map(|m| m.to_string())
            .collect();
        mechanisms.sort();
        let is_selected = slot == selected;
        let objects = if is_selected {
            let (session, _) = hsm.open_session()?;
            objects(&session)?
        } else {
            Vec::new()
        };
        tokens.push(TokenSummary {
            slot: slot.id(),
            label: super::quirks::token_text(t.label()).into(),
            manufacturer: super::quirks::token_text(t.manufacturer_id()).into(),
            model: super::quirks::token_text(t.model()).into(),
            serial: super::quirks::token_text(t.serial_number()).into(),
            selected: is_selected,
            pin_state,
            mechanisms,
            objects,
        });
    }
    Ok(HsmInfo { library, tokens })
}

fn objects(session: &cryptoki::session::Session) -> Result<Vec<ObjectSummary>, HsmError> {
    let mut out = Vec::new();
    for (class, name) in [
        (ObjectClass::PRIVATE_KEY, "private-key"),
        (ObjectClass::PUBLIC_KEY, "public-key"),
        (ObjectClass::CERTIFICATE, "certificate"),
        (ObjectClass::SECRET_KEY, "secret-key"),
    ] {
        for h in session
            .find_objects(&[Attribute::Class(class)])
            .map_err(HsmError::call)?
        {
            // Ask only for attributes that are never secret; a token answers "sensitive"
            // for the rest and cryptoki skips them.
            let mut types = vec![
                AttributeType::Label,
                AttributeType::Id,
                AttributeType::KeyType,
            ];
            if class != ObjectClass::CERTIFICATE {
                types.extend([
                    AttributeType::ModulusBits,
                    AttributeType::Modulus,
                    AttributeType::EcParams,
                ]);
            }
            if class == ObjectClass::PRIVATE_KEY || class == ObjectClass::SECRET_KEY {
                types.extend([
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Sign,
                ]);
            }
            let attrs = session.get_attributes(h, &types).map_err(HsmError::call)?;
            let mut o = ObjectSummary {
                class: name.into(),
                label: String::new(),
                id: String::new(),
                key: None,
                sensitive: None,
                extractable: None,
                sign: None,
            };
            let mut kt = None;
            let mut size = None;
            for a in attrs {
                match a {
                    Attribute::Label(l) => o.label = String::from_utf8_lossy(&l).into(),
                    Attribute::Id(id) => o.id = hex::encode(id),
                    Attribute::KeyType(k) => kt = Some(k.to_string()),
                    Attribute::ModulusBits(b) => size = Some(format!("{} bits", u64::from(b))),
                    Attribute::Modulus(m) if size.is_none() => {
                        size = Some(format!("{} bits", m.len() * 8))
                    }
                    Attribute::EcParams(p) => size = Some(curve_name(&p)),
                    Attribute::Sensitive(b) => o.sensitive = Some(b),
                    Attribute::Extractable(b) => o.extractable = Some(b),
                    Attribute::Sign(b) => o.sign = Some(b),
                    _ => {}
                }
            }
            if let Some(kt) = kt {
                o.key = Some(match size {
                    Some(s) => format!("{kt} {s}"),
                    None => kt,
                });
            }
            out.push(o);
        }
    }
    Ok(out)
}

fn curve_name(params: &[u8]) -> String {
    use der::Decode;
    match der::asn1::ObjectIdentifier::from_der(params) {
        Ok(const_oid::db::rfc5912::SECP_256_R_1) => "P-256".into(),
        Ok(const_oid::db::rfc5912::SECP_384_R_1) => "P-384".into(),
        Ok(const_oid::db::rfc5912::SECP_521_R_1) => "P-521".into(),
        Ok(oid) => oid.to_string(),
        Err(_) => "explicit curve".into(),
    }
}
