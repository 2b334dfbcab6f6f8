//! Device-class profiles (`profiles/*.yaml`): which CA signs, which device keys are allowed,
//! how subject and SAN are built, validity, key usage, EKU and extra extensions. Extensions come
//! from the profile only; a CSR's requests are never copied unless their OID is allow-listed.
//!
//! A profile that does not validate is reported as `file:line: what is wrong — the fix`.

mod cloud;
pub mod san;
mod show;
mod station;
mod template;

pub use cloud::Cloud;
pub use station::{IdSource, InstallItem, KeyGen, Prove, StationRules};
pub use template::{Template, Vars};

use crate::crypto::KeyKind;
use crate::x509::{parse_oid, AttrType, MATTER_PID, MATTER_VID};
use crate::yaml::{line_of, YamlError};
use const_oid::ObjectIdentifier;
use der::Decode;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use time::Duration;

/// Extensions certfab builds itself; a profile sets them through their own fields.
const MANAGED: &[(ObjectIdentifier, &str)] = &[
    (
        const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS,
        "basicConstraints is always CA:FALSE for devices",
    ),
    (const_oid::db::rfc5280::ID_CE_KEY_USAGE, "use key_usage"),
    (
        const_oid::db::rfc5280::ID_CE_EXT_KEY_USAGE,
        "use extended_key_usage",
    ),
    (const_oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME, "use san"),
    (
        const_oid::db::rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER,
        "certfab computes it",
    ),
    (
        const_oid::db::rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER,
        "certfab copies the CA's",
    ),
];

/// Extensions RFC 5280 defines for CA certificates only (dotted OID, name): refused in a
/// profile's `extensions` and `csr.allowed_extensions`, and by the lint.
pub const CA_ONLY: &[(&str, &str)] = &[
    ("2.5.29.30", "nameConstraints"),
    ("2.5.29.33", "policyMappings"),
    ("2.5.29.36", "policyConstraints"),
    ("2.5.29.54", "inhibitAnyPolicy"),
];

/// A SAN value syntax check (see [`san`]).
type SyntaxCheck = fn(&str) -> Result<(), String>;

/// Refuses an extension RFC 5280 reserves for CA certificates.
fn ca_only(o: &ObjectIdentifier) -> Result<(), String> {
    let id = o.to_string();
    match CA_ONLY.iter().find(|(c, _)| *c == id) {
        Some((_, name)) => Err(format!(
            "extension {id} ({name}) belongs on CA certificates only; a device certificate cannot carry it"
        )),
        None => Ok(()),
    }
}

/// Which extra rules a profile's certificates must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// RFC 5280 rules only.
    Generic,
    /// AWS IoT Core device certificates.
    AwsIot,
    /// IEEE 802.1AR Initial Device Identifier.
    #[serde(rename = "ieee-802.1ar-idevid")]
    Idevid,
    /// Matter Device Attestation Certificate.
    MatterDac,
}

/// Where the CA comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IssuerRef {
    /// A CA named in the site config's `cas:`.
    Named(String),
    /// Given in the profile itself (paths relative to the profile file).
    Inline(crate::config::RawCa),
}

/// A SubjectAltName entry template.
#[derive(Debug, Clone)]
pub enum SanEntry {
    /// dNSName
    Dns(Template),
    /// uniformResourceIdentifier
    Uri(Template),
    /// rfc822Name
    Email(Template),
    /// iPAddress
    Ip(Template),
    /// IEEE 802.1AR / RFC 4108 hardwareModuleName otherName
    HardwareModuleName {
        /// Hardware type OID.
        hw_type: ObjectIdentifier,
        /// Hardware serial number template.
        hw_serial: Template,
    },
}

/// One `san:` list item: exactly one of the keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSan {
    #[serde(default)]
    dns: Option<Template>,
    #[serde(default)]
    uri: Option<Template>,
    #[serde(default)]
    email: Option<Template>,
    #[serde(default)]
    ip: Option<Template>,
    #[serde(default)]
    hardware_module_name: Option<RawHmn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHmn {
    hw_type: String,
    hw_serial: Template,
}

