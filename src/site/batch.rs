//! `certfab batch` and `batch resume`: a batch run on an issuing session, then its manifest
//! (`--manifest`) and the audit checkpoint. The steps that can refuse the job without the
//! token come first, in the order they always have.

use super::{ManifestTarget, SiteRef};
use crate::batch::{self, BatchJob, Source, Summary};
use crate::error::Error;
use crate::manifest::build::BuildOutcome;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

/// What a batch run was asked.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    /// Profile: a path, or a name in the site's `profiles_dir`.
    pub profile: String,
    pub source: Source,
    /// Output directory (absolute).
    pub out: PathBuf,
    /// Write generated keys unencrypted (explicit).
    pub plain_keys: bool,
    /// How the output is laid out (recorded with a bundle batch, so a resume keeps it).
    pub layout: batch::Layout,
    /// Signing workers, one HSM session each (1..=64).
    pub jobs: usize,
    /// Passphrase source for generated keys (`env:NAME`, `file:PATH`).
    pub key_passphrase: Option<String>,
    /// PBKDF2 iterations for encrypted keys.
    pub kdf_iterations: u32,
    /// Build the batch's signed manifest here when it completes.
    pub manifest: Option<PathBuf>,
    /// On a resume: the input key the batch was recorded with (a changed profile is refused).
    pub expect_key: Option<String>,
}

/// What the run reports while it works.
pub trait BatchUi: Sync {
    /// The token is logged in and the CA checked: signing starts now (the CLI installs its
    /// Ctrl-C handler here, so an interrupted login still ends the process at once).
    fn signing_starts(&self) {}
    /// Devices handled and issued so far.
    fn progress(&self, _handled: u64, _issued: u64) {}
}

/// How a batch run ended.
#[derive(Debug)]
pub struct BatchRun {
    /// The batch's summary.
    pub summary: Summary,
    /// The manifest asked for with `--manifest`: built, or why it failed (the batch itself
    /// is done either way).
    pub manifest: Option<Result<BuildOutcome, Error>>,
    /// Notices for the operator, in order (no manifest, the audit checkpoint).
    pub notices: Vec<String>,
}

/// Runs (or resumes) a batch on the site.
pub fn run(
    site: &SiteRef,
    req: BatchRequest,
    stop: &AtomicBool,
    ui: &dyn BatchUi,
) -> Result<BatchRun, Error> {
    if req.jobs == 0 || req.jobs > 64 {
        return Err(Error::Usage("--jobs must be 1..=64".into()));
    }
    let site = site.open()?;
    let profile = site.profile(&req.profile)?;
    let ca_ref = site.ca_ref(&profile)?;
    let manifest_target = ManifestTarget::preflight(&site.config, req.manifest.as_deref())?;
    if let Some(k) = &req.expect_key {
        if batch::spec(
            &profile,
            &ca_ref.name,
            &req.source,
            &req.out,
            req.plain_keys,
            req.layout,
        )
        .input_key
            != *k
        {
            return Err(Error::Usage(format!(
                "the profile {} changed since this batch started; resuming would issue under different rules. Restore it, or start a new batch",
                profile.path.display()
            )));
        }
    }
    let passphrase = match (&req.source, &req.key_passphrase) {
        (Source::Count { .. }, Some(src)) if !req.plain_keys => Some(
            crate::secret::SecretSource::parse(src, std::path::Path::new("."))?
                .read("Key passphrase")?,
        ),
        _ => None,
    };
    let session = site.issuing_session(Some(&profile), &ca_ref, None)?;
    let workers = session.worker_keys(req.jobs)?;
    let (mut ledger, ca, signers) = (workers.ledger, workers.ca, workers.keys);
    let mut notices: Vec<String> = workers.note.into_iter().collect();
    ui.signing_starts();
    let job = BatchJob {
        profile: &profile,
        ca: &ca,
        signers: &signers,
        serial_prefix: site.config.serial_prefix,
        clock: &*site.clock,
        serials: &*site.serials,
        source: req.source,
        out: req.out,
        layout: req.layout,
        key_passphrase: passphrase,
        plain_keys: req.plain_keys,
        kdf_iterations: req.kdf_iterations,
        stop,
    };
    let summary = batch::run(&job, &mut ledger, &|handled, issued| {
        ui.progress(handled, issued)
    })?;
    let manifest = if summary.interrupted && manifest_target.is_some() {
        notices.push(format!(
            "no manifest: the batch was interrupted; resume it, then certfab manifest build --batch {}",
            summary.batch
        ));
        None
    } else {
        site.run_end_manifest(
            &mut ledger,
            manifest_target.as_ref(),
            &summary.batch,
            &profile.path,
            &mut notices,
        )
    };
    notices.extend(site.auto_checkpoint(&mut ledger));
    Ok(BatchRun {
        summary,
        manifest,
        notices,
    })
}

