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
//!   `PUT /v1/credentials/{tenantId}/{deviceId}` (`type: x509-cert`, one secret with the
//!   certificate's validity). The `auth-id` is what Hono's protocol adapters look the device
//!   up by: the subject DN as `X500Principal.getName(RFC2253)` prints it, or, when the trusted
//!   CA has an `auth-id-template`, that template applied to the DN exactly as Hono's
//!   `IdentityTemplate.apply` does ([`apply_template`]). The registry does not apply the
//!   template itself (`X509CertificateCredential.fromAuthId` only re-normalises a DN), so the
//!   export must.
//!
//! Settings: `hono.tenant_id` (or the manifest's tenant), `hono.trusted_ca_id`,
//! `hono.auto_provisioning` (bool), `hono.auth_id_template`,
//! `hono.auto_provisioning_device_id_template`, `hono.tenant_id_pattern` and
//! `hono.device_id_pattern` (the registry's `tenantIdPattern`/`deviceIdPattern`, default
//! Hono's). Per device: `hono.device_id` (defaults to the ledger's) and `hono.ext` (a
//! mapping, stored as the device's `ext`).

use super::sink::Rows;
use super::support::{b64, device_error, issuing_ca_der, json_lines, pretty, CertFacts, Settings};
use super::{
    shard_name, ExportDevice, ExportError, ExportFile, ExportInput, ExportOptions, Format, Out,
};
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

/// Hono's default tenant id pattern (`RegistryManagementConstants.DEFAULT_REGEX_TENANT_ID`);
/// the registry answers 400 to a tenant id it does not match (`tenantIdPattern`).
pub const DEFAULT_TENANT_ID_PATTERN: &str = r"^[a-zA-Z0-9-_\.]+$";

/// Hono's default device id pattern (`RegistryManagementConstants.DEFAULT_REGEX_DEVICE_ID`,
/// the registry's `deviceIdPattern`).
pub const DEFAULT_DEVICE_ID_PATTERN: &str = r"^[a-zA-Z0-9-_\.:=]+$";

/// The placeholders Hono's `IdentityTemplate` knows (`RegistryManagementConstants.PLACEHOLDER_*`).
pub const PLACEHOLDERS: &[&str] = &[
    "{{subject-dn}}",
    "{{subject-cn}}",
    "{{subject-ou}}",
    "{{subject-o}}",
];

/// A registry id pattern, matched as Java's `Matcher.matches()` does (the whole id).
pub struct IdPattern {
    text: String,
    re: regex::Regex,
}

impl IdPattern {
    /// Compiles `pattern` (Hono's Java syntax; the common subset of character classes,
    /// anchors and quantifiers reads the same in Rust's `regex`).
    pub fn new(pattern: &str) -> Result<Self, String> {
        let re = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| e.to_string())?;
        Ok(Self {
            text: pattern.to_string(),
            re,
        })
    }

    /// Whether Hono's registry accepts `id`.
    pub fn matches(&self, id: &str) -> bool {
        self.re.is_match(id)
    }
}

/// The pattern setting `key`, else `default`.
fn id_pattern(s: &Settings<'_>, key: &str, default: &str) -> Result<IdPattern, ExportError> {
    let p = s.str(key)?.unwrap_or_else(|| default.to_string());
    IdPattern::new(&p).map_err(|e| {
        s.bad(
            key,
            &p,
            format!("not a regular expression certfab can evaluate ({e}); copy the registry's tenantIdPattern/deviceIdPattern"),
        )
    })
}

/// Checks a template as Hono's `IdentityTemplate.checkValidity` does before the registry
/// stores it: every `{{…}}` (the shortest, not across a line break) is one of
/// [`PLACEHOLDERS`], and there is at least one.
pub fn check_template(template: &str) -> Result<(), String> {
    // Java's `\{\{(.*?)\}\}`: `.` stops at \n, \r, U+0085, U+2028 and U+2029.
    let re = regex::Regex::new(r"\{\{([^\n\r\x{85}\x{2028}\x{2029}]*?)\}\}")
        .map_err(|e| e.to_string())?;
    let found: Vec<&str> = re.find_iter(template).map(|m| m.as_str()).collect();
    if found.is_empty() {
        return Err(format!(
            "a Hono template must contain at least one of {}",
            PLACEHOLDERS.join(", ")
        ));
    }
    let unknown: Vec<&str> = found
        .into_iter()
        .filter(|p| !PLACEHOLDERS.contains(p))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "Hono does not know the placeholder(s) {}; it supports {}",
            unknown.join(", "),
            PLACEHOLDERS.join(", ")
        ));
    }
    Ok(())
}

