//! `certfab audit --spy-log FILE`: every signature the token made, as OpenSC's pkcs11-spy
//! logged it, reconciled with what the ledger accounts for (docs/audit.md, "Every signature
//! accounted for").
//!
//! Every certfab command that signs with the token records one `token_signatures` audit event
//! when it ends (counts by key and purpose: documents, self-tests). The spy log is split into
//! the processes that loaded the spy (each starts with the spy's banner); a signature is a
//! `C_Sign` that returned `CKR_OK` with a signature buffer (the first call of each pair,
//! with a NULL buffer, only asks for the length). The ledger's events that fall within the
//! log's time span (first call, to the last call plus [`SLACK_SECS`]) must account for
//! exactly as many signatures as the log shows. The spy writes local time: capture with
//! `TZ: UTC` in `pkcs11.env`, as the ledger's times are UTC.

use super::{Finding, Severity};
use crate::ledger::{Ledger, LedgerError};
use serde::Serialize;
use std::path::Path;
use time::{OffsetDateTime, PrimitiveDateTime};

/// The audit event kind a signing command records when it ends.
pub const EVENT: &str = crate::hsm::TOKEN_SIGNATURES_EVENT;

/// How long after a process's last `C_Sign` its `token_signatures` event may be recorded (the
/// command's end: closing the ledger, writing its outputs).
pub const SLACK_SECS: i64 = 60;

/// One process in the spy log.
#[derive(Debug, Clone, Serialize)]
pub struct SpyProcess {
    /// Its position in the log (1, 2, …).
    pub index: usize,
    /// The log line its banner is on.
    pub line: usize,
    /// Its first and last call's times, as the log wrote them.
    pub first_call: String,
    pub last_call: String,
    /// Signatures made (`C_Sign` returning one).
    pub signatures: u64,
    /// The `token_signatures` event matched to it (`LEDGER event SEQ`), if any.
    pub event: Option<String>,
    /// Signatures that event records (0: none matched).
    pub recorded: u64,
}

/// The reconciliation, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Reconciliation {
    /// The spy log read.
    pub spy_log: String,
    /// Signatures the token made, per the log.
    pub token_signatures: u64,
    /// Signatures the ledger's `token_signatures` events within the log's span account for.
    pub accounted: u64,
    /// Of those, documents and self-tests.
    pub documents: u64,
    pub self_tests: u64,
    /// The span covered (UTC), from the log's first call to its last plus the slack.
    pub from: String,
    pub until: String,
    /// The ledger events counted: `LEDGER event SEQ`.
    pub events: Vec<String>,
    /// The processes that signed.
    pub processes: Vec<SpyProcess>,
}

/// Why the spy log cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpyError {
    #[error("{path}: cannot read the spy log: {msg}")]
    Read { path: String, msg: String },
    #[error("{path}: not a pkcs11-spy log ({why}); capture it with pkcs11.module set to pkcs11-spy.so and PKCS11SPY_OUTPUT in pkcs11.env (docs/audit.md)")]
    Format { path: String, why: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl SpyError {
    /// An unreadable or foreign log is a usage error (2); the ledger's own code otherwise.
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            Self::Read { .. } | Self::Format { .. } => crate::exit::ExitCode::Usage,
            Self::Ledger(e) => e.exit_code(),
        }
    }
}

/// One process's part of the log.
struct Proc {
    /// The banner's line (1-based).
    line: usize,
    first: Option<(OffsetDateTime, String)>,
    last: Option<(OffsetDateTime, String)>,
    signatures: u64,
}

/// A spy log read: its processes and their signatures.
pub struct SpyLog {
    shown: String,
    procs: Vec<Proc>,
    first: OffsetDateTime,
    last: OffsetDateTime,
}

