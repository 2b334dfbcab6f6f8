//! An export's devices read from the manifest file instead of held in memory.
//!
//! `certfab export` verifies the manifest in one streamed pass ([`crate::manifest::verify_file_with`])
//! and keeps only what is bounded: the count, the first device, and which cloud settings
//! differ between devices ([`Agreement`]). The exporters then render from a second pass over
//! the same file ([`DeviceStream::each`]), which hashes the bytes again: if they are not the
//! verified ones, the export fails and nothing it staged is renamed into place. Memory does
//! not grow with the device count (docs/performance.md "Memory against batch size").

use super::{ExportDevice, ExportError};
use crate::manifest::format::DeviceLine;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::io::BufRead;
use std::path::PathBuf;

/// Which per-device cloud values are not the same for every device, by path (each step a
/// member name; a flat top-level key such as `"aws.region"` is one step). Bounded by the
/// profile's `cloud:` section, not by the device count.
#[derive(Debug, Clone, Default)]
pub struct Agreement {
    first: Option<Map<String, Value>>,
    diverged: HashSet<Vec<String>>,
}

impl Agreement {
    /// Takes one more device's cloud values into account.
    pub fn observe(&mut self, cloud: &Map<String, Value>) {
        let Some(first) = &self.first else {
            self.first = Some(cloud.clone());
            return;
        };
        if first == cloud {
            return;
        }
        let mut path = Vec::new();
        let mut out = Vec::new();
        walk_object(Some(first), Some(cloud), &mut path, &mut out);
        self.diverged.extend(out);
    }

    /// Whether every device has the same value (or the same absence) at `path`.
    pub fn agrees(&self, path: &[&str]) -> bool {
        !self
            .diverged
            .iter()
            .any(|p| p.len() == path.len() && p.iter().zip(path).all(|(a, b)| a == b))
    }
}

fn walk_object(
    a: Option<&Map<String, Value>>,
    b: Option<&Map<String, Value>>,
    path: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
) {
    let keys: std::collections::BTreeSet<&String> = a
        .iter()
        .flat_map(|m| m.keys())
        .chain(b.iter().flat_map(|m| m.keys()))
        .collect();
    for k in keys {
        let (x, y) = (a.and_then(|m| m.get(k)), b.and_then(|m| m.get(k)));
        if x == y {
            continue;
        }
        path.push(k.clone());
        out.push(path.clone());
        walk_object(
            x.and_then(Value::as_object),
            y.and_then(Value::as_object),
            path,
            out,
        );
        path.pop();
    }
}

/// The verified manifest's devices, read again from its file on demand.
#[derive(Debug, Clone)]
pub struct DeviceStream {
    /// The manifest file.
    pub path: PathBuf,
    /// The verified SHA-256 of that file, hex: a second pass must see the same bytes.
    pub sha256: String,
    /// Device lines in it.
    pub count: usize,
    /// The first device (class-level settings are read from it when all devices agree).
    pub first: Option<ExportDevice>,
    /// Where the devices' cloud values differ.
    pub agreement: Agreement,
}

impl DeviceStream {
    /// An empty stream over `path` (whose verified hash is `sha256`), filled by
    /// [`DeviceStream::observe`] during the verifying pass.
    pub fn new(path: PathBuf, sha256: String) -> Self {
        Self {
            path,
            sha256,
            count: 0,
            first: None,
            agreement: Agreement::default(),
        }
    }

    /// Takes one verified device into account (the verifying pass).
    pub fn observe(&mut self, d: &crate::manifest::verify::VerifiedDevice) {
        self.count += 1;
        self.agreement.observe(&d.line.cloud);
        if self.first.is_none() {
            self.first = Some(device(d.line.clone(), d.cert_der.clone()));
        }
    }

