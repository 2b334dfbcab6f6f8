//! Offline verification of a manifest and its detached signature, with every problem reported
//! with its line, and the verified content handed to exporters.

use super::format::{self, DeviceLine, Header, Trailer, FORMAT};
use super::jws::{self, VerifiedSignature};
use super::merkle;
use super::repeats::{self, Repeats};
use super::Trust;
use crate::x509::CaCert;
use std::collections::{BTreeMap, HashMap};
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
    /// How many verified devices are in each ledger state.
    pub states: BTreeMap<String, u64>,
}

/// The detached signature's path for a manifest: `M.jsonl` → `M.jsonl.jws`.
pub fn signature_path(manifest: &Path) -> PathBuf {
    let mut s = manifest.as_os_str().to_os_string();
    s.push(".jws");
    PathBuf::from(s)
}

/// Reads `path` and its signature (`sig`, default `path.jws`) and verifies them against
/// `trust`, keeping every verified device in [`VerifiedManifest::devices`]. A file that cannot
/// be read is a [`super::ManifestError::Read`].
pub fn verify_file(
    path: &Path,
    sig: Option<&Path>,
    trust: &Trust,
) -> Result<VerifiedManifest, super::ManifestError> {
    let mut devices = Vec::new();
    let mut v = verify_file_with(path, sig, trust, |d| devices.push(d))?;
    v.devices = devices;
    Ok(v)
}

/// [`verify_file`] without holding the devices: the file is read once in pieces and every
/// device that checks out is handed to `sink` as its line is reached (before the verdict:
/// only what `sink` gathered for an `Ok` is verified). [`VerifiedManifest::devices`] stays
/// empty. Memory does not grow with the number of devices (docs/performance.md "Memory").
pub fn verify_file_with(
    path: &Path,
    sig: Option<&Path>,
    trust: &Trust,
    sink: impl FnMut(VerifiedDevice),
) -> Result<VerifiedManifest, super::ManifestError> {
    verify_file_into(path, sig, trust, sink, &mut None)
}

/// [`verify_file_with`], handing the filter of the device keys it saw to `keys` (for the
/// checks across manifests: `manifest verify A B …` and `manifest merge`).
pub(crate) fn verify_file_into(
    path: &Path,
    sig: Option<&Path>,
    trust: &Trust,
    sink: impl FnMut(VerifiedDevice),
    keys: &mut Option<repeats::Filter>,
) -> Result<VerifiedManifest, super::ManifestError> {
    let sig_path = sig
        .map(Path::to_path_buf)
        .unwrap_or_else(|| signature_path(path));
    let read_err = |e: std::io::Error| super::ManifestError::Read {
        path: path.display().to_string(),
        msg: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
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
    let sig_name = sig_path.display().to_string();
    let mut v = Verifier::new(path, &sig_name, jws.as_deref(), &trust.roots);
    let mut sink = sink;
    feed(
        &mut v,
        std::io::BufReader::with_capacity(256 * 1024, file),
        &mut sink,
    )
    .map_err(read_err)?;
    let rescan = || -> std::io::Result<Box<dyn std::io::BufRead>> {
        Ok(Box::new(std::io::BufReader::with_capacity(
            256 * 1024,
            std::fs::File::open(path)?,
        )))
    };
    v.finish_into(&mut sink, rescan, keys)
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
}

/// Feeds `reader` to `v` line by line (a line is never held beyond its chunk).
fn feed(
    v: &mut Verifier<'_>,
    mut reader: impl std::io::BufRead,
    sink: &mut impl FnMut(VerifiedDevice),
) -> std::io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        v.push(&line, sink);
    }
}