/// Key usage bits a device certificate may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum KeyUsageBit {
    /// digitalSignature
    DigitalSignature,
    /// nonRepudiation / contentCommitment
    #[serde(alias = "contentCommitment")]
    NonRepudiation,
    /// keyEncipherment (RSA only)
    KeyEncipherment,
    /// dataEncipherment
    DataEncipherment,
    /// keyAgreement (EC only)
    KeyAgreement,
    /// keyCertSign: refused for devices
    KeyCertSign,
    /// cRLSign: refused for devices
    #[serde(rename = "cRLSign")]
    CrlSign,
}

/// Validity rules.
#[derive(Debug, Clone)]
pub struct ValidityRule {
    /// None = no expiry (99991231235959Z, IEEE 802.1AR).
    pub duration: Option<Duration>,
    /// How far notBefore is set before now, for device clock skew.
    pub backdate: Duration,
    /// Shorten notAfter to the CA's instead of refusing (Matter: DAC nested in PAI).
    pub clamp_to_issuer: bool,
}

/// Where the device id comes from when not given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceIdFrom {
    /// `--device-id` / the input's `device_id` column.
    Input,
    /// A CSR subject attribute (e.g. CN, serialNumber).
    CsrAttr(AttrType),
}

/// Name policy for every rendered subject/SAN value and device id.
#[derive(Debug, Clone)]
pub struct NamePolicy {
    /// Max characters per value.
    pub max_length: usize,
    /// Characters allowed besides ASCII letters and digits.
    pub extra_chars: String,
    /// Allow non-ASCII letters (control, bidi and format characters stay refused).
    pub allow_unicode: bool,
}

/// Device key kinds a profile accepts.
#[derive(Debug, Clone, Default)]
pub struct KeyRules {
    /// P-256 allowed.
    pub p256: bool,
    /// P-384 allowed.
    pub p384: bool,
    /// Ed25519 allowed.
    pub ed25519: bool,
    /// RSA allowed with this (min, max) modulus size.
    pub rsa: Option<(usize, usize)>,
}

impl KeyRules {
    /// Whether `kind` is allowed, and if not, what is.
    pub fn allows(&self, kind: KeyKind) -> bool {
        match kind {
            KeyKind::P256 => self.p256,
            KeyKind::P384 => self.p384,
            KeyKind::Ed25519 => self.ed25519,
            KeyKind::Rsa(bits) => self.rsa.is_some_and(|(lo, hi)| bits >= lo && bits <= hi),
        }
    }

    /// Human list of allowed kinds.
    pub fn describe(&self) -> String {
        let mut v = Vec::new();
        if self.p256 {
            v.push("ECDSA P-256".to_string());
        }
        if self.p384 {
            v.push("ECDSA P-384".to_string());
        }
        if let Some((lo, hi)) = self.rsa {
            v.push(format!("RSA {lo}..{hi} bits"));
        }
        if self.ed25519 {
            v.push("Ed25519".to_string());
        }
        v.join(", ")
    }
}

/// An extension a profile adds verbatim.
#[derive(Debug, Clone)]
pub struct ExtraExtension {
    pub oid: ObjectIdentifier,
    /// Critical flag.
    pub critical: bool,
    /// DER value (the extnValue contents).
    pub value: Vec<u8>,
}

/// A loaded, validated profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub path: PathBuf,
    /// SHA-256 of the file bytes (recorded with everything it issues).
    pub sha256: [u8; 32],
    /// Profile name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Rule set.
    pub preset: Preset,
    /// CA.
    pub issuer: IssuerRef,
    /// Allowed device keys.
    pub keys: KeyRules,
    /// Device id source.
    pub device_id: DeviceIdFrom,
    /// Subject, in order.
    pub subject: Vec<(AttrType, Template)>,
    /// SAN entries.
    pub san: Vec<SanEntry>,
    pub validity: ValidityRule,
    pub key_usage: Vec<KeyUsageBit>,
    /// EKU OIDs.
    pub extended_key_usage: Vec<ObjectIdentifier>,
    /// Extra extensions.
    pub extensions: Vec<ExtraExtension>,
    /// CSR extension OIDs that may be copied into the certificate.
    pub csr_allowed_extensions: Vec<ObjectIdentifier>,
    /// Name policy.
    pub names: NamePolicy,
    /// How `certfab station` handles devices of this class.
    pub station: StationRules,
    /// Cloud attributes rendered into each manifest device line (`cloud:`).
    pub cloud: Cloud,
    /// Tenant this device class belongs to; it may only use CAs of the same tenant.
    pub tenant: Option<String>,
    /// CA rollover: the CA (site config name) that takes over from `issuer`.
    pub rollover: Option<Rollover>,
}

