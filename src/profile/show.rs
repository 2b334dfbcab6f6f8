//! `certfab profile show`: a profile as certfab resolved it, with every default written out, so
//! a security team reviews what will be issued rather than what the file happens to spell out.
//!
//! The output is the profile schema itself (docs/profiles.md): the YAML loads back as a
//! profile with the same rules, and shows the same text again. What certfab derives from it
//! (the extensions it always adds, the station's key algorithm and the adapter capabilities it
//! needs) is listed after it as comments, or under `derived` in JSON.

use super::station::OPS;
use super::{
    DeviceIdFrom, InstallItem, IssuerRef, KeyGen, KeyUsageBit, Profile, Prove, SanEntry,
    StationRules,
};
use serde::Serialize;
use std::collections::BTreeMap;

/// A profile with every default made explicit, in the order of the profile schema.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    /// `name`.
    pub name: String,
    /// `description`.
    pub description: String,
    /// `preset`.
    pub preset: super::Preset,
    /// `issuer`: a site config CA name, or the inline CA.
    pub issuer: ResolvedIssuer,
    /// `tenant` (null: no tenant).
    pub tenant: Option<String>,
    /// `keys`.
    pub keys: Vec<ResolvedKey>,
    /// `device_id`.
    pub device_id: ResolvedDeviceId,
    /// `subject`, in certificate order.
    pub subject: Vec<BTreeMap<String, String>>,
    /// `san`.
    pub san: Vec<ResolvedSan>,
    /// `validity`.
    pub validity: ResolvedValidity,
    /// `key_usage`.
    pub key_usage: Vec<&'static str>,
    /// `extended_key_usage` (names where the schema has one, else dotted OIDs).
    pub extended_key_usage: Vec<String>,
    /// `extensions`.
    pub extensions: Vec<ResolvedExtension>,
    /// `csr`.
    pub csr: ResolvedCsr,
    /// `names`.
    pub names: ResolvedNames,
    /// `station`.
    pub station: ResolvedStation,
    /// `cloud` (as written: templates are rendered per device when a manifest is built).
    pub cloud: serde_json::Map<String, serde_json::Value>,
    /// `rollover` (null: none).
    pub rollover: Option<ResolvedRollover>,
}

/// `issuer:`.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ResolvedIssuer {
    /// A CA named in the site config's `cas:`.
    Named(String),
    /// A CA given in the profile (paths relative to the profile file, as written).
    Inline {
        /// Key URI.
        key: String,
        /// Certificate.
        cert: String,
        /// Chain above it.
        chain: Vec<String>,
        /// RSASSA-PSS.
        rsa_pss: bool,
        /// Tenant.
        tenant: Option<String>,
    },
}

/// One `keys:` item.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ResolvedKey {
    /// `p256`, `p384`, `ed25519`.
    Name(&'static str),
    /// `{rsa: {min_bits, max_bits}}`.
    Rsa {
        /// Sizes.
        rsa: RsaBits,
    },
}

/// RSA modulus sizes.
#[derive(Debug, Clone, Serialize)]
pub struct RsaBits {
    /// Smallest accepted.
    pub min_bits: usize,
    /// Largest accepted.
    pub max_bits: usize,
}

/// `device_id:`.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedDeviceId {
    /// `input` or `csr.ATTR`.
    pub from: String,
}

/// One `san:` item (exactly one member set).
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedSan {
    /// dNSName template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    /// URI template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// rfc822Name template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// iPAddress template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// hardwareModuleName.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardware_module_name: Option<ResolvedHmn>,
}

/// `hardware_module_name:`.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedHmn {
    /// Dotted OID.
    pub hw_type: String,
    /// Template.
    pub hw_serial: String,
}

/// `validity:`.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedValidity {
    /// `none` or a duration.
    pub duration: String,
    /// How far notBefore is set back.
    pub backdate: String,
    /// Shorten notAfter to the CA's.
    pub clamp_to_issuer: bool,
}

/// One `extensions:` item.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedExtension {
    /// Dotted OID.
    pub oid: String,
    /// Critical flag.
    pub critical: bool,
    /// extnValue contents, hex.
    pub der: String,
}

/// `csr:`.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedCsr {
    /// OIDs a CSR may ask for.
    pub allowed_extensions: Vec<String>,
}

/// `names:`.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedNames {
    /// Characters per value.
    pub max_length: usize,
    /// Allowed besides ASCII letters and digits.
    pub extra_chars: String,
    /// Non-ASCII letters.
    pub allow_unicode: bool,
}

/// `station:`.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedStation {
    /// Id source.
    pub device_id: &'static str,
    /// `device` or `host`.
    pub keygen: &'static str,
    /// identify.security members required.
    pub require_security: BTreeMap<String, serde_json::Value>,
    /// Files sent by install.
    pub install: Vec<&'static str>,
    /// Device configuration templates.
    pub config: BTreeMap<String, String>,
    /// Read back and compare.
    pub read_back: bool,
    /// `required`, `if-supported`, `skip`.
    pub prove: &'static str,
    /// Lock after the proof.
    pub lock: bool,
    /// `default` and every operation, each with the timeout in force.
    pub timeouts: BTreeMap<String, String>,
    /// Extra attempts.
    pub retries: u32,
}

