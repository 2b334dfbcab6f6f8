//! Helpers the non-AWS exporters share: the facts each one needs from a device certificate,
//! typed reads of profile-level and per-device cloud settings, and row limits.

use super::{ExportDevice, ExportError, ExportInput, ExportOptions, Format};
use der::{Decode, Encode};
use x509_cert::Certificate;

/// The file limit for a platform that takes at most `platform` rows per file (or call):
/// `--max-rows` when it is lower, else the platform's.
pub fn row_limit(platform: Option<usize>, opts: &ExportOptions) -> Option<usize> {
    match (platform, opts.max_rows) {
        (Some(p), Some(m)) => Some(p.min(m)),
        (p, m) => p.or(m),
    }
}

/// A device-level refusal, naming the format.
pub fn device_error(format: &str, d: &ExportDevice, why: String) -> ExportError {
    ExportError::Device {
        device_id: d.device_id.clone(),
        seq: d.seq,
        why: format!("{format}: {why}"),
    }
}

/// What the exporters need from one device certificate, parsed once.
pub struct CertFacts {
    /// The parsed certificate.
    pub cert: Certificate,
    /// The subject's commonName, if it has exactly one.
    pub common_name: Option<String>,
    /// SubjectPublicKeyInfo DER.
    pub spki_der: Vec<u8>,
}

impl CertFacts {
    /// Parses a device's DER certificate.
    pub fn of(format: Format, d: &ExportDevice) -> Result<Self, ExportError> {
        let bad = |msg: String| device_error(format.name(), d, msg);
        let cert = Certificate::from_der(&d.cert_der)
            .map_err(|e| bad(format!("certificate does not parse: {e}")))?;
        let spki_der = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| bad(format!("public key does not encode: {e}")))?;
        let cns: Vec<String> = cert
            .tbs_certificate
            .subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .filter(|atv| atv.oid == const_oid::db::rfc4519::CN)
            .filter_map(|atv| crate::x509::any_text(&atv.value))
            .collect();
        let common_name = if cns.len() == 1 {
            cns.into_iter().next()
        } else {
            None
        };
        Ok(Self {
            cert,
            common_name,
            spki_der,
        })
    }
}

/// The issuing CA (first of `ca_chain_pem`) as DER.
pub fn issuing_ca_der(format: Format, input: &ExportInput) -> Result<Vec<u8>, ExportError> {
    let pem = input.ca_chain_pem.first().ok_or_else(|| {
        ExportError::Input(format!(
            "{}: {} lists no issuing CA certificate; rebuild the manifest",
            format.name(),
            input.manifest_path.display()
        ))
    })?;
    pem_rfc7468::decode_vec(pem.as_bytes())
        .map(|(_, der)| der)
        .map_err(|e| {
            ExportError::Input(format!(
                "{}: the issuing CA PEM in the manifest does not decode: {e}",
                format.name()
            ))
        })
}

/// Profile-level cloud settings (`--set` first, then the profile's `cloud:` section, flat
/// or nested keys), with the value types checked.
pub struct Settings<'a> {
    format: Format,
    input: &'a ExportInput,
    opts: &'a ExportOptions,
}

impl<'a> Settings<'a> {
    /// Settings for `format`.
    pub fn new(format: Format, input: &'a ExportInput, opts: &'a ExportOptions) -> Self {
        Self {
            format,
            input,
            opts,
        }
    }

    /// An optional string (numbers and booleans in their text form).
    pub fn str(&self, key: &str) -> Result<Option<String>, ExportError> {
        match super::setting(self.input, self.opts, key)? {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                Ok(Some(v.to_string()))
            }
            Some(v) => Err(ExportError::BadSetting {
                key: key.into(),
                value: v.to_string(),
                why: format!("{} takes a single text value here", self.format.name()),
            }),
        }
    }

    /// An optional boolean.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ExportError> {
        match super::setting(self.input, self.opts, key)? {
            None => Ok(None),
            Some(_) => super::setting_bool(self.input, self.opts, key, false).map(Some),
        }
    }

    /// An optional list of strings (`--set` takes it comma-separated).
    pub fn list(&self, key: &str) -> Result<Option<Vec<String>>, ExportError> {
        super::setting_list(self.input, self.opts, key)
    }

    /// A refusal of `key`'s value.
    pub fn bad(&self, key: &str, value: &str, why: String) -> ExportError {
        ExportError::BadSetting {
            key: key.into(),
            value: value.into(),
            why,
        }
    }

    /// A setting the format cannot do without.
    pub fn missing(&self, key: &str, why: &str) -> ExportError {
        ExportError::MissingSetting {
            format: self.format.name(),
            key: key.into(),
            why: why.into(),
        }
    }
}