/// A CA rollover in progress (`rollover:` in a profile): devices are issued by `issuer` until
/// `switch_at`, by `next_issuer` from then on; trust bundles carry both chains during the
/// transition (`lifecycle::ca_status::trust_bundle`), so certificates of either are trusted.
#[derive(Debug, Clone)]
pub struct Rollover {
    /// The next CA, by its site config name.
    pub next_issuer: String,
    /// When new certificates start coming from `next_issuer`; absent: not decided yet.
    pub switch_at: Option<time::OffsetDateTime>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollover {
    next_issuer: String,
    #[serde(default)]
    switch_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default = "generic")]
    preset: Preset,
    issuer: IssuerRef,
    keys: Vec<RawKey>,
    #[serde(default)]
    device_id: Option<RawDeviceId>,
    #[serde(default)]
    subject: Vec<BTreeMap<String, Template>>,
    #[serde(default)]
    san: Vec<RawSan>,
    validity: RawValidity,
    key_usage: Vec<KeyUsageBit>,
    #[serde(default)]
    extended_key_usage: Vec<String>,
    #[serde(default)]
    extensions: Vec<RawExtension>,
    #[serde(default)]
    csr: RawCsr,
    #[serde(default)]
    names: RawNames,
    #[serde(default)]
    station: station::RawStation,
    #[serde(default)]
    cloud: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    rollover: Option<RawRollover>,
}

