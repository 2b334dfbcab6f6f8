//! The site config (`certfab.yaml`): which PKCS#11 module and token, where the PIN comes from,
//! the station identity, and the CAs profiles refer to by name.

mod location;
pub use location::{LedgerLocation, PgTarget, PgTls};

use crate::pkcs11_uri::Pkcs11Uri;
use crate::secret::SecretSource;
use crate::yaml::{line_of, YamlError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    pkcs11: RawPkcs11,
    #[serde(default)]
    station: RawStation,
    #[serde(default)]
    cas: BTreeMap<String, RawCa>,
    #[serde(default)]
    profiles_dir: Option<PathBuf>,
    #[serde(default)]
    ledger: Option<String>,
    /// Secret source of a PostgreSQL ledger's password (`env:NAME` or `file:PATH`).
    #[serde(default)]
    ledger_password: Option<String>,
    /// How long a manifest build waits for another on a central ledger (`30s`, `5m`).
    #[serde(default)]
    ledger_manifest_wait: Option<String>,
    #[serde(default)]
    signer: Option<RawSigner>,
}

/// The manifest/audit signer as the site config names it: a key on the token (not a device CA
/// key) and its end-entity certificate with the chain up to the root.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigner {
    key: String,
    cert: PathBuf,
    #[serde(default)]
    chain: Vec<PathBuf>,
}

/// The resolved manifest/audit signer reference (`signer:` in the site config).
#[derive(Debug, Clone)]
pub struct SignerRef {
    /// Private key URI.
    pub key: Pkcs11Uri,
    /// The signer's end-entity certificate.
    pub cert: PathBuf,
    /// Certificates above it, nearest first (the root last).
    pub chain: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPkcs11 {
    module: PathBuf,
    token: String,
    #[serde(default)]
    pin: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    recovery_window: Option<String>,
    #[serde(default)]
    max_sessions: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStation {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    serial_prefix: Option<u8>,
}

/// A CA as the site config names it: a key on the token and its certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCa {
    /// `pkcs11:` URI of the private key.
    pub key: String,
    /// PEM certificate of this CA.
    pub cert: PathBuf,
    /// Further certificates up to (and including, if wanted) the root, nearest first.
    #[serde(default)]
    pub chain: Vec<PathBuf>,
    /// Sign with RSASSA-PSS instead of PKCS#1 v1.5 (RSA keys only).
    #[serde(default)]
    pub rsa_pss: bool,
    /// Tenant this CA belongs to (multi-tenant sites); profiles of other tenants cannot use it.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// A resolved CA reference.
#[derive(Debug, Clone)]
pub struct CaRef {
    /// Name (site config key), or the profile path for inline CAs.
    pub name: String,
    /// Private key URI.
    pub key: Pkcs11Uri,
    /// CA certificate path.
    pub cert: PathBuf,
    /// Chain above it, nearest first.
    pub chain: Vec<PathBuf>,
    /// Use RSASSA-PSS.
    pub rsa_pss: bool,
    /// Tenant, if declared.
    pub tenant: Option<String>,
}

/// The loaded site config; paths are absolute.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// The config file.
    pub path: PathBuf,
    /// PKCS#11 module.
    pub module: PathBuf,
    /// Token selector.
    pub token: Pkcs11Uri,
    /// PIN source, if the token needs a login.
    pub pin: Option<SecretSource>,
    /// Environment the module needs (e.g. SOFTHSM2_CONF), applied before loading it.
    pub module_env: BTreeMap<String, String>,
    /// Station id recorded with everything issued here.
    pub station_id: String,
    /// First serial-number byte (0x01..=0x7f) unique to this station.
    pub serial_prefix: u8,
    /// CAs by name.
    pub cas: BTreeMap<String, CaRef>,
    /// Where bare profile names are looked up.
    pub profiles_dir: Option<PathBuf>,
    /// The ledger: a SQLite file (default `ledger.sqlite` beside the config) or a central
    /// PostgreSQL database (docs/central-ledger.md).
    pub ledger: LedgerLocation,
    /// The manifest/audit signer, if configured.
    pub signer: Option<SignerRef>,
    /// How long a lost token is re-opened before a command gives up with exit 4
    /// (`pkcs11.recovery_window`, e.g. `30s` or `2m`).
    pub recovery_window: std::time::Duration,
    /// The most sessions certfab may hold on the token at once (`pkcs11.max_sessions`): for
    /// tokens whose limit is shared with other applications (a YubiHSM 2 has 16).
    pub max_sessions: Option<usize>,
}

/// A site config that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No config given.
    #[error("no site config: pass --config PATH or set CERTFAB_CONFIG (hsm-fixtures/dev-line.sh DIR makes one)")]
    Missing,
    /// Schema or value error with location.
    #[error(transparent)]
    Yaml(#[from] YamlError),
}

impl ConfigError {
    /// A site config problem is a usage error (exit 2).
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        crate::exit::ExitCode::Usage
    }
}

