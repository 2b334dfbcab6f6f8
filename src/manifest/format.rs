//! The three line types of a `certfab-manifest/1` file and their canonical encoding.
//!
//! Every line is one canonical JSON object ([`super::canon`]) followed by LF: one header, one
//! device line per device, one trailer. Each carries `line_sha256`, the SHA-256 of the same
//! line's canonical JSON without that member: it lets a verifier name the line that was
//! damaged. (It is not what makes the file tamper-evident; the Merkle root and the detached
//! signature are.)

use super::canon;
use crate::ledger::DeviceState;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{Map, Value};

/// The format identifier in the header, and the JWS `cty` of a manifest's signature.
pub const FORMAT: &str = "certfab-manifest/1";

/// First line: what the manifest covers and what it binds to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always `header`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Always [`FORMAT`].
    pub format: String,
    /// The certfab that wrote it, e.g. `certfab 0.1.0`.
    pub tool: String,
    /// Id of the ledger the devices come from (its first audit event's hash); after a merge,
    /// `merged`.
    pub ledger: String,
    /// Batch and station-shift ids covered, sorted.
    pub batches: Vec<String>,
    /// Station ids covered, sorted.
    pub stations: Vec<String>,
    /// Profile name.
    pub profile: String,
    /// SHA-256 of the profile file the devices were issued under, hex.
    pub profile_sha256: String,
    /// Tenant (the profile's `cloud.tenant`), if any.
    pub tenant: Option<String>,
    /// The issuing CA certificate then the chain above it, PEM, nearest first.
    pub ca_chain: Vec<String>,
    /// SHA-256 of each `ca_chain` certificate's DER, hex, same order.
    pub ca_sha256: Vec<String>,
    /// When it was built, RFC 3339 UTC.
    pub created: String,
    /// This manifest's number in its ledger's chain (1 = first); null after a merge.
    pub sequence: Option<u64>,
    /// Ledger-wide numbering of the devices in this manifest (continues the previous
    /// manifest's); null after a merge.
    pub range: Option<Range>,
    /// SHA-256 of the previous manifest file of the same ledger; null for the first and after a
    /// merge.
    pub prev_sha256: Option<String>,
    /// The manifests a merge combined (empty otherwise).
    pub merged_from: Vec<Source>,
    /// The profile's `cloud:` section as written (templates unrendered).
    pub cloud: Map<String, Value>,
    /// See the module docs.
    pub line_sha256: String,
}

/// A ledger-wide device range, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// First device number.
    pub first: u64,
    /// Last device number (first − 1 when the manifest has no devices).
    pub last: u64,
}

/// One input of a merge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// SHA-256 of that manifest file, hex.
    pub sha256: String,
    /// Its ledger id.
    pub ledger: String,
    /// Its sequence number in that ledger.
    pub sequence: Option<u64>,
    pub batches: Vec<String>,
    /// Its device count.
    pub count: u64,
    pub merkle_root: String,
}

/// One device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceLine {
    /// Always `device`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Position among the device lines, from 1.
    pub seq: u64,
    pub device_id: String,
    /// Certificate serial number, lower-case hex of the DER INTEGER's content octets.
    pub serial: String,
    /// SHA-256 of the certificate DER, hex.
    pub cert_sha256: String,
    /// SHA-256 of the certificate's SubjectPublicKeyInfo DER, hex.
    pub spki_sha256: String,
    /// notBefore, RFC 3339 UTC.
    pub not_before: String,
    /// notAfter, RFC 3339 UTC (`9999-12-31T23:59:59Z` for no expiry).
    pub not_after: String,
    /// `device`, `host` or `csr-file`.
    pub key_origin: String,
    /// Ledger state when the manifest was built.
    pub state: String,
    /// Batch or station shift that issued it.
    pub batch: String,
    /// Station that issued it.
    pub station: String,
    /// The certificate, PEM (LF line endings, 64-column base64).
    pub cert: String,
    /// Cloud attributes rendered from the profile's `cloud:` section.
    pub cloud: Map<String, Value>,
    /// See the module docs.
    pub line_sha256: String,
}

