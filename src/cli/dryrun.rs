//! Printing `certfab issue --dry-run` and `certfab batch --dry-run` (docs/issuance.md "Dry
//! run"); the work is `site::issue::dry_run` and `site::batch::dry_run`.

use super::Ctx;
use crate::batch::{BatchDryRun, Outcome};
use crate::error::{Error, ExitCode};
use crate::site::issue::IssueRequest;

/// `certfab issue --dry-run`; a refusal is the error a run would give (`refusal` adds the
/// input's name to policy errors, as a run does).
pub(super) fn issue(ctx: &Ctx, req: &IssueRequest) -> Result<ExitCode, Error> {
    let p = crate::site::issue::dry_run(&ctx.site, req)?;
    let esc = crate::text::escape;
    let mut h = match p.outcome {
        Outcome::AlreadyIssued => format!(
            "dry run: {} for device {} is already issued (serial {}); a run returns that certificate and signs nothing",
            esc(&p.profile),
            esc(&p.device_id),
            p.serial.as_deref().unwrap_or("?")
        ),
        _ => format!(
            "dry run: would issue {} for device {} ({}, signed by CA {} with {}, valid until {}); nothing was reserved, signed or written",
            esc(&p.profile),
            esc(&p.device_id),
            p.key_type,
            esc(&p.ca),
            p.signature,
            p.not_after
        ),
    };
    h.push_str(&format!("\nchecks passed: {}", p.checks.join(", ")));
    if let Some(n) = &p.ledger_note {
        h.push_str(&format!("\nnote: {}", esc(n)));
    }
    h.push('\n');
    h.push_str(p.certificate_text.trim_end());
    if p.outcome == Outcome::WouldIssue {
        h.push_str("\n(the serial and times are drawn again when it is issued)");
    }
    ctx.print(&serde_json::to_value(&p).unwrap_or_default(), &h);
    Ok(ExitCode::Ok)
}

/// `certfab batch --dry-run`: exits as the run would (10 when a row would be refused, 2 when
/// the input cannot be read to its end).
pub(super) fn batch(ctx: &Ctx, profile: &str, o: &BatchDryRun<'_>) -> Result<ExitCode, Error> {
    let p = crate::site::batch::dry_run(&ctx.site, profile, o)?;
    let esc = crate::text::escape;
    let count = |o: Outcome| p.counts.get(o.as_str()).copied().unwrap_or(0);
    let mut h = format!(
        "dry run of {} {} by CA {}{}: {} rows: {} would issue, {} already issued, {} duplicate, {} rejected; nothing was reserved, signed or written",
        if p.resumes.is_some() { "resuming batch" } else { "a new batch of" },
        esc(&p.profile),
        esc(&p.ca),
        p.resumes
            .as_deref()
            .map(|b| format!(" ({})", esc(b)))
            .unwrap_or_default(),
        p.rows_read,
        count(Outcome::WouldIssue),
        count(Outcome::AlreadyIssued),
        count(Outcome::Duplicate),
        count(Outcome::Rejected),
    );
    for r in p.rows.iter().filter(|r| r.outcome != Outcome::WouldIssue) {
        h.push_str(&format!(
            "\n  line {}{}: {}: {}",
            r.line,
            r.device_id
                .as_deref()
                .map(|d| format!(" ({})", esc(d)))
                .unwrap_or_default(),
            r.outcome.as_str(),
            crate::text::neutralize(r.reason.as_deref().unwrap_or_default())
        ));
    }
    if let Some(s) = &p.stops_at {
        h.push_str(&format!("\nstops at {}", crate::text::neutralize(s)));
    }
    if let Some(n) = &p.ledger_note {
        h.push_str(&format!("\nnote: {}", esc(n)));
    }
    if let Some(c) = &p.sample_certificate {
        h.push_str("\nthe first would-be certificate (serial and times are drawn again when it is issued):\n");
        h.push_str(c.trim_end());
    }
    ctx.print(&serde_json::to_value(&p).unwrap_or_default(), &h);
    Ok(if p.stops_at.is_some() {
        ExitCode::Usage
    } else if p.has_rejections() {
        ExitCode::Partial
    } else {
        ExitCode::Ok
    })
}
