//! Figures over the ledgers: issuance and rejections per station, operator, profile and UTC
//! day; issuance per hour; rejections by reason category (free-text reasons normalized).

use super::scratch::{AttemptRow, R};
use super::Corpus;
use serde::Serialize;
use std::collections::BTreeMap;

/// What happened under one key (a station, operator, profile or day).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Certificates signed.
    pub issued: u64,
    /// Requests rejected (batch rows and station refusals) or duplicate input rows.
    pub rejected: u64,
    /// Station attempts that passed.
    pub passed: u64,
    /// Station attempts that failed (device or link).
    pub failed: u64,
}

/// One rejected request, for the report's list.
#[derive(Debug, Clone, Serialize)]
pub struct RejectedItem {
    pub ledger: String,
    /// Batch or shift.
    pub batch_id: String,
    /// Input line (batch) or attempt id (station).
    pub line: i64,
    /// Device id, if known.
    pub device_id: Option<String>,
    pub category: &'static str,
    /// Reason as recorded.
    pub reason: String,
}

/// All figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Per station id.
    pub per_station: BTreeMap<String, Tally>,
    /// Per operator (`(batch)` for batch runs, which have none).
    pub per_operator: BTreeMap<String, Tally>,
    /// Per profile name.
    pub per_profile: BTreeMap<String, Tally>,
    /// Per tenant (`(no tenant)` for batches without one).
    pub per_tenant: BTreeMap<String, Tally>,
    /// Per UTC day, `YYYY-MM-DD`.
    pub per_day: BTreeMap<String, Tally>,
    /// Certificates signed per UTC hour, `YYYY-MM-DDTHH`.
    pub issued_per_hour: BTreeMap<String, u64>,
    /// Rejected requests per reason category.
    pub rejections_by_reason: BTreeMap<&'static str, u64>,
    /// How many rejected requests there are (the list itself is in the scratch database:
    /// [`super::Findings::rejected`]; the JSON report has it as `rejected`).
    #[serde(skip)]
    pub rejected_count: u64,
    /// Device rows per state.
    pub devices_by_state: BTreeMap<String, u64>,
}

/// Every category [`reason_category`] gives.
const CATEGORIES: [&str; 10] = [
    "duplicate-input",
    "identity-conflict",
    "proof-of-possession",
    "key-policy",
    "lint",
    "extension-request",
    "device-security",
    "name-policy",
    "input-format",
    "other",
];

/// A category name as stored, back as the category.
pub(super) fn category_name(s: &str) -> &'static str {
    CATEGORIES.into_iter().find(|c| *c == s).unwrap_or("other")
}

/// The category of a rejection reason. Reasons are free text written by certfab's policy
/// code; the category is what a report can count. `kind` is `rejected`, `duplicate` or
/// `refused` (station).
pub fn reason_category(kind: &str, reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| r.contains(w));
    if kind == "duplicate" || has(&["issued once"]) {
        "duplicate-input"
    } else if has(&[
        "already certified",
        "one device id per key",
        "different key",
        "live certificate",
        "supersede",
    ]) {
        "identity-conflict"
    } else if has(&["proof of possession", "self-signature"]) {
        "proof-of-possession"
    } else if has(&[
        "keys are not allowed",
        "rsa key refused",
        "curve",
        "roca",
        "fermat",
        "exponent",
    ]) {
        "key-policy"
    } else if has(&["lint"]) {
        "lint"
    } else if has(&["the csr requests", "extension"]) {
        "extension-request"
    } else if has(&["security state", "debug"]) {
        "device-security"
    } else if has(&["value \"", "device id", "template"]) {
        "name-policy"
    } else if has(&[
        "malformed",
        "pem label",
        "cannot read",
        "no such file",
        "does not exist",
        "input root",
        "not a regular file",
        "neither pem",
        "symbolic link",
        "fields",
        "64 kib",
        "not valid utf",
        "csv",
    ]) {
        "input-format"
    } else {
        "other"
    }
}

