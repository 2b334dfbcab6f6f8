//! Loading what an audit reads: ledgers (read-only, no lock), manifests, loose certificate
//! files, CA certificates and profiles, into plain rows the checks can compare.

use crate::ledger::{CertState, DeviceState, Ledger, LedgerError};
use crate::profile::Profile;
use crate::x509::CaCert;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What to read.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Ledgers: files, or central ledgers.
    pub ledgers: Vec<crate::ledger::LedgerLocation>,
    /// Manifests (`M.jsonl`, signature beside it as `M.jsonl.jws`), verified against the
    /// self-signed roots among `cas`.
    pub manifests: Vec<PathBuf>,
    /// CA certificate files (PEM, one or more certificates each, or DER).
    pub cas: Vec<PathBuf>,
    /// Directories searched recursively for device certificates (`*.pem`, `*.crt`, `*.der`).
    pub cert_dirs: Vec<PathBuf>,
    /// Where profiles are (`*.yaml`), by their `name:`.
    pub profiles_dir: Option<PathBuf>,
    /// Tenant of each CA certificate file, as a site config declares it.
    pub ca_tenants: BTreeMap<PathBuf, String>,
    /// The audit signer's certificate checkpoints must be signed by (pinned); without it,
    /// any signer chaining to a given root is accepted.
    pub signer_cert: Option<PathBuf>,
    /// Checkpoint documents exported earlier (`certfab log checkpoint --out`), each checked
    /// against the ledger it names.
    pub checkpoints: Vec<PathBuf>,
}

/// An input that cannot be read at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CorpusError {
    /// A ledger could not be opened or queried.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A file named on the command line.
    #[error("{path}: {msg}")]
    File {
        path: String,
        /// What is wrong and the fix.
        msg: String,
    },
}

impl CorpusError {
    /// A file that cannot be read is exit 2, a ledger exit 5.
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            Self::File { .. } => crate::exit::ExitCode::Usage,
            Self::Ledger(_) => crate::exit::ExitCode::Storage,
        }
    }
}

/// A batch (or station shift) row.
#[derive(Debug, Clone)]
pub struct BatchRec {
    /// Station that ran it.
    pub station: String,
    /// Profile name.
    pub profile: String,
    /// Profile file hash when it ran.
    pub profile_sha256: String,
    /// Tenant, on multi-tenant sites.
    pub tenant: Option<String>,
}

/// A ledger column of a closed vocabulary as the audit read it: the value, or the text a
/// damaged or hand-edited ledger holds instead (the audit reports on such a ledger rather than
/// stopping at it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded<T> {
    /// A value of the vocabulary.
    Known(T),
    /// Text that is none of it.
    Unknown(String),
}

impl<T: std::str::FromStr> Recorded<T> {
    fn read(text: String) -> Self {
        match text.parse() {
            Ok(v) => Self::Known(v),
            Err(_) => Self::Unknown(text),
        }
    }
}

impl<T: PartialEq + Copy> Recorded<T> {
    /// Whether the column holds `v`.
    pub fn is(&self, v: T) -> bool {
        matches!(self, Self::Known(k) if *k == v)
    }

    /// The value, when the column holds one of the vocabulary.
    pub fn known(&self) -> Option<T> {
        match self {
            Self::Known(k) => Some(*k),
            Self::Unknown(_) => None,
        }
    }
}

impl<T: std::fmt::Display> std::fmt::Display for Recorded<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Known(k) => k.fmt(f),
            Self::Unknown(s) => f.write_str(s),
        }
    }
}

/// A `devices` row.
#[derive(Debug, Clone)]
pub struct DeviceRec {
    /// SQLite rowid (for locations).
    pub rowid: i64,
    pub profile: String,
    pub device_id: String,
    pub batch_id: String,
    pub state: Recorded<DeviceState>,
    /// SPKI hash, hex.
    pub spki_sha256: String,
    /// Current serial.
    pub serial: Option<String>,
    /// Last change.
    pub updated_at: String,
}

