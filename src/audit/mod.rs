//! `certfab audit`: cross-checks over ledgers, manifests, certificate files and CA certificates,
//! with a report for people (terminal, HTML) and machines (JSON).
//!
//! Ledgers are opened read-only (a running station is never locked out, nothing is written).
//! Everything is loaded into a [`Corpus`]: the rows are streamed into a scratch SQLite database
//! in a private temporary directory ([`scratch`]), so memory does not grow with the number of
//! devices; each check in [`checks`] is a small function (mostly a query) over it whose findings
//! are stored there too; [`counts`] tallies issuance and rejections. The report is the findings
//! (read back sorted, most severe first) plus the counts.

pub mod checks;
mod corpus;
pub mod counts;
pub mod html;
pub mod report;
pub mod scratch;
pub mod spy;

pub use corpus::{CaEntry, Corpus, CorpusError, CrlRec, LedgerData, Sources};
pub use counts::Counts;
pub use scratch::Scratch;

use serde::Serialize;
use time::OffsetDateTime;

/// How bad a finding is; `--fail-on` compares against this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Figures, nothing wrong.
    Info,
    /// Worth a look (e.g. signed but never installed, expiring soon).
    Low,
    /// Needs follow-up (e.g. install unconfirmed, CA expiring before its devices).
    Medium,
    /// The records disagree (e.g. a ledger claims a certificate it does not hold).
    High,
    /// The identity guarantees are broken (duplicates, broken audit chain, unknown issuer).
    Critical,
}

impl Severity {
    /// All, least severe first.
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// The lower-case name (`high`).
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                format!("'{s}' is not a severity; use info, low, medium, high or critical")
            })
    }
}

/// One thing the audit found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable code (`duplicate-serial`); docs/audit.md lists them all.
    pub code: std::borrow::Cow<'static, str>,
    /// What is wrong, in words, naming the records involved.
    pub message: String,
    /// Where: `LEDGER certificates row N`, `MANIFEST line N`, `CA.pem`, … (one per record
    /// involved).
    pub locations: Vec<String>,
    /// The device, when the finding is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// The certificate serial (hex), when the finding is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

impl Finding {
    /// A finding with no device or serial attached.
    pub fn new(severity: Severity, code: &'static str, message: String) -> Self {
        Self {
            severity,
            code: std::borrow::Cow::Borrowed(code),
            message,
            locations: Vec::new(),
            device_id: None,
            serial: None,
        }
    }

    /// Adds a location.
    pub fn at(mut self, location: impl Into<String>) -> Self {
        self.locations.push(location.into());
        self
    }

    /// Attaches a device id.
    pub fn device(mut self, id: impl Into<String>) -> Self {
        self.device_id = Some(id.into());
        self
    }

    /// Attaches a serial.
    pub fn serial(mut self, serial: impl Into<String>) -> Self {
        self.serial = Some(serial.into());
        self
    }
}

/// What the audit is asked to check.
#[derive(Debug, Clone)]
pub struct Options {
    /// Certificates expiring within this many days are reported.
    pub expiring_days: i64,
    /// The instant the audit is made (certificates are judged as of then).
    pub now: OffsetDateTime,
}

/// The audit's result. The findings (and the list of rejected requests) stay in the scratch
/// database and are read back sorted when the report is written, so a report of a million
/// findings holds none of them in memory.
#[derive(Debug)]
pub struct Report {
    /// When it was made, RFC 3339.
    pub generated_at: String,
    pub expiring_days: i64,
    /// What was read.
    pub inputs: Inputs,
    /// Findings, most severe first.
    pub findings: Findings,
    /// Findings per severity.
    pub by_severity: std::collections::BTreeMap<&'static str, u64>,
    /// Issuance and rejection figures.
    pub counts: Counts,
    /// The token's signatures reconciled with a pkcs11-spy log (`--spy-log`).
    pub token_signatures: Option<spy::Reconciliation>,
}

/// The report's findings, held by the scratch database (serialized as a JSON array, read
/// back one at a time).
#[derive(Debug)]
pub struct Findings(pub(crate) Scratch);

impl Findings {
    /// The findings in report order, at most `limit`.
    pub fn each(
        &self,
        limit: Option<u64>,
        f: impl FnMut(Finding) -> Result<(), CorpusError>,
    ) -> Result<(), CorpusError> {
        self.0.findings(limit, f)
    }

    /// The rejected requests in report order, at most `limit`.
    pub fn rejected(
        &self,
        limit: Option<u64>,
        f: impl FnMut(counts::RejectedItem) -> Result<(), CorpusError>,
    ) -> Result<(), CorpusError> {
        self.0.rejected(limit, f)
    }
}

