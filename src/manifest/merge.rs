//! `manifest merge`: one manifest from several verified manifests (several stations or
//! shifts), refusing any device id, serial or public key that appears in more than one, and
//! any mix of profiles, tenants or CAs. Signed by the site's signer like a built manifest;
//! the ledger is not touched (the inputs may come from other stations' ledgers).
//!
//! Nothing is held per device (issue 14): each input is verified streamed while its keys go
//! into the repeat filters ([`super::repeats::Across`]); the merged file is then written to
//! its temporary from a second read of the inputs, which also compares the flagged keys
//! exactly, hashed for its Merkle root and signature on the way, verified from the temporary,
//! and only then renamed into place.

use super::format::{self, DeviceLine, Header, Source, Trailer, FORMAT};
use super::jws::DocumentSigner;
use super::repeats::{self, Across};
use super::verify::verify_file_into;
use super::writer::{Writer, Written};
use super::{ManifestError, Trust, VerifiedManifest};
use crate::crypto::Signer;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// What a merge produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MergeOutcome {
    /// The merged manifest.
    pub path: PathBuf,
    pub signature: PathBuf,
    /// SHA-256 of the merged file.
    pub sha256: String,
    pub count: u64,
    pub merkle_root: String,
    /// Inputs: path and SHA-256.
    pub inputs: Vec<(PathBuf, String)>,
}

/// Verifies every input against `trust`, checks they can be combined, and writes the merge.
pub fn merge<K: Signer>(
    inputs: &[PathBuf],
    out: &Path,
    signer: &DocumentSigner<K>,
    trust: &Trust,
    now: OffsetDateTime,
) -> Result<MergeOutcome, ManifestError> {
    if inputs.len() < 2 {
        return Err(ManifestError::Usage(
            "manifest merge needs at least two manifests".into(),
        ));
    }
    let sig_path = super::signature_path(out);
    for p in [out, sig_path.as_path()] {
        if p.exists() {
            return Err(ManifestError::Write {
                path: p.display().to_string(),
                msg: "it already exists; certfab never overwrites a manifest. Choose a new --out or move it away".into(),
            });
        }
    }
    // Pass 1: each input verified (streamed), its keys into the repeat filters.
    let mut verified: Vec<VerifiedManifest> = Vec::new();
    let mut across = Across::new([true; repeats::KINDS]);
    for p in inputs {
        let observe = across.worth_observing(p);
        let mut keys = None;
        let v = verify_file_into(
            p,
            None,
            trust,
            |d| {
                if observe {
                    across.observe(&d.line)
                }
            },
            &mut keys,
        )?;
        if let Some(prev) = verified.iter().find(|m| m.sha256 == v.sha256) {
            return Err(ManifestError::Refused(format!(
                "{} and {} are the same manifest (SHA-256 {})",
                prev.path.display(),
                p.display(),
                v.sha256
            )));
        }
        match keys {
            Some(k) if observe => across.accept(p, &v.sha256, &k),
            // It held another input's bytes when it was looked at first.
            _ => {
                return Err(ManifestError::Refused(format!(
                    "{} changed while it was being merged; nothing was written. Merge again when nothing writes it",
                    p.display()
                )))
            }
        }
        verified.push(v);
    }
    let base = &verified[0].header;
    for m in &verified[1..] {
        let h = &m.header;
        let what = if h.profile != base.profile || h.profile_sha256 != base.profile_sha256 {
            Some(format!(
                "profile {} ({}) vs {} ({})",
                base.profile, base.profile_sha256, h.profile, h.profile_sha256
            ))
        } else if h.tenant != base.tenant {
            Some(format!("tenant {:?} vs {:?}", base.tenant, h.tenant))
        } else if h.ca_sha256 != base.ca_sha256 {
            Some("a different CA chain".into())
        } else {
            None
        };
        if let Some(w) = what {
            return Err(ManifestError::Refused(format!(
                "{} and {} cannot be merged: {w}; a manifest covers one profile, tenant and CA",
                verified[0].path.display(),
                m.path.display()
            )));
        }
    }

    let mut batches: Vec<String> = verified
        .iter()
        .flat_map(|m| m.header.batches.clone())
        .collect();
    batches.sort();
    batches.dedup();
    let mut stations: Vec<String> = verified
        .iter()
        .flat_map(|m| m.header.stations.clone())
        .collect();
    stations.sort();
    stations.dedup();
    let header = Header {
        kind: "header".into(),
        format: FORMAT.into(),
        tool: format!("certfab {}", env!("CARGO_PKG_VERSION")),
        ledger: "merged".into(),
        batches,
        stations,
        profile: base.profile.clone(),
        profile_sha256: base.profile_sha256.clone(),
        tenant: base.tenant.clone(),
        ca_chain: base.ca_chain.clone(),
        ca_sha256: base.ca_sha256.clone(),
        created: crate::clock::rfc3339(now),
        sequence: None,
        range: None,
        prev_sha256: None,
        merged_from: verified
            .iter()
            .map(|m| Source {
                sha256: m.sha256.clone(),
                ledger: m.header.ledger.clone(),
                sequence: m.header.sequence,
                batches: m.header.batches.clone(),
                count: m.trailer.count,
                merkle_root: m.trailer.merkle_root.clone(),
            })
            .collect(),
        cloud: base.cloud.clone(),
        line_sha256: String::new(),
    };
    let canon_err = |e: super::canon::CanonError| ManifestError::Usage(e.0);
    let werr = |e: crate::output::WriteError| ManifestError::Write {
        path: out.display().to_string(),
        msg: e.to_string(),
    };

    // Pass 2: the merged file, written to its temporary as its lines are made (hashed for the
    // Merkle root, the file's SHA-256 and the signature on the way) from a second read of the
    // inputs, whose flagged keys are compared exactly on the way. A repeat refuses the merge
    // before anything is signed; the temporary is removed.
    let (dir, name) = crate::output::split(out).map_err(werr)?;
    let out_dir = crate::output::OutDir::create(dir).map_err(werr)?;
    let file = out_dir
        .stage_file(name, crate::output::Access::Shared)
        .map_err(werr)?;
    let mut writer = Writer::new(file, signer, now)?;
    writer
        .line(format::encode(&header).map_err(canon_err)?.as_bytes())
        .map_err(werr)?;
    let mut seq = 0;
    let mut repeated = Repeated::default();
    for (i, m) in verified.iter().enumerate() {
        let mut failed = None;
        let again = std::fs::File::open(&m.path).and_then(|f| {
            repeats::rescan(
                std::io::BufReader::with_capacity(256 * 1024, f),
                |_| true,
                |_, d| {
                    if failed.is_some() {
                        return;
                    }
                    if across.flags(&d) {
                        repeated.check(&across, &verified, i, &d);
                    }
                    seq += 1;
                    let line = DeviceLine {
                        seq,
                        line_sha256: String::new(),
                        ..d
                    };
                    let written = format::encode(&line)
                        .map_err(canon_err)
                        .and_then(|enc| writer.device(enc.as_bytes()).map_err(werr));
                    failed = written.err();
                },
            )
        });
        if let Some(e) = failed {
            return Err(e);
        }
        match again {
            Err(e) => {
                return Err(ManifestError::Read {
                    path: m.path.display().to_string(),
                    msg: format!("cannot read it again to merge it: {e}"),
                })
            }
            Ok(sha) if sha != m.sha256 => {
                return Err(ManifestError::Refused(format!(
                    "{} changed while it was being merged; nothing was written. Merge again when nothing writes it",
                    m.path.display()
                )))
            }
            Ok(_) => {}
        }
    }
    if repeated.count > 0 {
        return Err(ManifestError::Refused(format!(
            "refusing to merge: {} device(s) appear in more than one manifest:\n  {}",
            repeated.count,
            repeated.shown.join("\n  ")
        )));
    }
    // The filters go before the merged file is verified (which makes its own).
    drop((across, repeated));
    let merkle_root = writer.merkle_root();
    writer
        .line(
            format::encode(&Trailer {
                kind: "trailer".into(),
                count: seq,
                merkle_root: merkle_root.clone(),
                line_sha256: String::new(),
            })
            .map_err(canon_err)?
            .as_bytes(),
        )
        .map_err(werr)?;
    let Written { file, sha256, jws } = writer
        .finish_verified(out, &sig_path, &trust.roots, "written")?
        .map_err(|r| {
            ManifestError::Refused(format!(
                "the merged manifest does not verify, so it was not written: {r}"
            ))
        })?;
    file.commit(
        crate::output::Existing::Refuse,
        crate::output::Durability::Now,
    )
    .map_err(werr)?;
    crate::output::write_new(&sig_path, jws.as_bytes()).map_err(|e| ManifestError::Write {
        path: sig_path.display().to_string(),
        msg: e.to_string(),
    })?;
    Ok(MergeOutcome {
        path: out.to_path_buf(),
        signature: sig_path,
        sha256,
        count: seq,
        merkle_root,
        inputs: verified
            .iter()
            .map(|m| (m.path.clone(), m.sha256.clone()))
            .collect(),
    })
}