/// A `certificates` row.
#[derive(Debug, Clone)]
pub struct CertRow {
    /// SQLite rowid.
    pub rowid: i64,
    /// Issuer key id, hex.
    pub issuer_key_id: String,
    /// Serial, hex.
    pub serial: String,
    pub profile: String,
    pub device_id: String,
    pub batch_id: String,
    /// intent, signed or burned.
    pub state: Recorded<CertState>,
    /// SHA-256 of the certificate DER, hex, when the row holds one.
    pub der_sha256: Option<String>,
    /// The certificate examined while loading (signed rows with DER only).
    pub leaf: Option<Result<super::checks::Leaf, String>>,
    /// Recorded SHA-256 of `der`.
    pub cert_sha256: Option<String>,
    /// When signed.
    pub signed_at: Option<String>,
}

/// A `certificates` row as read, before its certificate is examined.
struct RawCert {
    rowid: i64,
    issuer_key_id: String,
    serial: String,
    profile: String,
    device_id: String,
    batch_id: String,
    state: Recorded<CertState>,
    der: Option<Vec<u8>>,
    cert_sha256: Option<String>,
    signed_at: Option<String>,
}

/// A `rejections` row.
#[derive(Debug, Clone)]
pub struct RejectionRec {
    pub batch_id: String,
    /// Input line.
    pub line: i64,
    /// Device id, if known.
    pub device_id: Option<String>,
    /// rejected or duplicate.
    pub kind: String,
    pub reason: String,
    pub at: String,
}

/// An `attempts` row (station mode).
#[derive(Debug, Clone)]
pub struct AttemptRec {
    /// Row id.
    pub id: i64,
    /// Shift.
    pub batch_id: String,
    pub station: String,
    pub operator: Option<String>,
    pub profile: String,
    pub device_id: Option<String>,
    /// Start, RFC 3339.
    pub started_at: String,
    /// pass, fail, refused.
    pub outcome: String,
    /// Step it ended at.
    pub step: String,
    pub reason: String,
}

/// One ledger, loaded.
pub struct LedgerData {
    /// The file, as given.
    pub path: String,
    /// Result of re-computing the audit hash chain: events, or where it breaks.
    pub audit_chain: Result<u64, String>,
    /// Batches by id.
    pub batches: BTreeMap<String, BatchRec>,
    /// Device rows.
    pub devices: Vec<DeviceRec>,
    /// Certificate rows.
    pub certs: Vec<CertRow>,
    /// Rejected and duplicate input rows.
    pub rejections: Vec<RejectionRec>,
    /// Station attempts.
    pub attempts: Vec<AttemptRec>,
    /// (issuer key id, serial) → statuses (superseded, revoked).
    pub cert_status: BTreeMap<(String, String), BTreeSet<String>>,
    /// (serial, certificate SHA-256) of every `issued` audit event.
    pub issued_events: BTreeSet<(String, String)>,
    /// Signed checkpoints of the audit chain, checked; `None` when they could not be (no
    /// root given, or a ledger from before checkpoints).
    pub checkpoints: Option<CheckpointSummary>,
    /// CRLs the ledger recorded (`certfab crl`), parsed.
    pub crls: Vec<CrlRec>,
}

/// A CRL recorded in a ledger.
#[derive(Debug, Clone)]
pub struct CrlRec {
    /// CA key identifier, hex.
    pub issuer_key_id: String,
    /// CRL number.
    pub number: i64,
    /// thisUpdate, RFC 3339.
    pub this_update: String,
    /// nextUpdate.
    pub next_update: Option<time::OffsetDateTime>,
    /// Serials it lists (normalized hex); `Err` when the DER does not parse.
    pub serials: Result<BTreeSet<String>, String>,
    /// The given CA whose key verifies its signature.
    pub ca: Option<usize>,
}

