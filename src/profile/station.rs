//! The `station:` section of a profile: how `certfab station` identifies, keys, installs,
//! proves and locks devices of this class, and how long each adapter step may take.

use super::{KeyRules, Template};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Where the station takes the device id from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSource {
    /// `identify.device_id`.
    DeviceId,
    /// `identify.hw_serial`.
    HwSerial,
    /// `identify.mac`.
    Mac,
    /// `identify.chip_uid`.
    ChipUid,
    /// A label scanned into certfab's stdin (barcode scanner as keyboard).
    Scan,
}

impl IdSource {
    /// The identify member this source reads (none for `Scan`).
    pub fn field(self) -> Option<&'static str> {
        match self {
            Self::DeviceId => Some("device_id"),
            Self::HwSerial => Some("hw_serial"),
            Self::Mac => Some("mac"),
            Self::ChipUid => Some("chip_uid"),
            Self::Scan => None,
        }
    }
}

/// Who makes the device key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyGen {
    /// The device (`generate_csr`): the key never leaves it. The default.
    Device,
    /// certfab, for devices that cannot; the key is sent in `install`.
    Host,
}

/// What `install` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstallItem {
    /// `cert.pem`: the leaf.
    Cert,
    /// `chain.pem`: leaf then issuing CAs (no root).
    Chain,
    /// `ca.pem`: the root, for the device's own trust store.
    Ca,
    /// `config.json`: rendered from `station.config`.
    Config,
}

/// Whether the device must prove possession of its key after install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Prove {
    /// The adapter must offer `prove` (checked at start-up). The default.
    Required,
    /// Prove when the adapter offers it.
    IfSupported,
    /// Never (a device that cannot sign arbitrary data, e.g. an nRF91 modem key).
    Skip,
}

/// Station rules, validated.
#[derive(Debug, Clone)]
pub struct StationRules {
    /// Device id source.
    pub device_id: IdSource,
    /// Key generation.
    pub keygen: KeyGen,
    /// `generate_csr` algorithm: the first of the profile's keys a device can make (None:
    /// the profile allows none, and station mode refuses it at start-up).
    pub algorithm: Option<&'static str>,
    /// `identify.security` members that must have these values.
    pub require_security: BTreeMap<String, serde_json::Value>,
    /// Files sent by `install` (host keygen adds the key).
    pub install: Vec<InstallItem>,
    /// Device configuration, rendered with the certificate's template values.
    pub config: BTreeMap<String, Template>,
    /// Read the files back and compare hashes.
    pub read_back: bool,
    /// Proof of possession after install.
    pub prove: Prove,
    /// Send `lock` after the proof.
    pub lock: bool,
    /// Per-operation timeouts.
    pub timeouts: BTreeMap<String, Duration>,
    /// Timeout for operations not listed.
    pub default_timeout: Duration,
    /// Extra attempts of a timed-out or retryable request.
    pub retries: u32,
}

impl StationRules {
    /// The timeout for `op`.
    pub fn timeout(&self, op: &str) -> Duration {
        self.timeouts
            .get(op)
            .copied()
            .unwrap_or(self.default_timeout)
    }

