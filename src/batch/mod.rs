//! Batch issuance: stream the input, prepare devices in parallel, reserve serials in the ledger
//! (one transaction per group), sign with one HSM session per worker, record the signatures,
//! and only then write the files. Re-running the same command resumes the same batch.

mod bundle;
mod dryrun;
mod input;
mod output;

pub use bundle::DEVICES_PER_FILE as BUNDLE_DEVICES;

pub use dryrun::{
    dry_run_batch, dry_run_issue, BatchDryRun, BatchPreview, DryRunError, IssuePreview, Offline,
    Outcome,
};
pub(crate) use input::csv_rows_from;
pub use input::{rows, IdTemplate, InputError, Row, RowError, RowKey, Source};

use crate::clock::Clock;
use crate::crypto::Signer;
use crate::issue::record::{self, IssuingCa};
use crate::issue::{self, IssueContext, IssueError, KeySource, Prepared, Request};
use crate::ledger::{
    BatchSpec, Intent, KeyOrigin, Ledger, LedgerError, Rejection, Reserve, Signed,
};
use crate::profile::Profile;
use crate::x509::{CaCert, SerialSource};
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Devices handled per ledger transaction: large enough to amortise the fsync, small enough
/// that little is in flight when the process is stopped.
pub const GROUP: usize = 512;

/// How the batch's output is laid out under `--out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// `OUT/<device_id>/cert.pem` and `chain.pem` (plus `key.pem`, `device.json` for host
    /// keygen): what tools that look for one device's files expect.
    #[default]
    Dirs,
    /// `OUT/bundle-NNNNN.jsonl`, one JSON line per device: a few files for a whole batch
    /// instead of three inodes per device, for bulk imports.
    Bundle {
        /// Input rows per bundle file.
        devices_per_file: u64,
    },
}

/// What a batch run needs besides its input.
pub struct BatchJob<'a, S: Signer + Sync> {
    pub profile: &'a Profile,
    /// The issuing CA (its chain goes into chain.pem).
    pub ca: &'a IssuingCa,
    /// One signer per worker (each with its own HSM session).
    pub signers: &'a [S],
    /// Station serial prefix.
    pub serial_prefix: u8,
    /// Issuance time for each group.
    pub clock: &'a dyn Clock,
    /// Where serials come from.
    pub serials: &'a dyn SerialSource,
    pub source: Source,
    /// Output directory.
    pub out: PathBuf,
    /// How the output is laid out.
    pub layout: Layout,
    /// Passphrase for generated keys; None with `plain_keys`.
    pub key_passphrase: Option<SecretString>,
    /// Write generated keys unencrypted (explicit opt-in).
    pub plain_keys: bool,
    /// PBKDF2 iterations for encrypted keys.
    pub kdf_iterations: u32,
    /// Set from a signal handler: finish the group in flight, then stop.
    pub stop: &'a AtomicBool,
}

/// The outcome of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// Batch id.
    pub batch: String,
    /// Whether this run resumed an earlier one.
    pub resumed: bool,
    /// Stopped by a signal before the input was finished.
    pub interrupted: bool,
    /// Certificates signed in this run.
    pub issued: u64,
    /// Devices already done before this run.
    pub already: u64,
    /// Rows refused in this run.
    pub rejected: u64,
    /// Duplicate rows in this run (issued once).
    pub duplicates: u64,
    /// Seconds.
    pub elapsed_s: f64,
    /// Certificates per second in this run.
    pub rate_per_s: f64,
    /// Ledger counts for the whole batch.
    pub counts: BTreeMap<String, u64>,
    /// Rejected/duplicate rows of the whole batch.
    pub problems: Vec<Rejection>,
    /// Output directory.
    pub out: String,
    /// Ledger file.
    pub ledger: String,
}

/// Why a batch stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The input cannot be read at all.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The ledger cannot be written: nothing more is signed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Signing failed after recovery: the serials are burned, the batch stops.
    #[error("{0}; the affected serials are burned and the devices will get new ones on resume")]
    Sign(IssueError),
    /// Output could not be written (the certificates are in the ledger; resume rewrites them).
    #[error("{0}; the certificates signed so far are recorded in the ledger, and re-running the same command (or `certfab batch resume`) writes their files once this is fixed")]
    Output(String),
    /// Output could not be written before the devices in flight were signed (the output
    /// directory, or a generated key): none of them has a certificate.
    #[error("{0}; no certificate was signed for the devices in flight. Fix this, then re-run the same command (or `certfab batch resume`): serials reserved for them are burned and they are issued afresh, with new keys if certfab generates them")]
    OutputUnsigned(String),
    /// Bad job parameters.
    #[error("{0}")]
    Usage(String),
    /// The ledger's exactly-one-identity rules refuse this request.
    #[error("refused: {0}")]
    Refused(String),
}

