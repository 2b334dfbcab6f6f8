//! Station adapter protocol v1 without I/O (docs/station-protocol.md): request encoding, line
//! splitting, reply classification and the typed results certfab relies on. Transports only
//! move bytes, so everything here is tested on buffers.

use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The protocol version certfab speaks.
pub const VERSION: u64 = 1;
/// Longest line accepted from an adapter.
pub const MAX_LINE: usize = 1 << 20;
/// What a device signs in `prove`, before the nonce.
pub const PROVE_CONTEXT: &[u8] = b"certfab-prove/1\n";
/// Log lines an adapter may send while one request is in flight. Generous for progress
/// messages, small enough that an adapter stuck in a logging loop cannot grow certfab or
/// the operator's log without bound.
pub const MAX_LOG_LINES: usize = 256;
/// Bytes of log lines (whole lines, as received) an adapter may send while one request is
/// in flight.
pub const MAX_LOG_BYTES: usize = 64 * 1024;

/// One request certfab sends, its parameters borrowed from the flow (a request line is
/// written straight from these, with no serde_json map in between).
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// `hello`: the versions certfab speaks, its version, the station id.
    Hello { station: &'a str },
    /// `wait_device`.
    WaitDevice { timeout_ms: u64 },
    /// `identify`.
    Identify,
    /// `generate_csr`: a new key (or the one held), of this type, for this CN.
    GenerateCsr {
        new_key: bool,
        algorithm: Option<&'a str>,
        cn: Option<&'a str>,
    },
    /// `install`.
    Install { files: &'a [InstallFile<'a>] },
    /// `read_back` of these files.
    ReadBack { names: &'a [&'a str] },
    /// `prove` with this base64 nonce.
    Prove { nonce: &'a str },
    /// `lock`.
    Lock,
    /// `release` with the verdict (`pass`/`fail`) and its reason.
    Release { result: &'a str, message: &'a str },
}

impl Request<'_> {
    /// The operation's protocol name.
    pub fn op(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "hello",
            Self::WaitDevice { .. } => "wait_device",
            Self::Identify => "identify",
            Self::GenerateCsr { .. } => "generate_csr",
            Self::Install { .. } => "install",
            Self::ReadBack { .. } => "read_back",
            Self::Prove { .. } => "prove",
            Self::Lock => "lock",
            Self::Release { .. } => "release",
        }
    }
}

/// One file of an `install` request (members in alphabetical order, see [`write_request`]).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct InstallFile<'a> {
    /// The file's text.
    pub content: &'a str,
    /// `certificate`, `chain`, `ca`, `config` or `private_key`.
    pub kind: &'a str,
    /// File name.
    pub name: &'a str,
    /// SHA-256 of `content`, hex.
    pub sha256: &'a str,
}

/// `generate_csr.subject`.
#[derive(serde::Serialize)]
struct Subject<'a> {
    #[serde(rename = "CN")]
    cn: Option<&'a str>,
}

/// A request line's object: the envelope (`id`, `op`, `v`) and the request's members.
struct Line<'a> {
    id: u64,
    req: &'a Request<'a>,
}

impl serde::Serialize for Line<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        let (id, op) = (&self.id, self.req.op());
        // Members in alphabetical order (`v` is always last): the order certfab's lines have
        // always had, since serde_json's maps sort their keys.
        match *self.req {
            Request::Hello { station } => {
                m.serialize_entry("certfab", env!("CARGO_PKG_VERSION"))?;
                m.serialize_entry("id", id)?;
                m.serialize_entry("op", op)?;
                m.serialize_entry("protocol", &[VERSION])?;
                m.serialize_entry("station", station)?;
            }
            Request::WaitDevice { timeout_ms } => {
                m.serialize_entry("id", id)?;
                m.serialize_entry("op", op)?;
                m.serialize_entry("timeout_ms", &timeout_ms)?;
            }
            Request::Identify | Request::Lock => {
                m.serialize_entry("id", id)?;
                m.serialize_entry("op", op)?;
            }
            Request::GenerateCsr {
                new_key,
                algorithm,
                cn,
            } => {
                m.serialize_entry("algorithm", &algorithm)?;
                m.serialize_entry("id", id)?;
                m.serialize_entry("new_key", &new_key)?;
                m.serialize_entry("op", op)?;
                m.serialize_entry("subject", &Subject { cn })?;
            }
            Request::Install { files } => {
                m.serialize_entry("files", files)?;
                m.serialize_entry("id", id)?;
                m.serialize_entry("op", op)?;
            }
            Request::ReadBack { names } => {
                m.serialize_entry("id", id)?;
                m.serialize_entry("names", names)?;
                m.serialize_entry("op", op)?;
            }
            Request::Prove { nonce } => {
                m.serialize_entry("id", id)?;
                m.serialize_entry("nonce", nonce)?;
                m.serialize_entry("op", op)?;
            }
            Request::Release { result, message } => {
                m.serialize_entry("id", id)?;
                m.serialize_entry("message", message)?;
                m.serialize_entry("op", op)?;
                m.serialize_entry("result", result)?;
            }
        }
        m.serialize_entry("v", &VERSION)?;
        m.end()
    }
}

