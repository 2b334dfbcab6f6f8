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
/// signatures with [`SignatureCount`].
fn parse(mut r: impl std::io::BufRead) -> std::io::Result<Vec<Proc>> {
    let ts = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]"
    );
    let mut procs: Vec<Proc> = Vec::new();
    let mut count = SignatureCount::default();
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
            if let Some(p) = procs.last_mut() {
                p.signatures = std::mem::take(&mut count).signatures();
            }
            procs.push(Proc {
                line: n,
                first: None,
                last: None,
                signatures: 0,
            });
            continue;
        }
        if procs.is_empty() {
            continue;
        }
        if !count.line(line) && line.as_bytes().first().is_some_and(u8::is_ascii_digit) {
            if let (Ok(t), Some(p)) = (PrimitiveDateTime::parse(line, &ts), procs.last_mut()) {
                let t = t.assume_utc();
                if p.first.is_none() {
                    p.first = Some((t, line.to_string()));
                }
                p.last = Some((t, line.to_string()));
            }
        }
    }
    if let Some(p) = procs.last_mut() {
        p.signatures = count.signatures();
    }
    Ok(procs)
}

/// The signature output label the spy prints for C_Sign, C_SignFinal and C_SignRecover. The
/// spy prints a function's outputs only when it returned `CKR_OK`.
const SIGNATURE_OUT: &str = "[out] pSignature[*pulSignatureLen] ";
/// What the spy prints for a NULL output buffer: the length query before a signature.
const NULL_BUFFER: &str = "NULL [size : 0x";

/// Counts one process's signatures: each [`SIGNATURE_OUT`] label is a returned signature
/// unless its buffer was NULL (the length query, for which the token reports a length above
/// zero). The spy writes a label and its buffer with two `fprintf` calls, each atomic, so when
/// the workers of one process sign in parallel another thread's output can land between the
/// two (seen in CI: a length query whose `NULL` came a line later was counted as a signature).
/// So labels and length queries are counted apart: a NULL buffer of non-zero length is a
/// signature's length query unless it comes right after another `[out] NAME ` label (a
/// length query of C_Encrypt, C_WrapKey, …); a NULL of length zero is an absent mechanism
/// parameter, never a query. Left open: in a multi-threaded process that also asks another
/// output's length, that query cut from its label would be taken for a signature's (an
/// undercount of one); certfab makes no such calls.
#[derive(Debug, Default)]
struct SignatureCount {
    labels: u64,
    queries: u64,
}

impl SignatureCount {
    /// Takes one line of the log; whether it held any signature output or NULL buffer.
    fn line(&mut self, line: &str) -> bool {
        let labels = line.matches(SIGNATURE_OUT).count() as u64;
        self.labels += labels;
        let mut any = labels > 0;
        for (i, _) in line.match_indices(NULL_BUFFER) {
            any = true;
            let size = &line[i + NULL_BUFFER.len()..];
            let size = &size[..size.bytes().take_while(u8::is_ascii_hexdigit).count()];
            if size.is_empty() || size.bytes().all(|b| b == b'0') {
                continue;
            }
            let before = &line[..i];
            if before.ends_with(SIGNATURE_OUT) || !follows_out_label(before) {
                self.queries += 1;
            }
        }
        any
    }

    fn signatures(&self) -> u64 {
        self.labels.saturating_sub(self.queries)
    }
}

/// Whether `before` ends with an `[out] NAME ` label, whose buffer is what comes next.
fn follows_out_label(before: &str) -> bool {
    let Some(s) = before.strip_suffix(' ') else {
        return false;
    };
    let name_at = s.rfind(' ').map_or(0, |i| i + 1);
    name_at < s.len() && s[..name_at].ends_with("[out] ")
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

    const BANNER: &str = "\n\n*************** OpenSC PKCS#11 spy *****************\n";

    /// Two workers' calls cut into each other, as the spy wrote them in CI: the length query's
    /// `NULL` a line after its label, a signature whose label follows another thread's, and
    /// mechanism parameters (NULL of length zero) cut from theirs. Two signatures.
    #[test]
    fn interleaved_workers_are_counted_by_label_and_query() {
        let log = format!(
            "{BANNER}\n\n40: C_SignInit\n2026-12-04 17:18:43.700\n[in] hSession = 0x3\n[in] pMechanism->type = CKM_ECDSA\n[in] pMechanism->pParameter[ulParameterLen] \n\n41: C_Sign\nNULL [size : 0x0 (0)]\n2026-12-04 17:18:43.701\n[out] pSignature[*pulSignatureLen] \n\n42: C_Sign\n2026-12-04 17:18:43.701\nNULL [size : 0x40 (64)]\nReturned:  0 CKR_OK\n[in] pData[ulDataLen] [out] pSignature[*pulSignatureLen] NULL [size : 0x40 (64)]\n000056000000aa00 / 32\n    00000000  01 02\n[out] pSignature[*pulSignatureLen] [out] pSignature[*pulSignatureLen] 0000559307f2dd00 / 64\n    00000000  7E DE\n0000559307f2dd40 / 64\n    00000000  7E DF\nReturned:  0 CKR_OK\n"
        );
        let p = parse(log.as_bytes()).unwrap();
        assert_eq!(p[0].signatures, 2, "{log}");
    }

    /// Another output's length query (C_Encrypt's) is that output's, not a signature's.
    #[test]
    fn another_outputs_length_query_is_not_a_signatures() {
        let log = format!(
            "{BANNER}\n\n1: C_Encrypt\n2026-12-04 17:18:43.700\n[out] pEncryptedData[*pulEncryptedDataLen] NULL [size : 0x20 (32)]\nReturned:  0 CKR_OK\n\n2: C_Sign\n2026-12-04 17:18:43.701\n[out] pSignature[*pulSignatureLen] 0000559307f2dd00 / 64\n    00000000  7E DE\nReturned:  0 CKR_OK\n"
        );
        assert_eq!(parse(log.as_bytes()).unwrap()[0].signatures, 1);
    }

    /// Each process's count is its own.
    #[test]
    fn processes_are_counted_apart() {
        let log = format!("{LOG}{LOG}");
        let p = parse(log.as_bytes()).unwrap();
        assert_eq!(p.iter().map(|p| p.signatures).collect::<Vec<_>>(), [1, 1]);
    }
}
