//! `--dry-run` for `certfab issue` and `certfab batch`: every request goes through the same
//! preparation as a run (parse, proof of possession, key and name policy, TBS, lint) and the
//! same exactly-one-identity rules against the ledger, and the would-be certificate is shown;
//! nothing is reserved, signed or written. No token is opened and no PIN is asked: a dry run
//! needs the CA certificate (for the issuer name, key identifier, validity limits and the
//! signature algorithm), not its key. It records no audit event either: it changes nothing,
//! and the ledger it reads is opened read-only (docs/issuance.md "Dry run").

use super::{prepare_row_guarded, rows, spec, Source, GROUP};
use crate::issue::{self, IssueContext, IssueError, Prepared, Request};
use crate::ledger::{Intent, KeyOrigin, LedgerError, Reserve, ReservePreview};
use crate::x509::SerialSource;
use serde::Serialize;
use std::collections::BTreeMap;

/// What a run would do with one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// A new certificate would be signed.
    WouldIssue,
    /// The device already has its certificate for this key: a run returns it unchanged.
    AlreadyIssued,
    /// The same device and key appear on an earlier line: issued once.
    Duplicate,
    /// Refused: by policy, the lint, or the ledger's identity rules (`reason` says which).
    Rejected,
}

impl Outcome {
    /// The word the summaries use.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::WouldIssue => "would-issue",
            Outcome::AlreadyIssued => "already-issued",
            Outcome::Duplicate => "duplicate",
            Outcome::Rejected => "rejected",
        }
    }
}

/// `certfab issue --dry-run`'s result.
#[derive(Debug, Clone, Serialize)]
pub struct IssuePreview {
    /// Always true: nothing was reserved, signed or written.
    pub dry_run: bool,
    /// What a run would do (never `rejected`: a refusal is an error, as in a run).
    pub outcome: Outcome,
    /// Device id.
    pub device_id: String,
    /// Profile name.
    pub profile: String,
    /// SHA-256 of the profile file.
    pub profile_sha256: String,
    /// The CA that would sign.
    pub ca: String,
    /// Signature algorithm.
    pub signature: String,
    /// `csr` or `pubkey`.
    pub key_origin: KeyOrigin,
    /// Device key type.
    pub key_type: String,
    /// SHA-256 of the device's SPKI.
    pub spki_sha256: String,
    /// notBefore (RFC 3339).
    pub not_before: String,
    /// notAfter (RFC 3339), or `99991231235959Z`.
    pub not_after: String,
    /// For `already-issued`: the serial of the certificate a run returns.
    pub serial: Option<String>,
    /// The checks that ran and passed.
    pub checks: Vec<&'static str>,
    /// The would-be certificate (or the one already issued) as `openssl x509 -text` prints it.
    pub certificate_text: String,
    /// About the ledger, when it could not be consulted as a run would.
    pub ledger_note: Option<String>,
}

/// The checks a prepared request has passed, in pipeline order.
pub const CHECKS: &[&str] = &[
    "parse",
    "proof-of-possession",
    "key-policy",
    "name-policy",
    "validity",
    "lint",
    "ledger-identity-rules",
];

/// Why a dry run stopped (what would stop a run, with its exit code).
#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    /// The request breaks policy or fails the lint.
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// The ledger's identity rules refuse it.
    #[error("refused: {0}")]
    Refused(String),
    /// The ledger cannot be read.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The batch input or arguments.
    #[error(transparent)]
    Batch(#[from] super::BatchError),
}

/// Everything a dry run needs, opened without the token (no module loaded, no PIN asked):
/// the site config, the profile, the CA that would sign and its certificates, and the ledger
/// read-only.
pub struct Offline {
    /// The site config.
    pub config: crate::config::SiteConfig,
    /// The profile.
    pub profile: crate::profile::Profile,
    /// The CA that signs for the profile now.
    pub ca_ref: crate::config::CaRef,
    /// Its certificates and signature algorithm.
    pub ca: crate::ca::CaCerts,
    /// The ledger as it stands (never created, migrated or written).
    pub ledger: crate::ledger::LedgerPreview,
    /// The time the dry run issues at (whole seconds, as a run does).
    pub now: time::OffsetDateTime,
}

