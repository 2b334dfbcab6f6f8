//! Offline verification of a manifest and its detached signature, with every problem reported
//! with its line, and the verified content handed to exporters.

use super::format::{self, DeviceLine, Header, Trailer, FORMAT};
use super::jws::{self, VerifiedSignature};
use super::merkle;
use super::Trust;
use crate::x509::CaCert;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One thing wrong with a manifest: where (1-based line, or none for the file/signature) and
/// what.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Line number, from 1.
    pub line: Option<usize>,
    pub msg: String,
}

/// Every problem found in one manifest.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The manifest (as named on the command line).
    pub path: String,
    /// The signature file.
    pub signature: String,
    /// Problems in file order; the signature's and the file's own come with no line.
    pub problems: Vec<Problem>,
}

/// How many problems are printed; the rest are counted.
const SHOWN: usize = 50;

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "manifest {} does not verify ({} problem{}):",
            self.path,
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for p in self.problems.iter().take(SHOWN) {
            match p.line {
                Some(l) => write!(f, "\n  {}:{l}: {}", self.path, p.msg)?,
                None => write!(f, "\n  {}: {}", self.path, p.msg)?,
            }
        }
        if self.problems.len() > SHOWN {
            write!(f, "\n  … and {} more", self.problems.len() - SHOWN)?;
        }
        Ok(())
    }
}

/// One verified device: its line and its certificate's DER.
#[derive(Debug, Clone)]
pub struct VerifiedDevice {
    /// The line as written.
    pub line: DeviceLine,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
}

/// A manifest whose signature, chain, Merkle root, count and every certificate checked out.
#[derive(Debug, Clone)]
pub struct VerifiedManifest {
    pub path: PathBuf,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    pub header: Header,
    /// The devices, in file order.
    pub devices: Vec<VerifiedDevice>,
    pub trailer: Trailer,
    /// Who signed it, under which root.
    pub signature: VerifiedSignature,
    /// The issuing CA chain from the header, parsed, nearest first.
    pub ca_chain: Vec<CaCert>,
    /// The trusted root the device CA chains to.
    pub ca_root: CaCert,
}

/// The detached signature's path for a manifest: `M.jsonl` → `M.jsonl.jws`.
pub fn signature_path(manifest: &Path) -> PathBuf {
    let mut s = manifest.as_os_str().to_os_string();
    s.push(".jws");
    PathBuf::from(s)
}

/// Reads `path` and its signature (`sig`, default `path.jws`) and verifies them against
/// `trust`. A file that cannot be read is a [`super::ManifestError::Read`].
pub fn verify_file(
    path: &Path,
    sig: Option<&Path>,
    trust: &Trust,
) -> Result<VerifiedManifest, super::ManifestError> {
    let sig_path = sig
        .map(Path::to_path_buf)
        .unwrap_or_else(|| signature_path(path));
    let bytes = std::fs::read(path).map_err(|e| super::ManifestError::Read {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    let jws = match std::fs::read(&sig_path) {
        Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(super::ManifestError::Read {
                path: sig_path.display().to_string(),
                msg: e.to_string(),
            })
        }
    };
    verify_bytes(
        path,
        &sig_path.display().to_string(),
        &bytes,
        jws.as_deref(),
        &trust.roots,
    )
    .map_err(|r| super::ManifestError::Invalid(Box::new(r)))
}

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn at(&mut self, line: usize, msg: impl Into<String>) {
        self.problems.push(Problem {
            line: Some(line),
            msg: msg.into(),
        });
    }
    fn file(&mut self, msg: impl Into<String>) {
        self.problems.push(Problem {
            line: None,
            msg: msg.into(),
        });
    }
}