    /// Adapter capabilities this profile cannot work without.
    pub fn required_capabilities(&self) -> Vec<&'static str> {
        let mut c = Vec::new();
        if self.keygen == KeyGen::Device {
            c.push("generate_csr");
        }
        if self.read_back {
            c.push("read_back");
        }
        if self.prove == Prove::Required {
            c.push("prove");
        }
        if self.lock {
            c.push("lock");
        }
        c
    }

    pub(super) fn from_raw(
        raw: RawStation,
        keys: &KeyRules,
    ) -> Result<Self, (&'static str, String)> {
        let device_id = match raw.device_id.as_deref().unwrap_or("device_id") {
            "device_id" => IdSource::DeviceId,
            "hw_serial" => IdSource::HwSerial,
            "mac" => IdSource::Mac,
            "chip_uid" => IdSource::ChipUid,
            "scan" => IdSource::Scan,
            other => {
                return Err((
                    "device_id",
                    format!("station.device_id '{other}' is not understood; use device_id, hw_serial, mac, chip_uid or scan"),
                ))
            }
        };
        let algorithm = if keys.p256 {
            Some("p256")
        } else if keys.p384 {
            Some("p384")
        } else if keys.rsa.is_some_and(|(min, _)| min <= 2048) {
            Some("rsa2048")
        } else {
            None
        };
        let keygen = raw.keygen.unwrap_or(KeyGen::Device);
        if keygen == KeyGen::Host && !keys.p256 {
            return Err((
                "keygen",
                "station.keygen: host makes P-256 keys; add p256 to keys".into(),
            ));
        }
        for (k, v) in &raw.require_security {
            if !(v.is_string() || v.is_boolean()) {
                return Err(("require_security", format!("station.require_security.{k} must be a string or true/false, as identify reports it")));
            }
        }
        let install = raw
            .install
            .unwrap_or_else(|| vec![InstallItem::Cert, InstallItem::Chain]);
        if install.is_empty() {
            return Err((
                "install",
                "station.install is empty; the device needs at least cert".into(),
            ));
        }
        if install.contains(&InstallItem::Config) && raw.config.is_empty() {
            return Err((
                "install",
                "station.install lists config but station.config is empty".into(),
            ));
        }
        let mut timeouts = BTreeMap::new();
        let mut default_timeout = Duration::from_secs(10);
        for (op, t) in &raw.timeouts {
            let d = parse_step_duration(t).map_err(|e| ("timeouts", e))?;
            if op == "default" {
                default_timeout = d;
            } else if OPS.contains(&op.as_str()) {
                timeouts.insert(op.clone(), d);
            } else {
                return Err((
                    "timeouts",
                    format!(
                        "station.timeouts.{op} is not an operation; use default or one of {}",
                        OPS.join(", ")
                    ),
                ));
            }
        }
        let retries = raw.retries.unwrap_or(2);
        if retries > 10 {
            return Err((
                "retries",
                "station.retries over 10 only hides a broken fixture; use 0..=10".into(),
            ));
        }
        Ok(Self {
            device_id,
            keygen,
            algorithm,
            require_security: raw.require_security,
            install,
            config: raw.config,
            read_back: raw.read_back.unwrap_or(true),
            prove: raw.prove.unwrap_or(Prove::Required),
            lock: raw.lock.unwrap_or(false),
            timeouts,
            default_timeout,
            retries,
        })
    }
}

/// Protocol v1 operations (docs/station-protocol.md).
pub const OPS: &[&str] = &[
    "hello",
    "wait_device",
    "identify",
    "generate_csr",
    "install",
    "read_back",
    "prove",
    "lock",
    "release",
];

/// `250ms`, `10s`, `2m`: adapter steps take milliseconds to minutes.
fn parse_step_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a timeout; write e.g. 500ms, 10s or 2m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("timeout '{s}' has unit '{unit}'; use ms, s or m")),
    };
    if d.is_zero() || d > Duration::from_secs(3600) {
        return Err(format!("timeout '{s}' must be between 1ms and 60m"));
    }
    Ok(d)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStation {
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    keygen: Option<KeyGen>,
    #[serde(default)]
    require_security: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    install: Option<Vec<InstallItem>>,
    #[serde(default)]
    config: BTreeMap<String, Template>,
    #[serde(default)]
    read_back: Option<bool>,
    #[serde(default)]
    prove: Option<Prove>,
    #[serde(default)]
    lock: Option<bool>,
    #[serde(default)]
    timeouts: BTreeMap<String, String>,
    #[serde(default)]
    retries: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_durations() {
        assert_eq!(
            parse_step_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_step_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_step_duration("0s").is_err());
        assert!(parse_step_duration("10h").is_err());
        assert!(parse_step_duration("fast").is_err());
    }
}
