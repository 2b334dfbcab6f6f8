//! Manifests built on a site: the document signer opened on the token, the CA a batch
//! recorded resolved from the site config, then `manifest::build`. Used by `certfab manifest
//! build` and by a batch or shift that ends with `--manifest FILE`.

use super::Site;
use crate::error::Error;
use crate::ledger::Ledger;
use crate::manifest::build::{self, BuildOutcome, BuildRequest};
use crate::manifest::{ManifestError, RunManifest, Trust};
use crate::x509::CaCert;
use std::path::Path;

/// The manifest a run writes at its end, checked before it signs anything.
pub type ManifestTarget = RunManifest;

impl Site {
    /// The roots a manifest must verify under: `--trust FILE`, else the site config's.
    pub fn trust(&self, file: Option<&Path>) -> Result<Trust, Error> {
        Ok(match file {
            Some(t) => Trust::from_file(t)?,
            None => Trust::from_site(&self.config)?,
        })
    }

    /// Builds a manifest on an open ledger and a logged-in token: the document signer opened
    /// at the site clock's now, each batch's CA resolved as the ledger recorded it.
    pub fn build_manifest(
        &self,
        ledger: &mut Ledger,
        trust: &Trust,
        mut req: BuildRequest,
    ) -> Result<BuildOutcome, Error> {
        let now = self.now();
        req.now = now;
        let signer = self.signer(now)?;
        let ca = |p: &crate::profile::Profile, recorded: &str| -> Result<_, ManifestError> {
            let r = self
                .batch_ca(p, recorded)
                .map_err(|e| ManifestError::Usage(e.to_string()))?;
            let (cert, chain) = CaCert::load_with_chain(&r.cert, &r.chain)
                .map_err(|e| ManifestError::Usage(e.to_string()))?;
            Ok((r.name, cert, chain))
        };
        Ok(build::build(
            build::BuildSite {
                config: &self.config,
                ledger,
                signer: &signer,
                trust,
                ca: &ca,
            },
            &req,
        )?)
    }

    /// The run-end manifest of `batch` (issued under the profile file `profile`), if one was
    /// asked for: `None` with a notice when the run has nothing new to declare.
    pub fn run_end_manifest(
        &self,
        ledger: &mut Ledger,
        target: Option<&RunManifest>,
        batch: &str,
        profile: &Path,
        notices: &mut Vec<String>,
    ) -> Option<Result<BuildOutcome, Error>> {
        let t = target?;
        match t.nothing_to_declare(ledger, batch) {
            Ok(Some(notice)) => {
                notices.push(notice);
                return None;
            }
            Err(e) => return Some(Err(e.into())),
            Ok(None) => {}
        }
        Some(self.build_manifest(ledger, &t.trust, t.request(batch, profile, self.now())))
    }
}

/// `certfab manifest build`: the manifest of `batches` built on the site's own ledger and
/// signed by its document signer after the login.
pub fn build(
    site: &super::SiteRef,
    trust: Option<&Path>,
    mut req: BuildRequest,
) -> Result<BuildOutcome, Error> {
    let site = site.open()?;
    let trust = site.trust(trust)?;
    site.login()?;
    let mut ledger = Ledger::open_with_clock(
        &site.config.ledger,
        &site.config.station_id,
        site.clock.clone(),
    )?;
    req.now = site.now();
    site.build_manifest(&mut ledger, &trust, req)
}

/// `certfab manifest merge`: verified manifests merged into one, signed by the site's
/// document signer after the login.
pub fn merge(
    site: &super::SiteRef,
    inputs: &[std::path::PathBuf],
    out: &Path,
    trust: Option<&Path>,
) -> Result<crate::manifest::merge::MergeOutcome, Error> {
    let site = site.open()?;
    let trust = site.trust(trust)?;
    site.login()?;
    let now = site.now();
    let signer = site.signer(now)?;
    Ok(crate::manifest::merge::merge(
        inputs, out, &signer, &trust, now,
    )?)
}

/// `certfab log checkpoint`: the audit chain's head signed by the document signer (after the
/// recorded login) and recorded; also written to `out` (which must not exist) when given.
pub fn checkpoint(
    site: &super::SiteRef,
    out: Option<&Path>,
) -> Result<crate::auditlog::CheckpointDoc, Error> {
    if let Some(o) = out {
        crate::output::check_free(&[o])?;
    }
    let site = site.open()?;
    let mut ledger = site.open_ledger(None)?;
    site.login_recorded(&mut ledger)?;
    let now = site.clock.now();
    let signer = site.signer(now)?;
    let doc = crate::auditlog::checkpoint(&mut ledger, &signer, now)?;
    if let Some(o) = out {
        crate::output::write_new(o, format!("{}\n", doc.to_text()).as_bytes())?;
    }
    Ok(doc)
}
