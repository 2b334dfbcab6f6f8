//! `certfab ca status` and CA rollover. For every CA in the site config: expiry and days left,
//! which profiles use it as `issuer` or `rollover.next_issuer`, how many live device
//! certificates depend on it (from the ledger), and warnings — it expires within the warning
//! window, devices it signed outlive it, a certificate above it expires first, or a profile
//! still issues from an expiring CA with no rollover planned.
//!
//! Rollover: a profile names `rollover: {next_issuer: CA, switch_at: TIME}`. Before
//! `switch_at` new certificates come from `issuer`, from then on from `next_issuer`
//! ([`crate::site::Site::ca_ref`]). Throughout the transition relying parties must trust
//! both: [`trust_bundle`] gives both chains, which `certfab ca bundle` writes and exporters
//! use; chain.pem of each device stays the one valid path to its own issuer.

use super::LifecycleError;
use crate::config::{CaRef, SiteConfig};
use crate::ledger::Ledger;
use crate::profile::{IssuerRef, Profile};
use crate::x509::CaCert;
use time::OffsetDateTime;

/// One CA's state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaStatus {
    /// Site config name.
    pub name: String,
    pub tenant: Option<String>,
    /// Subject (RFC 4514).
    pub subject: String,
    /// Key identifier, hex.
    pub key_id: String,
    /// notAfter, RFC 3339 (None: no expiry).
    pub not_after: Option<String>,
    /// Days until notAfter (negative: expired).
    pub days_left: Option<i64>,
    /// Profiles with this CA as `issuer`.
    pub issuer_of: Vec<String>,
    /// Profiles with this CA as `rollover.next_issuer`.
    pub next_issuer_of: Vec<String>,
    /// Live (neither superseded nor revoked) device certificates it signed.
    pub live_certificates: u64,
    /// Latest notAfter among them.
    pub latest_device_not_after: Option<String>,
    /// What needs attention.
    pub warnings: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusReport {
    /// Per CA, in name order.
    pub cas: Vec<CaStatus>,
    /// Profiles that did not load (path: why).
    pub profile_errors: Vec<String>,
    /// Warning window used, days.
    pub warn_days: i64,
}

