//! The audit report as terminal text and as JSON.

use super::{counts::Tally, CorpusError, Report, Severity};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Every text that comes from a ledger, manifest, certificate or profile is shown through the
/// one escaping rule: a tampered or hostile input cannot write its own report lines.
fn esc(s: &str) -> String {
    crate::text::escape(s)
}

/// Findings of one code shown in the text report before "… and N more".
const SHOWN_PER_CODE: usize = 10;

/// The JSON document `certfab --json audit` prints (docs/audit.md has the schema): the
/// report's fields plus `schema`, `fail_on` and `failed`.
#[derive(Serialize)]
pub struct JsonReport<'a> {
    /// `certfab-audit/1`.
    pub schema: &'static str,
    /// The threshold.
    pub fail_on: &'static str,
    /// Whether a finding is at or above it.
    pub failed: bool,
    /// Everything else.
    #[serde(flatten)]
    pub report: &'a Report,
}

/// The JSON document for `report` judged at `fail_on`.
pub fn json(report: &Report, fail_on: Severity) -> JsonReport<'_> {
    JsonReport {
        schema: "certfab-audit/1",
        fail_on: fail_on.name(),
        failed: report.fails(fail_on),
        report,
    }
}

fn tally_line(t: &Tally) -> String {
    format!(
        "issued {}, rejected {}, passed {}, failed {}",
        t.issued, t.rejected, t.passed, t.failed
    )
}

fn tally_table(out: &mut String, title: &str, m: &BTreeMap<String, Tally>) {
    if m.is_empty() {
        return;
    }
    let _ = writeln!(out, "  {title}:");
    for (k, t) in m {
        let _ = writeln!(out, "    {:<24} {}", esc(k), tally_line(t));
    }
}

/// The report's fields in JSON, in their order: the findings and the list of rejected requests
/// are read from the scratch database as they are written.
impl Serialize for Report {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut m = s.serialize_struct("Report", 7)?;
        m.serialize_field("generated_at", &self.generated_at)?;
        m.serialize_field("expiring_days", &self.expiring_days)?;
        m.serialize_field("inputs", &self.inputs)?;
        m.serialize_field("findings", &self.findings)?;
        m.serialize_field("by_severity", &self.by_severity)?;
        let c = &self.counts;
        m.serialize_field(
            "counts",
            &CountsJson {
                per_station: &c.per_station,
                per_operator: &c.per_operator,
                per_profile: &c.per_profile,
                per_tenant: &c.per_tenant,
                per_day: &c.per_day,
                issued_per_hour: &c.issued_per_hour,
                rejections_by_reason: &c.rejections_by_reason,
                rejected: Rejected(&self.findings),
                devices_by_state: &c.devices_by_state,
            },
        )?;
        match &self.token_signatures {
            Some(t) => m.serialize_field("token_signatures", t)?,
            None => m.skip_field("token_signatures")?,
        }
        m.end()
    }
}

/// `counts` as the JSON report has it (docs/audit.md).
#[derive(Serialize)]
struct CountsJson<'a> {
    per_station: &'a BTreeMap<String, Tally>,
    per_operator: &'a BTreeMap<String, Tally>,
    per_profile: &'a BTreeMap<String, Tally>,
    per_tenant: &'a BTreeMap<String, Tally>,
    per_day: &'a BTreeMap<String, Tally>,
    issued_per_hour: &'a BTreeMap<String, u64>,
    rejections_by_reason: &'a BTreeMap<&'static str, u64>,
    rejected: Rejected<'a>,
    devices_by_state: &'a BTreeMap<String, u64>,
}

/// Every rejected request, read back from the scratch database.
struct Rejected<'a>(&'a super::Findings);

impl Serialize for Rejected<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        super::serialize_rows(s, |f| self.0.rejected(None, f))
    }
}

/// Writes the JSON document for `report` judged at `fail_on` to `out`, one finding at a time.
pub fn write_json(
    report: &Report,
    fail_on: Severity,
    out: &mut impl std::io::Write,
) -> Result<(), serde_json::Error> {
    serde_json::to_writer_pretty(&mut *out, &json(report, fail_on))?;
    out.write_all(b"\n").map_err(serde_json::Error::io)?;
    out.flush().map_err(serde_json::Error::io)
}

