//! `certfab audit`: the sources the command line names, completed from the site config when
//! one is given (the token is never opened), loaded read-only and cross-checked; the HTML
//! report written when asked for.

use super::SiteRef;
use crate::audit::{self, Corpus, Report, Severity, Sources};
use crate::error::Error;
use std::path::Path;

/// Audits `src` (completed from the site config, if any) and writes the HTML report to `html`
/// (which must not exist) when given.
pub fn audit(
    site: &SiteRef,
    mut src: Sources,
    expiring_days: i64,
    fail_on: Severity,
    html: Option<&Path>,
    spy_log: Option<&Path>,
) -> Result<Report, Error> {
    if let Some(path) = site.path_opt() {
        let site = crate::config::SiteConfig::load(path)?;
        if src.ledgers.is_empty() {
            src.ledgers.push(site.ledger.clone());
        }
        if src.cas.is_empty() {
            for ca in site.cas.values() {
                for p in std::iter::once(&ca.cert).chain(ca.chain.iter()) {
                    if !src.cas.contains(p) {
                        src.cas.push(p.clone());
                    }
                }
            }
        }
        for ca in site.cas.values() {
            if let Some(t) = &ca.tenant {
                src.ca_tenants.insert(ca.cert.clone(), t.clone());
            }
        }
        if src.signer_cert.is_none() {
            src.signer_cert = site.signer.as_ref().map(|s| s.cert.clone());
        }
        if src.profiles_dir.is_none() {
            src.profiles_dir = site.profiles_dir.clone();
        }
    }
    if src.ledgers.is_empty() {
        return Err(Error::Usage(
            "certfab audit needs at least one --ledger LEDGER.sqlite (or --config for the site's ledger)".into(),
        ));
    }
    if src.cas.is_empty() {
        return Err(Error::Usage(
            "certfab audit needs the CA certificates to check chains against: pass --ca CA.pem (repeatable) or --config".into(),
        ));
    }
    if let Some(h) = html {
        crate::output::check_free(&[h])?;
    }
    // The log is bad input the user can fix: refused before anything else is read.
    let spy = spy_log.map(audit::spy::SpyLog::read).transpose()?;
    let corpus = Corpus::load(&src)?;
    let mut report = audit::run(
        corpus,
        &audit::Options {
            expiring_days,
            now: site.clock().now(),
        },
    )?;
    if let Some(log) = &spy {
        let (rec, findings) = audit::spy::reconcile(log, &src.ledgers)?;
        report.add_spy(rec, findings)?;
    }
    if let Some(h) = html {
        crate::output::write_new(h, audit::html::render(&report, fail_on)?.as_bytes())?;
    }
    Ok(report)
}