/// Keys found in more than one input (pass 2 of a merge): the first place of each flagged key,
/// and the repeats, named with both files and lines (the first [`SHOWN`] kept, all counted).
#[derive(Default)]
struct Repeated {
    first: [HashMap<String, (usize, u64)>; repeats::KINDS],
    shown: Vec<String>,
    count: usize,
}

/// How many repeats a refusal names; the rest are counted.
const SHOWN: usize = 50;

impl Repeated {
    /// Device `d` of `inputs[input]`, which has a flagged key.
    fn check(
        &mut self,
        across: &Across,
        inputs: &[VerifiedManifest],
        input: usize,
        d: &DeviceLine,
    ) {
        for (kind, (key, what)) in repeats::keys(d)
            .into_iter()
            .zip(["device id", "serial", "public key"])
            .enumerate()
        {
            if !across.flagged(kind, key) {
                continue;
            }
            match self.first[kind].get(key) {
                Some(&(i, line)) => {
                    self.count += 1;
                    if self.shown.len() < SHOWN {
                        self.shown.push(format!(
                            "{what} {key} is in {}:{line} and {}:{}",
                            inputs[i].path.display(),
                            inputs[input].path.display(),
                            d.seq + 1
                        ));
                    }
                }
                None => {
                    self.first[kind].insert(key.to_string(), (input, d.seq + 1));
                }
            }
        }
    }
}