/// Verifies a manifest certfab is writing (its staged temporary, read back) with its detached
/// signature `jws` as an auditor will, before it is renamed into place: `manifest build` and
/// `manifest merge` check what they made without holding it. `Err` only when the temporary
/// cannot be read back.
pub(crate) fn verify_staged(
    file: &mut crate::output::StagedFile,
    path: &Path,
    sig_name: &str,
    jws: &str,
    trust: &[CaCert],
) -> Result<Result<VerifiedManifest, Report>, super::ManifestError> {
    let werr = |e: crate::output::WriteError| super::ManifestError::Write {
        path: e.path.display().to_string(),
        msg: e.msg,
    };
    let mut verifier = Verifier::new(path, sig_name, Some(jws), trust);
    let back = std::io::BufReader::with_capacity(256 * 1024, file.read_back().map_err(werr)?);
    feed(&mut verifier, back, &mut |_| {}).map_err(|e| super::ManifestError::Write {
        path: path.display().to_string(),
        msg: format!("cannot read its temporary back: {e}"),
    })?;
    let rescan = file.read_back().map_err(werr)?;
    Ok(verifier.finish(&mut |_| {}, move || {
        Ok(Box::new(std::io::BufReader::new(rescan)) as Box<dyn std::io::BufRead>)
    }))
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
    let mut v = Verifier::new(path, sig_name, jws, trust);
    let mut devices = Vec::new();
    let mut sink = |d| devices.push(d);
    // Reading a slice cannot fail.
    let _ = feed(&mut v, bytes, &mut sink);
    let mut m = v.finish(&mut sink, || {
        Ok(Box::new(bytes) as Box<dyn std::io::BufRead>)
    })?;
    m.devices = devices;
    Ok(m)
}

/// Device lines decoded and checked together (on every core); the lines of one chunk are all
/// that is held of the file.
const CHUNK: usize = 1024;

/// Where a problem sorts within its line: the order the checks run in when the whole file is
/// at hand (framing, header, sequence, repeats, values, certificate, trailer), whatever order
/// the streamed checks find them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Signature,
    Framing,
    Decode,
    NotHeader,
    Header,
    Seq,
    Repeat,
    Values,
    Cert,
    Trailer,
    Rescan,
    Incomplete,
}

/// Checks a manifest fed line by line ([`Verifier::push`]) and then finished
/// ([`Verifier::finish`]): the signature over a streamed hash, the Merkle root over a stack of
/// subtree hashes, repeats of device id, serial and key through a fixed-size filter whose
/// hits a second pass confirms. What is held does not grow with the device count.
pub struct Verifier<'t> {
    path: PathBuf,
    sig_name: String,
    trust: &'t [CaCert],
    problems: Vec<(Option<usize>, Stage, String)>,
    signature: Option<jws::Verifying>,
    file_hash: sha2::Sha256,
    /// Lines seen (the last one may still be held back).
    lines: usize,
    /// The line seen last, held until the next one shows it was not the last.
    held: Option<Vec<u8>>,
    /// Whether the held line ended with LF.
    held_terminated: bool,
    chunk: Vec<(usize, Vec<u8>)>,
    header: Option<Header>,
    header_checked: bool,
    ca_chain: Vec<CaCert>,
    ca_root: Option<CaCert>,
    trailer: Option<(usize, Trailer)>,
    merkle: merkle::Stream,
    device_lines: u64,
    last_line_reported: bool,
    repeats: Repeats,
    states: BTreeMap<String, u64>,
}

impl<'t> Verifier<'t> {
    /// A verifier of the manifest `path` whose signature file `sig_name` holds `jws` (None:
    /// missing).
    pub fn new(path: &Path, sig_name: &str, jws: Option<&str>, trust: &'t [CaCert]) -> Self {
        let mut v = Self {
            path: path.to_path_buf(),
            sig_name: sig_name.to_string(),
            trust,
            problems: Vec::new(),
            signature: None,
            file_hash: sha2::Sha256::default(),
            lines: 0,
            held: None,
            held_terminated: true,
            chunk: Vec::with_capacity(CHUNK),
            header: None,
            header_checked: false,
            ca_chain: Vec::new(),
            ca_root: None,
            trailer: None,
            merkle: merkle::Stream::default(),
            device_lines: 0,
            last_line_reported: false,
            repeats: Repeats::new(),
            states: BTreeMap::new(),
        };
        // 1. The signature over the exact bytes (its payload streams in with the lines).
        match jws {
            None => v.file(
                Stage::Signature,
                format!(
                    "signature file {sig_name} is missing; a manifest is only valid with its detached signature"
                ),
            ),
            Some(j) => match jws::start_verifying(j, trust, FORMAT) {
                Ok(s) => v.signature = Some(s),
                Err(e) => v.file(Stage::Signature, format!("{sig_name}: {e}")),
            },
        }
        v
    }