/// Parses a CRL: the serials it lists and the given CA that signed it.
fn parse_crl(der: &[u8], cas: &[CaEntry]) -> (Result<BTreeSet<String>, String>, Option<usize>) {
    use der::{Decode, Encode};
    let crl = match x509_cert::crl::CertificateList::from_der(der) {
        Ok(c) => c,
        Err(e) => return (Err(e.to_string()), None),
    };
    let serials = crl
        .tbs_cert_list
        .revoked_certificates
        .iter()
        .flatten()
        .map(|r| super::checks::normal_serial(&hex::encode(r.serial_number.as_bytes())))
        .collect();
    let ca = crl
        .tbs_cert_list
        .issuer
        .to_der()
        .ok()
        .and_then(|issuer| super::checks::signed_by(der, &issuer, cas));
    (Ok(serials), ca)
}

/// The ledger's audit checkpoints, verified (`certfab log verify`'s checks).
#[derive(Debug, Clone)]
pub struct CheckpointSummary {
    /// Checkpoints looked at (stored and exported): number, source, head, problems.
    pub checked: Vec<crate::auditlog::CheckpointCheck>,
    /// Highest event covered by a good checkpoint (0: none).
    pub checkpointed_seq: i64,
    /// Events after it not covered by any signature.
    pub not_checkpointed: i64,
}

/// Whom checkpoints must be signed by, and the exported documents to check too.
pub(super) struct CheckpointInputs {
    trust: Option<crate::auditlog::CheckpointTrust>,
    docs: Vec<(String, crate::auditlog::CheckpointDoc)>,
}

impl LedgerData {
    /// Tenant of a batch (`None`: no tenant, or the batch row is missing).
    pub fn tenant_of(&self, batch_id: &str) -> Option<&str> {
        self.batches.get(batch_id).and_then(|b| b.tenant.as_deref())
    }

    /// Station of a batch (`?` if the batch row is missing).
    pub fn station_of(&self, batch_id: &str) -> &str {
        self.batches
            .get(batch_id)
            .map_or("?", |b| b.station.as_str())
    }
}

/// One device line of a verified manifest.
#[derive(Debug, Clone)]
pub struct ManifestDevice {
    /// Line number in the manifest file.
    pub line: u64,
    pub device_id: String,
    /// Serial, hex.
    pub serial: String,
    /// Certificate DER.
    pub cert_der: Vec<u8>,
}

/// A manifest: its devices when it verified, else why not.
#[derive(Debug, Clone)]
pub struct ManifestData {
    pub path: String,
    /// Devices (empty when it did not verify).
    pub devices: Vec<ManifestDevice>,
    /// Its tenant, per its header.
    pub tenant: Option<String>,
    /// Why it does not verify (signature, chain, Merkle root, count, a certificate).
    pub invalid: Option<String>,
}

/// Verifies one manifest against the self-signed roots among the given CAs. Only a file that
/// cannot be read is an error; a manifest that does not verify is a finding.
fn load_manifest(path: &Path, cas: &[CaEntry]) -> Result<ManifestData, CorpusError> {
    use crate::manifest::{ManifestError, Trust};
    let shown = path.display().to_string();
    let roots: Vec<CaCert> = cas
        .iter()
        .filter(|c| c.cert.is_self_signed())
        .map(|c| c.cert.clone())
        .collect();
    let empty = |invalid: String| ManifestData {
        path: shown.clone(),
        devices: Vec::new(),
        tenant: None,
        invalid: Some(invalid),
    };
    if roots.is_empty() {
        return Ok(empty(
            "no self-signed root among the given CA certificates to verify it against; pass the root with --ca".into(),
        ));
    }
    let trust = Trust {
        roots,
        source: "--ca".into(),
    };
    match crate::manifest::verify_file(path, None, &trust) {
        Ok(v) => Ok(ManifestData {
            path: shown,
            devices: v
                .devices
                .into_iter()
                .map(|d| ManifestDevice {
                    // Line 1 is the header; device n is on line n + 1.
                    line: d.line.seq + 1,
                    device_id: d.line.device_id,
                    serial: d.line.serial,
                    cert_der: d.cert_der,
                })
                .collect(),
            tenant: v.header.tenant,
            invalid: None,
        }),
        Err(ManifestError::Invalid(report)) => Ok(empty(report.to_string())),
        Err(ManifestError::Read { path, msg }) => Err(CorpusError::File {
            path,
            msg: format!("cannot read: {msg}"),
        }),
        Err(e) => Ok(empty(e.to_string())),
    }
}