/// `rollover:`.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedRollover {
    /// The CA that takes over.
    pub next_issuer: String,
    /// When (RFC 3339), or null: not decided.
    pub switch_at: Option<String>,
}

/// What certfab derives from a profile: not settable in it, but part of what it means.
#[derive(Debug, Clone, Serialize)]
pub struct Derived {
    /// Extensions every certificate of this profile carries besides the listed ones.
    pub always_added: Vec<String>,
    /// The key type a station asks `generate_csr` for (null: none the profile allows).
    pub station_key_algorithm: Option<&'static str>,
    /// Adapter capabilities `certfab station` requires at start-up.
    pub station_capabilities: Vec<&'static str>,
}

impl Profile {
    /// The profile with every default written out (see the module docs).
    pub fn resolved(&self) -> Resolved {
        let keys = {
            let mut v = Vec::new();
            if self.keys.p256 {
                v.push(ResolvedKey::Name("p256"));
            }
            if self.keys.p384 {
                v.push(ResolvedKey::Name("p384"));
            }
            if self.keys.ed25519 {
                v.push(ResolvedKey::Name("ed25519"));
            }
            if let Some((min_bits, max_bits)) = self.keys.rsa {
                v.push(ResolvedKey::Rsa {
                    rsa: RsaBits { min_bits, max_bits },
                });
            }
            v
        };
        let path_text = |p: &std::path::Path| p.display().to_string();
        Resolved {
            name: self.name.clone(),
            description: self.description.clone(),
            preset: self.preset,
            issuer: match &self.issuer {
                IssuerRef::Named(n) => ResolvedIssuer::Named(n.clone()),
                IssuerRef::Inline(raw) => ResolvedIssuer::Inline {
                    key: raw.key.clone(),
                    cert: path_text(&raw.cert),
                    chain: raw.chain.iter().map(|p| path_text(p)).collect(),
                    rsa_pss: raw.rsa_pss,
                    tenant: raw.tenant.clone(),
                },
            },
            tenant: self.tenant.clone(),
            keys,
            device_id: ResolvedDeviceId {
                from: match &self.device_id {
                    DeviceIdFrom::Input => "input".into(),
                    DeviceIdFrom::CsrAttr(a) => format!("csr.{}", a.name),
                },
            },
            subject: self
                .subject
                .iter()
                .map(|(a, t)| BTreeMap::from([(a.name.clone(), t.source().to_string())]))
                .collect(),
            san: self.san.iter().map(san).collect(),
            validity: ResolvedValidity {
                duration: self
                    .validity
                    .duration
                    .map(duration_text)
                    .unwrap_or_else(|| "none".into()),
                backdate: duration_text(self.validity.backdate),
                clamp_to_issuer: self.validity.clamp_to_issuer,
            },
            key_usage: self.key_usage.iter().map(|b| key_usage_name(*b)).collect(),
            extended_key_usage: self
                .extended_key_usage
                .iter()
                .map(|o| eku_name(*o))
                .collect(),
            extensions: self
                .extensions
                .iter()
                .map(|x| ResolvedExtension {
                    oid: x.oid.to_string(),
                    critical: x.critical,
                    der: hex::encode(&x.value),
                })
                .collect(),
            csr: ResolvedCsr {
                allowed_extensions: self
                    .csr_allowed_extensions
                    .iter()
                    .map(|o| o.to_string())
                    .collect(),
            },
            names: ResolvedNames {
                max_length: self.names.max_length,
                extra_chars: self.names.extra_chars.clone(),
                allow_unicode: self.names.allow_unicode,
            },
            station: station(&self.station),
            cloud: self.cloud.as_written(),
            rollover: self.rollover.as_ref().map(|r| ResolvedRollover {
                next_issuer: r.next_issuer.clone(),
                switch_at: r.switch_at.map(crate::clock::rfc3339),
            }),
        }
    }

    /// What certfab adds to or derives from this profile.
    pub fn derived(&self) -> Derived {
        let mut always = vec![
            "basicConstraints: critical, CA:FALSE".to_string(),
            "keyUsage: critical, the key_usage bits".to_string(),
            "subjectKeyIdentifier: SHA-1 of the device's public key (RFC 5280 method 1)"
                .to_string(),
            "authorityKeyIdentifier: the issuing CA's key identifier".to_string(),
        ];
        if !self.extended_key_usage.is_empty() {
            always.insert(2, "extendedKeyUsage: not critical".to_string());
        }
        if !self.san.is_empty() {
            always.push(format!(
                "subjectAltName: {}",
                if self.subject.is_empty() {
                    "critical (the subject is empty, RFC 5280 §4.2.1.6)"
                } else {
                    "not critical"
                }
            ));
        }
        Derived {
            always_added: always,
            station_key_algorithm: self.station.algorithm,
            station_capabilities: self.station.required_capabilities(),
        }
    }