/// `text.replaceAll(Pattern.quote(literal), replacement)` in Java: every occurrence of
/// `literal`, left to right, replaced by `replacement` read as a Java replacement string
/// (`\x` is `x`, `$0` the match itself, `$1`..`$9` and `${name}` refer to groups the quoted
/// pattern does not have, which Java refuses).
fn java_replace_all(text: &str, literal: &str, replacement: &str) -> Result<String, String> {
    if !text.contains(literal) {
        // Java only reads the replacement when there is a match.
        return Ok(text.to_string());
    }
    let mut expanded = String::with_capacity(replacement.len());
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => expanded.push(n),
                None => {
                    return Err(format!(
                        "'{replacement}' ends in '\\', which Java's replaceAll refuses (\"character to be escaped is missing\")"
                    ))
                }
            },
            '$' => match chars.next() {
                Some('0') => {
                    expanded.push_str(literal);
                    // Further digits would name group 0N > 0, which does not exist: Java
                    // keeps them as text.
                }
                Some(d) if d.is_ascii_digit() => {
                    return Err(format!(
                        "'{replacement}' has '${d}', a group reference Java's replaceAll refuses (\"No group {d}\")"
                    ))
                }
                _ => {
                    return Err(format!(
                        "'{replacement}' has a '$' that Java's replaceAll reads as an illegal group reference"
                    ))
                }
            },
            other => expanded.push(other),
        }
    }
    Ok(text.replace(literal, &expanded))
}

/// The value Hono's `IdentityTemplate` reads for attribute `keyword` (`CN`, `OU`, `O`): the
/// subject parsed back from its RFC 2253 form with `LdapName`, the first RDN (in encoded
/// order) whose type is `keyword` — where a multi-valued RDN's type is that of its first
/// attribute after `Rdn`'s sorting (type, case-insensitive, then value) — and its value when
/// it is text (`#hex` values are bytes, which Hono treats as missing).
fn ldap_attribute(name: &Name, keyword: &str) -> Option<String> {
    for rdn in name.0.iter() {
        let mut entries: Vec<(String, Option<String>, String)> = rdn
            .0
            .iter()
            .map(|atv| {
                let oid = atv.oid.to_string();
                let kw = KEYWORDS.iter().find(|(o, _)| *o == oid).map(|(_, k)| *k);
                let text = kw.and_then(|_| string_value(&atv.value));
                let comparable = match &text {
                    Some(t) => t.to_uppercase(),
                    None => format!("#{}", hex::encode(atv.value.to_der().unwrap_or_default())),
                };
                (kw.unwrap_or(&oid).to_string(), text, comparable)
            })
            .collect();
        entries.sort_by(|a, b| {
            a.0.to_ascii_uppercase()
                .cmp(&b.0.to_ascii_uppercase())
                .then_with(|| a.2.cmp(&b.2))
        });
        if let Some((t, value, _)) = entries.into_iter().next() {
            if t.eq_ignore_ascii_case(keyword) {
                return value;
            }
        }
    }
    None
}

/// The auth-id Hono's protocol adapter computes for a client certificate with subject
/// `name` when the trusted CA has `template` (`SubjectDnCredentials.create` →
/// `IdentityTemplate.apply` on `X500Principal.getName(RFC2253)`): `{{subject-dn}}` is replaced
/// first by the DN, then `{{subject-cn}}`, `{{subject-ou}}`, `{{subject-o}}` by the attribute
/// values, each with Java's `replaceAll` (so a `\` in a value is dropped and a `$` refused,
/// as Hono does). An error says why Hono's adapter would not authenticate the device.
pub fn apply_template(template: &str, name: &Name) -> Result<String, String> {
    check_template(template)?;
    let dn = rfc2253(name)?;
    let mut out = java_replace_all(template, "{{subject-dn}}", &dn)?;
    for (keyword, placeholder, what) in [
        ("CN", "{{subject-cn}}", "Common Name (CN)"),
        ("OU", "{{subject-ou}}", "Organizational Unit Name (OU)"),
        ("O", "{{subject-o}}", "Organization Name (O)"),
    ] {
        if out.contains(placeholder) {
            let value = ldap_attribute(name, keyword)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    format!("the auth-id template uses {placeholder} but the subject '{dn}' has no {what} Hono can read as text")
                })?;
            out = java_replace_all(&out, placeholder, &value)?;
        }
    }
    Ok(out)
}

