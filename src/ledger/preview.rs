//! What a dry run asks of the ledger: opened read-only (nothing migrated, burned, locked or
//! recorded), the batch a run would resume, and the identity rules' decision for each device as
//! if the input lines before it had been reserved.

use super::rules::{self, Db, Overlay};
use super::{
    marker_path, real_path, schema, BatchRow, Intent, Ledger, LedgerError, Marker, Reserve,
};
use std::path::Path;

/// The ledger as a dry run sees it.
pub struct LedgerPreview {
    /// The ledger, when there is one certfab can read as it stands.
    pub ledger: Option<Ledger>,
    /// Why there is none, or what the run would do to it first: shown with the dry run's
    /// result.
    pub note: Option<String>,
}

impl Ledger {
    /// Opens the site's ledger for a dry run: read-only, and never created. A ledger that does
    /// not exist yet (a first run creates it) or has an older schema (a run migrates it first)
    /// gives no ledger and a note; one a run would refuse (lost, not a ledger, a newer schema)
    /// is the same error here.
    pub fn open_preview(
        at: impl Into<super::LedgerLocation>,
        station: &str,
    ) -> Result<LedgerPreview, LedgerError> {
        let path = match at.into() {
            super::LedgerLocation::Sqlite(path) => path,
            pg @ super::LedgerLocation::Postgres(_) => {
                let shown = pg.to_string();
                let ledger = Ledger::open_read(pg, station)?;
                return Self::preview_of(ledger, &shown);
            }
        };
        let path = path.as_path();
        let shown = path.display().to_string();
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !path.exists() {
            // A ledger that existed and is gone: a run refuses to start over, so does this.
            if let Ok(real) = real_path(path, dir) {
                if let Some(m) = Marker::read(&marker_path(&real)) {
                    return Err(m.lost(&shown, "missing"));
                }
            }
            return Ok(LedgerPreview {
                ledger: None,
                note: Some(format!(
                    "{shown} does not exist yet (the first run creates it): the identity rules were checked within this input only"
                )),
            });
        }
        let ledger = Ledger::open_read(path, station)?;
        Self::preview_of(ledger, &shown)
    }

    /// A preview over an open reader, unless its schema is behind (a run migrates first).
    fn preview_of(ledger: Ledger, shown: &str) -> Result<LedgerPreview, LedgerError> {
        let version = super::schema_version(&ledger.conn)?;
        let supported = schema::MIGRATIONS.len() as i64;
        if version < supported {
            return Ok(LedgerPreview {
                ledger: None,
                note: Some(format!(
                    "{shown} has schema {version}; a run migrates it to {supported} first, so a dry run cannot query it: the identity rules were checked within this input only"
                )),
            });
        }
        Ok(LedgerPreview {
            ledger: Some(ledger),
            note: None,
        })
    }

    /// The batch a run with this input key would resume, if any.
    pub fn batch_for_input(&self, input_key: &str) -> Result<Option<BatchRow>, LedgerError> {
        self.batch_by_key(input_key)
    }

    /// A dry run of [`Ledger::reserve`] in batch `batch_id`: nothing is written.
    pub fn reserve_preview(&self, batch_id: &str) -> ReservePreview<'_> {
        ReservePreview {
            overlay: Overlay::new(Some(Db(&self.conn)), batch_id),
            batch_id: batch_id.to_string(),
        }
    }
}

/// What [`Ledger::reserve`] would decide for each intent given to it, each as if the ones
/// before it that would be reserved had been.
pub struct ReservePreview<'l> {
    overlay: Overlay<'l>,
    batch_id: String,
}

impl ReservePreview<'static> {
    /// Without a ledger (none yet): the rules within the input alone.
    pub fn without_ledger() -> Self {
        Self {
            overlay: Overlay::new(None, ""),
            batch_id: String::new(),
        }
    }
}

impl ReservePreview<'_> {
    /// The decision for `it`; a reservation is remembered for the intents after it.
    pub fn decide(&mut self, it: &Intent) -> Result<Reserve, LedgerError> {
        let d = rules::decide(&self.overlay, &self.batch_id, it)?;
        if d == Reserve::Reserved {
            self.overlay.reserve(it);
        }
        Ok(d)
    }
}
