//! The manifest a batch or a station shift writes when it ends (`--manifest FILE`): checked
//! before the run signs anything, built from the run's own ledger once it is done. The caller
//! supplies the signer and the CA lookup (they need the token), exactly as for
//! `certfab manifest build`.

use super::build::BuildRequest;
use super::{signature_path, ManifestError, Trust};
use crate::config::SiteConfig;
use crate::ledger::{Ledger, LedgerError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// Where a run writes its manifest, and the roots it must verify under.
#[derive(Debug, Clone)]
pub struct RunManifest {
    /// The manifest file (its signature goes beside it, `.jws`).
    pub out: PathBuf,
    /// The site config's roots.
    pub trust: Trust,
}

impl RunManifest {
    /// Checks, before a batch or shift signs anything, that its `--manifest FILE` can be built
    /// at the end: a signer is configured, neither file exists, and a trust anchor resolves.
    /// `None` when no manifest was asked for.
    pub fn preflight(
        config: &SiteConfig,
        out: Option<&Path>,
    ) -> Result<Option<Self>, ManifestError> {
        let Some(out) = out else { return Ok(None) };
        if config.signer.is_none() {
            return Err(ManifestError::Usage(format!(
                "--manifest needs a manifest signer: {} has no signer: section (docs/manifest.md; hsm-fixtures/dev-line.sh makes one)",
                config.path.display()
            )));
        }
        crate::output::check_free(&[out, &signature_path(out)]).map_err(|e| {
            ManifestError::Write {
                path: e.path.display().to_string(),
                msg: e.msg,
            }
        })?;
        Ok(Some(Self {
            out: out.to_path_buf(),
            trust: Trust::from_site(config)?,
        }))
    }

    /// Why `batch` gets no manifest, when it issued nothing that is not already in one (a
    /// shift of devices that already had their certificates): the notice for the operator.
    pub fn nothing_to_declare(
        &self,
        ledger: &Ledger,
        batch: &str,
    ) -> Result<Option<String>, LedgerError> {
        Ok(ledger
            .exportable_devices(&[batch.to_string()])?
            .is_empty()
            .then(|| {
                format!("no manifest written: {batch} issued no certificate that is not already in a manifest")
            }))
    }

    /// The build of `batch`, issued under the profile file `profile`, at `now`.
    pub fn request(&self, batch: &str, profile: &Path, now: OffsetDateTime) -> BuildRequest {
        BuildRequest {
            batches: vec![batch.to_string()],
            out: self.out.clone(),
            vars: BTreeMap::new(),
            profile: Some(profile.to_path_buf()),
            now,
        }
    }
}
