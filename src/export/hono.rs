//! Eclipse Hono Device Registry Management API (`/v1`), as Hono documents it
//! (https://eclipse.dev/hono/docs/api/management/; its OpenAPI document is
//! `site/documentation/content/api/management/device-registry-v1.yaml` in eclipse-hono/hono).
//!
//! Files:
//! - `hono-tenant.json`: a `Tenant` body for `POST /v1/tenants/{tenantId}` (or `PUT` to
//!   update) whose `trusted-ca` holds the issuing CA (subject DN, public key, algorithm,
//!   validity). Hono's protocol adapters find a device's tenant by the issuer DN of its client
//!   certificate, so the trust anchor is the CA that signed the devices.
//! - `hono-devices-NNNN.jsonl`: one line per device with the `Device` body for
//!   `POST /v1/devices/{tenantId}/{deviceId}` and the `CredentialsSet` body for
//!   `PUT /v1/credentials/{tenantId}/{deviceId}` (`type: x509-cert`, `auth-id` = the subject
//!   DN exactly as Hono computes it with `X500Principal.getName(RFC2253)`, one secret with the
//!   certificate's validity).
//!
//! Settings: `hono.tenant_id` (or the manifest's tenant), `hono.trusted_ca_id`,
//! `hono.auto_provisioning` (bool), `hono.auth_id_template`,
//! `hono.auto_provisioning_device_id_template`. Per device: `hono.device_id` (defaults to the
//! ledger's) and `hono.ext` (a mapping, stored as the device's `ext`).

use super::support::{b64, device_error, issuing_ca_der, json_lines, pretty, CertFacts, Settings};
use super::{shard, shard_name, ExportError, ExportFile, ExportInput, ExportOptions, Format};
use der::{Decode, Encode, Tagged};
use serde_json::{json, Map, Value};
use x509_cert::name::Name;

const FORMAT: Format = Format::Hono;

/// Attribute types `X500Principal.getName(RFC2253)` prints by keyword; every other type is
/// printed as its dotted OID with a `#`-hex value (sun.security.x509.AVAKeyword, the entries
/// marked RFC 2253 compliant).
const KEYWORDS: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

/// The distinguished name as Java's `X500Principal.getName(X500Principal.RFC2253)` writes it:
/// RDNs from last to first joined by `,`, multi-valued RDNs joined by `+` in encoded order,
/// keyword types by name and others as `OID=#hex(DER)`, and in string values a backslash
/// before each of `,=+<>#;"\` and before leading or trailing spaces.
pub fn rfc2253(name: &Name) -> Result<String, String> {
    let mut rdns = Vec::with_capacity(name.0.len());
    for rdn in name.0.iter().rev() {
        let mut avas = Vec::new();
        for atv in rdn.0.iter() {
            let oid = atv.oid.to_string();
            let keyword = KEYWORDS.iter().find(|(o, _)| *o == oid).map(|(_, k)| *k);
            let text = match keyword {
                Some(_) => string_value(&atv.value),
                None => None,
            };
            let value = match (keyword, text) {
                (Some(k), Some(s)) => format!("{k}={}", escape(&s)),
                (k, _) => {
                    let der = atv.value.to_der().map_err(|e| e.to_string())?;
                    format!("{}=#{}", k.unwrap_or(&oid), hex::encode(der))
                }
            };
            avas.push(value);
        }
        rdns.push(avas.join("+"));
    }
    Ok(rdns.join(","))
}