    /// Hands every device to `f` in manifest order, from a new pass over the file; fails if
    /// the file is no longer the verified one (checked when the pass ends, before anything
    /// rendered from it is renamed into place).
    pub fn each(
        &self,
        mut f: impl FnMut(&ExportDevice) -> Result<(), ExportError>,
    ) -> Result<(), ExportError> {
        use sha2::Digest;
        let changed = |why: String| {
            ExportError::Input(format!(
                "the manifest {} changed while it was exported ({why}); nothing was written: export again",
                self.path.display()
            ))
        };
        let file = std::fs::File::open(&self.path).map_err(|e| changed(e.to_string()))?;
        let mut reader = std::io::BufReader::with_capacity(256 * 1024, file);
        let mut hash = sha2::Sha256::new();
        let mut line = Vec::new();
        let mut n = 0usize;
        let mut seen = 0usize;
        loop {
            line.clear();
            let got = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| changed(e.to_string()))?;
            if got == 0 {
                break;
            }
            hash.update(&line);
            n += 1;
            // Line 1 is the header; the trailer is told apart by its "type" member.
            if n == 1 || !is_device(&line) {
                continue;
            }
            let body = line.strip_suffix(b"\n").unwrap_or(&line);
            let d: DeviceLine = serde_json::from_slice(body)
                .map_err(|e| changed(format!("line {n} no longer decodes: {e}")))?;
            if d.kind != "device" {
                continue;
            }
            let der = pem_rfc7468::decode_vec(d.cert.as_bytes())
                .map(|(_, der)| der)
                .map_err(|e| changed(format!("line {n}: certificate: {e}")))?;
            seen += 1;
            f(&device(d, der))?;
        }
        if hex::encode(hash.finalize()) != self.sha256 || seen != self.count {
            return Err(changed("its SHA-256 is no longer the verified one".into()));
        }
        Ok(())
    }
}

/// Whether a manifest line is a device line (its `type` member says so).
fn is_device(line: &[u8]) -> bool {
    line.windows(br#""type":"device""#.len())
        .any(|w| w == br#""type":"device""#)
}

/// A verified device line as exporters see it.
pub fn device(d: DeviceLine, cert_der: Vec<u8>) -> ExportDevice {
    ExportDevice {
        seq: d.seq,
        device_id: d.device_id,
        serial: d.serial,
        cert_der,
        cert_pem: d.cert,
        cert_sha256: d.cert_sha256,
        spki_sha256: d.spki_sha256,
        not_before: d.not_before,
        not_after: d.not_after,
        key_origin: d.key_origin,
        state: d.state,
        cloud: d.cloud,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(seq: u64, id: &str) -> String {
        let pem = crate::x509::pem(&[0x30, 0x03, 0x02, 0x01, seq as u8]);
        let mut v = json!({
            "type": "device", "seq": seq, "device_id": id, "serial": "01",
            "cert_sha256": "", "spki_sha256": "", "not_before": "", "not_after": "",
            "key_origin": "host", "state": "signed", "batch": "b", "station": "s",
            "cert": pem, "cloud": {"k": id}, "line_sha256": "",
        });
        v["seq"] = json!(seq);
        format!("{v}\n")
    }

    /// The second pass hands over every device line in order, and refuses a file that is not
    /// the verified one any more (its hash differs) after the pass, so nothing rendered from
    /// it is renamed into place.
    #[test]
    fn the_second_pass_reads_every_device_and_refuses_a_changed_file() {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let text = format!(
            "{{\"type\":\"header\"}}\n{}{}{{\"count\":2,\"type\":\"trailer\"}}\n",
            line(1, "a"),
            line(2, "b")
        );
        std::fs::write(&path, &text).unwrap();
        let sha = hex::encode(sha2::Sha256::digest(text.as_bytes()));
        let mut s = DeviceStream::new(path.clone(), sha);
        s.count = 2;
        let mut seen = Vec::new();
        s.each(|d| {
            seen.push((d.seq, d.device_id.clone(), d.cert_der.clone()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            [
                (1, "a".to_string(), vec![0x30, 0x03, 0x02, 0x01, 1]),
                (2, "b".to_string(), vec![0x30, 0x03, 0x02, 0x01, 2])
            ]
        );
        // The file changed after it was verified: same number of devices, other bytes.
        std::fs::write(&path, text.replace("\"k\":\"b\"", "\"k\":\"c\"")).unwrap();
        let e = s.each(|_| Ok(())).unwrap_err();
        assert!(
            e.to_string().contains("changed while it was exported"),
            "{e}"
        );
        assert_eq!(e.exit_code(), crate::exit::ExitCode::Rejected);
    }

    #[test]
    fn agreement_names_the_paths_that_differ() {
        let mut a = Agreement::default();
        let m = |v: Value| v.as_object().unwrap().clone();
        a.observe(&m(
            json!({"aws": {"region": "r", "thing_name": "a"}, "x.y": 1}),
        ));
        a.observe(&m(
            json!({"aws": {"region": "r", "thing_name": "b"}, "x.y": 1}),
        ));
        assert!(a.agrees(&["aws", "region"]));
        assert!(a.agrees(&["x.y"]));
        assert!(!a.agrees(&["aws", "thing_name"]));
        assert!(!a.agrees(&["aws"]));
        a.observe(&m(json!({"aws": "flat"})));
        assert!(!a.agrees(&["aws", "region"]));
        assert!(!a.agrees(&["x.y"]));
    }
}