/// A JSON list of strings, or `None` if `v` is anything else.
pub fn string_list(v: &serde_json::Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|x| x.as_str().map(str::to_string))
        .collect()
}

/// Refuses a second device with the same platform identifier (each platform keys its
/// records by one), in memory that does not grow with the batch: the identifiers are held
/// exactly up to [`Unique::EXACT`]; beyond that a fixed-size Bloom filter takes over, and an
/// identifier it may have seen is kept as a suspect for [`Unique::confirm`], a second pass that
/// names the devices of a real repeat (the same error, found when the pass ends).
pub struct Unique {
    exact: Option<std::collections::HashMap<String, String>>,
    bloom: Vec<u64>,
    /// (identifier, manifest position of the device that may repeat it).
    suspects: Vec<(String, u64)>,
    what: &'static str,
}

impl Default for Unique {
    fn default() -> Self {
        Self {
            exact: Some(std::collections::HashMap::new()),
            bloom: Vec::new(),
            suspects: Vec::new(),
            what: "",
        }
    }
}

impl Unique {
    /// Identifiers held exactly before the filter takes over.
    pub const EXACT: usize = 50_000;
    /// The filter's size in bits (4 MiB): about one false suspect in a thousand devices at a
    /// million devices.
    const BITS: usize = 32 * 1024 * 1024;

    fn probes(value: &str) -> [usize; 3] {
        let h = crate::crypto::sha256(value.as_bytes());
        let at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[i * 8..i * 8 + 8]);
            (u64::from_le_bytes(b) as usize) % Self::BITS
        };
        [at(0), at(1), at(2)]
    }

    fn bloom_insert(&mut self, value: &str) -> bool {
        let mut all = true;
        for p in Self::probes(value) {
            let (w, b) = (p / 64, 1u64 << (p % 64));
            all &= self.bloom[w] & b != 0;
            self.bloom[w] |= b;
        }
        all
    }

    /// Records `value` (`what` names it) for device `d`, or says which device already has it.
    pub fn check(
        &mut self,
        format: Format,
        d: &ExportDevice,
        what: &'static str,
        value: &str,
    ) -> Result<(), ExportError> {
        self.what = what;
        self.check_with(d, value, |other| {
            repeat_error(format, d, what, value, other)
        })
    }

    /// [`Unique::check`] with the format's own refusal (`err` gets the other device's id).
    pub fn check_with(
        &mut self,
        d: &ExportDevice,
        value: &str,
        err: impl FnOnce(&str) -> ExportError,
    ) -> Result<(), ExportError> {
        if let Some(exact) = &mut self.exact {
            match exact.insert(value.to_string(), d.device_id.clone()) {
                Some(other) => return Err(err(&other)),
                None if exact.len() < Self::EXACT => return Ok(()),
                None => {
                    let held = self.exact.take().unwrap_or_default();
                    self.bloom = vec![0; Self::BITS / 64];
                    for k in held.keys() {
                        self.bloom_insert(k);
                    }
                    return Ok(());
                }
            }
        }
        if self.bloom_insert(value) {
            self.suspects.push((value.to_string(), d.seq));
        }
        Ok(())
    }

    /// After a pass that [`Unique::check`]ed every device: when the filter flagged any
    /// identifier, a second pass over the devices (`value` gives each one's identifier again)
    /// finds whether it really repeats, and refuses the first device that repeats one.
    pub fn confirm(
        self,
        format: Format,
        input: &ExportInput,
        value: impl FnMut(&ExportDevice) -> Result<String, ExportError>,
    ) -> Result<(), ExportError> {
        let what = self.what;
        self.confirm_with(input, value, |d, v, other| {
            repeat_error(format, d, what, v, other)
        })
    }

    /// [`Unique::confirm`] with the format's own refusal (`err` gets the repeating device,
    /// the identifier and the other device's id).
    pub fn confirm_with(
        self,
        input: &ExportInput,
        mut value: impl FnMut(&ExportDevice) -> Result<String, ExportError>,
        err: impl Fn(&ExportDevice, &str, &str) -> ExportError,
    ) -> Result<(), ExportError> {
        if self.suspects.is_empty() {
            return Ok(());
        }
        let suspect_at: std::collections::HashSet<u64> =
            self.suspects.iter().map(|(_, seq)| *seq).collect();
        let mut first: std::collections::HashMap<String, Option<String>> =
            self.suspects.into_iter().map(|(v, _)| (v, None)).collect();
        let mut found: Option<ExportError> = None;
        input.each_device(|d| {
            if found.is_some() {
                return Ok(());
            }
            let v = value(d)?;
            let Some(slot) = first.get_mut(&v) else {
                return Ok(());
            };
            match slot {
                None => *slot = Some(d.device_id.clone()),
                Some(other) if suspect_at.contains(&d.seq) => {
                    found = Some(err(d, &v, other));
                }
                Some(_) => {}
            }
            Ok(())
        })?;
        found.map_or(Ok(()), Err)
    }
}