/// Every profile in the site's profiles_dir (and errors for the ones that do not load).
pub fn site_profiles(config: &SiteConfig) -> (Vec<Profile>, Vec<String>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    let Some(dir) = &config.profiles_dir else {
        return (ok, bad);
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    for p in paths {
        match Profile::load(&p) {
            Ok(pr) => ok.push(pr),
            Err(e) => bad.push(e.to_string()),
        }
    }
    (ok, bad)
}

fn days(a: OffsetDateTime, b: OffsetDateTime) -> i64 {
    (b - a).whole_days()
}

/// Builds the report at `now`; `ledger` (read-only is enough) supplies the dependants.
pub fn status(
    config: &SiteConfig,
    profiles: &[Profile],
    profile_errors: Vec<String>,
    ledger: Option<&Ledger>,
    now: OffsetDateTime,
    warn_days: i64,
) -> Result<StatusReport, LifecycleError> {
    let live = match ledger {
        Some(l) => l.live_counts_by_issuer()?,
        None => Default::default(),
    };
    let mut out = Vec::new();
    for (name, ca) in &config.cas {
        let mut warnings = Vec::new();
        let cert = match CaCert::load(&ca.cert) {
            Ok(c) => c,
            Err(e) => {
                out.push(CaStatus {
                    name: name.clone(),
                    tenant: ca.tenant.clone(),
                    subject: String::new(),
                    key_id: String::new(),
                    not_after: None,
                    days_left: None,
                    issuer_of: vec![],
                    next_issuer_of: vec![],
                    live_certificates: 0,
                    latest_device_not_after: None,
                    warnings: vec![e.to_string()],
                });
                continue;
            }
        };
        let key_id = hex::encode(&cert.key_id);
        let days_left = cert.not_after.map(|na| days(now, na));
        if let (Some(na), Some(d)) = (cert.not_after, days_left) {
            if d < 0 {
                warnings.push(format!(
                    "expired {} days ago ({})",
                    -d,
                    crate::clock::rfc3339(na)
                ));
            } else if d <= warn_days {
                warnings.push(format!(
                    "expires in {d} days ({}), within the {warn_days}-day warning window",
                    crate::clock::rfc3339(na)
                ));
            }
        }
        for p in &ca.chain {
            if let Ok(up) = CaCert::load(p) {
                if let (Some(up_na), true) = (
                    up.not_after,
                    cert.not_after
                        .is_none_or(|na| up.not_after.is_some_and(|u| u < na)),
                ) {
                    warnings.push(format!(
                        "{} above it expires first ({}), which ends this chain then",
                        p.display(),
                        crate::clock::rfc3339(up_na)
                    ));
                }
            }
        }
        let uses = |f: &dyn Fn(&Profile) -> bool| -> Vec<String> {
            profiles
                .iter()
                .filter(|p| f(p))
                .map(|p| p.name.clone())
                .collect()
        };
        let issuer_of = uses(&|p| matches!(&p.issuer, IssuerRef::Named(n) if n == name));
        let next_issuer_of = uses(&|p| p.rollover.as_ref().is_some_and(|r| r.next_issuer == *name));
        let expiring = days_left.is_some_and(|d| d <= warn_days);
        for p in profiles.iter().filter(|p| issuer_of.contains(&p.name)) {
            if expiring && p.rollover.is_none() {
                warnings.push(format!(
                    "profile {} still issues from it and names no rollover.next_issuer",
                    p.name
                ));
            }
        }
        let (count, _) = live.get(&key_id).cloned().unwrap_or((0, None));
        let mut latest: Option<OffsetDateTime> = None;
        let mut outlive = 0u64;
        if let (Some(l), true) = (ledger, count > 0) {
            for der in l.live_certificates_of(&key_id)? {
                use der::Decode;
                let Ok(c) = x509_cert::Certificate::from_der(&der) else {
                    continue;
                };
                let na = crate::x509::time_of(&c.tbs_certificate.validity.not_after).unwrap_or(
                    OffsetDateTime::new_utc(
                        time::Date::from_calendar_date(9999, time::Month::December, 31)
                            .unwrap_or(time::Date::MAX),
                        time::Time::MIDNIGHT,
                    ),
                );
                latest = Some(latest.map_or(na, |l| l.max(na)));
                if cert.not_after.is_some_and(|ca_na| na > ca_na) {
                    outlive += 1;
                }
            }
        }
        if outlive > 0 {
            warnings.push(format!(
                "{outlive} live device certificates expire after this CA does; they stop validating when it expires (renew them under the next CA)"
            ));
        }
        out.push(CaStatus {
            name: name.clone(),
            tenant: ca.tenant.clone(),
            subject: cert.subject.to_string(),
            key_id,
            not_after: cert.not_after.map(crate::clock::rfc3339),
            days_left,
            issuer_of,
            next_issuer_of,
            live_certificates: count,
            latest_device_not_after: latest.map(crate::clock::rfc3339),
            warnings,
        });
    }
    Ok(StatusReport {
        cas: out,
        profile_errors,
        warn_days,
    })
}

/// The CAs relying parties must trust for `profile`: its issuer and, during a rollover, the
/// next issuer.
pub fn transition_cas(
    config: &SiteConfig,
    profile: &Profile,
) -> Result<Vec<CaRef>, LifecycleError> {
    let mut names = Vec::new();
    if let IssuerRef::Named(n) = &profile.issuer {
        names.push(n.clone());
    }
    if let Some(r) = &profile.rollover {
        names.push(r.next_issuer.clone());
    }
    names
        .into_iter()
        .map(|n| {
            config
                .ca(&n)
                .map_err(|e| LifecycleError::Usage(format!("profile {}: {e}", profile.name)))
        })
        .collect()
}

/// PEM of every certificate in the chains of [`transition_cas`] (issuing CA, then the ones
/// above it; each certificate once), for relying parties during a rollover.
pub fn trust_bundle(config: &SiteConfig, profile: &Profile) -> Result<String, LifecycleError> {
    let mut seen = std::collections::BTreeSet::new();
    let mut pem = String::new();
    for ca in transition_cas(config, profile)? {
        for p in std::iter::once(&ca.cert).chain(ca.chain.iter()) {
            let c = CaCert::load(p).map_err(|e| LifecycleError::Usage(e.to_string()))?;
            if seen.insert(c.der.clone()) {
                pem.push_str(&c.pem());
            }
        }
    }
    Ok(pem)
}
