//! `manifest merge`: one manifest from several verified manifests (several stations or
//! shifts), refusing any device id, serial or public key that appears in more than one, and
//! any mix of profiles, tenants or CAs. Signed by the site's signer like a built manifest;
//! the ledger is not touched (the inputs may come from other stations' ledgers).

use super::format::{self, DeviceLine, Header, Source, Trailer, FORMAT};
use super::jws::{self, DocumentSigner};
use super::{merkle, verify_file, ManifestError, Trust, VerifiedManifest};
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
    let mut verified: Vec<VerifiedManifest> = Vec::new();
    for p in inputs {
        let v = verify_file(p, None, trust)?;
        if let Some(prev) = verified.iter().find(|m| m.sha256 == v.sha256) {
            return Err(ManifestError::Refused(format!(
                "{} and {} are the same manifest (SHA-256 {})",
                prev.path.display(),
                p.display(),
                v.sha256
            )));
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

    // Duplicates across inputs, naming both files and lines.
    let mut problems = Vec::new();
    let mut ids: HashMap<&str, (&Path, u64)> = HashMap::new();
    let mut serials: HashMap<&str, (&Path, u64)> = HashMap::new();
    let mut spkis: HashMap<&str, (&Path, u64)> = HashMap::new();
    for m in &verified {
        for d in &m.devices {
            let here = (m.path.as_path(), d.line.seq + 1);
            for (map, key, what) in [
                (&mut ids, d.line.device_id.as_str(), "device id"),
                (&mut serials, d.line.serial.as_str(), "serial"),
                (&mut spkis, d.line.spki_sha256.as_str(), "public key"),
            ] {
                if let Some((p, l)) = map.get(key) {
                    problems.push(format!(
                        "{what} {key} is in {}:{l} and {}:{}",
                        p.display(),
                        here.0.display(),
                        here.1
                    ));
                } else {
                    map.insert(key, here);
                }
            }
        }
    }
    if !problems.is_empty() {
        let n = problems.len();
        problems.truncate(50);
        return Err(ManifestError::Refused(format!(
            "refusing to merge: {n} device(s) appear in more than one manifest:\n  {}",
            problems.join("\n  ")
        )));
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
    let mut text = format::encode(&header).map_err(canon_err)?;
    text.push('\n');
    let mut leaves = Vec::new();
    let mut seq = 0;
    for m in &verified {
        for d in &m.devices {
            seq += 1;
            let line = DeviceLine {
                seq,
                line_sha256: String::new(),
                ..d.line.clone()
            };
            let enc = format::encode(&line).map_err(canon_err)?;
            leaves.push(merkle::leaf_hash(enc.as_bytes()));
            text.push_str(&enc);
            text.push('\n');
        }
    }
    let merkle_root = hex::encode(merkle::root_of_hashes(&leaves));
    text.push_str(
        &format::encode(&Trailer {
            kind: "trailer".into(),
            count: seq,
            merkle_root: merkle_root.clone(),
            line_sha256: String::new(),
        })
        .map_err(canon_err)?,
    );
    text.push('\n');
    let bytes = text.into_bytes();
    let jws = jws::sign_detached(signer, &bytes, FORMAT, now)?;
    if let Err(r) = super::verify_bytes(
        out,
        &sig_path.display().to_string(),
        &bytes,
        Some(&jws),
        &trust.roots,
    ) {
        return Err(ManifestError::Refused(format!(
            "the merged manifest does not verify, so it was not written: {r}"
        )));
    }
    for (p, data) in [
        (out, bytes.as_slice()),
        (sig_path.as_path(), jws.as_bytes()),
    ] {
        crate::output::write_new(p, data).map_err(|e| ManifestError::Write {
            path: p.display().to_string(),
            msg: e.to_string(),
        })?;
    }
    Ok(MergeOutcome {
        path: out.to_path_buf(),
        signature: sig_path,
        sha256: hex::encode(crate::crypto::sha256(&bytes)),
        count: seq,
        merkle_root,
        inputs: verified
            .iter()
            .map(|m| (m.path.clone(), m.sha256.clone()))
            .collect(),
    })
}