impl SiteConfig {
    /// Loads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let (raw, text): (RawConfig, String) = crate::yaml::load(&path)?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let err = |key: &str, msg: String| YamlError {
            path: path.clone(),
            line: line_of(&text, key),
            msg,
        };
        let token = if raw.pkcs11.token.starts_with("pkcs11:") {
            Pkcs11Uri::parse(&raw.pkcs11.token).map_err(|e| err("token", e.to_string()))?
        } else {
            Pkcs11Uri {
                token: Some(raw.pkcs11.token.clone()),
                ..Default::default()
            }
        };
        let pin = raw
            .pkcs11
            .pin
            .as_deref()
            .map(|p| SecretSource::parse(p, &base))
            .transpose()
            .map_err(|e| err("pin", e.to_string()))?;
        let recovery_window = match raw.pkcs11.recovery_window.as_deref() {
            Some(w) => parse_window(w).map_err(|m| err("recovery_window", m))?,
            None => crate::hsm::DEFAULT_RECOVERY_WINDOW,
        };
        if let Some(max) = raw.pkcs11.max_sessions {
            // The login session, one signing session, and the document signer's at the end of
            // a batch or shift.
            let least = 2 + usize::from(raw.signer.is_some());
            if max < least {
                return Err(err(
                    "max_sessions",
                    format!("pkcs11.max_sessions is {max}; certfab needs at least {least} (the login session, one signing session{}). Raise it, or free sessions on the token", if raw.signer.is_some() { ", and the document signer's" } else { "" }),
                )
                .into());
            }
        }
        let ledger_password = match raw.ledger_password.as_deref() {
            Some("prompt") => {
                return Err(err(
                    "ledger_password",
                    "ledger_password: prompt is not possible (every station and batch opens the ledger unattended); write env:NAME or file:PATH".into(),
                )
                .into())
            }
            Some(s) => Some(
                SecretSource::parse(s, &base).map_err(|e| err("ledger_password", e.to_string()))?,
            ),
            None => None,
        };
        let mut ledger = LedgerLocation::parse(
            raw.ledger.as_deref().unwrap_or("ledger.sqlite"),
            &base,
            ledger_password,
        )
        .map_err(|m| err("ledger", format!("ledger: {m}")))?;
        if let Some(w) = raw.ledger_manifest_wait.as_deref() {
            let wait = parse_duration("ledger_manifest_wait", w)
                .map_err(|m| err("ledger_manifest_wait", m))?;
            match &mut ledger {
                LedgerLocation::Postgres(t) => t.manifest_wait = wait,
                LedgerLocation::Sqlite(_) => {
                    return Err(err(
                        "ledger_manifest_wait",
                        "ledger_manifest_wait is set, but the ledger is a SQLite file, whose lock admits one process (no build ever waits for another); remove ledger_manifest_wait or set ledger: to a postgresql:// URL".into(),
                    )
                    .into())
                }
            }
        }
        let serial_prefix = raw.station.serial_prefix.unwrap_or(1);
        if !(1..=0x7f).contains(&serial_prefix) {
            return Err(err(
                "serial_prefix",
                format!("station.serial_prefix {serial_prefix} is out of range; use 1..=127 (0x01..0x7f), unique per station"),
            )
            .into());
        }
        let mut cas = BTreeMap::new();
        for (name, ca) in raw.cas {
            let key = Pkcs11Uri::parse(&ca.key).map_err(|e| err(&name, e.to_string()))?;
            if let Some(t) = &ca.tenant {
                check_tenant_name(t).map_err(|m| err("tenant", m))?;
            }
            cas.insert(
                name.clone(),
                CaRef {
                    name,
                    key: inherit_token(key, &token),
                    cert: base.join(ca.cert),
                    chain: ca.chain.into_iter().map(|p| base.join(p)).collect(),
                    rsa_pss: ca.rsa_pss,
                    tenant: ca.tenant,
                },
            );
        }
        let signer = match raw.signer {
            Some(sg) => {
                let key = Pkcs11Uri::parse(&sg.key).map_err(|e| err("signer", e.to_string()))?;
                if cas
                    .values()
                    .any(|c| c.key == inherit_token(key.clone(), &token))
                {
                    return Err(err(
                        "signer",
                        "signer.key is also a device CA key under cas:; the manifest signer must be a key of its own (hsm-fixtures/dev-line.sh makes 'manifest-signer')".into(),
                    )
                    .into());
                }
                Some(SignerRef {
                    key: inherit_token(key, &token),
                    cert: base.join(sg.cert),
                    chain: sg.chain.into_iter().map(|p| base.join(p)).collect(),
                })
            }
            None => None,
        };
        Ok(Self {
            signer,
            module: base.join(raw.pkcs11.module),
            token,
            pin,
            module_env: raw.pkcs11.env,
            recovery_window,
            max_sessions: raw.pkcs11.max_sessions,
            station_id: raw.station.id.unwrap_or_else(|| "station".into()),
            serial_prefix,
            cas,
            profiles_dir: raw.profiles_dir.map(|p| base.join(p)),
            ledger,
            path,
        })
    }

    /// Exports `pkcs11.env` into this process so the module sees it when loaded. Call before
    /// any thread is started.
    pub fn apply_module_env(&self) {
        for (k, v) in &self.module_env {
            // The token's config is for the module only, never for a child process.
            crate::process::withhold_env(k);
            std::env::set_var(k, v);
        }
    }

    /// The CA `name` from `cas:`. The error names this config and the CAs it does define;
    /// callers prefix it with what named the CA (a flag, a profile field).
    pub fn ca(&self, name: &str) -> Result<CaRef, String> {
        self.cas.get(name).cloned().ok_or_else(|| {
            format!(
                "{} does not define CA '{name}' under cas: (defined: {})",
                self.path.display(),
                self.cas.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// Resolves a profile argument: a path, or a bare name looked up in `profiles_dir`.
    pub fn profile_path(&self, arg: &str) -> PathBuf {
        let p = PathBuf::from(arg);
        if p.exists() || arg.contains('/') || arg.ends_with(".yaml") {
            return p;
        }
        self.profiles_dir
            .as_ref()
            .map(|d| d.join(format!("{arg}.yaml")))
            .filter(|p| p.exists())
            .unwrap_or(p)
    }
}

/// A key URI without token attributes uses the site's token.
pub fn inherit_token(mut key: Pkcs11Uri, token: &Pkcs11Uri) -> Pkcs11Uri {
    if key.token.is_none() && key.serial.is_none() && key.slot_id.is_none() {
        key.token = token.token.clone();
        key.serial = token.serial.clone();
        key.slot_id = token.slot_id;
    }
    key
}

/// Tenant names are short identifiers (they appear in file names and exports).
pub fn check_tenant_name(t: &str) -> Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 64
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tenant '{t}' is not a valid name; use 1-64 characters of A-Z a-z 0-9 - _ ."
        ))
    }
}