impl SpyLog {
    /// Reads the log at `path` (streaming: a shift's log is large), refusing a file that is
    /// not one.
    pub fn read(path: &Path) -> Result<Self, SpyError> {
        let shown = path.display().to_string();
        let read_err = |e: std::io::Error| SpyError::Read {
            path: shown.clone(),
            msg: e.to_string(),
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let procs = parse(std::io::BufReader::new(file)).map_err(read_err)?;
        if procs.is_empty() {
            return Err(SpyError::Format {
                path: shown,
                why: "no 'OpenSC PKCS#11 spy' banner in it".into(),
            });
        }
        let first = procs
            .iter()
            .filter_map(|p| p.first.as_ref().map(|x| x.0))
            .min();
        let last = procs
            .iter()
            .filter_map(|p| p.last.as_ref().map(|x| x.0))
            .max();
        let (Some(first), Some(last)) = (first, last) else {
            return Err(SpyError::Format {
                path: shown,
                why: "no timed PKCS#11 call in it".into(),
            });
        };
        Ok(Self {
            shown,
            procs,
            first,
            last,
        })
    }
}

/// Splits the log into processes (each starts with the spy's banner) and counts their
/// signatures: each `[out] pSignature[*pulSignatureLen] ADDRESS / LENGTH` line. The spy prints
/// a function's outputs only when it returned `CKR_OK`, and C_Sign, C_SignFinal and
/// C_SignRecover name their output so; a NULL address is the length query. Lines, not call
/// blocks, are counted because the workers of one process sign in parallel and the spy
/// interleaves their blocks in the log (a call's lines can be cut by another's header, and
/// two threads' `[out]` lines can share one line).
fn parse(mut r: impl std::io::BufRead) -> std::io::Result<Vec<Proc>> {
    let ts = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]"
    );
    let mut procs: Vec<Proc> = Vec::new();
    let mut buf = Vec::new();
    let mut n = 0usize;
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        n += 1;
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        if line.contains("OpenSC PKCS#11 spy") {
            procs.push(Proc {
                line: n,
                first: None,
                last: None,
                signatures: 0,
            });
            continue;
        }
        let Some(p) = procs.last_mut() else {
            continue;
        };
        // Every occurrence: a thread's output can land inside another's line.
        const OUT: &str = "[out] pSignature[*pulSignatureLen] ";
        let outs = line
            .match_indices(OUT)
            .filter(|(i, _)| !line[i + OUT.len()..].starts_with("NULL"))
            .count();
        if line.contains(OUT) {
            p.signatures += outs as u64;
        } else if line.as_bytes().first().is_some_and(u8::is_ascii_digit) {
            if let Ok(t) = PrimitiveDateTime::parse(line, &ts) {
                let t = t.assume_utc();
                if p.first.is_none() {
                    p.first = Some((t, line.to_string()));
                }
                p.last = Some((t, line.to_string()));
            }
        }
    }
    Ok(procs)
}