/// Writes one request line (with the trailing LF) into `out`, which is cleared first: the
/// client reuses one buffer for every request and sends each line in one write.
pub fn write_request(out: &mut Vec<u8>, id: u64, req: &Request<'_>) {
    out.clear();
    // Writing into a Vec cannot fail, and every member is a string, number, bool or null.
    let _ = serde_json::to_writer(&mut *out, &Line { id, req });
    out.push(b'\n');
}

/// Splits a byte stream into lines, bounded by [`MAX_LINE`].
#[derive(Debug, Default)]
pub struct LineBuffer {
    buf: Vec<u8>,
}

impl LineBuffer {
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line without LF (and CR), `Ok(None)` if none yet, or an error when a
    /// line grows past the limit.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, String> {
        match self.buf.iter().position(|&b| b == b'\n') {
            Some(i) if i <= MAX_LINE => {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Ok(Some(line))
            }
            Some(_) => Err(format!("adapter sent a line over {MAX_LINE} bytes")),
            None if self.buf.len() > MAX_LINE => {
                Err(format!("adapter sent a line over {MAX_LINE} bytes"))
            }
            None => Ok(None),
        }
    }
}

/// How much log output one request has drawn from the adapter ([`MAX_LOG_LINES`],
/// [`MAX_LOG_BYTES`]).
#[derive(Debug, Default)]
pub struct LogBudget {
    lines: usize,
    bytes: usize,
}

impl LogBudget {
    /// Counts one line of `len` bytes; false once the request has used up its allowance.
    pub fn spend(&mut self, len: usize) -> bool {
        self.lines += 1;
        self.bytes = self.bytes.saturating_add(len);
        self.lines <= MAX_LOG_LINES && self.bytes <= MAX_LOG_BYTES
    }

    /// Lines counted past the allowance.
    pub fn over(&self) -> usize {
        self.lines.saturating_sub(MAX_LOG_LINES)
    }

    /// The reason a device fails when its adapter's log lines exceed the allowance.
    pub fn violation() -> String {
        format!(
            "protocol violation: the adapter sent more than {MAX_LOG_LINES} log lines or {} KiB of log lines while one request was in flight",
            MAX_LOG_BYTES / 1024
        )
    }
}

/// Severity of an adapter log line (`level`; anything else counts as `info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Detail for whoever debugs the adapter.
    Debug,
    /// Progress.
    Info,
    /// Something the operator should see.
    Warn,
    /// Something went wrong on the adapter's side.
    Error,
}

impl LogLevel {
    fn parse(s: Option<&str>) -> Self {
        match s {
            Some("debug") => Self::Debug,
            Some("warn") | Some("warning") => Self::Warn,
            Some("error") => Self::Error,
            _ => Self::Info,
        }
    }

    /// The protocol's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// An error reply.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AdapterError {
    /// Error code (docs/station-protocol.md "Error codes").
    pub code: String,
    /// The adapter's words.
    #[serde(default)]
    pub message: String,
    /// The same request may succeed if sent again.
    #[serde(default)]
    pub retry: bool,
}

/// One line from an adapter, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A reply to request `id`.
    Reply {
        /// Request id.
        id: u64,
        /// Success (its members are decoded from the line by [`decode`]), or the error.
        result: Result<(), AdapterError>,
    },
    /// A log line.
    Log { level: LogLevel, text: String },
    /// Not JSON, before the adapter greeted: a boot banner, skipped.
    Noise,
}

/// The members of an adapter line that say what it is. Every other member is skipped
/// without being built: a reply's result members are decoded from the same line into their
/// own type by [`decode`], so a reply is parsed into typed values once instead of into a
/// serde_json map first and from that map again.
#[derive(Default)]
struct Envelope {
    v: Option<Value>,
    id: Option<Value>,
    ok: Option<Value>,
    log: Option<Value>,
    level: Option<Value>,
    error: Option<Value>,
}