    /// [`Profile::resolved`] as profile YAML, headed by the file it came from and followed
    /// by [`Profile::derived`] as comments: loadable as a profile as it stands.
    pub fn resolved_yaml(&self) -> String {
        let body = serde_yaml_ng::to_string(&self.resolved())
            .unwrap_or_else(|e| format!("# cannot render: {e}\n"));
        let d = self.derived();
        let mut out = format!(
            "# certfab profile show: {} (sha256 {})\n# Every default is written out; this text loads as the same profile.\n",
            crate::text::escape(&self.path.display().to_string()),
            hex::encode(self.sha256)
        );
        out.push_str(&body);
        out.push_str("# Derived (not settable here):\n#   certfab adds to every certificate:\n");
        for a in &d.always_added {
            out.push_str(&format!("#     {a}\n"));
        }
        out.push_str(&format!(
            "#   station generate_csr key: {}\n#   station needs adapter capabilities: {}\n",
            d.station_key_algorithm
                .unwrap_or("none (the profile allows no key a device can make)"),
            if d.station_capabilities.is_empty() {
                "none".to_string()
            } else {
                d.station_capabilities.join(", ")
            }
        ));
        out
    }
}

fn san(s: &SanEntry) -> ResolvedSan {
    let mut r = ResolvedSan {
        dns: None,
        uri: None,
        email: None,
        ip: None,
        hardware_module_name: None,
    };
    match s {
        SanEntry::Dns(t) => r.dns = Some(t.source().into()),
        SanEntry::Uri(t) => r.uri = Some(t.source().into()),
        SanEntry::Email(t) => r.email = Some(t.source().into()),
        SanEntry::Ip(t) => r.ip = Some(t.source().into()),
        SanEntry::HardwareModuleName { hw_type, hw_serial } => {
            r.hardware_module_name = Some(ResolvedHmn {
                hw_type: hw_type.to_string(),
                hw_serial: hw_serial.source().into(),
            })
        }
    }
    r
}

fn station(s: &StationRules) -> ResolvedStation {
    let mut timeouts = BTreeMap::from([("default".to_string(), step_text(s.default_timeout))]);
    for op in OPS {
        timeouts.insert(op.to_string(), step_text(s.timeout(op)));
    }
    ResolvedStation {
        device_id: match s.device_id.field() {
            Some(f) => f,
            None => "scan",
        },
        keygen: match s.keygen {
            KeyGen::Device => "device",
            KeyGen::Host => "host",
        },
        require_security: s.require_security.clone(),
        install: s
            .install
            .iter()
            .map(|i| match i {
                InstallItem::Cert => "cert",
                InstallItem::Chain => "chain",
                InstallItem::Ca => "ca",
                InstallItem::Config => "config",
            })
            .collect(),
        config: s
            .config
            .iter()
            .map(|(k, t)| (k.clone(), t.source().to_string()))
            .collect(),
        read_back: s.read_back,
        prove: match s.prove {
            Prove::Required => "required",
            Prove::IfSupported => "if-supported",
            Prove::Skip => "skip",
        },
        lock: s.lock,
        timeouts,
        retries: s.retries,
    }
}

fn key_usage_name(b: KeyUsageBit) -> &'static str {
    match b {
        KeyUsageBit::DigitalSignature => "digitalSignature",
        KeyUsageBit::NonRepudiation => "nonRepudiation",
        KeyUsageBit::KeyEncipherment => "keyEncipherment",
        KeyUsageBit::DataEncipherment => "dataEncipherment",
        KeyUsageBit::KeyAgreement => "keyAgreement",
        KeyUsageBit::KeyCertSign => "keyCertSign",
        KeyUsageBit::CrlSign => "cRLSign",
    }
}

fn eku_name(o: const_oid::ObjectIdentifier) -> String {
    use const_oid::db::rfc5280 as r;
    match o {
        r::ID_KP_CLIENT_AUTH => "clientAuth".into(),
        r::ID_KP_SERVER_AUTH => "serverAuth".into(),
        r::ID_KP_CODE_SIGNING => "codeSigning".into(),
        r::ID_KP_EMAIL_PROTECTION => "emailProtection".into(),
        r::ID_KP_TIME_STAMPING => "timeStamping".into(),
        other => other.to_string(),
    }
}

/// A profile duration in the largest unit that holds it exactly (`10y`, `90d`, `1h`, `0s`):
/// the units [`super::parse_duration`] reads, so the text parses back to the same value.
pub fn duration_text(d: time::Duration) -> String {
    let s = d.whole_seconds();
    for (unit, secs) in [("y", 365 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if s != 0 && s % secs == 0 {
            return format!("{}{unit}", s / secs);
        }
    }
    format!("{s}s")
}

/// A station step timeout in the units the `timeouts:` section reads (`2m`, `10s`, `250ms`).
fn step_text(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_back_exactly() {
        for s in ["10y", "90d", "1h", "30m", "45s", "0s", "366d", "25h", "61s"] {
            let d = if s == "0s" {
                time::Duration::ZERO
            } else {
                super::super::parse_duration(s).unwrap()
            };
            assert_eq!(duration_text(d), s);
        }
        assert_eq!(step_text(std::time::Duration::from_millis(250)), "250ms");
        assert_eq!(step_text(std::time::Duration::from_secs(120)), "2m");
    }
}