/// Verifies manifest bytes and the detached JWS text (None: the signature file is missing)
/// against trust anchors. All problems are collected; `Ok` only when there are none.
pub fn verify_bytes(
    path: &Path,
    sig_name: &str,
    bytes: &[u8],
    jws: Option<&str>,
    trust: &[CaCert],
) -> Result<VerifiedManifest, Report> {
    let mut c = Checker {
        problems: Vec::new(),
    };
    let report = |mut c: Checker| {
        // File-level problems first, then by line; stable, so a line's problems keep their order.
        c.problems.sort_by_key(|p| p.line);
        Report {
            path: path.display().to_string(),
            signature: sig_name.to_string(),
            problems: c.problems,
        }
    };

    // 1. The signature over the exact bytes.
    let signature = match jws {
        None => {
            c.file(format!(
                "signature file {sig_name} is missing; a manifest is only valid with its detached signature"
            ));
            None
        }
        Some(j) => match jws::verify_detached(j, bytes, trust, FORMAT) {
            Ok(s) => Some(s),
            Err(e) => {
                c.file(format!("{sig_name}: {e}"));
                None
            }
        },
    };

    // 2. Framing: LF-terminated lines, header first, trailer last.
    if bytes.is_empty() {
        c.file("the file is empty");
        return Err(report(c));
    }
    let body = match bytes.strip_suffix(b"\n") {
        Some(b) => b,
        None => {
            let n = bytes.iter().filter(|b| **b == b'\n').count() + 1;
            c.at(
                n,
                "the file does not end with a newline: it was truncated (or edited) in its last line",
            );
            bytes
        }
    };
    let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    let mut header: Option<Header> = None;
    let mut trailer: Option<(usize, Trailer)> = None;
    let mut devices: Vec<(usize, DeviceLine)> = Vec::new();
    let mut device_bytes: Vec<&[u8]> = Vec::new();
    // Decoding (canonical check, digest, schema) is per line and independent: all cores.
    let decoded = parallel_map(&lines, |raw| decode_line(raw));
    let mut last_line_reported = false;
    for (i, (raw, d)) in lines.iter().zip(decoded).enumerate() {
        let n = i + 1;
        let first = i == 0;
        let last = i + 1 == lines.len();
        let before = c.problems.len();
        match d {
            Decoded::Bad(e) => {
                c.at(n, e);
                // Still a device line for the Merkle root and count if it sits between.
                if !first && !last {
                    device_bytes.push(raw);
                }
            }
            Decoded::Header(h) if first => match h {
                Ok(h) => header = Some(h),
                Err(e) => c.at(n, format!("header: {e}")),
            },
            Decoded::Trailer(t) if last && !first => match t {
                Ok(t) => trailer = Some((n, t)),
                Err(e) => c.at(n, format!("trailer: {e}")),
            },
            Decoded::Device(d) if !first => {
                device_bytes.push(raw);
                match d {
                    Ok(d) => devices.push((n, d)),
                    Err(e) => c.at(n, format!("device line: {e}")),
                }
                if last {
                    c.at(
                        n,
                        "the file ends without a trailer line: it was truncated (or the trailer removed)",
                    );
                }
            }
            Decoded::Header(_) => c.at(
                n,
                "a header line where only line 1 may be one (lines added, duplicated or reordered)",
            ),
            Decoded::Trailer(_) => c.at(
                n,
                "a trailer line before the end of the file (lines added after it, or reordered)",
            ),
            Decoded::Device(_) => c.at(n, "a device line where the header must be (line 1)"),
            Decoded::Other(kind) => c.at(n, format!("unknown line type '{kind}'")),
        }
        if last && c.problems.len() > before {
            last_line_reported = true;
        }
    }
    if header.is_none() && !c.problems.iter().any(|p| p.line == Some(1)) {
        c.at(1, "line 1 is not the header");
    }

    // 3. Header and its CA chain.
    let mut ca_chain = Vec::new();
    let mut ca_root = None;
    if let Some(h) = &header {
        check_header(&mut c, h, &mut ca_chain, &mut ca_root, trust);
    }

    // 4. Device lines: sequence, uniqueness, and each certificate.
    let mut seen_id: HashMap<String, usize> = HashMap::new();
    let mut seen_serial: HashMap<String, usize> = HashMap::new();
    let mut seen_spki: HashMap<String, usize> = HashMap::new();
    // Certificate checks (parse, hashes, CA signature) dominate; they run on every core.
    let ca0 = ca_chain.first();
    let cert_checks = parallel_map(&devices, |(n, d)| {
        let mut own = Checker {
            problems: Vec::new(),
        };
        let der = check_cert(&mut own, *n, d, ca0);
        (own.problems, der)
    });
    let mut verified = Vec::with_capacity(devices.len());
    for ((n, d), (cert_problems, der)) in devices.into_iter().zip(cert_checks) {
        let n = &n;
        let want_seq = (*n - 1) as u64;
        if d.seq != want_seq {
            c.at(
                *n,
                format!(
                    "seq is {} where {want_seq} belongs: device lines were removed, added, duplicated or reordered before this one",
                    d.seq
                ),
            );
        }
        for (map, key, what) in [
            (&mut seen_id, &d.device_id, "device id"),
            (&mut seen_serial, &d.serial, "serial"),
            (&mut seen_spki, &d.spki_sha256, "public key (spki_sha256)"),
        ] {
            if let Some(first) = map.insert(key.clone(), *n) {
                c.at(*n, format!("{what} {key} is already on line {first}"));
                map.insert(key.clone(), first);
            }
        }
        if let Some(h) = &header {
            if !h.batches.contains(&d.batch) {
                c.at(*n, format!("batch {} is not one the header lists", d.batch));
            }
            if !h.stations.contains(&d.station) {
                c.at(
                    *n,
                    format!("station {} is not one the header lists", d.station),
                );
            }
        }
        if format::reported_state(&d.state).is_none() {
            c.at(
                *n,
                format!(
                    "state '{}' is not one a manifest reports ({})",
                    d.state,
                    crate::ledger::DeviceState::IN_MANIFEST
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        if format::KeyOrigin::parse(&d.key_origin).is_none() {
            c.at(
                *n,
                format!(
                    "key_origin '{}' is not one of {}",
                    d.key_origin,
                    format::KeyOrigin::ALL
                        .map(format::KeyOrigin::as_str)
                        .join(", ")
                ),
            );
        }
        if d.device_id.is_empty() {
            c.at(*n, "device_id is empty");
        }
        c.problems.extend(cert_problems);
        if let Some(der) = der {
            verified.push(VerifiedDevice {
                line: d,
                cert_der: der,
            });
        }
    }

    // 5. Trailer: count and Merkle root over the device lines as they are.
    match &trailer {
        Some((n, t)) => {
            if t.count != device_bytes.len() as u64 {
                c.at(
                    *n,
                    format!(
                        "count is {} but the file has {} device line(s): lines were removed or added",
                        t.count,
                        device_bytes.len()
                    ),
                );
            }
            let root = hex::encode(merkle::root(&device_bytes));
            if t.merkle_root != root {
                c.at(
                    *n,
                    format!(
                        "merkle_root {} does not match the device lines (their RFC 6962 root is {root}): a device line was changed, removed, added or reordered",
                        t.merkle_root
                    ),
                );
            }
            if let Some(Some(r)) = header.as_ref().map(|h| h.range) {
                if r.last + 1 < r.first || r.last + 1 - r.first != t.count {
                    c.at(
                        1,
                        format!(
                            "range {}..{} does not hold count {} devices",
                            r.first, r.last, t.count
                        ),
                    );
                }
            }
        }
        None => {
            if !last_line_reported {
                c.at(lines.len(), "the last line is not the trailer");
            }
        }
    }

    let (Some(header), Some((_, trailer)), Some(signature), Some(ca_root), true) =
        (header, trailer, signature, ca_root, c.problems.is_empty())
    else {
        if c.problems.is_empty() {
            c.file("the manifest is incomplete");
        }
        return Err(report(c));
    };
    Ok(VerifiedManifest {
        path: path.to_path_buf(),
        sha256: hex::encode(crate::crypto::sha256(bytes)),
        header,
        devices: verified,
        trailer,
        signature,
        ca_chain,
        ca_root,
    })
}

/// One line, decoded as far as it goes.
enum Decoded {
    /// Not canonical, digest mismatch, or not an object with a type.
    Bad(String),
    Header(Result<Header, String>),
    Device(Result<DeviceLine, String>),
    Trailer(Result<Trailer, String>),
    Other(String),
}

fn decode_line(raw: &[u8]) -> Decoded {
    let v = match format::decode_value(raw) {
        Ok(v) => v,
        Err(e) => return Decoded::Bad(e.to_string()),
    };
    let s = |e: format::LineError| e.to_string();
    match format::kind_of(&v) {
        Some("header") => Decoded::Header(format::typed(&v).map_err(s)),
        Some("device") => Decoded::Device(format::typed(&v).map_err(s)),
        Some("trailer") => Decoded::Trailer(format::typed(&v).map_err(s)),
        other => Decoded::Other(other.unwrap_or("").to_string()),
    }
}

/// `f` over `items` on up to `available_parallelism` threads, results in input order.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len().div_ceil(256).max(1));
    if threads <= 1 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

fn check_header(
    c: &mut Checker,
    h: &Header,
    ca_chain: &mut Vec<CaCert>,
    ca_root: &mut Option<CaCert>,
    trust: &[CaCert],
) {
    if h.kind != "header" {
        c.at(1, "type is not header");
    }
    if h.format != FORMAT {
        c.at(
            1,
            format!("format is '{}'; this certfab reads {FORMAT}", h.format),
        );
    }
    for (what, list) in [("batches", &h.batches), ("stations", &h.stations)] {
        let mut sorted = list.clone();
        sorted.sort();
        sorted.dedup();
        if &sorted != list || list.is_empty() {
            c.at(
                1,
                format!("{what} must be a non-empty sorted list without repeats"),
            );
        }
    }
    if time::OffsetDateTime::parse(&h.created, &time::format_description::well_known::Rfc3339)
        .is_err()
    {
        c.at(1, format!("created '{}' is not RFC 3339", h.created));
    }
    let merged = !h.merged_from.is_empty();
    if merged != (h.ledger == "merged")
        || merged && (h.sequence.is_some() || h.range.is_some() || h.prev_sha256.is_some())
        || !merged && (h.sequence.is_none() || h.range.is_none())
    {
        c.at(
            1,
            "ledger/sequence/range/prev_sha256/merged_from are inconsistent (a built manifest has a ledger id, sequence and range; a merged one has merged_from and nulls)",
        );
    }
    if h.ca_chain.is_empty() || h.ca_chain.len() != h.ca_sha256.len() {
        c.at(
            1,
            "ca_chain must be non-empty and ca_sha256 must list one hash per certificate",
        );
        return;
    }
    for (i, (pem, sha)) in h.ca_chain.iter().zip(&h.ca_sha256).enumerate() {
        let der = match pem_rfc7468::decode_vec(pem.as_bytes()) {
            Ok(("CERTIFICATE", der)) => der,
            _ => {
                c.at(1, format!("ca_chain[{i}] is not a PEM certificate"));
                return;
            }
        };
        if hex::encode(crate::crypto::sha256(&der)) != *sha {
            c.at(
                1,
                format!("ca_sha256[{i}] is not the SHA-256 of ca_chain[{i}]"),
            );
        }
        match CaCert::from_der(der, format!("ca_chain[{i}]")) {
            Ok(cert) if cert.is_ca && cert.can_sign_certs => ca_chain.push(cert),
            Ok(_) => {
                c.at(1, format!("ca_chain[{i}] is not a CA certificate"));
                return;
            }
            Err(e) => {
                c.at(1, format!("ca_chain[{i}]: {e}"));
                return;
            }
        }
    }
    match jws::chain_to_trust(&ca_chain[0], &ca_chain[1..], trust) {
        Ok(r) => *ca_root = Some(r),
        Err(e) => c.at(1, format!("the declared device CA chain (ca_chain): {e}")),
    }
}

/// Checks one device's certificate against its line and the declared CA; returns the DER.
fn check_cert(c: &mut Checker, n: usize, d: &DeviceLine, ca: Option<&CaCert>) -> Option<Vec<u8>> {
    let der = match pem_rfc7468::decode_vec(d.cert.as_bytes()) {
        Ok(("CERTIFICATE", der)) => der,
        _ => {
            c.at(n, "cert is not a PEM certificate");
            return None;
        }
    };
    let mut ok = true;
    let mut bad = |c: &mut Checker, msg: String| {
        c.at(n, msg);
        ok = false;
    };
    if crate::x509::pem(&der) != d.cert {
        bad(
            c,
            "cert is not in canonical PEM form (64-column base64, LF)".into(),
        );
    }
    if hex::encode(crate::crypto::sha256(&der)) != d.cert_sha256 {
        bad(
            c,
            "cert_sha256 is not the SHA-256 of the certificate".into(),
        );
    }
    let facts = match cert_facts(&der) {
        Ok(f) => f,
        Err(e) => {
            c.at(n, format!("certificate does not parse: {e}"));
            return None;
        }
    };
    if facts.spki_sha256 != d.spki_sha256 {
        bad(
            c,
            "spki_sha256 is not the SHA-256 of the certificate's public key".into(),
        );
    }
    if facts.serial != d.serial {
        bad(
            c,
            format!(
                "serial {} is not the certificate's ({})",
                d.serial, facts.serial
            ),
        );
    }
    if facts.not_before != d.not_before || facts.not_after != d.not_after {
        bad(
            c,
            "not_before/not_after are not the certificate's validity".into(),
        );
    }
    if let Some(ca) = ca {
        if facts.issuer_der != ca.subject_der {
            bad(
                c,
                "certificate's issuer is not the declared CA (ca_chain[0])".into(),
            );
        } else {
            let signed = crate::x509::split_signed(&der)
                .ok()
                .and_then(|(tbs, alg, sig)| {
                    let alg = crate::crypto::SignatureAlgorithm::from_identifier(&alg).ok()?;
                    ca.public_key.verify(alg, tbs, sig).ok()
                });
            if signed.is_none() {
                bad(
                    c,
                    "certificate is not signed by the declared CA (ca_chain[0])".into(),
                );
            }
        }
    }
    ok.then_some(der)
}

/// What a device line repeats from its certificate.
pub(crate) struct CertFacts {
    pub serial: String,
    pub spki_sha256: String,
    pub not_before: String,
    pub not_after: String,
    pub issuer_der: Vec<u8>,
}

/// Reads the facts a device line must agree with from a certificate.
pub(crate) fn cert_facts(der: &[u8]) -> Result<CertFacts, String> {
    use der::{Decode, Encode};
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| e.to_string())?;
    let tbs = &cert.tbs_certificate;
    let spki = tbs
        .subject_public_key_info
        .to_der()
        .map_err(|e| e.to_string())?;
    Ok(CertFacts {
        serial: hex::encode(tbs.serial_number.as_bytes()),
        spki_sha256: hex::encode(crate::crypto::sha256(&spki)),
        not_before: x509_rfc3339(&tbs.validity.not_before),
        not_after: x509_rfc3339(&tbs.validity.not_after),
        issuer_der: tbs.issuer.to_der().map_err(|e| e.to_string())?,
    })
}

/// RFC 3339 of an X.509 time, `9999-12-31T23:59:59Z` for the no-expiry value.
fn x509_rfc3339(t: &x509_cert::time::Time) -> String {
    let secs = t.to_date_time().unix_duration().as_secs() as i64;
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map(crate::clock::rfc3339)
        .unwrap_or_default()
}