fn intent(
    p: &Prepared,
    profile: &str,
    key_origin: KeyOrigin,
    line: u64,
    issuer_key_id: &str,
) -> Intent {
    Intent {
        profile: profile.to_string(),
        device_id: p.device_id.clone(),
        spki_sha256: hex::encode(crate::crypto::sha256(p.public_key.spki_der())),
        key_origin,
        line,
        issuer_key_id: issuer_key_id.to_string(),
        serial: hex::encode(&p.serial),
        tbs: p.tbs.clone(),
    }
}

/// `certfab issue --dry-run`: [`crate::issue::prepare`] and the ledger's decision for the
/// single-issue batch, as `certfab issue` would make them.
pub fn dry_run_issue(
    site: &Offline,
    req: &Request,
    serials: &dyn SerialSource,
) -> Result<IssuePreview, DryRunError> {
    let ctx = IssueContext {
        profile: &site.profile,
        ca: &site.ca.cert,
        signature: site.ca.signature,
        serial_prefix: site.config.serial_prefix,
        now: site.now,
        serials,
    };
    let prepared = issue::prepare(&ctx, req)?;
    let it = intent(
        &prepared,
        &site.profile.name,
        prepared.key_origin,
        0,
        &hex::encode(&site.ca.cert.key_id),
    );
    let single = crate::issue::record::single_spec(&site.profile, &site.ca_ref.name);
    let decision = match &site.ledger.ledger {
        Some(l) => {
            let batch = l.batch_for_input(&single.input_key)?.map(|b| b.id);
            l.reserve_preview(batch.as_deref().unwrap_or(""))
                .decide(&it)?
        }
        None => ReservePreview::without_ledger().decide(&it)?,
    };
    let (outcome, serial, text) = match decision {
        Reserve::Reserved => (
            Outcome::WouldIssue,
            None,
            crate::x509::tbs_text(&prepared.tbs).map_err(IssueError::Build)?,
        ),
        Reserve::AlreadyIssued { der } => {
            let (tbs, _, _) =
                crate::x509::split_signed(&der).map_err(|e| IssueError::Build(e.into()))?;
            let serial = {
                use der::Decode;
                x509_cert::TbsCertificate::from_der(tbs)
                    .map(|t| hex::encode(t.serial_number.as_bytes()))
                    .map_err(|e| IssueError::Build(e.into()))?
            };
            (
                Outcome::AlreadyIssued,
                Some(serial),
                crate::x509::tbs_text(tbs).map_err(IssueError::Build)?,
            )
        }
        Reserve::Duplicate { first_line } => {
            return Err(DryRunError::Refused(format!(
                "the same request is already being signed (line {first_line})"
            )))
        }
        Reserve::Refused(r) => return Err(DryRunError::Refused(r)),
    };
    Ok(IssuePreview {
        dry_run: true,
        outcome,
        device_id: prepared.device_id.clone(),
        profile: site.profile.name.clone(),
        profile_sha256: hex::encode(site.profile.sha256),
        ca: site.ca_ref.name.clone(),
        signature: prepared.signature.to_string(),
        key_origin: prepared.key_origin,
        key_type: prepared.public_key.kind().to_string(),
        spki_sha256: it.spki_sha256,
        not_before: crate::clock::rfc3339(prepared.not_before),
        not_after: prepared
            .not_after
            .map(crate::clock::rfc3339)
            .unwrap_or_else(|| "99991231235959Z".into()),
        serial,
        checks: CHECKS.to_vec(),
        certificate_text: text,
        ledger_note: site.ledger.note.clone(),
    })
}