impl BatchError {
    /// The exit code: unreadable input and bad parameters 2, refusals 3, storage 5, and a
    /// signing failure the token's own code (4 when it is not the token's).
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            Self::Input(_) | Self::Usage(_) => crate::exit::ExitCode::Usage,
            Self::Ledger(_) | Self::Output(_) | Self::OutputUnsigned(_) => {
                crate::exit::ExitCode::Storage
            }
            Self::Sign(IssueError::Sign(s)) => s.exit_code(),
            Self::Sign(_) => crate::exit::ExitCode::Hsm,
            Self::Refused(_) => crate::exit::ExitCode::Rejected,
        }
    }
}

/// Progress callback: (devices handled, issued so far).
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// The identity of a batch for resume: same profile file, input and output.
pub fn spec(
    profile: &Profile,
    ca_name: &str,
    source: &Source,
    out: &std::path::Path,
    plain_keys: bool,
    layout: Layout,
) -> BatchSpec {
    let mut source_json = serde_json::json!({"source": source, "profile_path": profile.path, "out": out, "plain_keys": plain_keys});
    // Only a bundle batch records its layout, so a directory batch keeps the identity (input
    // key) it had before layouts existed and resumes as it always did.
    if let Layout::Bundle { devices_per_file } = layout {
        source_json["layout"] = serde_json::json!({ "bundle": devices_per_file });
    }
    let key_material = format!(
        "{}\n{}\n{}",
        hex::encode(profile.sha256),
        ca_name,
        source_json
    );
    BatchSpec {
        input_key: hex::encode(crate::crypto::sha256(key_material.as_bytes())),
        profile: profile.name.clone(),
        profile_sha256: hex::encode(profile.sha256),
        ca: ca_name.to_string(),
        source: source_json.to_string(),
        out_dir: out.display().to_string(),
        tenant: profile.tenant.clone(),
    }
}

struct Work {
    /// The row's place in the input, from 0 (the same on every run of the batch).
    ordinal: u64,
    row_line: u64,
    prepared: Prepared,
    key: Option<p256::SecretKey>,
}

