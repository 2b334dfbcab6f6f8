//! `certfab ledger …`: work on the site's ledger itself rather than on certificates: importing
//! a station's SQLite ledger into the central one, burning a dead process's intents on demand
//! (docs/central-ledger.md). No token is opened.

use super::SiteRef;
use crate::error::Error;
use crate::ledger::{ImportReport, RecoverReport};
use std::path::Path;

/// `certfab ledger import STATION.sqlite`: the station ledger at `path` moved into the site's
/// central ledger, in one transaction, or refused with every conflict named.
pub fn import(site: &SiteRef, path: &Path) -> Result<ImportReport, Error> {
    let config = site.config()?;
    if let crate::config::LedgerLocation::Sqlite(p) = &config.ledger {
        // Refused before the site's own ledger is opened (and perhaps created).
        return Err(crate::ledger::ImportError::NotCentral(p.display().to_string()).into());
    }
    let (_, mut ledger) = site.write_ledger()?;
    Ok(ledger.import_station(path)?)
}

/// `certfab ledger recover`: the intents of processes that are gone burned now (those found
/// when the ledger was opened and any since), the live ones left alone; one audit event.
pub fn recover(site: &SiteRef) -> Result<RecoverReport, Error> {
    let (_, mut ledger) = site.write_ledger()?;
    Ok(ledger.recover()?)
}