/// One input row of a batch dry run.
#[derive(Debug, Clone, Serialize)]
pub struct RowPreview {
    /// Input line (CSV line, file index, or sequence number).
    pub line: u64,
    /// Device id, when known.
    pub device_id: Option<String>,
    /// What a run would do.
    pub outcome: Outcome,
    /// Why, for anything but `would-issue`.
    pub reason: Option<String>,
}

/// `certfab batch --dry-run`'s result.
#[derive(Debug, Clone, Serialize)]
pub struct BatchPreview {
    /// Always true: nothing was reserved, signed or written.
    pub dry_run: bool,
    /// Profile name.
    pub profile: String,
    /// SHA-256 of the profile file.
    pub profile_sha256: String,
    /// The CA that would sign.
    pub ca: String,
    /// The batch a run would resume (the same input, profile and output), if any.
    pub resumes: Option<String>,
    /// Rows read.
    pub rows_read: u64,
    /// Rows per outcome (`would-issue`, `already-issued`, `duplicate`, `rejected`).
    pub counts: BTreeMap<&'static str, u64>,
    /// Every row, in input order.
    pub rows: Vec<RowPreview>,
    /// A row a run could not read past: the run would stop there (resumable), as this did.
    pub stops_at: Option<String>,
    /// The first would-be certificate, as `openssl x509 -text` prints it.
    pub sample_certificate: Option<String>,
    /// About the ledger, when it could not be consulted as a run would.
    pub ledger_note: Option<String>,
}

impl BatchPreview {
    /// Whether a run would refuse any row (a run would exit 10).
    pub fn has_rejections(&self) -> bool {
        self.counts.get("rejected").copied().unwrap_or(0) > 0
    }
}

/// Options of a batch that decide what it is (its identity for resume) and what it refuses.
pub struct BatchDryRun<'a> {
    /// The input.
    pub source: &'a Source,
    /// The output directory (part of the batch's identity; not created).
    pub out: &'a std::path::Path,
    /// `--plain-keys`.
    pub plain_keys: bool,
    /// `--layout` (part of the batch's identity).
    pub layout: super::Layout,
    /// Whether `--key-passphrase` was given (it is not read: nothing is written).
    pub has_passphrase: bool,
    /// Threads preparing rows.
    pub jobs: usize,
}