/// A device certificate found in a file.
#[derive(Debug, Clone)]
pub struct CertFile {
    pub path: String,
    /// Which certificate in the file (1-based).
    pub index: usize,
    pub der: Vec<u8>,
}

/// A CA certificate given to the audit.
#[derive(Debug, Clone)]
pub struct CaEntry {
    /// Parsed.
    pub cert: CaCert,
    /// Subject, RFC 4514 text.
    pub subject: String,
    /// Tenant, when a site config declares one for this CA.
    pub tenant: Option<String>,
}

/// Everything an audit looks at.
pub struct Corpus {
    pub ledgers: Vec<LedgerData>,
    pub manifests: Vec<ManifestData>,
    /// Device certificate files.
    pub cert_files: Vec<CertFile>,
    /// CA certificates (duplicates by DER removed).
    pub cas: Vec<CaEntry>,
    /// Profiles by name.
    pub profiles: BTreeMap<String, Profile>,
    /// Profile files that did not load (path: error).
    pub profile_errors: Vec<String>,
    /// Whether checkpoint signatures could be checked (a self-signed root was given).
    pub checkpoints_checked: bool,
    /// Exported checkpoint documents that belong to none of the given ledgers.
    pub unmatched_checkpoints: Vec<String>,
}

/// The roots among the given CAs (and the pinned signer) checkpoints are checked against.
fn checkpoint_inputs(src: &Sources, cas: &[CaEntry]) -> Result<CheckpointInputs, CorpusError> {
    let roots: Vec<CaCert> = cas
        .iter()
        .filter(|c| c.cert.is_self_signed())
        .map(|c| c.cert.clone())
        .collect();
    let signer = src
        .signer_cert
        .as_ref()
        .map(|p| CaCert::load(p).map_err(|e| file_err(p, e.to_string())))
        .transpose()?;
    let docs = src
        .checkpoints
        .iter()
        .map(|p| {
            crate::auditlog::read_doc(p)
                .map(|d| (p.display().to_string(), d))
                .map_err(|e| file_err(p, format!("not a certfab checkpoint document: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CheckpointInputs {
        trust: (!roots.is_empty()).then_some(crate::auditlog::CheckpointTrust { roots, signer }),
        docs,
    })
}

fn file_err(path: &Path, msg: impl Into<String>) -> CorpusError {
    CorpusError::File {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

/// Every certificate in a PEM file (or the one DER certificate).
fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, CorpusError> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    if !bytes.starts_with(b"-----") && !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Ok(vec![bytes]);
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut out = Vec::new();
    let mut rest: &str = &text;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let block = &rest[start..];
        let end_marker = "-----END CERTIFICATE-----";
        let Some(end) = block.find(end_marker) else {
            return Err(file_err(path, "a PEM certificate block is not closed"));
        };
        let pem = &block[..end + end_marker.len()];
        let (_, der) = pem_rfc7468::decode_vec(pem.as_bytes())
            .map_err(|e| file_err(path, format!("PEM certificate does not decode: {e}")))?;
        out.push(der);
        rest = &block[end + end_marker.len()..];
    }
    Ok(out)
}

fn load_ledger(
    path: &crate::ledger::LedgerLocation,
    cas: &[CaEntry],
    profiles: &BTreeMap<String, Profile>,
    cp: &CheckpointInputs,
) -> Result<LedgerData, CorpusError> {
    let ledger = Ledger::open_read(path, "audit")?;
    let shown = path.to_string();
    let q = |e: LedgerError| {
        CorpusError::Ledger(LedgerError::Open {
            path: shown.clone(),
            msg: format!("cannot read it: {e}; is this a certfab ledger?"),
        })
    };
    let conn = ledger.db();
    // One read transaction: every query below sees the same snapshot, even while a station
    // writes (WAL readers do not block the writer, nor see its later commits; a PostgreSQL
    // reader uses a repeatable-read snapshot).
    conn.snapshot().map_err(q)?;
    let audit_chain = ledger.verify_audit_chain();
    let checkpoints = match &cp.trust {
        Some(trust) if conn.has_table("checkpoints").map_err(q)? => {
            let id = ledger.ledger_id()?;
            let docs: Vec<_> = cp
                .docs
                .iter()
                .filter(|(_, d)| id.as_deref() == Some(d.statement.ledger_id.as_str()))
                .cloned()
                .collect();
            let r = crate::auditlog::verify(&ledger, trust, &docs)?;
            Some(CheckpointSummary {
                checked: r.checkpoints,
                checkpointed_seq: r.checkpointed_seq,
                not_checkpointed: r.not_checkpointed,
            })
        }
        _ => None,
    };

    let mut batches = BTreeMap::new();
    // Tenants arrived with schema 3.
    let tenant_col = if conn.has_column("batches", "tenant").map_err(q)? {
        "tenant"
    } else {
        "NULL"
    };
    let rows = conn
        .map(
            &format!("SELECT id, station, profile, profile_sha256, {tenant_col} FROM batches"),
            &[],
            |r| {
                Ok((
                    r.get::<String>(0)?,
                    BatchRec {
                        station: r.get(1)?,
                        profile: r.get(2)?,
                        profile_sha256: r.get(3)?,
                        tenant: r.get(4)?,
                    },
                ))
            },
        )
        .map_err(q)?;
    for (id, b) in rows {
        batches.insert(id, b);
    }

    let devices = conn
        .map(
            "SELECT rowid, profile, device_id, batch_id, state, spki_sha256, serial, updated_at
         FROM devices ORDER BY rowid",
            &[],
            |r| {
                Ok(DeviceRec {
                    rowid: r.get(0)?,
                    profile: r.get(1)?,
                    device_id: r.get(2)?,
                    batch_id: r.get(3)?,
                    state: Recorded::read(r.get(4)?),
                    spki_sha256: r.get(5)?,
                    serial: r.get(6)?,
                    updated_at: r.get(7)?,
                })
            },
        )
        .map_err(q)?;

    let mut certs = Vec::new();
    conn.each(
        "SELECT rowid, issuer_key_id, serial, profile, device_id, batch_id, state, der,
                cert_sha256, signed_at
         FROM certificates ORDER BY rowid",
        &[],
        |r| {
            let c = RawCert {
                rowid: r.get(0)?,
                issuer_key_id: r.get(1)?,
                serial: r.get(2)?,
                profile: r.get(3)?,
                device_id: r.get(4)?,
                batch_id: r.get(5)?,
                state: Recorded::read(r.get(6)?),
                der: r.get(7)?,
                cert_sha256: r.get(8)?,
                signed_at: r.get(9)?,
            };
            // Examined here, one row at a time, so the DER is never all in memory at once.
            {
                let der_sha256 = c
                    .der
                    .as_ref()
                    .map(|d| hex::encode(crate::crypto::sha256(d)));
                let leaf = match (&c.der, c.state.is(CertState::Signed)) {
                    (Some(d), true) => Some(super::checks::examine(
                        d,
                        cas,
                        profiles.get(&c.profile),
                        &c.device_id,
                    )),
                    _ => None,
                };
                certs.push(CertRow {
                    rowid: c.rowid,
                    issuer_key_id: c.issuer_key_id,
                    serial: c.serial,
                    profile: c.profile,
                    device_id: c.device_id,
                    batch_id: c.batch_id,
                    state: c.state,
                    der_sha256,
                    cert_sha256: c.cert_sha256,
                    signed_at: c.signed_at,
                    leaf,
                });
            }
            Ok(true)
        },
    )
    .map_err(q)?;

    let rejections = conn
        .map(
            "SELECT batch_id, line, device_id, kind, reason, at FROM rejections ORDER BY at, line",
            &[],
            |r| {
                Ok(RejectionRec {
                    batch_id: r.get(0)?,
                    line: r.get(1)?,
                    device_id: r.get(2)?,
                    kind: r.get(3)?,
                    reason: r.get(4)?,
                    at: r.get(5)?,
                })
            },
        )
        .map_err(q)?;

    // Station tables arrived with schema 2; older ledgers have none.
    let attempts = if conn.has_table("attempts").map_err(q)? {
        conn.map(
            "SELECT id, batch_id, station, operator, profile, device_id, started_at, outcome, step, reason
             FROM attempts ORDER BY id",
            &[],
            |r| {
                Ok(AttemptRec {
                    id: r.get(0)?,
                    batch_id: r.get(1)?,
                    station: r.get(2)?,
                    operator: r.get(3)?,
                    profile: r.get(4)?,
                    device_id: r.get(5)?,
                    started_at: r.get(6)?,
                    outcome: r.get(7)?,
                    step: r.get(8)?,
                    reason: r.get(9)?,
                })
            },
        )
        .map_err(q)?
    } else {
        Vec::new()
    };
    let mut cert_status: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    if conn.has_table("cert_status").map_err(q)? {
        let rows = conn
            .map(
                "SELECT issuer_key_id, serial, status FROM cert_status",
                &[],
                |r| {
                    Ok((
                        r.get::<String>(0)?,
                        r.get::<String>(1)?,
                        r.get::<String>(2)?,
                    ))
                },
            )
            .map_err(q)?;
        for (k, s, status) in rows {
            cert_status.entry((k, s)).or_default().insert(status);
        }
    }
    let mut issued_events = BTreeSet::new();
    let rows = conn
        .map("SELECT detail FROM audit WHERE kind = 'issued'", &[], |r| {
            r.get::<String>(0)
        })
        .map_err(q)?;
    let mut rows = rows;
    // Certificates imported from a station ledger were issued in its chain, kept verbatim.
    if conn.has_table("imported_audit").map_err(q)? {
        rows.extend(
            conn.map(
                "SELECT detail FROM imported_audit WHERE kind = 'issued'",
                &[],
                |r| r.get::<String>(0),
            )
            .map_err(q)?,
        );
    }
    for row in rows {
        let detail: serde_json::Value = serde_json::from_str(&row).unwrap_or_default();
        if let (Some(s), Some(h)) = (detail["serial"].as_str(), detail["cert_sha256"].as_str()) {
            issued_events.insert((s.to_string(), h.to_string()));
        }
    }
    let mut crls = Vec::new();
    if conn.has_table("crls").map_err(q)? {
        let rows = conn
            .map(
                "SELECT issuer_key_id, number, this_update, next_update, der FROM crls ORDER BY issuer_key_id, number",
                &[],
                |r| {
                    Ok((
                        r.get::<String>(0)?,
                        r.get::<i64>(1)?,
                        r.get::<String>(2)?,
                        r.get::<String>(3)?,
                        r.get::<Vec<u8>>(4)?,
                    ))
                },
            )
            .map_err(q)?;
        for (issuer_key_id, number, this_update, next_update, der) in rows {
            let (serials, ca) = parse_crl(&der, cas);
            crls.push(CrlRec {
                issuer_key_id,
                number,
                this_update,
                next_update: time::OffsetDateTime::parse(
                    &next_update,
                    &time::format_description::well_known::Rfc3339,
                )
                .ok(),
                serials,
                ca,
            });
        }
    }
    Ok(LedgerData {
        path: shown,
        issued_events,
        checkpoints,
        crls,
        audit_chain,
        batches,
        devices,
        certs,
        rejections,
        attempts,
        cert_status,
    })
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CorpusError> {
    let entries = std::fs::read_dir(dir).map_err(|e| file_err(dir, format!("cannot list: {e}")))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, out)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "pem" | "crt" | "cer" | "der"))
        {
            out.push(p);
        }
    }
    Ok(())
}