/// The tenant id: `hono.tenant_id`, else the manifest's tenant, which the registry's tenant
/// id pattern (`hono.tenant_id_pattern`, default Hono's) must match.
fn tenant_id(input: &ExportInput, opts: &ExportOptions) -> Result<String, ExportError> {
    let s = Settings::new(FORMAT, input, opts);
    let pattern = id_pattern(&s, "hono.tenant_id_pattern", DEFAULT_TENANT_ID_PATTERN)?;
    match s.str("hono.tenant_id")?.or_else(|| input.tenant.clone()) {
        Some(t) if pattern.matches(&t) => Ok(t),
        Some(t) => Err(s.bad(
            "hono.tenant_id",
            &t,
            format!(
                "Hono's registry answers 400 to a tenant id that does not match its tenantIdPattern {} (set hono.tenant_id, or hono.tenant_id_pattern to the registry's own pattern)",
                pattern.text
            ),
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
            check_template(&t).map_err(|why| {
                s.bad(
                    key,
                    &t,
                    format!("{why}; Hono's registry refuses the trusted CA otherwise (IdentityTemplate.checkValidity). In a profile write \"{{{{{{{{subject-cn}}}}}}}}\" (certfab templates read {{{{ as a literal brace), or pass --set"),
                )
            })?;
            ca_obj.insert(field.into(), json!(t));
        }
    }
    Ok(json!({ "enabled": true, "trusted-ca": [Value::Object(ca_obj)] }))
}

/// The tenant file and the device registrations with their X.509 credentials.
pub fn render(input: &ExportInput, opts: &ExportOptions) -> Result<Vec<ExportFile>, ExportError> {
    let mut out = Out::memory();
    render_into(input, opts, &mut out)?;
    out.into_files()
}

/// [`render`] into `out`, a device line at a time.
pub fn render_into(
    input: &ExportInput,
    opts: &ExportOptions,
    out: &mut Out,
) -> Result<(), ExportError> {
    super::require_devices(FORMAT, input)?;
    let tenant_id = tenant_id(input, opts)?;
    out.file(ExportFile {
        name: "hono-tenant.json".into(),
        bytes: pretty(&tenant(input, opts)?),
        devices: 0,
        consumer: format!(
            "Hono Device Registry Management API: POST /v1/tenants/{tenant_id} (createTenantWithId), or PUT to update"
        ),
    })?;
    let s = Settings::new(FORMAT, input, opts);
    let device_pattern = id_pattern(&s, "hono.device_id_pattern", DEFAULT_DEVICE_ID_PATTERN)?;
    let template = s.str("hono.auth_id_template")?;
    // A device's registry id, auth-id and credential validity (also asked again when the
    // repeat check needs a second pass).
    let ids_of = |d: &ExportDevice| -> Result<(String, String, String, String), ExportError> {
        let bad = |msg: String| device_error(FORMAT.name(), d, msg);
        let facts = CertFacts::of(FORMAT, d)?;
        let device_id = super::support::device_str(FORMAT, input, opts, d, "hono.device_id")?
            .unwrap_or(d.device_id.clone());
        if !device_pattern.matches(&device_id) {
            return Err(bad(format!(
                "device id '{device_id}' does not match the registry's deviceIdPattern {}, so Hono answers 400; set hono.device_id (or hono.device_id_pattern to the registry's own pattern)",
                device_pattern.text
            )));
        }
        let tbs = &facts.cert.tbs_certificate;
        let dn = rfc2253(&tbs.subject).map_err(&bad)?;
        if dn.is_empty() {
            return Err(bad(
                "the certificate subject is empty; Hono authenticates X.509 devices by subject DN"
                    .into(),
            ));
        }
        let auth_id = match &template {
            None => dn.clone(),
            Some(t) => {
                let id = apply_template(t, &tbs.subject).map_err(|why| {
                    bad(format!(
                        "{why}; Hono's adapter could not authenticate this device with the tenant's auth-id-template"
                    ))
                })?;
                // The registry keeps an auth-id as given unless it reads as a distinguished
                // name, which it rewrites in RFC 2253 form (X509CertificateCredential
                // .fromAuthId): only the DN itself is certain to be kept as written.
                if id.contains('=') && id != dn {
                    return Err(bad(format!(
                        "the auth-id template gives '{id}', which contains '=': Hono's registry would re-normalise it as a distinguished name and the adapter's lookup could miss; use a template whose result has no '='"
                    )));
                }
                if id.is_empty() {
                    return Err(bad("the auth-id template gives an empty auth-id".into()));
                }
                id
            }
        };
        Ok((
            device_id,
            auth_id,
            super::support::x509_time_rfc3339(&tbs.validity.not_before),
            super::support::x509_time_rfc3339(&tbs.validity.not_after),
        ))
    };
    let mut ids = super::support::Unique::default();
    let mut auth_ids = super::support::Unique::default();
    let mut shards = Rows::new(opts.max_rows);
    input.each_device(|d| {
        let (device_id, auth_id, not_before, not_after) = ids_of(d)?;
        ids.check(FORMAT, d, "device id", &device_id)?;
        auth_ids.check(FORMAT, d, "auth-id", &auth_id)?;
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
                "not-before": not_before,
                "not-after": not_after,
            }],
        }]);
        let line = json_lines(&[json!({
            "tenant-id": tenant_id,
            "device-id": device_id,
            "device": Value::Object(device),
            "credentials": credentials,
        })]);
        let id = shards.next(out, |out, i| {
            out.open(
                &shard_name("hono-devices", i, "jsonl"),
                "Hono Device Registry Management API, per line: POST /v1/devices/{tenant-id}/{device-id} with .device, then PUT /v1/credentials/{tenant-id}/{device-id} with .credentials".into(),
            )
        })?;
        out.write(id, &line)
    })?;
    shards.finish(out)?;
    ids.confirm(FORMAT, input, |d| Ok(ids_of(d)?.0))?;
    auth_ids.confirm(FORMAT, input, |d| Ok(ids_of(d)?.1))
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

    #[test]
    fn default_id_patterns_read_as_hono_reads_them() {
        let t = IdPattern::new(DEFAULT_TENANT_ID_PATTERN).unwrap();
        let d = IdPattern::new(DEFAULT_DEVICE_ID_PATTERN).unwrap();
        for ok in ["a-b", "a_b", "a.b", "A9"] {
            assert!(t.matches(ok) && d.matches(ok), "{ok}");
        }
        for (id, tenant, device) in [("a:b", false, true), ("a=b", false, true)] {
            assert_eq!((t.matches(id), d.matches(id)), (tenant, device), "{id}");
        }
        for bad in ["", "a/b", "a b", "a`b", "a^b", "a\\b", "äb", "a\n"] {
            assert!(!t.matches(bad) && !d.matches(bad), "{bad:?}");
        }
        // A pattern without anchors still has to match the whole id, as Matcher.matches().
        assert!(!IdPattern::new("[a-z]+").unwrap().matches("ab1"));
    }

    #[test]
    fn templates_are_checked_and_replaced_as_java_does() {
        assert!(check_template("{{subject-cn}}").is_ok());
        assert!(check_template("x-{{subject-o}}-{{subject-ou}}").is_ok());
        assert!(check_template("plain").is_err());
        assert!(check_template("{{subject-cn}}-{{serial}}")
            .unwrap_err()
            .contains("{{serial}}"));
        assert!(check_template("{{subject-cn}}{{\n}}").is_ok()); // not a placeholder across a line break
        assert_eq!(
            java_replace_all("a{{x}}b{{x}}", "{{x}}", "v").unwrap(),
            "avbv"
        );
        assert_eq!(
            java_replace_all("a{{x}}", "{{x}}", "p\\,q").unwrap(),
            "ap,q"
        );
        assert_eq!(
            java_replace_all("a{{x}}", "{{x}}", "$0!").unwrap(),
            "a{{x}}!"
        );
        assert!(java_replace_all("a{{x}}", "{{x}}", "a$b").is_err());
        assert!(java_replace_all("a{{x}}", "{{x}}", "a$1").is_err());
        assert!(java_replace_all("a{{x}}", "{{x}}", "a\\").is_err());
        assert_eq!(java_replace_all("none", "{{x}}", "a$").unwrap(), "none");
        let n = Name::from_str("CN=dev-1,OU=line+2.5.4.5=#13023432,O=Acme,C=DE").unwrap();
        assert_eq!(apply_template("{{subject-cn}}", &n).unwrap(), "dev-1");
        assert_eq!(
            apply_template("{{subject-o}}/{{subject-cn}}", &n).unwrap(),
            "Acme/dev-1"
        );
        // The multi-valued RDN sorts serialNumber (2.5.4.5) before OU: Hono finds no OU.
        assert!(apply_template("{{subject-ou}}", &n).is_err());
    }
}
