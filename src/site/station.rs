//! `certfab station`: a shift on an issuing session, then its manifest (`--manifest`) and the
//! audit checkpoint. The observer (the CLI's screen, log lines or JSON events) sees every
//! device as it happens.

use super::{ManifestTarget, SiteRef};
use crate::error::Error;
use crate::manifest::build::BuildOutcome;
use crate::station::{self, AdapterSpec, Observer, ShiftSummary, StationJob};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

/// What a station run was asked.
#[derive(Debug, Clone)]
pub struct StationRequest {
    /// Profile: a path, or a name in the site's `profiles_dir`.
    pub profile: String,
    pub adapter: AdapterSpec,
    /// The `--adapter` argument as given (for the record).
    pub adapter_arg: String,
    /// Who runs the station.
    pub operator: Option<String>,
    /// One device, then stop.
    pub once: bool,
    /// Give a device that comes back with another key a new identity.
    pub supersede: bool,
    /// Build the shift's signed manifest here when it ends.
    pub manifest: Option<PathBuf>,
}

/// How a shift ended.
#[derive(Debug)]
pub struct StationRun {
    /// The shift's summary.
    pub summary: ShiftSummary,
    /// The manifest asked for with `--manifest` (a stopped shift gets one too).
    pub manifest: Option<Result<BuildOutcome, Error>>,
    /// Notices for the operator, in order (no manifest, the audit checkpoint).
    pub notices: Vec<String>,
}

/// Runs a station shift on the site until the line ends, `once` is done, or `stop` is set.
/// `ready` runs once the token is logged in and the CA checked, before the first device.
pub fn run(
    site: &SiteRef,
    req: StationRequest,
    stop: &AtomicBool,
    ready: &dyn Fn(),
    obs: &mut dyn Observer,
) -> Result<StationRun, Error> {
    let site = site.open()?;
    let profile = site.profile(&req.profile)?;
    let ca_ref = site.ca_ref(&profile)?;
    let manifest_target = ManifestTarget::preflight(&site.config, req.manifest.as_deref())?;
    let mut session = site.issuing_session(Some(&profile), &ca_ref, req.operator.as_deref())?;
    ready();
    let job = StationJob {
        profile: &profile,
        ca: &session.ca,
        signer: &session.key,
        serial_prefix: site.config.serial_prefix,
        clock: &*site.clock,
        serials: &*site.serials,
        operator: req.operator.clone(),
        supersede: req.supersede,
        once: req.once,
        stop,
        adapter: req.adapter_arg.clone(),
    };
    let summary = station::run(
        &job,
        req.adapter,
        &site.config.station_id,
        &mut session.ledger,
        obs,
    )?;
    let mut notices = Vec::new();
    // Stopping is how a shift ends, so an interrupted shift gets its manifest too.
    let manifest = site.run_end_manifest(
        &mut session.ledger,
        manifest_target.as_ref(),
        &summary.batch,
        &profile.path,
        &mut notices,
    );
    notices.extend(site.auto_checkpoint(&mut session.ledger));
    Ok(StationRun {
        summary,
        manifest,
        notices,
    })
}
