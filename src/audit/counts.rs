//! Figures over the ledgers: issuance and rejections per station, operator, profile and UTC
//! day; issuance per hour; rejections by reason category (free-text reasons normalized).

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
    /// Every rejected request.
    pub rejected: Vec<RejectedItem>,
    /// Device rows per state.
    pub devices_by_state: BTreeMap<String, u64>,
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

/// Tallies every ledger in the corpus.
pub fn count(corpus: &Corpus) -> Counts {
    let mut c = Counts::default();
    for l in &corpus.ledgers {
        let operator_of_batch: BTreeMap<&str, &str> = l
            .attempts
            .iter()
            .filter_map(|a| a.operator.as_deref().map(|o| (a.batch_id.as_str(), o)))
            .collect();
        // The operator of an issuance: the attempt that carried its serial, else the shift's.
        let mut op_of_serial: BTreeMap<(&str, &str), &str> = BTreeMap::new();
        for a in &l.attempts {
            if let (Some(d), Some(o)) = (a.device_id.as_deref(), a.operator.as_deref()) {
                op_of_serial.insert((a.batch_id.as_str(), d), o);
            }
        }
        for d in &l.devices {
            *c.devices_by_state.entry(d.state.to_string()).or_default() += 1;
        }
        for cert in l
            .certs
            .iter()
            .filter(|x| x.state.is(crate::ledger::CertState::Signed))
        {
            let station = l.station_of(&cert.batch_id).to_string();
            let op = op_of_serial
                .get(&(cert.batch_id.as_str(), cert.device_id.as_str()))
                .or_else(|| operator_of_batch.get(cert.batch_id.as_str()))
                .map_or("(batch)", |v| v)
                .to_string();
            let at = cert.signed_at.clone().unwrap_or_default();
            c.per_station.entry(station).or_default().issued += 1;
            c.per_operator.entry(op).or_default().issued += 1;
            c.per_profile
                .entry(cert.profile.clone())
                .or_default()
                .issued += 1;
            c.per_tenant
                .entry(tenant(l, &cert.batch_id))
                .or_default()
                .issued += 1;
            c.per_day.entry(day(&at)).or_default().issued += 1;
            *c.issued_per_hour.entry(hour(&at)).or_default() += 1;
        }
        for r in &l.rejections {
            let cat = reason_category(&r.kind, &r.reason);
            let station = l.station_of(&r.batch_id).to_string();
            let profile = l
                .batches
                .get(&r.batch_id)
                .map_or("?".to_string(), |b| b.profile.clone());
            let op = operator_of_batch
                .get(r.batch_id.as_str())
                .map_or("(batch)", |v| v)
                .to_string();
            c.per_station.entry(station).or_default().rejected += 1;
            c.per_operator.entry(op).or_default().rejected += 1;
            c.per_profile.entry(profile).or_default().rejected += 1;
            c.per_tenant
                .entry(tenant(l, &r.batch_id))
                .or_default()
                .rejected += 1;
            c.per_day.entry(day(&r.at)).or_default().rejected += 1;
            *c.rejections_by_reason.entry(cat).or_default() += 1;
            c.rejected.push(RejectedItem {
                ledger: l.path.clone(),
                batch_id: r.batch_id.clone(),
                line: r.line,
                device_id: r.device_id.clone(),
                category: cat,
                reason: r.reason.clone(),
            });
        }
        for a in &l.attempts {
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
                c.rejected.push(RejectedItem {
                    ledger: l.path.clone(),
                    batch_id: a.batch_id.clone(),
                    line: a.id,
                    device_id: a.device_id.clone(),
                    category: cat,
                    reason: format!("{}: {}", a.step, a.reason),
                });
            }
        }
    }
    c
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