/// Tallies every ledger in the corpus, streaming its rows from the scratch database (the
/// tallies are per station, operator, profile, tenant, day and hour: small whatever the
/// number of devices); the rejected requests are listed into the scratch database.
pub fn count(corpus: &Corpus) -> R<Counts> {
    let s = &corpus.scratch;
    let mut c = Counts::default();
    s.each(
        "SELECT state, COUNT(*) FROM dev GROUP BY state",
        [],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
        |(state, n)| {
            *c.devices_by_state.entry(state).or_default() += n as u64;
            Ok(())
        },
    )?;
    for (li, l) in corpus.ledgers.iter().enumerate() {
        let li_ = li as i64;
        // The operator of a shift: its last attempt that names one.
        let mut operator_of_batch: BTreeMap<String, String> = BTreeMap::new();
        s.each(
            "SELECT batch_id, operator FROM att WHERE li = ?1 AND operator IS NOT NULL
             ORDER BY rowid",
            [li_],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            |(b, o)| {
                operator_of_batch.insert(b, o);
                Ok(())
            },
        )?;
        // The operator of an issuance: the (last) attempt that carried its device, else the
        // shift's.
        s.each(
            "SELECT c.batch_id, c.profile, c.signed_at,
                (SELECT a.operator FROM att a WHERE a.li = c.li AND a.batch_id = c.batch_id
                   AND a.device_id = c.device_id AND a.operator IS NOT NULL
                 ORDER BY a.rowid DESC LIMIT 1)
             FROM cert c WHERE c.li = ?1 AND c.state = 'signed' ORDER BY c.rowid",
            [li_],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            },
            |(batch_id, profile, signed_at, op)| {
                let station = l.station_of(&batch_id).to_string();
                let op = op
                    .or_else(|| operator_of_batch.get(&batch_id).cloned())
                    .unwrap_or_else(|| "(batch)".into());
                let at = signed_at.unwrap_or_default();
                c.per_station.entry(station).or_default().issued += 1;
                c.per_operator.entry(op).or_default().issued += 1;
                c.per_profile.entry(profile).or_default().issued += 1;
                c.per_tenant.entry(tenant(l, &batch_id)).or_default().issued += 1;
                c.per_day.entry(day(&at)).or_default().issued += 1;
                *c.issued_per_hour.entry(hour(&at)).or_default() += 1;
                Ok(())
            },
        )?;
        s.each(
            "SELECT batch_id, line, device_id, kind, reason, at FROM rej WHERE li = ?1
             ORDER BY rowid",
            [li_],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            },
            |(batch_id, line, device_id, kind, reason, at)| {
                let cat = reason_category(&kind, &reason);
                let station = l.station_of(&batch_id).to_string();
                let profile = l
                    .batches
                    .get(&batch_id)
                    .map_or("?".to_string(), |b| b.profile.clone());
                let op = operator_of_batch
                    .get(&batch_id)
                    .map_or("(batch)", |v| v.as_str())
                    .to_string();
                c.per_station.entry(station).or_default().rejected += 1;
                c.per_operator.entry(op).or_default().rejected += 1;
                c.per_profile.entry(profile).or_default().rejected += 1;
                c.per_tenant
                    .entry(tenant(l, &batch_id))
                    .or_default()
                    .rejected += 1;
                c.per_day.entry(day(&at)).or_default().rejected += 1;
                *c.rejections_by_reason.entry(cat).or_default() += 1;
                c.rejected_count += 1;
                s.push_rejected(&RejectedItem {
                    ledger: l.path.clone(),
                    batch_id,
                    line,
                    device_id,
                    category: cat,
                    reason,
                })
            },
        )?;
        s.each(
            "SELECT batch_id, id, station, operator, profile, device_id, started_at, outcome,
                step, reason FROM att WHERE li = ?1 ORDER BY rowid",
            [li_],
            |r| {
                Ok(AttemptRow {
                    batch_id: r.get(0)?,
                    id: r.get(1)?,
                    station: r.get(2)?,
                    operator: r.get(3)?,
                    profile: r.get(4)?,
                    device_id: r.get(5)?,
                    started_at: r.get(6)?,
                    outcome: r.get(7)?,
                    step: r.get(8)?,
                    reason: r.get(9)?,
                })
            },
            |a| {
                let op = a.operator.clone().unwrap_or_else(|| "(none)".into());
                let keys = [
                    (&mut c.per_station, a.station.clone()),
                    (&mut c.per_operator, op),
                    (&mut c.per_profile, a.profile.clone()),
                    (&mut c.per_tenant, tenant(l, &a.batch_id)),
                    (&mut c.per_day, day(&a.started_at)),
                ];
                for (map, key) in keys {
                    let t = map.entry(key).or_default();
                    match a.outcome.as_str() {
                        "pass" => t.passed += 1,
                        "fail" => t.failed += 1,
                        _ => t.rejected += 1,
                    }
                }
                if a.outcome == "refused" {
                    let cat = reason_category("refused", &a.reason);
                    *c.rejections_by_reason.entry(cat).or_default() += 1;
                    c.rejected_count += 1;
                    s.push_rejected(&RejectedItem {
                        ledger: l.path.clone(),
                        batch_id: a.batch_id.clone(),
                        line: a.id,
                        device_id: a.device_id.clone(),
                        category: cat,
                        reason: format!("{}: {}", a.step, a.reason),
                    })?;
                }
                Ok(())
            },
        )?;
    }
    Ok(c)
}

fn tenant(l: &super::LedgerData, batch_id: &str) -> String {
    l.tenant_of(batch_id).unwrap_or("(no tenant)").to_string()
}

fn day(t: &str) -> String {
    t.get(..10).unwrap_or("unknown").to_string()
}

fn hour(t: &str) -> String {
    t.get(..13).unwrap_or("unknown").to_string()
}

#[cfg(test)]
mod tests {
    use super::reason_category;

    #[test]
    fn recorded_reasons_fall_in_their_categories() {
        let cases = [
            ("duplicate", "DEV-002 issued once (first on line 3)", "duplicate-input"),
            ("rejected", "this public key is already certified for device DEV-004 (profile generic-iot); one device id per key", "identity-conflict"),
            ("rejected", "device DEV-1 already has a live certificate (serial 01ab) for another key; a new key for an existing device needs an explicit supersede", "identity-conflict"),
            ("rejected", "the CSR's self-signature does not verify (no proof of possession of the private key); regenerate the CSR on the device", "proof-of-possession"),
            ("rejected", "RSA 1024 keys are not allowed by profile 'generic-iot'; it accepts ECDSA P-256", "key-policy"),
            ("rejected", "device id value \"a,b\" refused: ',' is not allowed", "name-policy"),
            ("rejected", "line 24: expected 3 fields, found 1", "input-format"),
            ("rejected", "malformed CSR: unexpected end", "input-format"),
            (
                "rejected",
                "pubkey file \"../x.pem\": it is outside the input root /in; …",
                "input-format",
            ),
            (
                "rejected",
                "csr file \"f.csr\": it is a FIFO (named pipe), not a regular file; …",
                "input-format",
            ),
            ("rejected", "pubkey file \"k\": it does not exist", "input-format"),
            ("refused", "security state refused: debug is open", "device-security"),
            ("rejected", "something new", "other"),
        ];
        for (kind, reason, want) in cases {
            assert_eq!(reason_category(kind, reason), want, "{reason}");
        }
    }
}