/// Reconciles `log` with the `token_signatures` events of `ledgers`.
pub fn reconcile(
    log: &SpyLog,
    ledgers: &[crate::ledger::LedgerLocation],
) -> Result<(Reconciliation, Vec<Finding>), SpyError> {
    let shown = log.shown.clone();
    let procs = &log.procs;
    let (first, last) = (log.first, log.last);
    let from = first.replace_nanosecond(0).unwrap_or(first);
    let until = last + time::Duration::seconds(SLACK_SECS);

    // The ledger's accounts within the span.
    let mut events = Vec::new();
    let mut documents = 0u64;
    let mut self_tests = 0u64;
    let mut times = Vec::new();
    for loc in ledgers {
        let ledger = Ledger::open_read(loc.clone(), "audit")?;
        let name = loc.to_string();
        ledger.each_audit_event(|e| {
            if e.kind != EVENT {
                return true;
            }
            let Ok(at) =
                OffsetDateTime::parse(&e.at, &time::format_description::well_known::Rfc3339)
            else {
                return true;
            };
            if at < from || at > until {
                return true;
            }
            let detail: serde_json::Value = serde_json::from_str(&e.detail).unwrap_or_default();
            for k in detail["keys"].as_array().into_iter().flatten() {
                documents += k["document"].as_u64().unwrap_or(0);
                self_tests += k["self_test"].as_u64().unwrap_or(0);
            }
            let total = detail["signatures"].as_u64().unwrap_or(0);
            let here = format!("{name} event {}", e.seq);
            events.push(here.clone());
            times.push((at, total, here));
            true
        })?;
    }
    let accounted = documents + self_tests;

    // Processes and events are both in time order: each process takes the first event not yet
    // taken that was recorded between its first call and its last plus the slack, preferring
    // one with its own count (a later command started in the same second).
    times.sort_by_key(|t| t.0);
    let mut taken = vec![false; times.len()];
    let mut processes = Vec::new();
    for (i, p) in procs.iter().enumerate() {
        let (Some(a), Some(b)) = (&p.first, &p.last) else {
            continue;
        };
        if p.signatures == 0 {
            continue;
        }
        let p_from = a.0.replace_nanosecond(0).unwrap_or(a.0);
        let p_until = b.0 + time::Duration::seconds(SLACK_SECS);
        let fits: Vec<usize> = (0..times.len())
            .filter(|&j| !taken[j] && times[j].0 >= p_from && times[j].0 <= p_until)
            .collect();
        let pick = fits
            .iter()
            .copied()
            .find(|&j| times[j].1 == p.signatures)
            .or_else(|| fits.first().copied());
        if let Some(j) = pick {
            taken[j] = true;
        }
        processes.push(SpyProcess {
            index: i + 1,
            line: p.line,
            first_call: a.1.to_string(),
            last_call: b.1.to_string(),
            signatures: p.signatures,
            event: pick.map(|j| times[j].2.clone()),
            recorded: pick.map_or(0, |j| times[j].1),
        });
    }
    let token_signatures: u64 = processes.iter().map(|p| p.signatures).sum();

    let mut findings = Vec::new();
    if token_signatures > accounted {
        let mut f = Finding::new(
            Severity::Critical,
            "token-signatures-unaccounted",
            format!(
                "the token made {token_signatures} signatures per the spy log, the ledger accounts for {accounted}: {} signatures are not accounted for (a program other than certfab signed with the token's keys, or a certfab command was killed before it recorded its count: see the processes named)",
                token_signatures - accounted
            ),
        )
        .at(shown.clone());
        for p in processes.iter().filter(|p| p.recorded < p.signatures) {
            f = f.at(match &p.event {
                None => format!(
                    "{shown} line {}: process {} made {} signatures from {} to {} and no token_signatures event follows",
                    p.line, p.index, p.signatures, p.first_call, p.last_call
                ),
                Some(e) => format!(
                    "{shown} line {}: process {} made {} signatures from {} to {}, {e} records {}",
                    p.line, p.index, p.signatures, p.first_call, p.last_call, p.recorded
                ),
            });
        }
        findings.push(f);
    } else if accounted > token_signatures {
        findings.push(
            Finding::new(
                Severity::Medium,
                "token-signatures-not-in-spy-log",
                format!(
                    "the ledger accounts for {accounted} signatures between {} and {}, the spy log shows {token_signatures}: the capture missed some (a command ran without the spy, or the log is not the one for this span)",
                    crate::clock::rfc3339(from),
                    crate::clock::rfc3339(until)
                ),
            )
            .at(shown.clone()),
        );
    }
    Ok((
        Reconciliation {
            spy_log: shown,
            token_signatures,
            accounted,
            documents,
            self_tests,
            from: crate::clock::rfc3339(from),
            until: crate::clock::rfc3339(until),
            events,
            processes,
        },
        findings,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\n\n*************** OpenSC PKCS#11 spy *****************\nLoaded: \"x.so\"\n\n0: C_GetInterface\n2026-12-03 18:09:33.075\nReturned:  0 CKR_OK\n\n22: C_Sign\n2026-12-03 18:09:33.165\n[in] hSession = 0x2\n[out] pSignature[*pulSignatureLen] NULL [size : 0x40 (64)]\nReturned:  0 CKR_OK\n\n23: C_Sign\n2026-12-03 18:09:33.165\n[out] pSignature[*pulSignatureLen] 0000559307f2dd00 / 64\n    00000000  7E DE\nReturned:  0 CKR_OK\n\n24: C_Sign\n2026-12-03 18:09:34.165\nReturned:  48 CKR_DEVICE_REMOVED\n";

    /// Only a signature returned is one: the length query and a failed call are not.
    #[test]
    fn counts_only_signatures_returned() {
        let p = parse(LOG.as_bytes()).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].signatures, 1);
        assert_eq!(
            p[0].last.as_ref().map(|x| x.1.as_str()),
            Some("2026-12-03 18:09:34.165")
        );
    }
}