/// Runs (or resumes) a batch.
pub fn run<S: Signer + Sync>(
    job: &BatchJob<'_, S>,
    ledger: &mut Ledger,
    progress: Progress<'_>,
) -> Result<Summary, BatchError> {
    if job.signers.is_empty() {
        return Err(BatchError::Usage(
            "at least one signer (--jobs 1) is needed".into(),
        ));
    }
    if matches!(job.source, Source::Count { .. }) && job.key_passphrase.is_none() && !job.plain_keys
    {
        return Err(BatchError::Usage(
            "host key generation writes keys encrypted: give --key-passphrase env:NAME or file:PATH (or --plain-keys to write them unencrypted, explicitly)".into(),
        ));
    }
    let spec = spec(
        job.profile,
        &job.ca.name,
        &job.source,
        &job.out,
        job.plain_keys,
        job.layout,
    );
    // Everything that can refuse the job (an unreadable input such as a FIFO or a missing
    // file, an unusable --out) is checked before the batch is recorded: a batch that exists in
    // the ledger must always be resumable once its cause is fixed.
    let mut rows = rows(&job.source)?;
    let known = ledger.batch_for_input(&spec.input_key)?.is_some();
    let out = output::Writer::new(job, &job.out, known)?;
    let (batch, resumed) = ledger.begin_batch(&spec)?;
    let start = Instant::now();
    let (mut issued, mut already, mut rejected, mut duplicates, mut handled) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut interrupted = false;
    let jobs = job.signers.len();

    let out_ref = &out;
    std::thread::scope(|scope| -> Result<(), BatchError> {
        // Each group's recorded certificates (input row, device, DER), and the input row up to
        // which everything is settled in the ledger when the group went through whole.
        let (files_tx, files_rx) =
            std::sync::mpsc::sync_channel::<(Vec<(u64, String, Vec<u8>)>, Option<u64>)>(2);
        let writer = scope.spawn(move || -> Result<(), String> {
            for (group, settled) in files_rx {
                for (row, id, der) in &group {
                    out_ref.deliver(*row, id, der)?;
                }
                if let Some(row) = settled {
                    out_ref.settled(row)?;
                }
            }
            Ok(())
        });
        // Groups are read, checked against the ledger and prepared on their own thread, one
        // group ahead of the one being reserved, signed and recorded here.
        let (prepared_tx, prepared_groups) =
            std::sync::mpsc::sync_channel::<Result<PreparedGroup, BatchError>>(1);
        let ledger_path = ledger.location().clone();
        let batch_id = batch.id.clone();
        let producer = scope.spawn(move || -> bool {
            let reader = match Ledger::open_read(&ledger_path, "") {
                Ok(r) => r,
                Err(e) => {
                    let _ = prepared_tx.send(Err(e.into()));
                    return false;
                }
            };
            let mut ordinal = 0u64;
            loop {
                // The stop flag is checked between rows, not only between groups, so a signal
                // takes effect while a slow input is being read (the partial group was not
                // reserved: a resume reads it again).
                let mut group: Vec<(u64, Result<Row, RowError>)> = Vec::with_capacity(GROUP);
                let mut fatal = None;
                while group.len() < GROUP && !job.stop.load(Ordering::SeqCst) {
                    match rows.next() {
                        Some(Err(e)) if e.fatal => {
                            fatal = Some(e);
                            break;
                        }
                        Some(r) => {
                            group.push((ordinal, r));
                            ordinal += 1;
                        }
                        None => break,
                    }
                }
                if job.stop.load(Ordering::SeqCst) {
                    return false;
                }
                if group.is_empty() && fatal.is_none() {
                    return true;
                }
                if !group.is_empty() {
                    let pg = prepare_group(job, &reader, &batch_id, out_ref, group);
                    let failed = pg.is_err();
                    if prepared_tx.send(pg).is_err() || failed {
                        return false;
                    }
                }
                // The rows before it are handled; the batch stops, resumable once the input is
                // fixed, rather than finishing with the rest of the input silently unread.
                if let Some(e) = fatal {
                    let path = match &job.source {
                        Source::Csv { path, .. } | Source::CsrDir { path, .. } => path.display().to_string(),
                        Source::Count { .. } => "--count".into(),
                    };
                    let _ = prepared_tx.send(Err(BatchError::Input(InputError {
                        path,
                        msg: format!(
                            "line {}: {}. The rows before it are done; fix the row (or split the input) and resume the batch",
                            e.line, e.reason
                        ),
                    })));
                    return false;
                }
            }
        });
        let body = (|| -> Result<(), BatchError> {
            loop {
                if job.stop.load(Ordering::SeqCst) {
                    interrupted = true;
                    break;
                }
                let Some(pg) = prepared_groups.recv().ok() else {
                    break;
                };
                let PreparedGroup {
                    handled: n,
                    already: done,
                    mut problems,
                    works,
                    end,
                } = pg?;
                handled += n;
                already += done;

                // Intent before signature: serial and TBS are durable before the HSM sees them.
                let intents: Vec<Intent> = works
                    .iter()
                    .map(|w| record::intent(job.profile, &job.ca.cert, &w.prepared, w.row_line))
                    .collect();
                let decisions = ledger.reserve(&batch.id, &intents)?;
                let mut to_sign = Vec::new();
                let mut cleared = Vec::new();
                for ((w, it), d) in works.into_iter().zip(intents).zip(decisions) {
                    match d {
                        Reserve::Reserved => to_sign.push((w, it)),
                        Reserve::AlreadyIssued { der } => {
                            out.deliver(w.ordinal, &it.device_id, &der)
                                .map_err(BatchError::Output)?;
                            cleared.push(it.line);
                            already += 1;
                        }
                        Reserve::Duplicate { first_line } => problems.push(Rejection {
                            line: it.line,
                            device_id: Some(it.device_id.clone()),
                            kind: "duplicate".into(),
                            reason: format!(
                                "same device and key as line {first_line}; issued once"
                            ),
                        }),
                        Reserve::Refused(reason) => problems.push(Rejection {
                            line: it.line,
                            device_id: Some(it.device_id.clone()),
                            kind: "rejected".into(),
                            reason,
                        }),
                    }
                }
                // A generated key is stored (encrypted) and made durable before its certificate
                // can exist: written in parallel, then one filesystem sync for the group.
                let keyed: Vec<(u64, &str, &p256::SecretKey)> = to_sign
                    .iter()
                    .filter_map(|(w, it)| {
                        w.key
                            .as_ref()
                            .map(|k| (w.ordinal, it.device_id.as_str(), k))
                    })
                    .collect();
                if !keyed.is_empty() {
                    out.write_keys(&keyed, jobs)
                        .map_err(BatchError::OutputUnsigned)?;
                }

                // Sign: worker i uses signer i (its own HSM session).
                let results = parallel_sign(&to_sign, job.signers, &job.ca.cert);
                let mut signed = Vec::new();
                let mut failed = Vec::new();
                let mut first_error = None;
                for ((w, it), res) in to_sign.iter().zip(results) {
                    match res {
                        Ok(der) => signed.push((w.ordinal, it, der)),
                        Err(e) => {
                            failed.push((it.clone(), e.to_string()));
                            first_error.get_or_insert(e);
                        }
                    }
                }
                let records: Vec<Signed> = signed
                    .iter()
                    .map(|(_, it, der)| record::signed(it, der.clone()))
                    .collect();
                cleared.extend(signed.iter().map(|(_, it, _)| it.line));
                // One transaction for the group's signatures and problem rows.
                ledger.record_group(&batch.id, &records, &cleared, &problems)?;
                if !failed.is_empty() {
                    ledger.record_failed(&batch.id, &failed)?;
                }
                // Only now may certificates leave the process: the writer thread creates the files
                // while this thread goes on with the next group (file creation is half the cost).
                let files = signed
                    .iter()
                    .map(|(row, it, der)| (*row, it.device_id.clone(), der.clone()))
                    .collect();
                // A group with a failed signature leaves devices to issue on resume: the rows
                // up to it are not settled, so their bundle stays open (and is rebuilt then).
                let settled = first_error.is_none().then_some(end);
                files_tx
                    .send((files, settled))
                    .map_err(|_| BatchError::Output("the output writer stopped".into()))?;
                issued += signed.len() as u64;
                rejected += problems.iter().filter(|p| p.kind == "rejected").count() as u64;
                duplicates += problems.iter().filter(|p| p.kind == "duplicate").count() as u64;
                progress(handled, issued);
                if let Some(e) = first_error {
                    return Err(BatchError::Sign(e));
                }
            }
            Ok(())
        })();
        drop(prepared_groups);
        let input_done = producer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        if !input_done && body.is_ok() && job.stop.load(Ordering::SeqCst) {
            interrupted = true;
        }
        drop(files_tx);
        let written = writer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        // Whatever stopped the loop, what was signed is written (or the writer's error shown);
        // bundles go into place only when every row of theirs is settled.
        let complete = input_done && body.is_ok() && written.is_ok() && !interrupted;
        let synced = if complete { out.finish() } else { out.sync() };
        body?;
        written.map_err(BatchError::Output)?;
        synced.map_err(BatchError::Output)
    })?;
    let status = ledger
        .status(&batch.id)?
        .ok_or(LedgerError::Write(rusqlite::Error::QueryReturnedNoRows))?;
    if !interrupted {
        ledger.finish_batch(&batch.id, &status.counts)?;
    } else {
        ledger.record_event(
            "batch_interrupted",
            Some(&batch.id),
            None,
            &serde_json::json!(status.counts),
        )?;
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    Ok(Summary {
        batch: batch.id,
        resumed,
        interrupted,
        issued,
        already,
        rejected,
        duplicates,
        elapsed_s,
        rate_per_s: if elapsed_s > 0.0 {
            issued as f64 / elapsed_s
        } else {
            0.0
        },
        counts: status.counts,
        problems: status.problems,
        out: job.out.display().to_string(),
        ledger: ledger.location().to_string(),
    })
}

/// One input group after the ledger check and preparation, ready to reserve.
struct PreparedGroup {
    handled: u64,
    already: u64,
    problems: Vec<Rejection>,
    works: Vec<Work>,
    /// The input row after the group's last.
    end: u64,
}

/// Reads nothing itself: sorts a group's rows into problems, devices this batch already
/// finished (their files are checked), and prepared work (parse, proof of possession, policy,
/// TBS, lint, or keygen) done in parallel. `reader` is a read-only ledger connection; the
/// reservation on the main connection remains the authority on duplicates.
fn prepare_group<S: Signer + Sync>(
    job: &BatchJob<'_, S>,
    reader: &Ledger,
    batch_id: &str,
    out: &output::Writer,
    group: Vec<(u64, Result<Row, RowError>)>,
) -> Result<PreparedGroup, BatchError> {
    let handled = group.len() as u64;
    let end = group.last().map(|(o, _)| o + 1).unwrap_or(0);
    let mut already = 0;
    let mut problems = Vec::new();
    let mut todo = Vec::new();
    for (ordinal, r) in group {
        match r {
            Ok(row) => todo.push((ordinal, row)),
            Err(e) => problems.push(Rejection {
                line: e.line,
                device_id: e.device_id,
                kind: "rejected".into(),
                reason: e.reason,
            }),
        }
    }
    // A device this batch already finished needs no work: check its files and move on.
    let ids: Vec<&str> = todo
        .iter()
        .filter_map(|(_, row)| row.device_id.as_deref())
        .collect();
    let known = reader.devices(&job.profile.name, &ids)?;
    let mut fresh = Vec::new();
    for (ordinal, row) in todo {
        if let Some(id) = &row.device_id {
            if let Some(d) = known.get(id) {
                if let (true, Some(der)) = (d.state.is_live() && d.batch_id == batch_id, &d.der) {
                    if d.line == row.line {
                        out.deliver(ordinal, id, der).map_err(BatchError::Output)?;
                        already += 1;
                    }
                    // Another line naming the same device was recorded as a duplicate or
                    // refused on the run that saw it first; the ledger still lists it.
                    continue;
                }
            }
        }
        fresh.push((ordinal, row));
    }

    // Prepare in parallel: parse, proof of possession, policy, TBS, lint (or keygen).
    let now = crate::clock::whole_seconds(job.clock.now());
    let ctx = IssueContext {
        profile: job.profile,
        ca: &job.ca.cert,
        signature: job.signers[0].algorithm(),
        serial_prefix: job.serial_prefix,
        now,
        serials: job.serials,
    };
    let prepared = parallel_map(&fresh, job.signers.len(), |(ordinal, row)| {
        prepare_row_guarded(&ctx, *ordinal, row)
    });
    let mut works = Vec::new();
    for ((_, row), res) in fresh.iter().zip(prepared) {
        match res {
            Ok(w) => works.push(w),
            Err(reason) => problems.push(Rejection {
                line: row.line,
                device_id: row.device_id.clone(),
                kind: "rejected".into(),
                reason,
            }),
        }
    }

    Ok(PreparedGroup {
        handled,
        already,
        problems,
        works,
        end,
    })
}

/// [`prepare_row`], with a panic (a bug: preparation is fuzzed to never panic) turned into this
/// row's rejection. The batch is already in the ledger; a panic here would stop every resume
/// at the same row, leaving a batch that can neither finish nor be resumed. Preparation only
/// reads shared state, so nothing is left half-changed by the unwind.
fn prepare_row_guarded(ctx: &IssueContext<'_>, ordinal: u64, row: &Row) -> Result<Work, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| prepare_row(ctx, ordinal, row))).unwrap_or_else(
        |p| {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(format!(
                "internal error while preparing this row ({}); the row is refused, the batch goes on. Please report it",
                crate::text::escape(&what)
            ))
        },
    )
}