/// A member name of [`Envelope`], or another.
enum Key {
    V,
    Id,
    Ok,
    Log,
    Level,
    Error,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E>(self, k: &str) -> Result<Key, E> {
                Ok(match k {
                    "v" => Key::V,
                    "id" => Key::Id,
                    "ok" => Key::Ok,
                    "log" => Key::Log,
                    "level" => Key::Level,
                    "error" => Key::Error,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(Visit)
    }
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Envelope;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Envelope, A::Error> {
                let mut e = Envelope::default();
                while let Some(key) = map.next_key::<Key>()? {
                    let slot = match key {
                        Key::V => &mut e.v,
                        Key::Id => &mut e.id,
                        Key::Ok => &mut e.ok,
                        Key::Log => &mut e.log,
                        Key::Level => &mut e.level,
                        Key::Error => &mut e.error,
                        Key::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    // A member given twice: the last one counts, as in a serde_json map (a
                    // `null` is kept: `"log":null` is a log line).
                    *slot = Some(map.next_value()?);
                }
                Ok(e)
            }
        }
        d.deserialize_map(Visit)
    }
}

/// Classifies a line. `greeted`: the adapter has answered `hello`, so non-JSON is garbage.
pub fn parse_line(line: &[u8], greeted: bool) -> Result<Frame, String> {
    let trimmed = line.trim_ascii();
    if trimmed.is_empty() || (!greeted && trimmed.first() != Some(&b'{')) {
        return Ok(Frame::Noise);
    }
    let garbage = || format!("adapter sent garbage: {}", sample(trimmed));
    if trimmed.first() != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(trimmed) {
                Ok(_) => format!(
                    "adapter sent a JSON value that is not an object: {}",
                    sample(trimmed)
                ),
                Err(_) => garbage(),
            },
        );
    }
    // Skipped members are not checked for UTF-8 by serde_json: the whole line is, first.
    let text = std::str::from_utf8(trimmed).map_err(|_| garbage())?;
    let env: Envelope = serde_json::from_str(text).map_err(|_| garbage())?;
    if env.v.as_ref().and_then(Value::as_u64) != Some(VERSION) {
        return Err(format!("adapter line without \"v\":1: {}", sample(trimmed)));
    }
    if let Some(text) = env.log {
        return Ok(Frame::Log {
            level: LogLevel::parse(env.level.as_ref().and_then(Value::as_str)),
            text: match text {
                Value::String(s) => s,
                other => other.to_string(),
            },
        });
    }
    let Some(id) = env.id.as_ref().and_then(Value::as_u64) else {
        return Err(format!(
            "adapter reply without a numeric id: {}",
            sample(trimmed)
        ));
    };
    let result = match env.ok {
        Some(Value::Bool(true)) => Ok(()),
        Some(Value::Bool(false)) => Err(env
            .error
            .and_then(|e| serde_json::from_value(e).ok())
            .unwrap_or(AdapterError {
                code: "device_error".into(),
                message: "error reply without an error object".into(),
                retry: false,
            })),
        _ => {
            return Err(format!(
                "adapter reply without \"ok\": true/false: {}",
                sample(trimmed)
            ))
        }
    };
    Ok(Frame::Reply { id, result })
}

/// A short printable excerpt of what an adapter sent, for error messages.
pub fn sample(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]);
    let mut out: String = s.escape_debug().collect();
    if bytes.len() > 60 {
        out.push('…');
    }
    out
}

/// Decodes the result members of a reply line that [`parse_line`] classified as a success
/// into their typed form, naming the operation on failure. The envelope members (`v`, `id`,
/// `ok`) are not members of any result type, so they are skipped like any unknown member.
pub fn decode<T: for<'de> Deserialize<'de>>(op: &str, line: &[u8]) -> Result<T, String> {
    serde_json::from_slice(line)
        .map_err(|e| format!("adapter's {op} reply does not fit protocol v1: {e}"))
}

/// `hello` result.
#[derive(Debug, Clone, Deserialize)]
pub struct Hello {
    /// Chosen version.
    pub protocol: u64,
    /// Adapter name and version.
    #[serde(default)]
    pub adapter: String,
    /// Optional operations it implements.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Key types its `generate_csr` can make (`p256`, `p384`, `rsa2048`); absent: all three.
    #[serde(default)]
    pub key_types: Option<Vec<String>>,
}