/// Streams a query's rows into a JSON array; a database error ends the document with an error.
pub(crate) fn serialize_rows<S, T, F>(s: S, each: F) -> Result<S::Ok, S::Error>
where
    S: serde::Serializer,
    T: Serialize,
    F: FnOnce(&mut dyn FnMut(T) -> Result<(), CorpusError>) -> Result<(), CorpusError>,
{
    use serde::ser::{Error, SerializeSeq};
    let mut seq = s.serialize_seq(None)?;
    let mut failed: Option<S::Error> = None;
    let r = each(&mut |item: T| {
        if let Err(e) = seq.serialize_element(&item) {
            failed = Some(e);
            return Err(CorpusError::Scratch(
                "the report could not be written".into(),
            ));
        }
        Ok(())
    });
    if let Some(e) = failed {
        return Err(e);
    }
    r.map_err(|e| S::Error::custom(e.to_string()))?;
    seq.end()
}

impl Serialize for Findings {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_rows(s, |f| self.0.findings(None, f))
    }
}

/// The inputs a report covers.
#[derive(Debug, Clone, Serialize)]
pub struct Inputs {
    pub ledgers: Vec<LedgerSummary>,
    pub manifests: Vec<String>,
    /// Certificate files.
    pub cert_files: u64,
    /// CA certificates: path and subject.
    pub cas: Vec<String>,
    /// Profiles: names loaded.
    pub profiles: Vec<String>,
}

/// One ledger as the report names it.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerSummary {
    pub path: String,
    /// Stations that wrote to it.
    pub stations: Vec<String>,
    /// Device rows.
    pub devices: u64,
    /// Signed certificates.
    pub certificates: u64,
    /// Audit events (the chain's length).
    pub audit_events: u64,
}

impl Report {
    /// The most severe finding's severity, if any.
    pub fn worst(&self) -> Option<Severity> {
        Severity::ALL
            .into_iter()
            .rev()
            .find(|s| self.by_severity.get(s.name()).is_some_and(|n| *n > 0))
    }

    /// Whether any finding is at or above `threshold`.
    pub fn fails(&self, threshold: Severity) -> bool {
        self.worst().is_some_and(|w| w >= threshold)
    }

    /// How many findings there are.
    pub fn finding_count(&self) -> u64 {
        self.by_severity.values().sum()
    }
}

/// A sort key that orders `row 9` before `row 10`.
fn natural_key(locations: &[String]) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for l in locations {
        let mut text = String::new();
        let mut num: Option<u64> = None;
        for ch in l.chars() {
            match (ch.to_digit(10), num) {
                (Some(d), n) => {
                    num = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d as u64))
                }
                (None, Some(n)) => {
                    out.push((std::mem::take(&mut text), n));
                    num = None;
                    text.push(ch);
                }
                (None, None) => text.push(ch),
            }
        }
        out.push((text, num.unwrap_or(0)));
    }
    out
}

/// Runs every check and the counts over a loaded corpus (whose scratch database the report
/// then holds).
pub fn run(corpus: Corpus, opts: &Options) -> Result<Report, CorpusError> {
    checks::all(&corpus, opts)?;
    let counts = counts::count(&corpus)?;
    let inputs = corpus.inputs()?;
    let mut by_severity = std::collections::BTreeMap::new();
    for s in Severity::ALL {
        by_severity.insert(s.name(), 0);
    }
    corpus.scratch.each(
        "SELECT sev, COUNT(*) FROM finding GROUP BY sev",
        [],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        |(sev, n)| {
            if let Some(s) = Severity::ALL.get(sev.clamp(0, 4) as usize) {
                *by_severity.entry(s.name()).or_insert(0) += n as u64;
            }
            Ok(())
        },
    )?;
    corpus.scratch.done()?;
    Ok(Report {
        generated_at: crate::clock::rfc3339(opts.now),
        expiring_days: opts.expiring_days,
        inputs,
        findings: Findings(corpus.scratch),
        by_severity,
        counts,
        token_signatures: None,
    })
}

impl Report {
    /// Adds the reconciliation with a spy log and its findings (kept in report order).
    pub fn add_spy(
        &mut self,
        rec: spy::Reconciliation,
        findings: Vec<Finding>,
    ) -> Result<(), CorpusError> {
        for f in &findings {
            *self.by_severity.entry(f.severity.name()).or_insert(0) += 1;
            self.findings.0.push(f)?;
        }
        self.token_signatures = Some(rec);
        Ok(())
    }
}