/// The longest recovery window: a line that waits longer for its HSM is better stopped and
/// re-run (nothing done is lost).
const MAX_RECOVERY_WINDOW_SECS: u64 = 3600;

/// `pkcs11.recovery_window`: whole seconds or minutes (`30s`, `2m`), at most an hour; `0s`
/// gives up at the first lost-token error.
fn parse_window(s: &str) -> Result<std::time::Duration, String> {
    parse_duration("pkcs11.recovery_window", s)
}

/// A wait in the site config (`key`): whole seconds or minutes (`30s`, `2m`), at most an hour.
fn parse_duration(key: &str, s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        _ => {
            return Err(format!(
                "{key} '{s}' is not a duration; write seconds or minutes, e.g. 30s or 2m"
            ))
        }
    };
    if num.is_empty() {
        return Err(format!(
            "{key} '{s}' is not a duration; write seconds or minutes, e.g. 30s or 2m"
        ));
    }
    // Digits only: a parse failure is an overflow, over the limit too.
    match num.parse::<u64>().ok().and_then(|n| n.checked_mul(scale)) {
        Some(secs) if secs <= MAX_RECOVERY_WINDOW_SECS => Ok(std::time::Duration::from_secs(secs)),
        _ => Err(format!(
            "{key} '{s}' is over the limit of 1 hour; stop and re-run the command instead (what was done is kept)"
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn recovery_window_config_is_bounded_seconds_or_minutes() {
        use std::time::Duration;
        assert_eq!(super::parse_window("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(super::parse_window("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(super::parse_window("0s"), Ok(Duration::ZERO));
        for bad in ["30", "s", "1h", "-1s", "1.5s"] {
            let e = super::parse_window(bad).unwrap_err();
            assert!(e.contains("e.g. 30s or 2m"), "{bad}: {e}");
        }
        let e = super::parse_window("61m").unwrap_err();
        assert!(e.contains("limit of 1 hour"), "{e}");
        assert!(super::parse_window("99999999999999999999s").is_err());
    }

    #[test]
    fn ledger_manifest_wait_is_named_in_its_errors() {
        let e = super::parse_duration("ledger_manifest_wait", "2h").unwrap_err();
        assert!(
            e.starts_with("ledger_manifest_wait '2h' is not a duration"),
            "{e}"
        );
        assert_eq!(
            super::parse_duration("ledger_manifest_wait", "5m"),
            Ok(std::time::Duration::from_secs(300))
        );
    }
}