/// `wait_device` result.
#[derive(Debug, Clone, Deserialize)]
pub struct Presence {
    /// A device is in the fixture.
    pub present: bool,
    /// No more devices will come.
    #[serde(default)]
    pub end: bool,
}

/// `identify` result.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Identity {
    /// Device id as the device knows it.
    #[serde(default)]
    pub device_id: Option<String>,
    /// Hardware serial.
    #[serde(default)]
    pub hw_serial: Option<String>,
    /// MAC address.
    #[serde(default)]
    pub mac: Option<String>,
    /// Chip unique id.
    #[serde(default)]
    pub chip_uid: Option<String>,
    /// Firmware version.
    #[serde(default)]
    pub firmware: Option<String>,
    /// Security state.
    #[serde(default)]
    pub security: Map<String, Value>,
    /// The key in the identity slot.
    #[serde(default)]
    pub key: Option<KeyInfo>,
    /// Free-form attributes.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// `identify.key`.
#[derive(Debug, Clone, Deserialize)]
pub struct KeyInfo {
    /// Base64 DER SubjectPublicKeyInfo.
    pub spki: String,
}

impl Identity {
    /// A member by protocol name.
    pub fn field(&self, name: &str) -> Option<&str> {
        match name {
            "device_id" => self.device_id.as_deref(),
            "hw_serial" => self.hw_serial.as_deref(),
            "mac" => self.mac.as_deref(),
            "chip_uid" => self.chip_uid.as_deref(),
            "firmware" => self.firmware.as_deref(),
            _ => None,
        }
    }

    /// `{device.NAME}` template values.
    pub fn template_values(&self) -> BTreeMap<String, String> {
        let mut v: BTreeMap<String, String> = self
            .attributes
            .iter()
            .map(|(k, x)| (format!("device.{k}"), x.clone()))
            .collect();
        for f in ["device_id", "hw_serial", "mac", "chip_uid", "firmware"] {
            if let Some(x) = self.field(f) {
                v.insert(format!("device.{f}"), x.to_string());
            }
        }
        v
    }

    /// The public key the device reports, as DER.
    pub fn spki(&self) -> Result<Option<Vec<u8>>, String> {
        self.key
            .as_ref()
            .map(|k| {
                base64::engine::general_purpose::STANDARD
                    .decode(k.spki.trim())
                    .map_err(|_| "identify.key.spki is not base64".to_string())
            })
            .transpose()
    }

    /// Security members that differ from what the profile requires: (name, wanted, reported).
    pub fn security_violations(
        &self,
        required: &BTreeMap<String, Value>,
    ) -> Vec<(String, Value, Option<Value>)> {
        required
            .iter()
            .filter(|(k, want)| self.security.get(*k) != Some(want))
            .map(|(k, want)| (k.clone(), want.clone(), self.security.get(k).cloned()))
            .collect()
    }
}

/// `generate_csr` result.
#[derive(Debug, Clone, Deserialize)]
pub struct CsrReply {
    /// PEM.
    #[serde(default)]
    pub csr: Option<String>,
    /// Base64 DER.
    #[serde(default)]
    pub csr_der: Option<String>,
}

impl CsrReply {
    /// The CSR bytes (PEM or DER; the CSR parser takes both).
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        match (&self.csr, &self.csr_der) {
            (Some(pem), _) => Ok(pem.as_bytes().to_vec()),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|_| "generate_csr: csr_der is not base64".into()),
            (None, None) => Err("generate_csr reply has neither csr nor csr_der".into()),
        }
    }
}

/// `read_back` result.
#[derive(Debug, Clone, Deserialize)]
pub struct ReadBack {
    /// name → SHA-256 hex.
    pub files: BTreeMap<String, String>,
}

/// `prove` result.
#[derive(Debug, Clone, Deserialize)]
pub struct Proof {
    /// Base64 signature.
    pub signature: String,
}

/// `lock` result.
#[derive(Debug, Clone, Deserialize)]
pub struct Locked {
    /// Must be true.
    pub locked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// How request lines were built before [`write_request`]: a serde_json map of the
    /// envelope and the parameters (which sorts its keys).
    fn old_request(id: u64, op: &str, params: Value) -> Vec<u8> {
        let mut obj = Map::new();
        obj.insert("v".into(), VERSION.into());
        obj.insert("id".into(), id.into());
        obj.insert("op".into(), op.into());
        if let Value::Object(p) = params {
            for (k, v) in p {
                obj.entry(k).or_insert(v);
            }
        }
        let mut line = serde_json::to_vec(&Value::Object(obj)).unwrap();
        line.push(b'\n');
        line
    }