impl Corpus {
    /// Reads everything `src` names. A file that cannot be read at all is an error; what is
    /// wrong inside a readable file is left to the checks.
    pub fn load(src: &Sources) -> Result<Self, CorpusError> {
        let mut cas: Vec<CaEntry> = Vec::new();
        for path in &src.cas {
            let certs = read_certs(path)?;
            if certs.is_empty() {
                return Err(file_err(
                    path,
                    "holds no certificate; pass a CA certificate (PEM or DER)",
                ));
            }
            for (i, der) in certs.into_iter().enumerate() {
                if cas.iter().any(|c| c.cert.der == der) {
                    continue;
                }
                let source = if i == 0 {
                    path.display().to_string()
                } else {
                    format!("{} #{}", path.display(), i + 1)
                };
                let cert =
                    CaCert::from_der(der, source).map_err(|e| file_err(path, format!("{e}")))?;
                let subject = cert.subject.to_string();
                cas.push(CaEntry {
                    cert,
                    subject,
                    tenant: src.ca_tenants.get(path).cloned(),
                });
            }
        }

        let mut cert_files = Vec::new();
        // A leaf sits in cert.pem and again in chain.pem: one certificate, first file named.
        let mut seen_files = BTreeSet::new();
        for dir in &src.cert_dirs {
            if !dir.is_dir() {
                return Err(file_err(dir, "is not a directory; --certs takes a directory of certificate files (e.g. a batch --out)"));
            }
            let mut files = Vec::new();
            walk(dir, &mut files)?;
            for f in files {
                // Chain files and CA copies sit beside device certificates: keep leaves only.
                for (i, der) in read_certs(&f)?.into_iter().enumerate() {
                    let is_ca = CaCert::from_der(der.clone(), String::new())
                        .map(|c| c.is_ca)
                        .unwrap_or(false);
                    if !is_ca && seen_files.insert(crate::crypto::sha256(&der)) {
                        cert_files.push(CertFile {
                            path: f.display().to_string(),
                            index: i + 1,
                            der,
                        });
                    }
                }
            }
        }

        let mut profiles = BTreeMap::new();
        let mut profile_errors = Vec::new();
        if let Some(dir) = &src.profiles_dir {
            let entries = std::fs::read_dir(dir)
                .map_err(|e| file_err(dir, format!("cannot list profiles: {e}")))?;
            let mut paths: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            paths.sort();
            for p in paths {
                match Profile::load(&p) {
                    Ok(pr) => {
                        profiles.insert(pr.name.clone(), pr);
                    }
                    Err(e) => profile_errors.push(e.to_string()),
                }
            }
        }

        let cp = checkpoint_inputs(src, &cas)?;
        let ledgers = src
            .ledgers
            .iter()
            .map(|p| load_ledger(p, &cas, &profiles, &cp))
            .collect::<Result<Vec<_>, _>>()?;
        let mut unmatched_checkpoints = Vec::new();
        for (path, d) in &cp.docs {
            let matched = ledgers.iter().any(|l| {
                l.checkpoints
                    .as_ref()
                    .is_some_and(|c| c.checked.iter().any(|x| &x.source == path))
            });
            if !matched {
                unmatched_checkpoints.push(format!(
                    "{path} (ledger {}, checkpoint {})",
                    d.statement.ledger_id, d.statement.checkpoint
                ));
            }
        }

        let manifests = src
            .manifests
            .iter()
            .map(|p| load_manifest(p, &cas))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Self {
            checkpoints_checked: cp.trust.is_some(),
            unmatched_checkpoints,
            ledgers,
            manifests,
            cert_files,
            cas,
            profiles,
            profile_errors,
        })
    }

    /// What was read, for the report header.
    pub fn inputs(&self) -> super::Inputs {
        super::Inputs {
            ledgers: self
                .ledgers
                .iter()
                .map(|l| super::LedgerSummary {
                    path: l.path.clone(),
                    stations: l
                        .batches
                        .values()
                        .map(|b| b.station.clone())
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                    devices: l.devices.len() as u64,
                    certificates: l
                        .certs
                        .iter()
                        .filter(|c| c.state.is(CertState::Signed))
                        .count() as u64,
                    audit_events: l.audit_chain.as_ref().map_or(0, |n| *n),
                })
                .collect(),
            manifests: self.manifests.iter().map(|m| m.path.clone()).collect(),
            cert_files: self.cert_files.len() as u64,
            cas: self
                .cas
                .iter()
                .map(|c| format!("{} ({})", c.cert.source, c.subject))
                .collect(),
            profiles: self.profiles.keys().cloned().collect(),
        }
    }
}