    fn at(&mut self, line: usize, stage: Stage, msg: impl Into<String>) {
        self.problems.push((Some(line), stage, msg.into()));
    }

    fn file(&mut self, stage: Stage, msg: impl Into<String>) {
        self.problems.push((None, stage, msg.into()));
    }

    /// The next piece of the file: one line with its LF (the last may lack it). Verified
    /// devices go to `sink` as their chunk is checked.
    pub fn push(&mut self, raw: &[u8], sink: &mut impl FnMut(VerifiedDevice)) {
        use sha2::Digest;
        self.file_hash.update(raw);
        if let Some(s) = &mut self.signature {
            s.update(raw);
        }
        let (body, terminated) = match raw.strip_suffix(b"\n") {
            Some(b) => (b, true),
            None => (raw, false),
        };
        if let Some(prev) = self.held.take() {
            self.chunk.push((self.lines, prev));
            if self.chunk.len() >= CHUNK {
                self.run_chunk(false, sink);
            }
        }
        self.lines += 1;
        self.held = Some(body.to_vec());
        self.held_terminated = terminated;
    }

    /// Checks the lines of the chunk; `last_in_file` when its final line is the file's last.
    fn run_chunk(&mut self, last_in_file: bool, sink: &mut impl FnMut(VerifiedDevice)) {
        let chunk = std::mem::take(&mut self.chunk);
        let decoded = parallel_map(&chunk, |(_, raw)| decode_line(raw));
        let total = self.lines;
        let mut devices: Vec<(usize, DeviceLine)> = Vec::new();
        for ((n, raw), d) in chunk.iter().zip(decoded) {
            let n = *n;
            let first = n == 1;
            let last = last_in_file && n == total;
            let before = self.problems.len();
            match d {
                Decoded::Bad(e) => {
                    self.at(n, Stage::Decode, e);
                    // Still a device line for the Merkle root and count if it sits between.
                    if !first && !last {
                        self.merkle.push(raw);
                        self.device_lines += 1;
                    }
                }
                Decoded::Header(h) if first => match h {
                    Ok(h) => self.header = Some(h),
                    Err(e) => self.at(n, Stage::Decode, format!("header: {e}")),
                },
                Decoded::Trailer(t) if last && !first => match t {
                    Ok(t) => self.trailer = Some((n, t)),
                    Err(e) => self.at(n, Stage::Decode, format!("trailer: {e}")),
                },
                Decoded::Device(d) if !first => {
                    self.merkle.push(raw);
                    self.device_lines += 1;
                    match d {
                        Ok(d) => devices.push((n, d)),
                        Err(e) => self.at(n, Stage::Decode, format!("device line: {e}")),
                    }
                    if last {
                        self.at(
                            n,
                            Stage::Decode,
                            "the file ends without a trailer line: it was truncated (or the trailer removed)",
                        );
                    }
                }
                Decoded::Header(_) => self.at(
                    n,
                    Stage::Decode,
                    "a header line where only line 1 may be one (lines added, duplicated or reordered)",
                ),
                Decoded::Trailer(_) => self.at(
                    n,
                    Stage::Decode,
                    "a trailer line before the end of the file (lines added after it, or reordered)",
                ),
                Decoded::Device(_) => self.at(
                    n,
                    Stage::Decode,
                    "a device line where the header must be (line 1)",
                ),
                Decoded::Other(kind) => {
                    self.at(n, Stage::Decode, format!("unknown line type '{kind}'"))
                }
            }
            if last && self.problems.len() > before {
                self.last_line_reported = true;
            }
            if first {
                self.check_header_line();
            }
        }
        self.check_devices(devices, sink);
    }

    /// 3. The header and its CA chain, once line 1 has been decoded.
    fn check_header_line(&mut self) {
        if self.header_checked {
            return;
        }
        self.header_checked = true;
        if self.header.is_none() && !self.problems.iter().any(|p| p.0 == Some(1)) {
            self.at(1, Stage::NotHeader, "line 1 is not the header");
        }
        if let Some(h) = self.header.take() {
            let mut c = Checker {
                problems: Vec::new(),
            };
            check_header(
                &mut c,
                &h,
                &mut self.ca_chain,
                &mut self.ca_root,
                self.trust,
            );
            for p in c.problems {
                self.problems.push((p.line, Stage::Header, p.msg));
            }
            self.header = Some(h);
        }
    }

