//! The audit report as one self-contained HTML file: inline CSS, SVG charts drawn here, no
//! scripts and no external assets, so it can be attached to an assessment, opened offline and
//! printed. Every text that comes from a ledger, manifest or certificate is escaped.

use super::{counts::Tally, CorpusError, Report, Severity};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Rejected requests listed in full before the list is cut.
const MAX_REJECTED_ROWS: usize = 1000;
/// Findings listed in full before the list is cut.
const MAX_FINDINGS: usize = 5000;

/// HTML-escapes text for element content and quoted attribute values, after control and bidi
/// characters are made visible by [`crate::text::escape`] (a raw NUL or ESC has no place in a
/// report, and HTML cannot carry a NUL at all).
pub fn esc(s: &str) -> String {
    let s = crate::text::escape(s);
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const CSS: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1f24; margin: 2em auto; max-width: 1100px; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; margin-top: 1.8em; }
table { border-collapse: collapse; width: 100%; margin: 0.5em 0; }
th, td { border: 1px solid #d0d7de; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f3f5f7; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.92em; overflow-wrap: anywhere; }
.code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.92em; white-space: nowrap; }
.sev { font-weight: 600; text-transform: uppercase; font-size: 0.85em; white-space: nowrap; }
.sev-critical { color: #fff; background: #a40e26; }
.sev-high { color: #fff; background: #d1242f; }
.sev-medium { background: #f0b72f; }
.sev-low { background: #ddf4ff; }
.sev-info { background: #eaeef2; }
.verdict { padding: 0.6em 1em; border-radius: 4px; font-weight: 600; display: inline-block; }
.fail { background: #ffebe9; border: 1px solid #d1242f; }
.pass { background: #dafbe1; border: 1px solid #1a7f37; }
.muted { color: #57606a; }
svg { max-width: 100%; height: auto; }
svg text { font: 11px system-ui, sans-serif; fill: #1b1f24; }
svg .bar { fill: #0969da; }
svg .bar.reject { fill: #cf222e; }
@media print {
  body { margin: 0; max-width: none; font-size: 11px; }
  h2 { page-break-after: avoid; }
  tr, svg { page-break-inside: avoid; }
  .sev-critical, .sev-high, .sev-medium, .sev-low, .sev-info, th { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"#;

/// A vertical bar chart (one bar per key, in order).
fn vbar_chart(title: &str, data: &BTreeMap<String, u64>, class: &str) -> String {
    let mut s = String::new();
    let max = data.values().copied().max().unwrap_or(0).max(1);
    let n = data.len().max(1);
    let (left, top, h) = (40.0, 20.0, 180.0);
    let bw = (900.0 / n as f64).clamp(4.0, 60.0);
    let width = left + bw * n as f64 + 20.0;
    let height = top + h + 90.0;
    let _ = write!(
        s,
        r#"<svg role="img" aria-label="{t}" class="chart" viewBox="0 0 {width:.0} {height:.0}" width="{width:.0}" height="{height:.0}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = esc(title)
    );
    let _ = write!(
        s,
        r##"<line x1="{left}" y1="{top}" x2="{left}" y2="{y}" stroke="#8c959f"/><line x1="{left}" y1="{y}" x2="{x}" y2="{y}" stroke="#8c959f"/><text x="{lx}" y="{ty}" text-anchor="end">{max}</text><text x="{lx}" y="{y}" text-anchor="end">0</text>"##,
        y = top + h,
        x = width - 10.0,
        lx = left - 4.0,
        ty = top + 4.0
    );
    for (i, (k, v)) in data.iter().enumerate() {
        let bh = h * (*v as f64) / (max as f64);
        let x = left + bw * i as f64 + 1.0;
        let y = top + h - bh;
        let _ = write!(
            s,
            r#"<rect class="bar {class}" data-label="{k}" data-count="{v}" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{bh:.1}"><title>{k}: {v}</title></rect>"#,
            k = esc(k),
            w = (bw - 2.0).max(1.0)
        );
        if bw >= 14.0 || i % ((14.0 / bw).ceil() as usize).max(1) == 0 {
            let tx = x + bw / 2.0;
            let ty = top + h + 8.0;
            let _ = write!(
                s,
                r#"<text x="{tx:.1}" y="{ty:.1}" transform="rotate(60 {tx:.1} {ty:.1})">{}</text>"#,
                esc(k)
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// A horizontal bar chart with labels on the left.
fn hbar_chart(title: &str, data: &BTreeMap<String, u64>, class: &str) -> String {
    let mut s = String::new();
    let max = data.values().copied().max().unwrap_or(0).max(1);
    let (left, row, w) = (170.0, 22.0, 600.0);
    let height = row * data.len().max(1) as f64 + 10.0;
    let width = left + w + 60.0;
    let _ = write!(
        s,
        r#"<svg role="img" aria-label="{t}" class="chart" viewBox="0 0 {width:.0} {height:.0}" width="{width:.0}" height="{height:.0}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = esc(title)
    );
    for (i, (k, v)) in data.iter().enumerate() {
        let y = 5.0 + row * i as f64;
        let bw = (w * (*v as f64) / (max as f64)).max(1.0);
        let _ = write!(
            s,
            r#"<text x="{lx}" y="{ty:.1}" text-anchor="end">{ke}</text><rect class="bar {class}" data-label="{ke}" data-count="{v}" x="{left}" y="{y:.1}" width="{bw:.1}" height="{bh}"><title>{ke}: {v}</title></rect><text x="{vx:.1}" y="{ty:.1}">{v}</text>"#,
            ke = esc(k),
            lx = left - 6.0,
            ty = y + 14.0,
            bh = row - 6.0,
            vx = left + bw + 4.0
        );
    }
    s.push_str("</svg>");
    s
}

fn tally_table(out: &mut String, title: &str, key: &str, m: &BTreeMap<String, Tally>) {
    if m.is_empty() {
        return;
    }
    let _ = write!(
        out,
        r#"<h3>{}</h3><table><tr><th>{}</th><th class="num">Issued</th><th class="num">Rejected</th><th class="num">Attempts passed</th><th class="num">Attempts failed</th></tr>"#,
        esc(title),
        esc(key)
    );
    for (k, t) in m {
        let _ = write!(
            out,
            r#"<tr><td class="mono">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            esc(k),
            t.issued,
            t.rejected,
            t.passed,
            t.failed
        );
    }
    out.push_str("</table>");
}

/// The whole report as one HTML document. Its size is bounded whatever the number of devices:
/// at most [`MAX_FINDINGS`] findings and [`MAX_REJECTED_ROWS`] rejected requests are listed
/// (read back from the scratch database), the rest counted, and the charts are per hour and
/// per category.
pub fn render(report: &Report, fail_on: Severity) -> Result<String, CorpusError> {
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>certfab audit report {}</title><style>{CSS}</style></head><body>"#,
        esc(&report.generated_at)
    );
    let _ = write!(
        o,
        r#"<h1>certfab audit report</h1><p class="muted">Generated {} · expiry horizon {} days · severity threshold (--fail-on) {}</p>"#,
        esc(&report.generated_at),
        report.expiring_days,
        fail_on.name()
    );
    let failed = report.fails(fail_on);
    let _ = write!(
        o,
        r#"<p class="verdict {}">{}</p>"#,
        if failed { "fail" } else { "pass" },
        if failed {
            format!("FAIL: findings at or above {}", fail_on.name())
        } else {
            format!("Pass: no finding at or above {}", fail_on.name())
        }
    );

    // Inputs.
    let i = &report.inputs;
    o.push_str(r#"<h2>Inputs</h2><table><tr><th>Kind</th><th>What</th><th>Details</th></tr>"#);
    for l in &i.ledgers {
        let _ = write!(
            o,
            r#"<tr><td>Ledger</td><td class="mono">{}</td><td>stations {}; {} devices, {} certificates, {} audit events</td></tr>"#,
            esc(&l.path),
            esc(&l.stations.join(", ")),
            l.devices,
            l.certificates,
            l.audit_events
        );
    }
    for m in &i.manifests {
        let _ = write!(
            o,
            r#"<tr><td>Manifest</td><td class="mono">{}</td><td></td></tr>"#,
            esc(m)
        );
    }
    if i.cert_files > 0 {
        let _ = write!(
            o,
            r#"<tr><td>Certificate files</td><td>{}</td><td></td></tr>"#,
            i.cert_files
        );
    }
    for c in &i.cas {
        let _ = write!(
            o,
            r#"<tr><td>CA certificate</td><td class="mono" colspan="2">{}</td></tr>"#,
            esc(c)
        );
    }
    if !i.profiles.is_empty() {
        let _ = write!(
            o,
            r#"<tr><td>Profiles</td><td colspan="2">{}</td></tr>"#,
            esc(&i.profiles.join(", "))
        );
    }
    o.push_str("</table>");

    // Summary by severity.
    o.push_str(r#"<h2>Findings by severity</h2><table id="severity-summary"><tr>"#);
    for s in Severity::ALL.iter().rev() {
        let _ = write!(o, r#"<th class="sev sev-{n}">{n}</th>"#, n = s.name());
    }
    o.push_str("</tr><tr>");
    for s in Severity::ALL.iter().rev() {
        let _ = write!(
            o,
            r#"<td class="num" data-severity="{}">{}</td>"#,
            s.name(),
            report.by_severity.get(s.name()).unwrap_or(&0)
        );
    }
    o.push_str("</tr></table>");

    // Findings.
    o.push_str(r#"<h2>Findings</h2>"#);
    let total = report.finding_count();
    if total == 0 {
        o.push_str("<p>None.</p>");
    } else {
        o.push_str(r#"<table id="findings"><tr><th>Severity</th><th>Code</th><th>Finding</th><th>Where</th><th>Device</th><th>Serial</th></tr>"#);
        report.findings.each(Some(MAX_FINDINGS as u64), |f| {
            let _ = write!(
                o,
                r#"<tr class="finding" data-code="{c}"><td class="sev sev-{s}">{s}</td><td class="code">{c}</td><td>{m}</td><td class="mono">{l}</td><td class="mono">{d}</td><td class="mono">{n}</td></tr>"#,
                s = f.severity.name(),
                c = esc(&f.code),
                m = esc(&f.message),
                l = f
                    .locations
                    .iter()
                    .map(|l| esc(l))
                    .collect::<Vec<_>>()
                    .join("<br>"),
                d = esc(f.device_id.as_deref().unwrap_or("")),
                n = esc(f.serial.as_deref().unwrap_or(""))
            );
            Ok(())
        })?;
        o.push_str("</table>");
        if total > MAX_FINDINGS as u64 {
            let _ = write!(
                o,
                "<p>… and {} more findings; the JSON report (--json) lists all.</p>",
                total - MAX_FINDINGS as u64
            );
        }
    }

    // Charts.
    let c = &report.counts;
    o.push_str("<h2>Issuance per hour (UTC)</h2>");
    if c.issued_per_hour.is_empty() {
        o.push_str("<p>No certificates issued.</p>");
    } else {
        o.push_str(&vbar_chart(
            "Certificates issued per hour (UTC)",
            &c.issued_per_hour,
            "issue",
        ));
    }
    o.push_str("<h2>Rejections by reason</h2>");
    if c.rejections_by_reason.is_empty() {
        o.push_str("<p>No rejected requests.</p>");
    } else {
        let data: BTreeMap<String, u64> = c
            .rejections_by_reason
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        o.push_str(&hbar_chart(
            "Rejected requests by reason category",
            &data,
            "reject",
        ));
    }

    // Tables.
    o.push_str("<h2>Counts</h2>");
    tally_table(&mut o, "Per station", "Station", &c.per_station);
    tally_table(&mut o, "Per operator", "Operator", &c.per_operator);
    tally_table(&mut o, "Per profile", "Profile", &c.per_profile);
    if c.per_tenant.keys().any(|k| k != "(no tenant)") {
        tally_table(&mut o, "Per tenant", "Tenant", &c.per_tenant);
    }
    tally_table(&mut o, "Per day (UTC)", "Day", &c.per_day);
    if !c.devices_by_state.is_empty() {
        o.push_str(r#"<h3>Devices by state</h3><table><tr><th>State</th><th class="num">Devices</th></tr>"#);
        for (k, v) in &c.devices_by_state {
            let _ = write!(o, r#"<tr><td>{}</td><td class="num">{v}</td></tr>"#, esc(k));
        }
        o.push_str("</table>");
    }
    if c.rejected_count > 0 {
        o.push_str(r#"<h2>Rejected requests</h2><table id="rejected"><tr><th>Ledger</th><th>Batch</th><th class="num">Line</th><th>Device</th><th>Category</th><th>Reason</th></tr>"#);
        report.findings.rejected(Some(MAX_REJECTED_ROWS as u64), |r| {
            let _ = write!(
                o,
                r#"<tr><td class="mono">{}</td><td class="mono">{}</td><td class="num">{}</td><td class="mono">{}</td><td>{}</td><td>{}</td></tr>"#,
                esc(&r.ledger),
                esc(&r.batch_id),
                r.line,
                esc(r.device_id.as_deref().unwrap_or("")),
                esc(r.category),
                esc(&r.reason)
            );
            Ok(())
        })?;
        o.push_str("</table>");
        if c.rejected_count > MAX_REJECTED_ROWS as u64 {
            let _ = write!(
                o,
                "<p>… and {} more; the JSON report lists all.</p>",
                c.rejected_count - MAX_REJECTED_ROWS as u64
            );
        }
    }
    o.push_str(r#"<p class="muted">Made by certfab audit. Severities and codes: docs/audit.md.</p></body></html>"#);
    o.push('\n');
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
    }

    #[test]
    fn charts_carry_their_counts() {
        let mut d = BTreeMap::new();
        d.insert("2026-12-01T08".to_string(), 3);
        d.insert("2026-12-01T09".to_string(), 7);
        let svg = vbar_chart("t", &d, "issue");
        assert_eq!(svg.matches(r#"class="bar issue""#).count(), 2);
        assert!(svg.contains(r#"data-count="7""#));
        let svg = hbar_chart("t", &d, "reject");
        assert!(svg.contains(r#"data-label="2026-12-01T08" data-count="3""#));
    }
}
