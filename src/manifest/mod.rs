//! Manifests: the signed, Merkle-bound record of a batch or station shift, built from the
//! ledger only and verifiable offline with certfab alone (docs/manifest.md).
//!
//! - [`canon`]: canonical JSON (RFC 8785, integers only).
//! - [`format`]: the header, device and trailer lines.
//! - [`merkle`]: the RFC 6962 Merkle Tree Hash over the device lines.
//! - [`jws`]: the detached JWS made by the manifest/audit signer.
//! - [`chain`]: checks across several manifests (unbroken chain per ledger, no replays).
//! - [`verify`]: offline verification with line-numbered problems; [`VerifiedManifest`] is the
//!   exporters' input ([`VerifiedManifest::to_export_input`]).

pub mod build;
pub mod canon;
pub mod chain;
pub mod format;
pub mod jws;
pub mod merge;
pub mod merkle;
mod repeats;
mod run_end;
pub mod verify;
mod writer;

pub use run_end::RunManifest;
pub use verify::{signature_path, verify_bytes, verify_file, Problem, Report, VerifiedManifest};

use crate::x509::CaCert;
use std::path::Path;

/// A manifest operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// A file could not be read.
    #[error("cannot read {path}: {msg}")]
    Read { path: String, msg: String },
    /// Verification found problems (each with its line).
    #[error("{0}")]
    Invalid(Box<Report>),
    /// No trust anchor to verify against.
    #[error("{0}")]
    Trust(String),
    /// The request cannot be served (unknown batch, nothing to include, bad arguments).
    #[error("{0}")]
    Usage(String),
    /// Inputs refused (e.g. a merge with duplicate devices across manifests).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Jws(#[from] jws::JwsError),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    /// Writing the manifest or its signature.
    #[error("cannot write {path}: {msg}")]
    Write { path: String, msg: String },
}

impl ManifestError {
    /// The exit code: unreadable files, trust and usage 2, a manifest that does not verify or
    /// is refused 3, ledger and writes 5, the JWS its own.
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            Self::Read { .. } | Self::Trust(_) | Self::Usage(_) => crate::exit::ExitCode::Usage,
            Self::Invalid(_) | Self::Refused(_) => crate::exit::ExitCode::Rejected,
            Self::Jws(j) => j.exit_code(),
            Self::Ledger(_) | Self::Write { .. } => crate::exit::ExitCode::Storage,
        }
    }
}

/// The roots a verification accepts, and where they came from (for the result).
#[derive(Debug, Clone)]
pub struct Trust {
    /// Trust anchors.
    pub roots: Vec<CaCert>,
    /// `--trust FILE` or the site config path.
    pub source: String,
}

impl Trust {
    /// Every certificate in a PEM (or single DER) file; each must be a CA certificate.
    pub fn from_file(path: &Path) -> Result<Self, ManifestError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path)
            .map_err(|e| ManifestError::Trust(format!("--trust {shown}: cannot read: {e}")))?;
        let ders: Vec<Vec<u8>> = if bytes.starts_with(b"-----") {
            let text = String::from_utf8_lossy(&bytes);
            pem_blocks(&text).map_err(|e| ManifestError::Trust(format!("--trust {shown}: {e}")))?
        } else {
            vec![bytes]
        };
        let mut roots = Vec::new();
        for (i, der) in ders.into_iter().enumerate() {
            let c = CaCert::from_der(der, format!("{shown}[{i}]"))
                .map_err(|e| ManifestError::Trust(format!("--trust: {e}")))?;
            if !c.is_ca {
                return Err(ManifestError::Trust(format!(
                    "--trust {shown}: certificate {i} is not a CA certificate; pass the root CA"
                )));
            }
            roots.push(c);
        }
        if roots.is_empty() {
            return Err(ManifestError::Trust(format!(
                "--trust {shown} holds no certificate"
            )));
        }
        Ok(Self {
            roots,
            source: shown,
        })
    }

    /// The self-signed roots the site config lists (under `cas:` and `signer:`).
    pub fn from_site(config: &crate::config::SiteConfig) -> Result<Self, ManifestError> {
        let mut paths = Vec::new();
        for ca in config.cas.values() {
            paths.push(ca.cert.clone());
            paths.extend(ca.chain.iter().cloned());
        }
        if let Some(s) = &config.signer {
            paths.extend(s.chain.iter().cloned());
        }
        let mut roots: Vec<CaCert> = Vec::new();
        for p in paths {
            let Ok(c) = CaCert::load(&p) else { continue };
            if c.is_self_signed() && !roots.iter().any(|r| r.der == c.der) {
                roots.push(c);
            }
        }
        if roots.is_empty() {
            return Err(ManifestError::Trust(format!(
                "{} lists no self-signed root certificate to verify against; pass --trust ROOT.pem",
                config.path.display()
            )));
        }
        Ok(Self {
            roots,
            source: config.path.display().to_string(),
        })
    }

    /// `--trust FILE` if given, else the site config's roots if there is a config, else a
    /// refusal: the chain a manifest carries is never trusted on its own say-so.
    pub fn resolve(trust: Option<&Path>, config: Option<&Path>) -> Result<Self, ManifestError> {
        if let Some(t) = trust {
            return Self::from_file(t);
        }
        let Some(cfg) = config else {
            return Err(ManifestError::Trust(
                "no trust anchor: pass --trust ROOT.pem (the root the manifest signer and the device CA were issued under), or a site config (--config / CERTFAB_CONFIG) whose roots to use; the manifest's own x5c root is never trusted by itself".into(),
            ));
        };
        let config = crate::config::SiteConfig::load(cfg)
            .map_err(|e| ManifestError::Trust(format!("{e}")))?;
        Self::from_site(&config)
    }

    /// SHA-256 fingerprints of the roots, hex.
    pub fn fingerprints(&self) -> Vec<String> {
        self.roots
            .iter()
            .map(|r| hex::encode(crate::crypto::sha256(&r.der)))
            .collect()
    }
}