    /// Every request, byte for byte as the map construction wrote it.
    #[test]
    fn request_lines_keep_their_bytes() {
        let files = [
            InstallFile {
                content: "-----BEGIN CERTIFICATE-----\nMIIB\u{1}\"\\\n",
                kind: "certificate",
                name: "cert.pem",
                sha256: "ab01",
            },
            InstallFile {
                content: "{\n  \"k\": \"ü\"\n}\n",
                kind: "config",
                name: "config.json",
                sha256: "cd02",
            },
        ];
        let names = ["cert.pem", "chain.pem"];
        let cases: Vec<(Request<'_>, Value)> = vec![
            (
                Request::Hello {
                    station: "line-1 \"a\"",
                },
                json!({"protocol": [VERSION], "certfab": env!("CARGO_PKG_VERSION"), "station": "line-1 \"a\""}),
            ),
            (
                Request::WaitDevice { timeout_ms: 2000 },
                json!({"timeout_ms": 2000u64}),
            ),
            (Request::Identify, json!({})),
            (
                Request::GenerateCsr {
                    new_key: true,
                    algorithm: Some("p256"),
                    cn: Some("SIM-0001"),
                },
                json!({"new_key": true, "algorithm": Some("p256"), "subject": {"CN": Some("SIM-0001")}}),
            ),
            (
                Request::GenerateCsr {
                    new_key: false,
                    algorithm: None,
                    cn: None,
                },
                json!({"new_key": false, "algorithm": None::<&str>, "subject": {"CN": None::<String>}}),
            ),
            (
                Request::Install { files: &files },
                json!({"files": files.iter().map(|f| json!({"name": f.name, "kind": f.kind, "content": f.content, "sha256": f.sha256})).collect::<Vec<_>>()}),
            ),
            (
                Request::Install { files: &[] },
                json!({"files": Vec::<Value>::new()}),
            ),
            (Request::ReadBack { names: &names }, json!({"names": names})),
            (
                Request::Prove { nonce: "AAEC/w==" },
                json!({"nonce": "AAEC/w=="}),
            ),
            (Request::Lock, json!({})),
            (
                Request::Release {
                    result: "fail",
                    message: "read back: \"x\"\n",
                },
                json!({"result": "fail", "message": "read back: \"x\"\n"}),
            ),
        ];
        let mut line = b"left over from the previous request".to_vec();
        for (i, (req, params)) in cases.into_iter().enumerate() {
            let id = i as u64 * 1000 + 7;
            write_request(&mut line, id, &req);
            assert_eq!(
                String::from_utf8_lossy(&line),
                String::from_utf8_lossy(&old_request(id, req.op(), params)),
                "{req:?}"
            );
        }
    }

    #[test]
    fn lines_split_and_bounded() {
        let mut b = LineBuffer::default();
        b.push(b"{\"a\":1}\r\n{\"b\"");
        assert_eq!(b.next_line().unwrap().unwrap(), b"{\"a\":1}");
        assert_eq!(b.next_line().unwrap(), None);
        b.push(b":2}\n");
        assert_eq!(b.next_line().unwrap().unwrap(), b"{\"b\":2}");
        b.push(&vec![b'x'; MAX_LINE + 1]);
        assert!(b.next_line().is_err());
    }