/// The text of a string-typed value, decoded as Java does (UTF-8, ISO-8859-1 for T61String,
/// UTF-16BE for BMPString); `None` for a type Java prints as hex.
fn string_value(v: &der::Any) -> Option<String> {
    let bytes = v.value();
    match v.tag() {
        der::Tag::Utf8String | der::Tag::PrintableString | der::Tag::Ia5String => {
            String::from_utf8(bytes.to_vec()).ok()
        }
        der::Tag::TeletexString => Some(bytes.iter().map(|&b| b as char).collect()),
        der::Tag::BmpString => {
            if bytes.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ',' | '=' | '+' | '<' | '>' | '#' | ';' | '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    // Leading and trailing spaces (and CR) are escaped one by one.
    let chars: Vec<char> = out.chars().collect();
    let lead = chars
        .iter()
        .take_while(|c| **c == ' ' || **c == '\r')
        .count();
    if lead == chars.len() {
        return chars.iter().flat_map(|c| ['\\', *c]).collect();
    }
    let trail = chars
        .iter()
        .rev()
        .take_while(|c| **c == ' ' || **c == '\r')
        .count();
    let mut res = String::with_capacity(out.len() + lead + trail);
    for (i, c) in chars.iter().enumerate() {
        if i < lead || i >= chars.len() - trail {
            res.push('\\');
        }
        res.push(*c);
    }
    res
}

/// The tenant id: `hono.tenant_id`, else the manifest's tenant.
fn tenant_id(input: &ExportInput, opts: &ExportOptions) -> Result<String, ExportError> {
    let s = Settings::new(FORMAT, input, opts);
    match s.str("hono.tenant_id")?.or_else(|| input.tenant.clone()) {
        Some(t) if !t.is_empty() && !t.contains('/') => Ok(t),
        Some(t) => Err(s.bad(
            "hono.tenant_id",
            &t,
            "a Hono tenant id is one non-empty path segment (no '/')".into(),
        )),
        None => Err(s.missing(
            "hono.tenant_id",
            "the Hono tenant the devices and the trusted CA belong to",
        )),
    }
}

/// The tenant body with the issuing CA as its trusted CA.
fn tenant(input: &ExportInput, opts: &ExportOptions) -> Result<Value, ExportError> {
    let s = Settings::new(FORMAT, input, opts);
    let ca_err = |msg: String| ExportError::Input(format!("hono: issuing CA: {msg}"));
    let der = issuing_ca_der(FORMAT, input)?;
    let ca = x509_cert::Certificate::from_der(&der).map_err(|e| ca_err(e.to_string()))?;
    let tbs = &ca.tbs_certificate;
    let spki = tbs
        .subject_public_key_info
        .to_der()
        .map_err(|e| ca_err(e.to_string()))?;
    let algorithm = match tbs.subject_public_key_info.algorithm.oid {
        const_oid::db::rfc5912::ID_EC_PUBLIC_KEY => "EC",
        const_oid::db::rfc5912::RSA_ENCRYPTION => "RSA",
        other => {
            return Err(ca_err(format!(
                "key algorithm {other} is not one Hono trusts (RSA or EC)"
            )))
        }
    };
    let id = match s.str("hono.trusted_ca_id")? {
        Some(id) => id,
        None => format!(
            "certfab-{}",
            &hex::encode(crate::crypto::sha256(&der))[..16]
        ),
    };
    let mut ca_obj = Map::new();
    ca_obj.insert("id".into(), json!(id));
    ca_obj.insert(
        "subject-dn".into(),
        json!(rfc2253(&tbs.subject).map_err(ca_err)?),
    );
    ca_obj.insert(
        "subject-dn-bytes".into(),
        json!(b64(&tbs
            .subject
            .to_der()
            .map_err(|e| ca_err(e.to_string()))?)),
    );
    ca_obj.insert("public-key".into(), json!(b64(&spki)));
    ca_obj.insert("algorithm".into(), json!(algorithm));
    ca_obj.insert(
        "not-before".into(),
        json!(super::support::x509_time_rfc3339(&tbs.validity.not_before)),
    );
    ca_obj.insert(
        "not-after".into(),
        json!(super::support::x509_time_rfc3339(&tbs.validity.not_after)),
    );
    ca_obj.insert(
        "auto-provisioning-enabled".into(),
        json!(s.bool("hono.auto_provisioning")?.unwrap_or(false)),
    );
    for (key, field) in [
        ("hono.auth_id_template", "auth-id-template"),
        (
            "hono.auto_provisioning_device_id_template",
            "auto-provisioning-device-id-template",
        ),
    ] {
        if let Some(t) = s.str(key)? {
            let known = [
                "{{subject-cn}}",
                "{{subject-dn}}",
                "{{subject-ou}}",
                "{{subject-o}}",
            ];
            if !known.iter().any(|p| t.contains(p)) {
                return Err(s.bad(
                    key,
                    &t,
                    "a Hono template must contain {{subject-cn}}, {{subject-dn}}, {{subject-ou}} or {{subject-o}}; in a profile write \"{{{{subject-cn}}}}\" (certfab templates read {{ as a literal brace), or pass --set".into(),
                ));
            }
            ca_obj.insert(field.into(), json!(t));
        }
    }
    Ok(json!({ "enabled": true, "trusted-ca": [Value::Object(ca_obj)] }))
}

/// The tenant file and the device registrations with their X.509 credentials.
pub fn render(input: &ExportInput, opts: &ExportOptions) -> Result<Vec<ExportFile>, ExportError> {
    super::require_devices(FORMAT, input)?;
    let tenant_id = tenant_id(input, opts)?;
    let mut files = vec![ExportFile {
        name: "hono-tenant.json".into(),
        bytes: pretty(&tenant(input, opts)?),
        devices: 0,
        consumer: format!(
            "Hono Device Registry Management API: POST /v1/tenants/{tenant_id} (createTenantWithId), or PUT to update"
        ),
    }];
    let mut lines = Vec::with_capacity(input.devices.len());
    let mut ids = super::support::Unique::default();
    let mut auth_ids = super::support::Unique::default();
    for d in &input.devices {
        let bad = |msg: String| device_error(FORMAT.name(), d, msg);
        let facts = CertFacts::of(FORMAT, d)?;
        let device_id = super::support::device_str(FORMAT, input, opts, d, "hono.device_id")?
            .unwrap_or(d.device_id.clone());
        if device_id.is_empty() || device_id.contains('/') {
            return Err(bad(format!(
                "device id '{device_id}' cannot be used in a Hono API path"
            )));
        }
        let tbs = &facts.cert.tbs_certificate;
        let auth_id = rfc2253(&tbs.subject).map_err(&bad)?;
        if auth_id.is_empty() {
            return Err(bad(
                "the certificate subject is empty; Hono authenticates X.509 devices by subject DN"
                    .into(),
            ));
        }
        ids.check(FORMAT, d, "device id", &device_id)?;
        auth_ids.check(FORMAT, d, "auth-id (subject DN)", &auth_id)?;
        let mut device = Map::new();
        device.insert("enabled".into(), json!(true));
        if let Some(ext) = super::support::device_object(FORMAT, input, opts, d, "hono.ext")? {
            device.insert("ext".into(), Value::Object(ext));
        }
        let credentials = json!([{
            "type": "x509-cert",
            "auth-id": auth_id,
            "enabled": true,
            "secrets": [{
                "not-before": super::support::x509_time_rfc3339(&tbs.validity.not_before),
                "not-after": super::support::x509_time_rfc3339(&tbs.validity.not_after),
            }],
        }]);
        lines.push(json!({
            "tenant-id": tenant_id,
            "device-id": device_id,
            "device": Value::Object(device),
            "credentials": credentials,
        }));
    }
    for (i, chunk) in shard(&lines, opts.max_rows).into_iter().enumerate() {
        files.push(ExportFile {
            name: shard_name("hono-devices", i, "jsonl"),
            bytes: json_lines(chunk),
            devices: chunk.len(),
            consumer: "Hono Device Registry Management API, per line: POST /v1/devices/{tenant-id}/{device-id} with .device, then PUT /v1/credentials/{tenant-id}/{device-id} with .credentials".into(),
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn rfc2253_reverses_and_escapes() {
        // x509-cert parses RFC 4514 text most-specific first, as printed.
        let n = Name::from_str("CN=dev-1,O=Acme,C=DE").unwrap();
        assert_eq!(rfc2253(&n).unwrap(), "CN=dev-1,O=Acme,C=DE");
        assert_eq!(escape(" a=b "), "\\ a\\=b\\ ");
        assert_eq!(escape("a;b<c>\"d\\"), "a\\;b\\<c\\>\\\"d\\\\");
    }
}
