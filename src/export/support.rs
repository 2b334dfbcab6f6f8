//! Helpers the non-AWS exporters share: the facts each one needs from a device certificate,
//! reading profile-level and per-device cloud settings, row limits, and the errors they raise.

use super::{ExportDevice, ExportInput};
use der::{Decode, Encode};
use x509_cert::Certificate;

/// Options every exporter takes.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// `--max-rows`: at most this many devices per file (a platform's own limit still applies
    /// when it is lower).
    pub max_rows: Option<usize>,
}

/// Why an export could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// A device's data does not fit the platform's rules (exit 3).
    #[error("{format}: device {device_id}: {msg}")]
    Device {
        /// Export format.
        format: &'static str,
        /// The device.
        device_id: String,
        /// What is wrong and the fix.
        msg: String,
    },
    /// A profile `cloud:` setting is missing or has the wrong type (exit 2).
    #[error("{format}: {msg}")]
    Setting {
        /// Export format.
        format: &'static str,
        /// What is wrong and the fix.
        msg: String,
    },
    /// The CA material in the manifest cannot be used (exit 3).
    #[error("{format}: CA certificate: {msg}")]
    Ca {
        /// Export format.
        format: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// The signer (HSM) refused (exit 4).
    #[error("{format}: signing failed: {source}")]
    Sign {
        /// Export format.
        format: &'static str,
        /// The HSM error.
        #[source]
        source: crate::signer::SignError,
    },
}

/// Splits `items` into files of at most `min(platform_limit, max_rows)` items. Zero is treated
/// as "no limit given" would be wrong, so callers refuse `--max-rows 0` before this.
pub fn shard<T>(items: &[T], platform_limit: Option<usize>, max_rows: Option<usize>) -> Vec<&[T]> {
    let limit = match (platform_limit, max_rows) {
        (Some(p), Some(m)) => p.min(m),
        (Some(p), None) => p,
        (None, Some(m)) => m,
        (None, None) => usize::MAX,
    }
    .max(1);
    if items.is_empty() {
        return Vec::new();
    }
    items.chunks(limit).collect()
}

/// `prefix-0001.ext`: shard file names sort in order and show how many there are.
pub fn shard_name(prefix: &str, index: usize, ext: &str) -> String {
    format!("{prefix}-{:04}.{ext}", index + 1)
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
    pub fn of(format: &'static str, d: &ExportDevice) -> Result<Self, ExportError> {
        let bad = |msg: String| ExportError::Device {
            format,
            device_id: d.device_id.clone(),
            msg,
        };
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
            .filter_map(|atv| crate::csr::any_text(&atv.value))
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
pub fn issuing_ca_der(format: &'static str, input: &ExportInput) -> Result<Vec<u8>, ExportError> {
    let pem = input.ca_chain_pem.first().ok_or_else(|| ExportError::Ca {
        format,
        msg: format!(
            "{} lists no issuing CA certificate; rebuild the manifest",
            input.manifest_path.display()
        ),
    })?;
    pem_rfc7468::decode_vec(pem.as_bytes())
        .map(|(_, der)| der)
        .map_err(|e| ExportError::Ca {
            format,
            msg: format!("the issuing CA PEM does not decode: {e}"),
        })
}

/// Profile-level cloud settings, read with the format's name in every message.
pub struct Settings<'a> {
    format: &'static str,
    input: &'a ExportInput,
}

impl<'a> Settings<'a> {
    /// Settings for `format` from `input.cloud`.
    pub fn new(format: &'static str, input: &'a ExportInput) -> Self {
        Self { format, input }
    }

    fn wrong(&self, key: &str, want: &str) -> ExportError {
        ExportError::Setting {
            format: self.format,
            msg: format!(
                "profile {}: cloud setting '{key}' must be {want}",
                self.input.profile
            ),
        }
    }

    /// An optional string.
    pub fn str(&self, key: &str) -> Result<Option<String>, ExportError> {
        match self.input.cloud.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.wrong(key, "a string")),
        }
    }

    /// A required string.
    pub fn require(&self, key: &str, what: &str) -> Result<String, ExportError> {
        self.str(key)?.ok_or_else(|| ExportError::Setting {
            format: self.format,
            msg: format!(
                "profile {} has no cloud setting '{key}' ({what}); add it under the profile's cloud: section",
                self.input.profile
            ),
        })
    }

    /// An optional boolean.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ExportError> {
        match self.input.cloud.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.wrong(key, "true or false")),
        }
    }

    /// An optional list of strings.
    pub fn list(&self, key: &str) -> Result<Option<Vec<String>>, ExportError> {
        match self.input.cloud.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => string_list(v)
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a list of strings")),
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

/// A per-device cloud string (`device.cloud[key]`), refusing a non-string value.
pub fn device_str(
    format: &'static str,
    d: &ExportDevice,
    key: &str,
) -> Result<Option<String>, ExportError> {
    match d.cloud.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ExportError::Device {
            format,
            device_id: d.device_id.clone(),
            msg: format!("cloud attribute '{key}' must be a string"),
        }),
    }
}

/// A per-device list of strings (`device.cloud[key]`).
pub fn device_list(
    format: &'static str,
    d: &ExportDevice,
    key: &str,
) -> Result<Option<Vec<String>>, ExportError> {
    match d.cloud.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => string_list(v).map(Some).ok_or_else(|| ExportError::Device {
            format,
            device_id: d.device_id.clone(),
            msg: format!("cloud attribute '{key}' must be a list of strings"),
        }),
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
    fn shard_takes_the_lower_limit() {
        let v: Vec<u32> = (0..25).collect();
        let s = shard(&v, Some(10), None);
        assert_eq!(s.iter().map(|c| c.len()).collect::<Vec<_>>(), [10, 10, 5]);
        let s = shard(&v, Some(10), Some(4));
        assert_eq!(s.len(), 7);
        assert!(s.iter().all(|c| c.len() <= 4));
        let s = shard(&v, None, None);
        assert_eq!(s.len(), 1);
        assert!(shard::<u32>(&[], Some(10), None).is_empty());
        assert_eq!(shard_name("x", 0, "json"), "x-0001.json");
    }
}
