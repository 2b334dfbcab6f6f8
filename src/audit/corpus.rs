//! Loading what an audit reads: ledgers (read-only, no lock), manifests, loose certificate
//! files, CA certificates and profiles. What grows with the number of devices (ledger rows,
//! manifest device lines, certificate files) is streamed, one row at a time, into the
//! corpus's scratch database ([`super::scratch`]) as plain rows the checks can compare; what
//! does not (CAs, profiles, batches, CRLs, checkpoints) is kept here.

use super::Scratch;
use crate::ledger::{CertState, DeviceState, Ledger, LedgerError};
use crate::profile::Profile;
use crate::x509::CaCert;
use der::Decode;
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
    /// The audit's working database (a private scratch directory in TMPDIR).
    #[error("the audit's working database (in the temporary directory, TMPDIR): {0}; make room there, or point TMPDIR at a writable directory with room (about 2 KiB per device)")]
    Scratch(String),
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
            Self::Ledger(_) | Self::Scratch(_) => crate::exit::ExitCode::Storage,
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

/// One ledger, loaded: what is small (per batch, per CRL) is kept here, the rows (devices,
/// certificates, rejections, attempts, statuses, `issued` events) are in the corpus's
/// [`super::Scratch`] under this ledger's index.
pub struct LedgerData {
    /// The file, as given.
    pub path: String,
    /// Result of re-computing the audit hash chain: events, or where it breaks.
    pub audit_chain: Result<u64, String>,
    /// Batches by id.
    pub batches: BTreeMap<String, BatchRec>,
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

/// A manifest: whether it verified (its device lines are in the corpus's scratch database
/// when it did).
#[derive(Debug, Clone)]
pub struct ManifestData {
    pub path: String,
    /// Its tenant, per its header.
    pub tenant: Option<String>,
    /// Why it does not verify (signature, chain, Merkle root, count, a certificate).
    pub invalid: Option<String>,
}

/// Verifies one manifest against the self-signed roots among the given CAs. Only a file that
/// cannot be read is an error; a manifest that does not verify is a finding.
fn load_manifest(
    path: &Path,
    mi: usize,
    cas: &[CaEntry],
    scratch: &Scratch,
) -> Result<ManifestData, CorpusError> {
    use crate::manifest::{ManifestError, Trust};
    let shown = path.display().to_string();
    let roots: Vec<CaCert> = cas
        .iter()
        .filter(|c| c.cert.is_self_signed())
        .map(|c| c.cert.clone())
        .collect();
    let empty = |invalid: String| ManifestData {
        path: shown.clone(),
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
    // Device lines go to the scratch database as they are verified; the manifest's verdict
    // comes at the end, and a manifest that does not verify has its lines removed again.
    let mut failed: Option<rusqlite::Error> = None;
    let verdict = {
        let mut ins = scratch.conn().prepare_cached(
            "INSERT INTO mdev(mi, line, device_id, serial, sha) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        crate::manifest::verify::verify_file_with(path, None, &trust, |d| {
            if failed.is_some() {
                return;
            }
            // Line 1 is the header; device n is on line n + 1.
            let r = ins.execute(rusqlite::params![
                mi as i64,
                (d.line.seq + 1) as i64,
                d.line.device_id,
                d.line.serial,
                hex::encode(crate::crypto::sha256(&d.cert_der)),
            ]);
            if let Err(e) = r {
                failed = Some(e);
            }
        })
    };
    if let Some(e) = failed {
        return Err(e.into());
    }
    let out = match verdict {
        Ok(v) => {
            return Ok(ManifestData {
                path: shown,
                tenant: v.header.tenant,
                invalid: None,
            })
        }
        Err(ManifestError::Invalid(report)) => Ok(empty(report.to_string())),
        Err(ManifestError::Read { path, msg }) => Err(CorpusError::File {
            path,
            msg: format!("cannot read: {msg}"),
        }),
        Err(e) => Ok(empty(e.to_string())),
    };
    scratch
        .conn()
        .execute("DELETE FROM mdev WHERE mi = ?1", [mi as i64])?;
    out
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

/// Everything an audit looks at: the rows in [`Corpus::scratch`], the rest here.
pub struct Corpus {
    pub ledgers: Vec<LedgerData>,
    pub manifests: Vec<ManifestData>,
    /// Device certificate files found (their certificates are in the scratch database).
    pub cert_files: u64,
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
    /// The working database holding the rows.
    pub scratch: Scratch,
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

/// Reads one ledger: its small tables into [`LedgerData`], its rows (streamed, one at a time)
/// into `scratch` under index `li`.
fn load_ledger(
    path: &crate::ledger::LedgerLocation,
    li: usize,
    cas: &[CaEntry],
    profiles: &BTreeMap<String, Profile>,
    cp: &CheckpointInputs,
    scratch: &Scratch,
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

    let li_ = li as i64;
    // A scratch insert that fails stops the ledger's query; the error is returned after it.
    let mut failed: Option<rusqlite::Error> = None;
    let mut keep = |r: rusqlite::Result<usize>| match r {
        Ok(_) => true,
        Err(e) => {
            failed = Some(e);
            false
        }
    };

    {
        let mut ins = scratch.conn().prepare_cached(
            "INSERT INTO dev(li, rid, profile, device_id, batch_id, state, live, spki, serial,
                updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        conn.each(
            "SELECT rowid, profile, device_id, batch_id, state, spki_sha256, serial, updated_at
             FROM devices ORDER BY rowid",
            &[],
            |r| {
                let state: String = r.get(4)?;
                let live = Recorded::<DeviceState>::read(state.clone())
                    .known()
                    .is_some_and(DeviceState::is_live);
                Ok(keep(ins.execute(rusqlite::params![
                    li_,
                    r.get::<i64>(0)?,
                    r.get::<String>(1)?,
                    r.get::<String>(2)?,
                    r.get::<String>(3)?,
                    state,
                    live,
                    r.get::<String>(5)?,
                    r.get::<Option<String>>(6)?,
                    r.get::<String>(7)?,
                ])))
            },
        )
        .map_err(q)?;
    }

    {
        let mut ins = scratch.conn().prepare_cached(
            "INSERT INTO cert(li, rid, ikid, serial, nserial, prefix, profile, device_id,
                batch_id, state, der_sha, cert_sha, signed_at, leaf, leaf_err, l_spki, l_serial,
                l_na, l_issuer, l_ca, diffs, ndiffs)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                ?18, ?19, ?20, ?21, ?22)",
        )?;
        conn.each(
            "SELECT rowid, issuer_key_id, serial, profile, device_id, batch_id, state, der,
                    cert_sha256, signed_at
             FROM certificates ORDER BY rowid",
            &[],
            |r| {
                let serial: String = r.get(2)?;
                let profile: String = r.get(3)?;
                let device_id: String = r.get(4)?;
                let state: String = r.get(6)?;
                let der: Option<Vec<u8>> = r.get(7)?;
                // Examined here, one row at a time, so the DER is never all in memory at once.
                let der_sha256 = der.as_ref().map(|d| hex::encode(crate::crypto::sha256(d)));
                let leaf = match (
                    &der,
                    Recorded::<CertState>::read(state.clone()).is(CertState::Signed),
                ) {
                    (Some(d), true) => Some(super::checks::examine(
                        d,
                        cas,
                        profiles.get(&profile),
                        &device_id,
                    )),
                    _ => None,
                };
                let nserial = super::checks::normal_serial(&serial);
                let prefix = nserial.get(..2).unwrap_or("").to_string();
                let ok = leaf.as_ref().and_then(|l| l.as_ref().ok());
                Ok(keep(ins.execute(rusqlite::params![
                    li_,
                    r.get::<i64>(0)?,
                    r.get::<String>(1)?,
                    serial,
                    nserial,
                    prefix,
                    profile,
                    device_id,
                    r.get::<String>(5)?,
                    state,
                    der_sha256,
                    r.get::<Option<String>>(8)?,
                    r.get::<Option<String>>(9)?,
                    leaf.as_ref().map(|l| l.is_ok() as i64),
                    leaf.as_ref().and_then(|l| l.as_ref().err()),
                    ok.map(|l| &l.spki_sha256),
                    ok.map(|l| &l.serial),
                    ok.and_then(|l| l.not_after).map(|t| t.unix_timestamp()),
                    ok.map(|l| &l.issuer_name),
                    ok.and_then(|l| l.ca).map(|i| i as i64),
                    ok.and_then(|l| l.profile_diffs.as_ref())
                        .map(|d| serde_json::to_string(d).unwrap_or_else(|_| "[]".into())),
                    ok.and_then(|l| l.profile_diffs.as_ref()).map(|d| d.len() as i64),
                ])))
            },
        )
        .map_err(q)?;
    }

    {
        let mut ins = scratch.conn().prepare_cached(
            "INSERT INTO rej(li, batch_id, line, device_id, kind, reason, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        conn.each(
            "SELECT batch_id, line, device_id, kind, reason, at FROM rejections ORDER BY at, line",
            &[],
            |r| {
                Ok(keep(ins.execute(rusqlite::params![
                    li_,
                    r.get::<String>(0)?,
                    r.get::<i64>(1)?,
                    r.get::<Option<String>>(2)?,
                    r.get::<String>(3)?,
                    r.get::<String>(4)?,
                    r.get::<String>(5)?,
                ])))
            },
        )
        .map_err(q)?;
    }

    // Station tables arrived with schema 2; older ledgers have none.
    if conn.has_table("attempts").map_err(q)? {
        let mut ins = scratch.conn().prepare_cached(
            "INSERT INTO att(li, id, batch_id, station, operator, profile, device_id, started_at,
                outcome, step, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        conn.each(
            "SELECT id, batch_id, station, operator, profile, device_id, started_at, outcome, step, reason
             FROM attempts ORDER BY id",
            &[],
            |r| {
                Ok(keep(ins.execute(rusqlite::params![
                    li_,
                    r.get::<i64>(0)?,
                    r.get::<String>(1)?,
                    r.get::<String>(2)?,
                    r.get::<Option<String>>(3)?,
                    r.get::<String>(4)?,
                    r.get::<Option<String>>(5)?,
                    r.get::<String>(6)?,
                    r.get::<String>(7)?,
                    r.get::<String>(8)?,
                    r.get::<String>(9)?,
                ])))
            },
        )
        .map_err(q)?;
    }
    if conn.has_table("cert_status").map_err(q)? {
        let mut ins = scratch.conn().prepare_cached(
            "INSERT INTO status(li, ikid, serial, status) VALUES (?1, ?2, ?3, ?4)",
        )?;
        conn.each(
            "SELECT issuer_key_id, serial, status FROM cert_status",
            &[],
            |r| {
                Ok(keep(ins.execute(rusqlite::params![
                    li_,
                    r.get::<String>(0)?,
                    r.get::<String>(1)?,
                    r.get::<String>(2)?,
                ])))
            },
        )
        .map_err(q)?;
    }
    {
        let mut ins = scratch
            .conn()
            .prepare_cached("INSERT INTO issued(li, serial, sha) VALUES (?1, ?2, ?3)")?;
        let mut issued = |r: crate::ledger::db::Row| -> Result<bool, LedgerError> {
            let detail: serde_json::Value =
                serde_json::from_str(&r.get::<String>(0)?).unwrap_or_default();
            Ok(
                match (detail["serial"].as_str(), detail["cert_sha256"].as_str()) {
                    (Some(s), Some(h)) => keep(ins.execute(rusqlite::params![li_, s, h])),
                    _ => true,
                },
            )
        };
        conn.each(
            "SELECT detail FROM audit WHERE kind = 'issued'",
            &[],
            &mut issued,
        )
        .map_err(q)?;
        // Certificates imported from a station ledger were issued in its chain, kept verbatim.
        if conn.has_table("imported_audit").map_err(q)? {
            conn.each(
                "SELECT detail FROM imported_audit WHERE kind = 'issued'",
                &[],
                &mut issued,
            )
            .map_err(q)?;
        }
    }
    if let Some(e) = failed {
        return Err(e.into());
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
        checkpoints,
        crls,
        audit_chain,
        batches,
    })
}

/// Hands every certificate file under `dir` (`*.pem`, `*.crt`, `*.cer`, `*.der`) to `f`, in
/// sorted order, directories depth first. Each directory's listing is spilled to the scratch
/// database and read back sorted in pages, so a batch directory of a million device
/// directories is never listed in memory.
fn walk(
    dir: &Path,
    scratch: &Scratch,
    next_listing: &mut i64,
    f: &mut dyn FnMut(&Path) -> Result<(), CorpusError>,
) -> Result<(), CorpusError> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let listing = *next_listing;
    *next_listing += 1;
    let entries = std::fs::read_dir(dir).map_err(|e| file_err(dir, format!("cannot list: {e}")))?;
    {
        let mut ins = scratch
            .conn()
            .prepare_cached("INSERT INTO ls(listing, name) VALUES (?1, ?2)")?;
        for e in entries.flatten() {
            ins.execute(rusqlite::params![listing, e.file_name().as_bytes()])?;
        }
    }
    // A page of names at a time (no statement stays open across the recursion).
    let mut after: Vec<u8> = Vec::new();
    loop {
        let mut page: Vec<Vec<u8>> = Vec::new();
        scratch.each(
            "SELECT name FROM ls WHERE listing = ?1 AND name > ?2 ORDER BY name LIMIT 256",
            rusqlite::params![listing, after],
            |r| r.get::<_, Vec<u8>>(0),
            |n| {
                page.push(n);
                Ok(())
            },
        )?;
        let Some(last) = page.last() else { break };
        after = last.clone();
        for name in page {
            let p = dir.join(std::ffi::OsString::from_vec(name));
            if p.is_dir() {
                walk(&p, scratch, next_listing, f)?;
            } else if p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "pem" | "crt" | "cer" | "der"))
            {
                f(&p)?;
            }
        }
    }
    scratch
        .conn()
        .execute("DELETE FROM ls WHERE listing = ?1", [listing])?;
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

        let scratch = Scratch::create()?;
        let mut cert_files = 0u64;
        let mut listings = 0i64;
        for dir in &src.cert_dirs {
            if !dir.is_dir() {
                return Err(file_err(dir, "is not a directory; --certs takes a directory of certificate files (e.g. a batch --out)"));
            }
            let mut ins = scratch.conn().prepare_cached(
                "INSERT OR IGNORE INTO cfile(path, idx, sha, serial, subject)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            walk(dir, &scratch, &mut listings, &mut |f| {
                // Chain files and CA copies sit beside device certificates: keep leaves only.
                for (i, der) in read_certs(f)?.into_iter().enumerate() {
                    let is_ca = CaCert::from_der(der.clone(), String::new())
                        .map(|c| c.is_ca)
                        .unwrap_or(false);
                    if is_ca {
                        continue;
                    }
                    let (serial, subject) = match x509_cert::Certificate::from_der(&der) {
                        Ok(c) => (
                            super::checks::normal_serial(&hex::encode(
                                c.tbs_certificate.serial_number.as_bytes(),
                            )),
                            c.tbs_certificate.subject.to_string(),
                        ),
                        Err(_) => (String::new(), "(unparseable)".into()),
                    };
                    // A leaf sits in cert.pem and again in chain.pem: one certificate, first
                    // file named (the hash is unique in the table).
                    cert_files += ins.execute(rusqlite::params![
                        f.display().to_string(),
                        (i + 1) as i64,
                        hex::encode(crate::crypto::sha256(&der)),
                        serial,
                        subject,
                    ])? as u64;
                }
                Ok(())
            })?;
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
            .enumerate()
            .map(|(li, p)| load_ledger(p, li, &cas, &profiles, &cp, &scratch))
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
            .enumerate()
            .map(|(mi, p)| load_manifest(p, mi, &cas, &scratch))
            .collect::<Result<Vec<_>, _>>()?;
        scratch.loaded()?;

        Ok(Self {
            checkpoints_checked: cp.trust.is_some(),
            unmatched_checkpoints,
            ledgers,
            manifests,
            cert_files,
            cas,
            profiles,
            profile_errors,
            scratch,
        })
    }

    /// What was read, for the report header.
    pub fn inputs(&self) -> Result<super::Inputs, CorpusError> {
        let mut ledgers = Vec::new();
        for (li, l) in self.ledgers.iter().enumerate() {
            ledgers.push(super::LedgerSummary {
                path: l.path.clone(),
                stations: l
                    .batches
                    .values()
                    .map(|b| b.station.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
                devices: self
                    .scratch
                    .count("SELECT COUNT(*) FROM dev WHERE li = ?1", [li as i64])?,
                certificates: self.scratch.count(
                    "SELECT COUNT(*) FROM cert WHERE li = ?1 AND state = 'signed'",
                    [li as i64],
                )?,
                audit_events: l.audit_chain.as_ref().map_or(0, |n| *n),
            });
        }
        Ok(super::Inputs {
            ledgers,
            manifests: self.manifests.iter().map(|m| m.path.clone()).collect(),
            cert_files: self.cert_files,
            cas: self
                .cas
                .iter()
                .map(|c| format!("{} ({})", c.cert.source, c.subject))
                .collect(),
            profiles: self.profiles.keys().cloned().collect(),
        })
    }
}