    /// 4. Device lines: sequence, repeats, values, and each certificate.
    fn check_devices(
        &mut self,
        devices: Vec<(usize, DeviceLine)>,
        sink: &mut impl FnMut(VerifiedDevice),
    ) {
        // Certificate checks (parse, hashes, CA signature) dominate; they run on every core.
        let ca0 = self.ca_chain.first();
        let cert_checks = parallel_map(&devices, |(n, d)| {
            let mut own = Checker {
                problems: Vec::new(),
            };
            let der = check_cert(&mut own, *n, d, ca0);
            (own.problems, der)
        });
        for ((n, d), (cert_problems, der)) in devices.into_iter().zip(cert_checks) {
            let want_seq = (n - 1) as u64;
            if d.seq != want_seq {
                self.at(
                    n,
                    Stage::Seq,
                    format!(
                        "seq is {} where {want_seq} belongs: device lines were removed, added, duplicated or reordered before this one",
                        d.seq
                    ),
                );
            }
            self.repeats.see(&d);
            let mut values = Vec::new();
            if let Some(h) = &self.header {
                if !h.batches.contains(&d.batch) {
                    values.push(format!("batch {} is not one the header lists", d.batch));
                }
                if !h.stations.contains(&d.station) {
                    values.push(format!("station {} is not one the header lists", d.station));
                }
            }
            if format::reported_state(&d.state).is_none() {
                values.push(format!(
                    "state '{}' is not one a manifest reports ({})",
                    d.state,
                    crate::ledger::DeviceState::IN_MANIFEST
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if format::KeyOrigin::parse(&d.key_origin).is_none() {
                values.push(format!(
                    "key_origin '{}' is not one of {}",
                    d.key_origin,
                    format::KeyOrigin::ALL
                        .map(format::KeyOrigin::as_str)
                        .join(", ")
                ));
            }
            if d.device_id.is_empty() {
                values.push("device_id is empty".into());
            }
            for m in values {
                self.at(n, Stage::Values, m);
            }
            for p in cert_problems {
                self.problems.push((p.line, Stage::Cert, p.msg));
            }
            if let Some(der) = der {
                *self.states.entry(d.state.clone()).or_insert(0) += 1;
                sink(VerifiedDevice {
                    line: d,
                    cert_der: der,
                });
            }
        }
    }

    /// Ends the file: checks its last line, the trailer, the signature and the repeats (a
    /// second pass through `rescan`, which must yield the same bytes, names the lines of any
    /// repeat). `Ok` only when nothing was found.
    pub fn finish<'r>(
        self,
        sink: &mut impl FnMut(VerifiedDevice),
        rescan: impl FnOnce() -> std::io::Result<Box<dyn std::io::BufRead + 'r>>,
    ) -> Result<VerifiedManifest, Report> {
        self.finish_into(sink, rescan, &mut None)
    }

    /// [`Verifier::finish`], handing the filter of every device key it saw to `keys` (for the
    /// checks across manifests, [`repeats::Across`]); `None` when the file had no line.
    pub(crate) fn finish_into<'r>(
        mut self,
        sink: &mut impl FnMut(VerifiedDevice),
        rescan: impl FnOnce() -> std::io::Result<Box<dyn std::io::BufRead + 'r>>,
        keys: &mut Option<repeats::Filter>,
    ) -> Result<VerifiedManifest, Report> {
        use sha2::Digest;
        // 2. Framing: LF-terminated lines, header first, trailer last.
        if self.lines == 0 {
            self.file(Stage::Framing, "the file is empty");
            return Err(self.report());
        }
        if !self.held_terminated {
            self.at(
                self.lines,
                Stage::Framing,
                "the file does not end with a newline: it was truncated (or edited) in its last line",
            );
        }
        if let Some(last) = self.held.take() {
            self.chunk.push((self.lines, last));
        }
        self.run_chunk(true, sink);
        *keys = Some(self.repeats.take_filter());
        let signature = match self.signature.take().map(jws::Verifying::finish) {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                let msg = format!("{}: {e}", self.sig_name);
                self.file(Stage::Signature, msg);
                None
            }
            None => None,
        };

        // 5. Trailer: count and Merkle root over the device lines as they are.
        let root = hex::encode(std::mem::take(&mut self.merkle).root());
        match self.trailer.clone() {
            Some((n, t)) => {
                if t.count != self.device_lines {
                    self.at(
                        n,
                        Stage::Trailer,
                        format!(
                            "count is {} but the file has {} device line(s): lines were removed or added",
                            t.count, self.device_lines
                        ),
                    );
                }
                if t.merkle_root != root {
                    self.at(
                        n,
                        Stage::Trailer,
                        format!(
                            "merkle_root {} does not match the device lines (their RFC 6962 root is {root}): a device line was changed, removed, added or reordered",
                            t.merkle_root
                        ),
                    );
                }
                if let Some(Some(r)) = self.header.as_ref().map(|h| h.range) {
                    if r.last + 1 < r.first || r.last + 1 - r.first != t.count {
                        self.at(
                            1,
                            Stage::Trailer,
                            format!(
                                "range {}..{} does not hold count {} devices",
                                r.first, r.last, t.count
                            ),
                        );
                    }
                }
            }
            None => {
                if !self.last_line_reported {
                    self.at(
                        self.lines,
                        Stage::Trailer,
                        "the last line is not the trailer",
                    );
                }
            }
        }

        let sha256 = hex::encode(std::mem::take(&mut self.file_hash).finalize());
        if self.repeats.suspected() {
            self.rescan_repeats(rescan, &sha256);
        }

        let ok = self.problems.is_empty();
        let (Some(header), Some((_, trailer)), Some(signature), Some(ca_root), true) = (
            self.header.take(),
            self.trailer.take(),
            signature,
            self.ca_root.take(),
            ok,
        ) else {
            if self.problems.is_empty() {
                self.file(Stage::Incomplete, "the manifest is incomplete");
            }
            return Err(self.report());
        };
        Ok(VerifiedManifest {
            path: self.path,
            sha256,
            header,
            devices: Vec::new(),
            trailer,
            signature,
            ca_chain: self.ca_chain,
            ca_root,
            states: self.states,
        })
    }