fn generic() -> Preset {
    Preset::Generic
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawKey {
    Name(String),
    Rsa { rsa: RawRsa },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRsa {
    #[serde(default = "rsa_min")]
    min_bits: usize,
    #[serde(default = "rsa_max")]
    max_bits: usize,
}
fn rsa_min() -> usize {
    2048
}
fn rsa_max() -> usize {
    8192
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeviceId {
    from: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValidity {
    duration: String,
    #[serde(default)]
    backdate: Option<String>,
    #[serde(default)]
    clamp_to_issuer: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExtension {
    oid: String,
    #[serde(default)]
    critical: bool,
    der: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCsr {
    #[serde(default)]
    allowed_extensions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNames {
    #[serde(default = "max_len")]
    max_length: usize,
    #[serde(default = "extra")]
    extra_chars: String,
    #[serde(default)]
    allow_unicode: bool,
}
impl Default for RawNames {
    fn default() -> Self {
        Self {
            max_length: max_len(),
            extra_chars: extra(),
            allow_unicode: false,
        }
    }
}
fn max_len() -> usize {
    64
}
fn extra() -> String {
    " -_.:@/".into()
}

/// Characters that separate or quote in DN strings (RFC 4514) and CSV: refused everywhere,
/// so a device id cannot smuggle a second attribute into systems that parse DN text.
pub const SEPARATORS: &str = ",+;=\"\\<>#\n\r\t";

/// A profile that does not load.
pub type ProfileError = YamlError;

/// The longest duration certfab accepts anywhere (profile validity, `--validity`,
/// `--next-update`): far beyond any certificate lifetime, and far enough from the limits of the
/// time arithmetic that `now + duration` can never overflow. A certificate that must never
/// expire says `none` (99991231235959Z), not a huge duration.
pub const MAX_DURATION_YEARS: i64 = 1000;

/// Parses a duration like `365d`, `10y`, `12h`, `90m`, `30s` (at most
/// [`MAX_DURATION_YEARS`]).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let secs: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "y" => 365 * 86_400,
        _ if num.is_empty() => {
            return Err(format!(
                "'{s}' is not a duration; write e.g. 30s, 90m, 12h, 365d or 10y"
            ))
        }
        _ => return Err(format!("'{s}' has unit '{unit}'; use s, m, h, d or y")),
    };
    let too_long = || {
        format!("'{s}' is over the limit of {MAX_DURATION_YEARS} years; a certificate that never expires says 'none'")
    };
    // Digits only (no sign), so a parse failure of a non-empty number is an overflow.
    let n: i64 = match num.parse() {
        Ok(n) => n,
        Err(_) if !num.is_empty() => return Err(too_long()),
        Err(_) => {
            return Err(format!(
                "'{s}' is not a duration; write e.g. 30s, 90m, 12h, 365d or 10y"
            ))
        }
    };
    match n.checked_mul(secs) {
        Some(total) if total <= MAX_DURATION_YEARS * 365 * 86_400 => Ok(Duration::seconds(total)),
        _ => Err(too_long()),
    }
}

impl Profile {
    /// Loads and validates a profile file.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let bytes = crate::yaml::read_bounded(path).map_err(|mut e| {
            if e.msg.starts_with("cannot read") {
                e.msg = format!(
                    "cannot read profile: {}; profiles live in profiles/*.yaml",
                    e.msg.trim_start_matches("cannot read: ")
                );
            }
            e
        })?;
        Self::from_bytes(path, bytes)
    }

    /// Validates the contents of a profile file; `path` names it in errors and resolves inline
    /// CA paths. What [`Profile::load`] does after reading (and the profile fuzz target).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self, ProfileError> {
        if bytes.len() as u64 > crate::yaml::MAX_FILE {
            return Err(YamlError {
                path: path.into(),
                line: None,
                msg: format!("over the {} KiB limit", crate::yaml::MAX_FILE / 1024),
            });
        }
        let text = String::from_utf8(bytes.clone()).map_err(|e| YamlError {
            path: path.into(),
            line: None,
            msg: format!(
                "not UTF-8 text (byte {} is not); save it as UTF-8",
                e.utf8_error().valid_up_to()
            ),
        })?;
        let raw: Raw = crate::yaml::parse(path, &text)?;
        let err = |key: &str, msg: String| YamlError {
            path: path.into(),
            line: line_of(&text, key),
            msg,
        };
        let oid = |key: &str, s: &str| parse_oid(s).map_err(|e| err(key, e));

        let mut keys = KeyRules::default();
        for k in &raw.keys {
            match k {
                RawKey::Name(n) => match n.as_str() {
                    "p256" => keys.p256 = true,
                    "p384" => keys.p384 = true,
                    "ed25519" => keys.ed25519 = true,
                    "rsa" => keys.rsa = Some((rsa_min(), rsa_max())),
                    other => {
                        return Err(err(
                            "keys",
                            format!("unknown key type '{other}'; use p256, p384, ed25519, rsa or {{rsa: {{min_bits: 3072}}}}"),
                        ))
                    }
                },
                RawKey::Rsa { rsa } => {
                    if rsa.min_bits < 2048 || rsa.max_bits < rsa.min_bits || rsa.min_bits > rsa_max() {
                        return Err(err(
                            "min_bits",
                            format!("RSA sizes {}..{} are not acceptable; min_bits must be 2048..={} and at most max_bits", rsa.min_bits, rsa.max_bits, rsa_max()),
                        ));
                    }
                    keys.rsa = Some((rsa.min_bits, rsa.max_bits.min(rsa_max())));
                }
            }
        }
        if raw.keys.is_empty() {
            return Err(err(
                "keys",
                "keys is empty; list at least one of p256, p384, rsa, ed25519".into(),
            ));
        }

        let mut subject = Vec::new();
        for entry in raw.subject {
            if entry.len() != 1 {
                return Err(err(
                    "subject",
                    "each subject entry is one 'ATTR: template' pair, e.g. '- CN: \"{device_id}\"'"
                        .into(),
                ));
            }
            for (k, t) in entry {
                let attr = AttrType::from_str(&k).map_err(|e| err(&k, e))?;
                subject.push((attr, t));
            }
        }
        let mut san = Vec::new();
        for r in raw.san {
            let mut items: Vec<SanEntry> = Vec::new();
            items.extend(r.dns.map(SanEntry::Dns));
            items.extend(r.uri.map(SanEntry::Uri));
            items.extend(r.email.map(SanEntry::Email));
            items.extend(r.ip.map(SanEntry::Ip));
            if let Some(h) = r.hardware_module_name {
                items.push(SanEntry::HardwareModuleName {
                    hw_type: oid("hw_type", &h.hw_type)?,
                    hw_serial: h.hw_serial,
                });
            }
            if items.len() != 1 {
                return Err(err(
                    "san",
                    "each san entry has exactly one of dns, uri, email, ip, hardware_module_name"
                        .into(),
                ));
            }
            san.extend(items);
        }
        if subject.is_empty() && san.is_empty() {
            return Err(err("subject", "the certificate would have neither subject nor SAN; add a subject (e.g. '- CN: \"{device_id}\"') or a san entry".into()));
        }

        let device_id = match raw.device_id.as_ref().map(|d| d.from.as_str()) {
            None | Some("input") => DeviceIdFrom::Input,
            Some(other) => match other.strip_prefix("csr.") {
                Some(attr) => DeviceIdFrom::CsrAttr(AttrType::from_str(attr).map_err(|e| err("from", e))?),
                None => return Err(err("from", format!("device_id.from '{other}' is not understood; use input, csr.CN or csr.serialNumber"))),
            },
        };

        let duration = match raw.validity.duration.as_str() {
            "none" => None,
            d => {
                let d = parse_duration(d).map_err(|e| err("duration", e))?;
                if d <= Duration::ZERO {
                    return Err(err(
                        "duration",
                        "validity.duration must be positive, or 'none' for no expiry".into(),
                    ));
                }
                Some(d)
            }
        };
        let backdate = raw
            .validity
            .backdate
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| err("backdate", e))?
            .unwrap_or(Duration::ZERO);
        if backdate > Duration::days(7) {
            return Err(err(
                "backdate",
                "backdate is over 7 days; device clocks rarely need more than an hour or a day"
                    .into(),
            ));
        }

        if raw.key_usage.is_empty() {
            return Err(err(
                "key_usage",
                "key_usage is empty; devices need at least digitalSignature".into(),
            ));
        }
        if let Some(bad) = raw
            .key_usage
            .iter()
            .find(|k| matches!(k, KeyUsageBit::KeyCertSign | KeyUsageBit::CrlSign))
        {
            return Err(err("key_usage", format!("{bad:?} makes a device a CA; remove it (CA certificates come from `certfab ca`)")));
        }

        let mut eku = Vec::new();
        for e in &raw.extended_key_usage {
            use const_oid::db::rfc5280 as r;
            eku.push(match e.as_str() {
                "clientAuth" => r::ID_KP_CLIENT_AUTH,
                "serverAuth" => r::ID_KP_SERVER_AUTH,
                "codeSigning" => r::ID_KP_CODE_SIGNING,
                "emailProtection" => r::ID_KP_EMAIL_PROTECTION,
                "timeStamping" => r::ID_KP_TIME_STAMPING,
                other if other.starts_with(|c: char| c.is_ascii_digit()) => {
                    oid("extended_key_usage", other)?
                }
                other => {
                    return Err(err("extended_key_usage", format!("unknown EKU '{other}'; use clientAuth, serverAuth, codeSigning, emailProtection, timeStamping or a dotted OID")))
                }
            });
        }

        let mut extensions = Vec::new();
        for x in &raw.extensions {
            let o = oid("oid", &x.oid)?;
            if let Some((_, why)) = MANAGED.iter().find(|(m, _)| *m == o) {
                return Err(err(
                    "oid",
                    format!("extension {o} is set by certfab, not by extensions: {why}"),
                ));
            }
            ca_only(&o).map_err(|m| err("oid", m))?;
            let value = hex::decode(x.der.replace([' ', ':'], ""))
                .map_err(|_| err("der", format!("extension {o}: der is not hex")))?;
            der::asn1::AnyRef::from_der(&value).map_err(|e| {
                err(
                    "der",
                    format!("extension {o}: der is not one DER value ({e})"),
                )
            })?;
            extensions.push(ExtraExtension {
                oid: o,
                critical: x.critical,
                value,
            });
        }
        let csr_allowed_extensions = raw
            .csr
            .allowed_extensions
            .iter()
            .map(|s| {
                let o = oid("allowed_extensions", s)?;
                if let Some((_, why)) = MANAGED.iter().find(|(m, _)| *m == o) {
                    return Err(err(
                        "allowed_extensions",
                        format!("extension {o} is set by certfab, never copied from a CSR: {why}"),
                    ));
                }
                ca_only(&o).map_err(|m| err("allowed_extensions", m))?;
                Ok(o)
            })
            .collect::<Result<Vec<_>, _>>()?;
        // SAN text that comes from the profile alone is checked once, here; rendered values are
        // checked per device.
        for e in &san {
            let (key, t, f): (&str, &Template, SyntaxCheck) = match e {
                SanEntry::Dns(t) => ("dns", t, san::dns_name),
                SanEntry::Uri(t) => ("uri", t, san::uri),
                SanEntry::Email(t) => ("email", t, san::email),
                SanEntry::Ip(t) => ("ip", t, |v| {
                    v.parse::<std::net::IpAddr>()
                        .map(|_| ())
                        .map_err(|_| "not an IPv4 or IPv6 address".into())
                }),
                SanEntry::HardwareModuleName { .. } => continue,
            };
            if t.placeholders().next().is_none() {
                f(t.source()).map_err(|why| {
                    err(
                        key,
                        format!("san {key} '{}': {why}", crate::text::escape(t.source())),
                    )
                })?;
            }
        }
        if let Some(c) = raw
            .names
            .extra_chars
            .chars()
            .find(|c| SEPARATORS.contains(*c) || c.is_control())
        {
            return Err(err("extra_chars", format!("names.extra_chars must not contain {c:?}: it separates or quotes DN/CSV text downstream")));
        }
        if raw.names.max_length == 0 || raw.names.max_length > 64 {
            return Err(err(
                "max_length",
                "names.max_length must be 1..=64 (RFC 5280 upper bound for CN)".into(),
            ));
        }

        let station =
            StationRules::from_raw(raw.station, &keys).map_err(|(key, msg)| err(key, msg))?;
        let cloud = match &raw.cloud {
            Some(v) => Cloud::from_yaml(v).map_err(|(key, msg)| err(&key, msg))?,
            None => Cloud::default(),
        };
        let p = Self {
            cloud,
            path: path.into(),
            sha256: crate::crypto::sha256(&bytes),
            name: raw.name,
            description: raw.description,
            preset: raw.preset,
            issuer: raw.issuer,
            keys,
            device_id,
            subject,
            san,
            validity: ValidityRule {
                duration,
                backdate,
                clamp_to_issuer: raw.validity.clamp_to_issuer,
            },
            key_usage: raw.key_usage,
            extended_key_usage: eku,
            extensions,
            csr_allowed_extensions,
            names: NamePolicy {
                max_length: raw.names.max_length,
                extra_chars: raw.names.extra_chars,
                allow_unicode: raw.names.allow_unicode,
            },
            station,
            tenant: raw.tenant,
            rollover: match raw.rollover {
                None => None,
                Some(r) => Some(Rollover {
                    switch_at: r
                        .switch_at
                        .as_deref()
                        .map(|t| {
                            time::OffsetDateTime::parse(
                                t,
                                &time::format_description::well_known::Rfc3339,
                            )
                            .map_err(|_| {
                                err(
                                    "switch_at",
                                    format!("rollover.switch_at '{t}' is not RFC 3339 (e.g. 2027-01-01T00:00:00Z)"),
                                )
                            })
                        })
                        .transpose()?,
                    next_issuer: r.next_issuer,
                }),
            },
        };
        if let Some(t) = &p.tenant {
            crate::config::check_tenant_name(t).map_err(|m| err("tenant", m))?;
        }
        if matches!(&p.rollover, Some(r) if matches!(&p.issuer, IssuerRef::Named(n) if *n == r.next_issuer))
        {
            return Err(err(
                "next_issuer",
                "rollover.next_issuer names the current issuer; name the CA that takes over".into(),
            ));
        }
        p.check_preset().map_err(|(key, msg)| err(key, msg))?;
        Ok(p)
    }

    fn has_attr(&self, oid: ObjectIdentifier) -> bool {
        self.subject.iter().any(|(a, _)| a.oid == oid)
    }

    /// Rules a preset adds on top of the schema.
    fn check_preset(&self) -> Result<(), (&'static str, String)> {
        match self.preset {
            Preset::Generic => Ok(()),
            Preset::AwsIot => {
                if self.keys.ed25519 {
                    return Err(("keys", "AWS IoT Core does not accept Ed25519 device certificates; use p256, p384 or rsa".into()));
                }
                Ok(())
            }
            Preset::Idevid => {
                if !self.has_attr(const_oid::db::rfc4519::SERIAL_NUMBER) {
                    return Err(("subject", "IEEE 802.1AR IDevIDs carry the device serial in subject serialNumber; add '- serialNumber: \"{device_id}\"'".into()));
                }
                Ok(())
            }
            Preset::MatterDac => {
                if self.keys.p384 || self.keys.ed25519 || self.keys.rsa.is_some() || !self.keys.p256
                {
                    return Err((
                        "keys",
                        "Matter DACs are ECDSA P-256 only; set keys: [p256]".into(),
                    ));
                }
                if !self.has_attr(MATTER_VID) || !self.has_attr(MATTER_PID) {
                    return Err(("subject", "Matter DACs need matter-vid and matter-pid subject attributes (4 upper-case hex digits)".into()));
                }
                if !self.validity.clamp_to_issuer {
                    return Err(("clamp_to_issuer", "Matter requires the DAC validity to lie inside the PAI's; set validity.clamp_to_issuer: true".into()));
                }
                if self.key_usage != [KeyUsageBit::DigitalSignature] {
                    return Err((
                        "key_usage",
                        "Matter DACs have key_usage [digitalSignature] only".into(),
                    ));
                }
                if !self.extended_key_usage.is_empty() {
                    return Err((
                        "extended_key_usage",
                        "Matter DACs carry no extended key usage".into(),
                    ));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_profiles_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                Profile::load(&p).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 4);
    }

    #[test]
    fn item10_durations_and_oids_are_exact_or_refused() {
        assert_eq!(parse_duration("10y").unwrap(), Duration::days(3650));
        assert_eq!(parse_duration("1000y").unwrap(), Duration::days(365_000));
        for bad in [
            "1001y",
            "9000y",
            "99999999999999999999s",
            "9223372036854775807y",
        ] {
            assert!(
                parse_duration(bad).unwrap_err().contains("over the limit"),
                "{bad}"
            );
        }
        for bad in ["", "y", "-5d", "5w", "1.5y"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_oid("1.3.6.1.4.1.99999.268435455")
                .unwrap()
                .to_string(),
            "1.3.6.1.4.1.99999.268435455"
        );
        // Every accepted OID prints back as given (const-oid mis-encodes some arcs: refused).
        for a in [
            0u32, 1, 127, 128, 129, 255, 16383, 16384, 16511, 2097152, 268435455,
        ] {
            let t = format!("1.3.6.{a}");
            match parse_oid(&t) {
                Ok(o) => assert_eq!(o.to_string(), t),
                Err(e) => assert!(e.contains("cannot encode this OID exactly"), "{e}"),
            }
        }
        for (bad, why) in [
            ("2.25.268435456", "over 268435455"),
            ("2.25.4294967296", "over 268435455"),
            ("2.25.240155868711111111111111111", "over 268435455"),
            ("2.40.1", "second arc"),
            ("3.1", "first arc"),
            ("1", "two arcs"),
            ("1..2", "empty"),
            ("1.2.", "empty"),
            ("1.02", "leading zero"),
            ("1.2.x", "not a digit"),
            (&"1.2.".repeat(300), "characters"),
            (&format!("1.2.{}", "0".repeat(100_000)), "characters"),
            (&format!("1.2{}", ".268435455".repeat(10)), "encoded bytes"),
        ] {
            let e = parse_oid(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_name_file_line_and_fix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.yaml");
        let base = "name: x\nissuer: issuing\nkeys: [p256]\nsubject:\n  - CN: \"{device_id}\"\nvalidity: {duration: 1y}\nkey_usage: [digitalSignature]\n";
        for (text, line, needle) in [
            (
                base.replace("[digitalSignature]", "[keyCertSign]"),
                7,
                "makes a device a CA",
            ),
            (base.replace("duration: 1y", "duration: 1w"), 6, "unit 'w'"),
            (
                base.replace("keys: [p256]", "keys: [p256]\nkeyz: 1"),
                4,
                "unknown field `keyz`",
            ),
            (
                base.replace("name: x", "name: x\npreset: matter-dac"),
                4,
                "P-256 only",
            ),
            (
                format!("{base}extensions:\n  - {{oid: 2.5.29.19, der: \"3000\"}}\n"),
                9,
                "set by certfab",
            ),
        ] {
            std::fs::write(
                &p,
                text.replace(
                    "keys: [p256]\nsubject",
                    if needle == "P-256 only" {
                        "keys: [p384]\nsubject"
                    } else {
                        "keys: [p256]\nsubject"
                    },
                ),
            )
            .unwrap();
            let e = Profile::load(&p).unwrap_err().to_string();
            assert!(
                e.contains(&format!("p.yaml:{line}")) && e.contains(needle),
                "{e}"
            );
        }
    }
}