fn prepare_row(ctx: &IssueContext<'_>, ordinal: u64, row: &Row) -> Result<Work, String> {
    let (key, generated) = match &row.key {
        RowKey::Csr(b) => (KeySource::Csr(b.clone()), None),
        RowKey::PublicKey(b) => (KeySource::PublicKey(b.clone()), None),
        RowKey::Generate => {
            if !ctx.profile.keys.p256 {
                return Err(format!(
                    "profile '{}' does not allow P-256, the key type certfab generates",
                    ctx.profile.name
                ));
            }
            let sk = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
            use p256::pkcs8::EncodePublicKey;
            let spki = sk
                .public_key()
                .to_public_key_der()
                .map_err(|e| e.to_string())?;
            (KeySource::PublicKey(spki.as_bytes().to_vec()), Some(sk))
        }
    };
    let req = Request {
        device_id: row.device_id.clone(),
        key,
        vars: row.vars.clone(),
    };
    let mut prepared = issue::prepare(ctx, &req).map_err(|e| e.to_string())?;
    if generated.is_some() {
        prepared.key_origin = KeyOrigin::Host;
    }
    output::check_component(&prepared.device_id)?;
    Ok(Work {
        ordinal,
        row_line: row.line,
        prepared,
        key: generated,
    })
}

/// Maps `f` over `items` with `threads` scoped threads, keeping order.
fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if items.len() < 2 || threads < 2 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| s.spawn(|| c.iter().map(&f).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

fn parallel_sign<S: Signer + Sync>(
    items: &[(Work, Intent)],
    signers: &[S],
    ca: &CaCert,
) -> Vec<Result<Vec<u8>, IssueError>> {
    let chunk = items.len().div_ceil(signers.len()).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .zip(signers)
            .map(|(c, signer)| {
                s.spawn(move || {
                    c.iter()
                        .map(|(w, _)| issue::sign(w.prepared.clone(), ca, signer).map(|i| i.der))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}
