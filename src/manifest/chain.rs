//! Checks across several verified manifests of one or more ledgers: each ledger's manifests
//! must form an unbroken chain (sequence k+1 names manifest k's SHA-256 and continues its
//! device range), no two files may claim the same place, and no device certificate may appear
//! in two manifests of one ledger (an entry replayed into a later manifest).

use super::VerifiedManifest;
use std::collections::{BTreeMap, HashMap};

/// What was found about the chains.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ChainReport {
    /// Per ledger id: the sequence numbers given, in order.
    pub ledgers: BTreeMap<String, Vec<u64>>,
    /// Problems, each naming the files involved.
    pub problems: Vec<String>,
}

/// Checks the chain links among `manifests` (merged manifests are checked only for repeats).
pub fn check(manifests: &[VerifiedManifest]) -> ChainReport {
    let mut r = ChainReport::default();
    let mut by_ledger: BTreeMap<&str, Vec<&VerifiedManifest>> = BTreeMap::new();
    for m in manifests {
        if m.header.sequence.is_some() {
            by_ledger.entry(&m.header.ledger).or_default().push(m);
        }
    }
    for (ledger, mut ms) in by_ledger {
        ms.sort_by_key(|m| m.header.sequence);
        let short = &ledger[..ledger.len().min(12)];
        r.ledgers.insert(
            ledger.to_string(),
            ms.iter().filter_map(|m| m.header.sequence).collect(),
        );
        for w in ms.windows(2) {
            let (a, b) = (w[0], w[1]);
            let (sa, sb) = (
                a.header.sequence.unwrap_or(0),
                b.header.sequence.unwrap_or(0),
            );
            let (pa, pb) = (a.path.display(), b.path.display());
            if sa == sb {
                r.problems.push(if a.sha256 == b.sha256 {
                    format!("{pa} and {pb} are the same manifest (#{sa} of ledger {short}) given twice")
                } else {
                    format!("{pa} and {pb} both claim to be manifest #{sa} of ledger {short}: the chain forks")
                });
            } else if sb != sa + 1 {
                r.problems.push(format!(
                    "manifest(s) #{}..#{} of ledger {short} are missing between {pa} (#{sa}) and {pb} (#{sb})",
                    sa + 1,
                    sb - 1
                ));
            } else {
                if b.header.prev_sha256.as_deref() != Some(a.sha256.as_str()) {
                    r.problems.push(format!(
                        "{pb} (#{sb}) names previous manifest SHA-256 {}, but {pa} (#{sa}) has SHA-256 {}: not the manifest it chains to",
                        b.header.prev_sha256.as_deref().unwrap_or("none"),
                        a.sha256
                    ));
                }
                if let (Some(ra), Some(rb)) = (a.header.range, b.header.range) {
                    if rb.first != ra.last + 1 {
                        r.problems.push(format!(
                            "{pb} (#{sb}) starts its device range at {}, but {pa} (#{sa}) ended at {}",
                            rb.first, ra.last
                        ));
                    }
                }
            }
        }
    }
    // A certificate in two built manifests: an entry replayed, or two files that overlap.
    // (A merged manifest repeats its inputs' devices by design.)
    let mut seen: HashMap<&str, (&VerifiedManifest, u64)> = HashMap::new();
    for m in manifests.iter().filter(|m| m.header.sequence.is_some()) {
        for d in &m.devices {
            if let Some((first, seq)) = seen.get(d.line.cert_sha256.as_str()) {
                if first.sha256 != m.sha256 {
                    r.problems.push(format!(
                        "device {} (certificate {}) is in {}:{} and {}:{}",
                        d.line.device_id,
                        &d.line.cert_sha256[..16],
                        first.path.display(),
                        seq + 1,
                        m.path.display(),
                        d.line.seq + 1
                    ));
                }
            } else {
                seen.insert(&d.line.cert_sha256, (m, d.line.seq));
            }
        }
    }
    r
}