    #[test]
    fn frames() {
        assert_eq!(
            parse_line(b"Booting Zephyr OS", false).unwrap(),
            Frame::Noise
        );
        assert!(parse_line(b"Booting Zephyr OS", true).is_err());
        assert!(parse_line(b"{not json", false).is_err());
        let line = br#"{"v":1,"id":3,"ok":true,"present":true}"#;
        let r = parse_line(line, true).unwrap();
        let Frame::Reply {
            id: 3,
            result: Ok(()),
        } = r
        else {
            panic!("{r:?}")
        };
        let p: Presence = decode("wait_device", line).unwrap();
        assert!(p.present && !p.end);
        let e = decode::<Presence>("wait_device", br#"{"v":1,"id":3,"ok":true}"#).unwrap_err();
        assert!(
            e.starts_with(
                "adapter's wait_device reply does not fit protocol v1: missing field `present`"
            ),
            "{e}"
        );
        let r = parse_line(
            br#"{"v":1,"id":4,"ok":false,"error":{"code":"busy","retry":true}}"#,
            true,
        )
        .unwrap();
        assert!(matches!(
            r,
            Frame::Reply {
                id: 4,
                result: Err(AdapterError { retry: true, .. })
            }
        ));
        assert!(matches!(
            parse_line(br#"{"v":1,"log":"hi"}"#, true).unwrap(),
            Frame::Log { .. }
        ));
        assert!(parse_line(br#"{"v":2,"id":1,"ok":true}"#, true).is_err());
        assert!(parse_line(br#"{"v":1,"ok":true}"#, true).is_err());
        assert!(parse_line(br#"[1,2]"#, true)
            .unwrap_err()
            .contains("not an object"));
        assert!(parse_line(br#"[1,2"#, true)
            .unwrap_err()
            .contains("garbage"));
    }

    /// The envelope is read as the serde_json map read it: the last of a repeated member
    /// counts, `"log":null` is a log line, members of other types are refused with the same
    /// words, and a line that is not UTF-8 anywhere is garbage.
    #[test]
    fn envelope_reads_like_a_map() {
        let reply = |l: &[u8]| parse_line(l, true);
        assert!(matches!(
            reply(br#"{"v":1,"id":1,"id":9,"ok":false,"ok":true}"#),
            Ok(Frame::Reply {
                id: 9,
                result: Ok(())
            })
        ));
        assert_eq!(
            reply(br#"{"v":1,"log":null,"level":3}"#).unwrap(),
            Frame::Log {
                level: LogLevel::Info,
                text: "null".into()
            }
        );
        assert_eq!(
            reply(br#"{"v":1,"log":{"a":[1]},"level":"error"}"#).unwrap(),
            Frame::Log {
                level: LogLevel::Error,
                text: r#"{"a":[1]}"#.into()
            }
        );
        assert!(reply(br#"{"v":"1","id":1,"ok":true}"#)
            .unwrap_err()
            .contains("without \"v\":1"));
        assert!(reply(br#"{"v":1,"id":-1,"ok":true}"#)
            .unwrap_err()
            .contains("numeric id"));
        assert!(reply(br#"{"v":1,"id":1,"ok":"yes"}"#)
            .unwrap_err()
            .contains("\"ok\": true/false"));
        assert!(matches!(
            reply(br#"{"v":1,"id":2,"ok":false,"error":"busy"}"#),
            Ok(Frame::Reply {
                id: 2,
                result: Err(AdapterError { ref code, .. })
            }) if code == "device_error"
        ));
        let mut bad = br#"{"v":1,"id":1,"ok":true,"x":"?"}"#.to_vec();
        let q = bad.iter().position(|&b| b == b'?').unwrap();
        bad[q] = 0xff;
        assert!(reply(&bad).unwrap_err().contains("garbage"));
        assert!(reply(br#"{"v":1,"id":1,"ok":true,"x":"a"#)
            .unwrap_err()
            .contains("garbage"));
    }

    #[test]
    fn identity_checks() {
        let id: Identity = serde_json::from_value(json!({
            "hw_serial": "A1", "security": {"debug": "unlocked", "secure_boot": true},
            "attributes": {"board_rev": "C"}
        }))
        .unwrap();
        let req: BTreeMap<String, Value> = [
            ("debug".into(), json!("locked")),
            ("secure_boot".into(), json!(true)),
        ]
        .into();
        let v = id.security_violations(&req);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0, "debug");
        let t = id.template_values();
        assert_eq!(t["device.hw_serial"], "A1");
        assert_eq!(t["device.board_rev"], "C");
    }

    #[test]
    fn log_budget_counts_lines_and_bytes() {
        let mut b = LogBudget::default();
        for _ in 0..MAX_LOG_LINES {
            assert!(b.spend(10));
        }
        assert!(!b.spend(10));
        assert_eq!(b.over(), 1);
        let mut b = LogBudget::default();
        assert!(b.spend(MAX_LOG_BYTES));
        assert!(!b.spend(1));
        let Frame::Log { level, .. } =
            parse_line(br#"{"v":1,"log":"x","level":"warn"}"#, true).unwrap()
        else {
            panic!()
        };
        assert_eq!(level, LogLevel::Warn);
    }

    #[test]
    fn sample_escapes_control_bytes() {
        assert_eq!(sample(b"\x1b[2J"), "\\u{1b}[2J");
    }
}