/// The report for a terminal (at most [`SHOWN_PER_CODE`] findings of each code are shown; the
/// others are counted while they are read back).
pub fn text(report: &Report, fail_on: Severity) -> Result<String, CorpusError> {
    let mut out = String::new();
    let i = &report.inputs;
    let _ = writeln!(out, "certfab audit, {}", report.generated_at);
    for l in &i.ledgers {
        let _ = writeln!(
            out,
            "  ledger {} (stations {}): {} devices, {} certificates, {} audit events",
            esc(&l.path),
            if l.stations.is_empty() {
                "none".into()
            } else {
                esc(&l.stations.join(", "))
            },
            l.devices,
            l.certificates,
            l.audit_events
        );
    }
    for m in &i.manifests {
        let _ = writeln!(out, "  manifest {}", esc(m));
    }
    if i.cert_files > 0 {
        let _ = writeln!(out, "  {} certificate files", i.cert_files);
    }
    for c in &i.cas {
        let _ = writeln!(out, "  CA {}", esc(c));
    }
    if !i.profiles.is_empty() {
        let _ = writeln!(out, "  profiles: {}", esc(&i.profiles.join(", ")));
    }
    let _ = writeln!(out);
    let sev: Vec<String> = Severity::ALL
        .iter()
        .rev()
        .map(|s| {
            format!(
                "{} {}",
                s.name(),
                report.by_severity.get(s.name()).unwrap_or(&0)
            )
        })
        .collect();
    let _ = writeln!(out, "Findings: {}", sev.join(", "));
    let mut shown: BTreeMap<String, usize> = BTreeMap::new();
    let mut hidden: BTreeMap<String, (Severity, usize)> = BTreeMap::new();
    report.findings.each(None, |f| {
        let n = shown.entry(f.code.to_string()).or_default();
        if *n >= SHOWN_PER_CODE {
            hidden
                .entry(f.code.to_string())
                .or_insert((f.severity, 0))
                .1 += 1;
            return Ok(());
        }
        *n += 1;
        let _ = writeln!(
            out,
            "  {:<8} {}: {}",
            f.severity.name().to_uppercase(),
            f.code,
            crate::text::neutralize(&f.message)
        );
        for l in &f.locations {
            let _ = writeln!(out, "           at {}", esc(l));
        }
        Ok(())
    })?;
    for (code, (s, n)) in hidden {
        let _ = writeln!(
            out,
            "  {:<8} {code}: … and {n} more (all are in --json and --html)",
            s.name().to_uppercase()
        );
    }
    let c = &report.counts;
    let _ = writeln!(out);
    let _ = writeln!(out, "Counts:");
    tally_table(&mut out, "per station", &c.per_station);
    tally_table(&mut out, "per operator", &c.per_operator);
    tally_table(&mut out, "per profile", &c.per_profile);
    if c.per_tenant.keys().any(|k| k != "(no tenant)") {
        tally_table(&mut out, "per tenant", &c.per_tenant);
    }
    tally_table(&mut out, "per day (UTC)", &c.per_day);
    if !c.devices_by_state.is_empty() {
        let s: Vec<String> = c
            .devices_by_state
            .iter()
            .map(|(k, v)| format!("{} {v}", esc(k)))
            .collect();
        let _ = writeln!(out, "  devices by state: {}", s.join(", "));
    }
    if !c.rejections_by_reason.is_empty() {
        let s: Vec<String> = c
            .rejections_by_reason
            .iter()
            .map(|(k, v)| format!("{} {v}", esc(k)))
            .collect();
        let _ = writeln!(out, "  rejections by reason: {}", s.join(", "));
    }
    if let Some(r) = &report.token_signatures {
        let _ = writeln!(out);
        let _ = writeln!(out, "Token signatures (spy log {}):", esc(&r.spy_log));
        let _ = writeln!(
            out,
            "  made per the spy log {}, accounted for by the ledger {} ({} documents, {} self-tests) in {} .. {}",
            r.token_signatures, r.accounted, r.documents, r.self_tests, r.from, r.until
        );
        for p in &r.processes {
            let _ = writeln!(
                out,
                "  process {} (line {}): {} signatures, {} .. {}, {}",
                p.index,
                p.line,
                p.signatures,
                esc(&p.first_call),
                esc(&p.last_call),
                match &p.event {
                    Some(e) => format!("{} recorded by {}", p.recorded, esc(e)),
                    None => "NO token_signatures event".into(),
                }
            );
        }
    }
    let _ = writeln!(out);
    if report.fails(fail_on) {
        let _ = writeln!(
            out,
            "Result: FAIL, findings at or above {} (--fail-on)",
            fail_on.name()
        );
    } else {
        let _ = writeln!(
            out,
            "Result: pass, no finding at or above {} (--fail-on)",
            fail_on.name()
        );
    }
    Ok(out)
}