fn pem_blocks(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let end_marker = "-----END ";
        let Some(end) = rest[start..].find(end_marker) else {
            return Err("unterminated PEM block".into());
        };
        let after = start + end;
        let close = rest[after + end_marker.len()..]
            .find("-----")
            .map(|i| after + end_marker.len() + i + 5)
            .ok_or("unterminated PEM END line")?;
        let block = &rest[start..close];
        let (label, der) = pem_rfc7468::decode_vec(block.as_bytes()).map_err(|e| e.to_string())?;
        if label == "CERTIFICATE" {
            out.push(der);
        }
        rest = &rest[close..];
    }
    Ok(out)
}

/// Verifies `path` (signature at `path.jws`) against `trust`: the library entry point
/// exporters use.
pub fn verify(path: &Path, trust: &Trust) -> Result<VerifiedManifest, ManifestError> {
    verify_file(path, None, trust)
}

/// A manifest's lines read without any verification (for `manifest show` on a file that does
/// not verify): whatever decodes as header, devices and trailer.
#[derive(Debug, Clone, Default)]
pub struct Unverified {
    /// The header, if line 1 decodes as one.
    pub header: Option<format::Header>,
    /// Device lines that decode.
    pub devices: Vec<format::DeviceLine>,
    /// The trailer, if the last line decodes as one.
    pub trailer: Option<format::Trailer>,
    /// Lines that do not decode.
    pub undecodable: usize,
}

/// Reads the lines of a manifest without checking anything beyond their own form.
pub fn read_unverified(bytes: &[u8]) -> Unverified {
    let mut u = Unverified::default();
    let mut devices = Vec::new();
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    for raw in body.split(|b| *b == b'\n') {
        unverified_line(&mut u, raw, &mut |d| devices.push(d));
    }
    u.devices = devices;
    u
}

/// One line of [`read_unverified`]: a device that decodes goes to `device`.
fn unverified_line(u: &mut Unverified, raw: &[u8], device: &mut dyn FnMut(format::DeviceLine)) {
    let Ok(v) = format::decode_value(raw) else {
        u.undecodable += 1;
        return;
    };
    match format::kind_of(&v) {
        Some("header") => u.header = format::typed(&v).ok(),
        Some("device") => match format::typed(&v) {
            Ok(d) => device(d),
            Err(_) => u.undecodable += 1,
        },
        Some("trailer") => u.trailer = format::typed(&v).ok(),
        _ => u.undecodable += 1,
    }
}

/// [`read_unverified`] of the file at `path`, read a line at a time: each device line that
/// decodes is handed to `device` and not kept ([`Unverified::devices`] stays empty), so
/// `manifest show` of a million devices holds one line (docs/performance.md "Memory").
/// An empty file has no line (where [`read_unverified`] counts one undecodable empty line;
/// either way it has no header).
pub fn read_unverified_file(
    path: &Path,
    mut device: impl FnMut(format::DeviceLine) -> Result<(), ManifestError>,
) -> Result<Unverified, ManifestError> {
    use std::io::BufRead;
    let err = |e: std::io::Error| ManifestError::Read {
        path: path.display().to_string(),
        msg: e.to_string(),
    };
    let mut r =
        std::io::BufReader::with_capacity(256 * 1024, std::fs::File::open(path).map_err(err)?);
    let mut u = Unverified::default();
    let mut line = Vec::new();
    let mut failed = None;
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).map_err(err)? == 0 {
            break;
        }
        let raw = line.strip_suffix(b"\n").unwrap_or(&line);
        unverified_line(&mut u, raw, &mut |d| {
            if failed.is_none() {
                if let Err(e) = device(d) {
                    failed = Some(e);
                }
            }
        });
        if let Some(e) = failed.take() {
            return Err(e);
        }
    }
    Ok(u)
}
