//! Checks across several verified manifests of one or more ledgers: each ledger's manifests
//! must form an unbroken chain (sequence k+1 names manifest k's SHA-256 and continues its
//! device range), no two files may claim the same place, and no device certificate may appear
//! in two manifests of one ledger (an entry replayed into a later manifest).

use super::repeats::{self, Across};
use super::verify::{verify_file_into, Report};
use super::{ManifestError, Trust, VerifiedManifest};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// What was found about the chains.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ChainReport {
    /// Per ledger id: the sequence numbers given, in order.
    pub ledgers: BTreeMap<String, Vec<u64>>,
    /// Problems, each naming the files involved.
    pub problems: Vec<String>,
}

/// Checks the chain links among `manifests` (merged manifests have none). The certificates
/// repeated across them are [`verify_all`]'s to find, from the files.
pub fn check_links(manifests: &[&VerifiedManifest]) -> ChainReport {
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
    r
}

/// Several manifests verified one after another, then checked together.
#[derive(Debug)]
pub struct Verified {
    /// Each manifest's verdict, in the order given; a verified one holds no devices.
    pub results: Vec<Result<VerifiedManifest, Box<Report>>>,
    /// The chain links among the verified ones, then any certificate in two of their built
    /// manifests.
    pub chain: ChainReport,
}

impl Verified {
    /// Whether every manifest verified and nothing is wrong across them.
    pub fn ok(&self) -> bool {
        self.results.iter().all(Result::is_ok) && self.chain.problems.is_empty()
    }
}

/// `manifest verify A B …`: verifies each file against `trust` (streamed, devices not held),
/// then checks the chain links among those that verify and that no device certificate is in
/// two of their built manifests (an entry replayed into a later manifest, or two files that
/// overlap; a merged manifest repeats its inputs' devices by design, and the same file given
/// twice is one manifest). The replays are found without holding the devices: a repeated
/// certificate repeats its serial, so the serial filters the verifier builds for its own
/// repeats flag the candidates across files ([`Across`]), and only if there are any the files
/// are read again to compare those exactly. A file that cannot be read is an error (`Err`);
/// one that does not verify is a result.
pub fn verify_all(paths: &[PathBuf], trust: &Trust) -> Result<Verified, ManifestError> {
    const SERIAL: usize = 1;
    let mut results: Vec<Result<VerifiedManifest, Box<Report>>> = Vec::new();
    let mut across = Across::new([false, true, false]);
    // The built manifests whose certificates count (first of each SHA-256), by result index.
    let mut counted: Vec<usize> = Vec::new();
    let mut changed = Vec::new();
    for p in paths {
        let observe = across.worth_observing(p);
        let mut keys = None;
        let r = verify_file_into(
            p,
            None,
            trust,
            |d| {
                if observe {
                    across.observe(&d.line)
                }
            },
            &mut keys,
        );
        match r {
            Ok(v) => {
                let first_of_its_bytes = !counted
                    .iter()
                    .any(|&i| matches!(&results[i], Ok(m) if m.sha256 == v.sha256));
                match keys {
                    Some(k) if v.header.sequence.is_some() && first_of_its_bytes => {
                        if observe {
                            across.accept(p, &v.sha256, &k);
                            counted.push(results.len());
                        } else {
                            // It held another file's bytes when it was looked at first.
                            across.reject();
                            changed.push(format!(
                                "{} changed while it was being verified; verify it again when nothing writes it",
                                p.display()
                            ));
                        }
                    }
                    _ => across.reject(),
                }
                results.push(Ok(v));
            }
            Err(ManifestError::Invalid(r)) => {
                across.reject();
                results.push(Err(r));
            }
            Err(e) => return Err(e),
        }
    }
    let ok: Vec<&VerifiedManifest> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let mut chain = check_links(&ok);
    if across.suspected() {
        // The first place of each flagged certificate: (file, its line's seq).
        let mut seen: HashMap<String, (&Path, u64)> = HashMap::new();
        for &i in &counted {
            let Ok(m) = &results[i] else { continue };
            let path = m.path.as_path();
            let problems = &mut chain.problems;
            let again = std::fs::File::open(path).and_then(|f| {
                repeats::rescan(
                    std::io::BufReader::with_capacity(256 * 1024, f),
                    |d| across.flagged(SERIAL, &d.serial),
                    |_, d| match seen.get(&d.cert_sha256) {
                        Some((first, seq)) => problems.push(format!(
                            "device {} (certificate {}) is in {}:{} and {}:{}",
                            d.device_id,
                            d.cert_sha256.get(..16).unwrap_or(&d.cert_sha256),
                            first.display(),
                            seq + 1,
                            path.display(),
                            d.seq + 1
                        )),
                        None => {
                            seen.insert(d.cert_sha256, (path, d.seq));
                        }
                    },
                )
            });
            match again {
                Err(e) => chain.problems.push(format!(
                    "cannot read {} again to compare its certificates with the other manifests': {e}",
                    path.display()
                )),
                Ok(sha) if sha != m.sha256 => chain.problems.push(format!(
                    "{} changed while it was being verified; verify it again when nothing writes it",
                    path.display()
                )),
                Ok(_) => {}
            }
        }
    }
    chain.problems.extend(changed);
    Ok(Verified { results, chain })
}