fn repeat_error(
    format: Format,
    d: &ExportDevice,
    what: &str,
    value: &str,
    other: &str,
) -> ExportError {
    device_error(
        format.name(),
        d,
        format!("{what} '{value}' is also device {other}'s; the platform keys its records by it"),
    )
}

/// A per-device setting by dotted key (`azure.registration_id`): `--set` first, then the
/// device's rendered `cloud` values ([`super::device_setting`]: flat or nested, then the key's
/// last part at the top level, e.g. `registration_id`), then the profile's `cloud:` section
/// as the manifest header records it.
/// Per-device values come from the profile's templates rendered when the manifest was built
/// (e.g. `registration_id: "{cert.CN}"`).
pub fn device_value(
    input: &ExportInput,
    opts: &ExportOptions,
    d: &ExportDevice,
    key: &str,
) -> Option<serde_json::Value> {
    if let Some(v) = opts.settings.get(key) {
        return Some(serde_json::Value::String(v.clone()));
    }
    if let Some(v) = super::device_setting(d, key) {
        return Some(v.clone());
    }
    // Not rendered for this device: the profile's section as the manifest header records it.
    input.cloud.get(key).cloned().or_else(|| {
        let mut parts = key.split('.');
        let mut cur = input.cloud.get(parts.next()?)?;
        for p in parts {
            cur = cur.get(p)?;
        }
        Some(cur.clone())
    })
}

/// A per-device string setting ([`device_value`]), refusing a non-string value.
pub fn device_str(
    format: Format,
    input: &ExportInput,
    opts: &ExportOptions,
    d: &ExportDevice,
    key: &str,
) -> Result<Option<String>, ExportError> {
    match device_value(input, opts, d, key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(v @ serde_json::Value::Number(_)) => Ok(Some(v.to_string())),
        Some(_) => Err(device_error(
            format.name(),
            d,
            format!("cloud setting '{key}' must be a string"),
        )),
    }
}

/// A per-device list of strings ([`device_value`]; `--set` takes it comma-separated).
pub fn device_list(
    format: Format,
    input: &ExportInput,
    opts: &ExportOptions,
    d: &ExportDevice,
    key: &str,
) -> Result<Option<Vec<String>>, ExportError> {
    match device_value(input, opts, d, key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if opts.settings.contains_key(key) => Ok(Some(
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        )),
        Some(v) => string_list(&v).map(Some).ok_or_else(|| {
            device_error(
                format.name(),
                d,
                format!("cloud setting '{key}' must be a list of strings"),
            )
        }),
    }
}

/// A per-device JSON object ([`device_value`]), e.g. twin tags or Hono `ext`.
pub fn device_object(
    format: Format,
    input: &ExportInput,
    opts: &ExportOptions,
    d: &ExportDevice,
    key: &str,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, ExportError> {
    match device_value(input, opts, d, key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(device_error(
            format.name(),
            d,
            format!("cloud setting '{key}' must be a mapping"),
        )),
    }
}

/// Standard base64 (with padding), as most platform APIs take binary fields.
pub fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// base64url without padding (JOSE).
pub fn b64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// RFC 3339 (UTC, seconds) for an X.509 time; `9999-12-31T23:59:59Z` for "no expiry".
pub fn x509_time_rfc3339(t: &x509_cert::time::Time) -> String {
    let dt = t.to_date_time();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minutes(),
        dt.seconds()
    )
}

/// One JSON value per line, each line ending in `\n`.
pub fn json_lines(values: &[serde_json::Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        // A serde_json::Value always serializes.
        out.extend_from_slice(v.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// Pretty JSON with a trailing newline.
pub fn pretty(v: &serde_json::Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lower_limit_wins() {
        let o = |m| ExportOptions {
            max_rows: m,
            ..Default::default()
        };
        assert_eq!(row_limit(Some(10), &o(None)), Some(10));
        assert_eq!(row_limit(Some(10), &o(Some(4))), Some(4));
        assert_eq!(row_limit(Some(10), &o(Some(40))), Some(10));
        assert_eq!(row_limit(None, &o(Some(4))), Some(4));
        assert_eq!(row_limit(None, &o(None)), None);
    }
}