    /// The second pass: the lines of the device ids, serials and keys the filter flagged,
    /// each repeat reported on its line with the line it repeats.
    fn rescan_repeats<'r>(
        &mut self,
        rescan: impl FnOnce() -> std::io::Result<Box<dyn std::io::BufRead + 'r>>,
        sha256: &str,
    ) {
        let mut found = Vec::new();
        let mut first: [HashMap<String, usize>; repeats::KINDS] = Default::default();
        let flagged = &self.repeats;
        let scanned = rescan().and_then(|reader| {
            repeats::rescan(
                reader,
                |d| flagged.flags(d),
                |n, d| {
                    for (i, (key, what)) in repeats::keys(&d)
                        .into_iter()
                        .zip(["device id", "serial", "public key (spki_sha256)"])
                        .enumerate()
                    {
                        if !flagged.flagged(i, key) {
                            continue;
                        }
                        match first[i].get(key) {
                            Some(f) => {
                                found.push((n, format!("{what} {key} is already on line {f}")))
                            }
                            None => {
                                first[i].insert(key.to_string(), n);
                            }
                        }
                    }
                },
            )
        });
        for (n, msg) in found {
            self.at(n, Stage::Repeat, msg);
        }
        match scanned {
            Err(e) => self.file(
                Stage::Rescan,
                format!("cannot read the file again to name its repeated devices: {e}"),
            ),
            Ok(again) if again != sha256 => self.file(
                Stage::Rescan,
                "the file changed while it was being verified; verify it again when nothing writes it",
            ),
            Ok(_) => {}
        }
    }

    fn report(mut self) -> Report {
        // File-level problems first, then by line, each line's in the order its checks run.
        self.problems.sort_by_key(|p| (p.0, p.1));
        Report {
            path: self.path.display().to_string(),
            signature: self.sig_name,
            problems: self
                .problems
                .into_iter()
                .map(|(line, _, msg)| Problem { line, msg })
                .collect(),
        }
    }
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