/// What `batch resume ID` continues: the batch's recorded input, profile file, output and key
/// mode, read from the ledger (read-only, while nothing else is opened).
pub fn resume_request(
    site: &SiteRef,
    id: &str,
    jobs: usize,
    key_passphrase: Option<String>,
    kdf_iterations: u32,
    manifest: Option<PathBuf>,
) -> Result<BatchRequest, Error> {
    let (site_cfg, ledger) = site.read_ledger()?;
    let batch = ledger.batch(id)?.ok_or_else(|| {
        Error::Usage(format!(
            "no batch {id} in {}; `certfab batch status` shows the latest",
            site_cfg.ledger
        ))
    })?;
    let key = ledger.batch_input_key(id)?.unwrap_or_default();
    drop(ledger);
    let spec: serde_json::Value = serde_json::from_str(&batch.source)
        .map_err(|e| Error::Usage(format!("batch {id}: unreadable source record: {e}")))?;
    let source: Source = serde_json::from_value(spec["source"].clone())
        .map_err(|e| Error::Usage(format!("batch {id}: {e}")))?;
    Ok(BatchRequest {
        profile: spec["profile_path"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        source,
        out: PathBuf::from(spec["out"].as_str().unwrap_or_default()),
        plain_keys: spec["plain_keys"].as_bool().unwrap_or(false),
        layout: match spec["layout"]["bundle"].as_u64() {
            Some(devices_per_file) => batch::Layout::Bundle { devices_per_file },
            None => batch::Layout::Dirs,
        },
        jobs,
        key_passphrase,
        kdf_iterations,
        manifest,
        expect_key: Some(key),
    })
}

/// `certfab batch --dry-run`: the whole input read, every row prepared and put to the ledger's
/// identity rules as a run would, from the site config, the CA certificates and the ledger
/// read-only; no token is opened and nothing is reserved, signed or written.
pub fn dry_run(
    site: &SiteRef,
    profile: &str,
    o: &batch::BatchDryRun<'_>,
) -> Result<batch::BatchPreview, Error> {
    if o.jobs == 0 || o.jobs > 64 {
        return Err(Error::Usage("--jobs must be 1..=64".into()));
    }
    let offline = super::open_offline(site, profile)?;
    Ok(batch::dry_run_batch(&offline, o, &*site.serials)?)
}

/// `certfab batch status [ID]`: a batch's counts and problems, the latest when no id is given.
/// Reads the ledger only.
pub fn status(site: &SiteRef, id: Option<&str>) -> Result<crate::ledger::BatchStatus, Error> {
    let (cfg, ledger) = site.read_ledger()?;
    let id = match id {
        Some(id) => id.to_string(),
        None => ledger
            .latest_batch()?
            .map(|b| b.id)
            .ok_or_else(|| Error::Usage("no batch in the ledger yet".into()))?,
    };
    ledger.status(&id)?.ok_or_else(|| {
        Error::Usage(format!(
            "no batch {} in {}",
            crate::text::escape(&id),
            cfg.ledger
        ))
    })
}

/// `certfab batch close ID --reason`: ends an unfinished batch on purpose (its in-flight
/// intents burned, the reason in the audit log); returns its counts at closing.
pub fn close(site: &SiteRef, id: &str, reason: &str) -> Result<crate::ledger::BatchStatus, Error> {
    if reason.trim().is_empty() {
        return Err(Error::Usage(
            "--reason must say why the batch is closed; it goes into the audit log".into(),
        ));
    }
    let (cfg, mut ledger) = site.write_ledger()?;
    let st = ledger.status(id)?.ok_or_else(|| {
        Error::Usage(format!(
            "no batch {} in {}",
            crate::text::escape(id),
            cfg.ledger
        ))
    })?;
    if let Some(f) = &st.batch.finished_at {
        return Err(Error::Usage(format!(
            "batch {} already finished ({f}); there is nothing to close",
            crate::text::escape(id)
        )));
    }
    ledger.close_batch(id, reason, &st.counts)?;
    Ok(st)
}