/// `certfab batch --dry-run`: reads the whole input as a run would, prepares every row, and
/// applies the ledger's identity rules in input order, each row as if the rows before it had
/// been reserved.
pub fn dry_run_batch(
    site: &Offline,
    o: &BatchDryRun<'_>,
    serials: &dyn SerialSource,
) -> Result<BatchPreview, DryRunError> {
    if matches!(o.source, Source::Count { .. }) && !o.has_passphrase && !o.plain_keys {
        return Err(super::BatchError::Usage(
            "host key generation writes keys encrypted: give --key-passphrase env:NAME or file:PATH (or --plain-keys to write them unencrypted, explicitly)".into(),
        )
        .into());
    }
    let spec = spec(
        &site.profile,
        &site.ca_ref.name,
        o.source,
        o.out,
        o.plain_keys,
        o.layout,
    );
    let mut input = rows(o.source).map_err(super::BatchError::from)?;
    let resumes = match &site.ledger.ledger {
        Some(l) => l.batch_for_input(&spec.input_key)?.map(|b| b.id),
        None => None,
    };
    let batch_id = resumes.clone().unwrap_or_default();
    let mut preview = match &site.ledger.ledger {
        Some(l) => l.reserve_preview(&batch_id),
        None => ReservePreview::without_ledger(),
    };
    let ctx = IssueContext {
        profile: &site.profile,
        ca: &site.ca.cert,
        signature: site.ca.signature,
        serial_prefix: site.config.serial_prefix,
        now: site.now,
        serials,
    };
    let issuer_key_id = hex::encode(&site.ca.cert.key_id);
    let mut out = BatchPreview {
        dry_run: true,
        profile: site.profile.name.clone(),
        profile_sha256: hex::encode(site.profile.sha256),
        ca: site.ca_ref.name.clone(),
        resumes,
        rows_read: 0,
        counts: BTreeMap::new(),
        rows: Vec::new(),
        stops_at: None,
        sample_certificate: None,
        ledger_note: site.ledger.note.clone(),
    };
    let push = |out: &mut BatchPreview, line, device_id, outcome: Outcome, reason| {
        *out.counts.entry(outcome.as_str()).or_default() += 1;
        out.rows.push(RowPreview {
            line,
            device_id,
            outcome,
            reason,
        });
    };
    loop {
        let mut group = Vec::with_capacity(GROUP);
        while group.len() < GROUP {
            match input.next() {
                Some(Err(e)) if e.fatal => {
                    out.stops_at = Some(format!(
                        "line {}: {}. A run would stop here (the rows before it done, resumable once the input is fixed)",
                        e.line, e.reason
                    ));
                    break;
                }
                Some(r) => group.push(r),
                None => break,
            }
        }
        if group.is_empty() {
            break;
        }
        out.rows_read += group.len() as u64;
        let mut fresh = Vec::new();
        for r in group {
            match r {
                Err(e) => push(
                    &mut out,
                    e.line,
                    e.device_id,
                    Outcome::Rejected,
                    Some(e.reason),
                ),
                Ok(row) => {
                    // Devices this batch already finished (a resume): a run rewrites their
                    // files and signs nothing.
                    let done = match (&site.ledger.ledger, &row.device_id) {
                        (Some(l), Some(id)) if !batch_id.is_empty() => {
                            l.device(&site.profile.name, id)?.filter(|d| {
                                d.state.is_live() && d.batch_id == batch_id && d.der.is_some()
                            })
                        }
                        _ => None,
                    };
                    match done {
                        Some(d) if d.line == row.line => push(
                            &mut out,
                            row.line,
                            row.device_id,
                            Outcome::AlreadyIssued,
                            Some(format!(
                                "issued by batch {batch_id} before; a run rewrites its files"
                            )),
                        ),
                        Some(d) => push(
                            &mut out,
                            row.line,
                            row.device_id,
                            Outcome::Duplicate,
                            Some(format!("line {} of this batch issued this device", d.line)),
                        ),
                        None => fresh.push(row),
                    }
                }
            }
        }
        let prepared = super::parallel_map(&fresh, o.jobs.max(1), |row| {
            prepare_row_guarded(&ctx, 0, row)
        });
        for (row, res) in fresh.into_iter().zip(prepared) {
            let w = match res {
                Ok(w) => w,
                Err(reason) => {
                    push(
                        &mut out,
                        row.line,
                        row.device_id,
                        Outcome::Rejected,
                        Some(reason),
                    );
                    continue;
                }
            };
            let origin = if w.key.is_some() {
                KeyOrigin::Host
            } else {
                w.prepared.key_origin
            };
            let it = intent(
                &w.prepared,
                &site.profile.name,
                origin,
                w.row_line,
                &issuer_key_id,
            );
            let id = Some(it.device_id.clone());
            match preview.decide(&it)? {
                Reserve::Reserved => {
                    if out.sample_certificate.is_none() {
                        out.sample_certificate = Some(
                            crate::x509::tbs_text(&w.prepared.tbs).map_err(IssueError::Build)?,
                        );
                    }
                    push(&mut out, row.line, id, Outcome::WouldIssue, None)
                }
                Reserve::AlreadyIssued { .. } => push(
                    &mut out,
                    row.line,
                    id,
                    Outcome::AlreadyIssued,
                    Some(
                        "this device already has its certificate for this key; a run returns it"
                            .into(),
                    ),
                ),
                Reserve::Duplicate { first_line } => push(
                    &mut out,
                    row.line,
                    id,
                    Outcome::Duplicate,
                    Some(format!(
                        "same device and key as line {first_line}; issued once"
                    )),
                ),
                Reserve::Refused(reason) => {
                    push(&mut out, row.line, id, Outcome::Rejected, Some(reason))
                }
            }
        }
        if out.stops_at.is_some() {
            break;
        }
    }
    Ok(out)
}