/// Last line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trailer {
    /// Always `trailer`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Number of device lines.
    pub count: u64,
    /// RFC 6962 Merkle Tree Hash over the device lines' bytes (without LF), hex.
    pub merkle_root: String,
    /// See the module docs.
    pub line_sha256: String,
}

/// Where a device line says the key was made: the manifest's own vocabulary (a CSR and a bare
/// public key are both a file the factory was handed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Made on the device at a station.
    Device,
    /// Made by certfab on the host.
    Host,
    /// Delivered in a file (CSR or public key).
    CsrFile,
}

impl KeyOrigin {
    /// Every value.
    pub const ALL: [KeyOrigin; 3] = [Self::Device, Self::Host, Self::CsrFile];

    /// The name a device line carries.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Host => "host",
            Self::CsrFile => "csr-file",
        }
    }

    /// The value a device line's text names, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The state a device line's text names, if it is one a manifest may report
/// ([`DeviceState::IN_MANIFEST`]).
pub fn reported_state(s: &str) -> Option<DeviceState> {
    s.parse::<DeviceState>()
        .ok()
        .filter(|st| DeviceState::IN_MANIFEST.contains(st))
}

/// Serializes a line: sets `line_sha256`, returns the canonical bytes without LF.
pub fn encode<T: Serialize>(line: &T) -> Result<String, canon::CanonError> {
    let mut v = serde_json::to_value(line).map_err(|e| canon::CanonError(e.to_string()))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| canon::CanonError("a line must be an object".into()))?;
    obj.remove("line_sha256");
    let digest = hex::encode(crate::crypto::sha256(
        canon::to_string(&Value::Object(obj.clone()))?.as_bytes(),
    ));
    obj.insert("line_sha256".into(), Value::String(digest));
    canon::to_string(&v)
}

/// Why a line does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// Bytes, JSON or canonical form.
    Canon(String),
    /// Its own digest does not match: the line was changed.
    Digest,
    /// Members or values do not fit the line type.
    Schema(String),
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Canon(m) => write!(f, "{m}"),
            Self::Digest => write!(
                f,
                "line_sha256 does not match the line's content: this line was changed"
            ),
            Self::Schema(m) => write!(f, "{m}"),
        }
    }
}

/// Parses one line (without LF): canonical form, own digest, then the line type `T`, refusing
/// missing or extra members.
pub fn decode_value(line: &[u8]) -> Result<Value, LineError> {
    let v = canon::parse_canonical(line).map_err(|e| LineError::Canon(e.0))?;
    let mut obj = match &v {
        Value::Object(o) => o.clone(),
        _ => return Err(LineError::Schema("not a JSON object".into())),
    };
    let Some(Value::String(digest)) = obj.remove("line_sha256") else {
        return Err(LineError::Schema(
            "line_sha256 is missing or not a string".into(),
        ));
    };
    let again = canon::to_string(&Value::Object(obj)).map_err(|e| LineError::Canon(e.0))?;
    if hex::encode(crate::crypto::sha256(again.as_bytes())) != digest {
        return Err(LineError::Digest);
    }
    Ok(v)
}

/// The line's `type` member.
pub fn kind_of(v: &Value) -> Option<&str> {
    v.get("type").and_then(Value::as_str)
}

/// Converts a decoded line into `T`, insisting nothing was dropped or defaulted.
pub fn typed<T: DeserializeOwned + Serialize>(v: &Value) -> Result<T, LineError> {
    let t: T = serde_json::from_value(v.clone()).map_err(|e| LineError::Schema(e.to_string()))?;
    let back = serde_json::to_value(&t).map_err(|e| LineError::Schema(e.to_string()))?;
    if &back != v {
        return Err(LineError::Schema(
            "a member is missing or has the wrong type".into(),
        ));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trip_and_edit() {
        let t = Trailer {
            kind: "trailer".into(),
            count: 2,
            merkle_root: "ab".into(),
            line_sha256: String::new(),
        };
        let line = encode(&t).unwrap();
        let v = decode_value(line.as_bytes()).unwrap();
        let back: Trailer = typed(&v).unwrap();
        assert_eq!(back.count, 2);
        let edited = line.replace("\"count\":2", "\"count\":3");
        assert_eq!(decode_value(edited.as_bytes()), Err(LineError::Digest));
    }
}
