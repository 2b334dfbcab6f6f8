//! `manifest build`: a manifest of a batch's (or station shift's) devices, from the ledger
//! only, chained to the ledger's previous manifest, signed, self-verified, and recorded so
//! that a crash at any point leaves the file and the ledger in agreement.
//!
//! Write order (DESIGN.md invariant 6, nothing leaves before it is in the ledger):
//! 1. finish or abandon manifests a crashed run left `pending`;
//! 2. build the bytes in memory, sign them in the HSM, verify the result like an auditor;
//! 3. record the manifest `pending` with the devices it claims (commit);
//! 4. write `M.jsonl`, then `M.jsonl.jws` (each temp + fsync + rename, never over a file);
//! 5. mark the devices `exported`, the manifest `complete`, and chain a `manifest_built`
//!    audit event (one commit).
//!
//! A crash after 3 leaves a pending row: the next build completes it if `M.jsonl` landed with
//! the recorded hash (re-signing if the `.jws` is missing), else abandons it; its devices
//! then go into the next manifest.

use super::format::KeyOrigin as ManifestKeyOrigin;
use super::format::{self, DeviceLine, Header, Range, Trailer, FORMAT};
use super::jws::{self, DocumentSigner};
use super::writer::{Writer, Written};
use super::{ManifestError, Trust};
use crate::crypto::Signer;
use crate::ledger::{ExportRow, KeyOrigin, Ledger, ManifestRow};
use crate::profile::{Profile, Vars};
use crate::x509::CaCert;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// Batches (or station shifts) to include; all must share profile and CA.
    pub batches: Vec<String>,
    /// The manifest file to write (`.jws` beside it).
    pub out: PathBuf,
    /// `{var.NAME}` values for the profile's `cloud:` templates.
    pub vars: BTreeMap<String, String>,
    /// The profile file (default: looked up by the batch's profile name).
    pub profile: Option<PathBuf>,
    /// Build time.
    pub now: OffsetDateTime,
}

/// What was built.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildOutcome {
    pub path: PathBuf,
    pub signature: PathBuf,
    /// SHA-256 of the manifest, hex.
    pub sha256: String,
    /// Place in the ledger's chain.
    pub sequence: u64,
    /// Previous manifest's SHA-256.
    pub prev_sha256: Option<String>,
    pub count: u64,
    /// Merkle root, hex.
    pub merkle_root: String,
    /// Ledger-wide device numbers.
    pub range: Range,
    /// Devices whose state became `exported`.
    pub exported: u64,
    /// Batches covered.
    pub batches: Vec<String>,
    /// The signer's key id.
    pub signer_kid: String,
    /// True when this exact manifest was already built and recorded (a re-run).
    pub already_built: bool,
    /// Manifests a crashed run left pending, and what happened to them.
    pub recovered: Vec<String>,
}

/// A CA as a build resolves it: its name (as the ledger records it), certificate and chain.
pub type ResolvedCa = (String, CaCert, Vec<CaCert>);

/// The context a build needs from the site.
pub struct BuildSite<'a, K: Signer> {
    /// Site config (profile lookup).
    pub config: &'a crate::config::SiteConfig,
    /// The ledger, opened for writing.
    pub ledger: &'a mut Ledger,
    /// The manifest signer.
    pub signer: &'a DocumentSigner<K>,
    /// Roots the result must verify under.
    pub trust: &'a Trust,
    /// Resolves the CA a batch recorded (`Site::batch_ca`) to its certificate and chain.
    pub ca: &'a dyn Fn(&Profile, &str) -> Result<ResolvedCa, ManifestError>,
}

/// Builds, signs, writes and records a manifest (see the module docs for the order).
///
/// On a central ledger, builds run one at a time (see [`Ledger::lock_manifest_builds`]): a
/// second build waits for the first and then chains after it.
pub fn build<K: Signer>(
    mut site: BuildSite<'_, K>,
    req: &BuildRequest,
) -> Result<BuildOutcome, ManifestError> {
    site.ledger.lock_manifest_builds()?;
    let out = build_locked(&mut site, req);
    let unlocked = site.ledger.unlock_manifest_builds();
    let out = out?;
    unlocked?;
    Ok(out)
}

fn build_locked<K: Signer>(
    site: &mut BuildSite<'_, K>,
    req: &BuildRequest,
) -> Result<BuildOutcome, ManifestError> {
    let recovered = recover_pending(site.ledger, site.signer, req.now)?;
    if req.batches.is_empty() {
        return Err(ManifestError::Usage(
            "name the batch or station shift with --batch ID (certfab batch status --json shows ids)".into(),
        ));
    }
    let mut batches = req.batches.clone();
    batches.sort();
    batches.dedup();

    // Batches: known, one profile (same file) and one CA.
    let mut rows: Vec<crate::ledger::BatchRow> = Vec::new();
    for b in &batches {
        rows.push(site.ledger.batch(b)?.ok_or_else(|| {
            ManifestError::Usage(format!(
                "batch {b} is not in ledger {}; certfab batch status --json lists batch ids",
                site.ledger.location()
            ))
        })?);
    }
    let first = &rows[0];
    let profile_sha = site
        .ledger
        .batch_profile_sha256(&first.id)?
        .unwrap_or_default();
    for r in &rows[1..] {
        let sha = site.ledger.batch_profile_sha256(&r.id)?.unwrap_or_default();
        if r.profile != first.profile || sha != profile_sha || r.ca != first.ca {
            return Err(ManifestError::Usage(format!(
                "batches {} and {} differ in profile or CA; one manifest covers one profile and CA (build one each, or merge)",
                first.id, r.id
            )));
        }
    }
    let profile = find_profile(site.config, first, &profile_sha, req.profile.as_deref())?;
    // The batch's own CA, as recorded when it was issued: a rollover since then does not move
    // the batch to the next CA.
    let (ca_name, ca, chain) = (site.ca)(&profile, &first.ca)?;

    // Devices not yet exported, in issuance order across the batches. A first pass over the
    // ledger learns what the header needs (count, stations) and refuses foreign devices; the
    // second writes the lines. Nothing per device is held (docs/performance.md "Memory").
    let ca_kid = hex::encode(&ca.key_id);
    let mut count = 0u64;
    let mut stations: BTreeSet<String> = BTreeSet::new();
    let mut foreign = 0u64;
    let mut first_foreign: Option<(String, String)> = None;
    site.ledger.each_exportable_device(&batches, |d| {
        count += 1;
        if !stations.contains(&d.station) {
            stations.insert(d.station);
        }
        if d.issuer_key_id != ca_kid {
            foreign += 1;
            first_foreign.get_or_insert((d.device_id, d.issuer_key_id));
        }
        Ok(())
    })?;
    if count == 0 {
        if let Some(done) = already_built(site.ledger, &batches, &req.out)? {
            return Ok(outcome_of(&done, true, recovered));
        }
        let exported: u64 = batches
            .iter()
            .map(|b| site.ledger.exported_count(b))
            .sum::<Result<u64, _>>()?;
        return Err(ManifestError::Refused(format!(
            "batch {} has no signed device that is not already in a manifest ({exported} already exported); nothing to build",
            batches.join(", ")
        )));
    }
    if let Some((device_id, issuer_key_id)) = first_foreign {
        return Err(ManifestError::Refused(format!(
            "{foreign} device(s) of {} (first: {device_id}) were issued by another CA (key id {issuer_key_id}) than the batch's CA '{ca_name}' (key id {ca_kid}) has now, e.g. a CA whose key was replaced in the site config; a manifest declares one device CA",
            batches.join(", "),
        )));
    }
    let sig_path = super::signature_path(&req.out);
    for p in [&req.out, &sig_path] {
        if p.exists() {
            return Err(ManifestError::Write {
                path: p.display().to_string(),
                msg: "it already exists; certfab never overwrites a manifest. Choose a new --out or move it away".into(),
            });
        }
    }

    // Lines.
    let last = site.ledger.last_manifest()?;
    let sequence = last.as_ref().map_or(1, |m| m.sequence + 1);
    let range_first = last.as_ref().map_or(1, |m| m.range_last + 1);
    let range = Range {
        first: range_first,
        last: range_first + count - 1,
    };
    let stations: Vec<String> = stations.into_iter().collect();
    let mut ca_chain = vec![ca.pem()];
    ca_chain.extend(chain.iter().map(CaCert::pem));
    let mut ca_sha256 = vec![hex::encode(crate::crypto::sha256(&ca.der))];
    ca_sha256.extend(
        chain
            .iter()
            .map(|c| hex::encode(crate::crypto::sha256(&c.der))),
    );
    let header = Header {
        kind: "header".into(),
        format: FORMAT.into(),
        tool: format!("certfab {}", env!("CARGO_PKG_VERSION")),
        ledger: site.ledger.ledger_id()?.unwrap_or_default(),
        batches: batches.clone(),
        stations: stations.clone(),
        profile: profile.name.clone(),
        profile_sha256: profile_sha.clone(),
        tenant: profile.cloud.tenant(),
        ca_chain,
        ca_sha256,
        created: crate::clock::rfc3339(req.now),
        sequence: Some(sequence),
        range: Some(range),
        prev_sha256: last.as_ref().map(|m| m.sha256.clone()),
        merged_from: Vec::new(),
        cloud: profile.cloud.as_written(),
        line_sha256: String::new(),
    };

    // The file is written to its temporary as the lines are made, hashed for the Merkle root,
    // the file's SHA-256 and the signature on the way; the devices the ledger records as
    // claimed go to a scratch temporary beside it (removed when dropped, never renamed).
    let werr = |e: crate::output::WriteError| ManifestError::Write {
        path: e.path.display().to_string(),
        msg: e.msg,
    };
    let (dir, name) = crate::output::split(&req.out).map_err(werr)?;
    let out_dir = crate::output::OutDir::create(dir).map_err(werr)?;
    let file = out_dir
        .stage_file(name, crate::output::Access::Shared)
        .map_err(werr)?;
    let mut claimed = out_dir
        .stage_file(name, crate::output::Access::Shared)
        .map_err(werr)?;
    let mut writer = Writer::new(file, site.signer, req.now)?;
    let canon_err = |e: super::canon::CanonError| ManifestError::Usage(e.0);
    writer
        .line(format::encode(&header).map_err(canon_err)?.as_bytes())
        .map_err(werr)?;
    let mut seq = 0u64;
    let mut failed: Option<ManifestError> = None;
    site.ledger
        .each_exportable_device(&batches, |d| {
            let step = (|| {
                seq += 1;
                if seq > count || !stations.contains(&d.station) || d.issuer_key_id != ca_kid {
                    return Err(changed());
                }
                let line = device_line(seq, &d, &profile, &req.vars)?;
                let enc = format::encode(&line).map_err(canon_err)?;
                writer.device(enc.as_bytes()).map_err(werr)?;
                let row = serde_json::json!([d.profile, d.device_id, d.serial, d.state.as_str()]);
                claimed
                    .write_all(format!("{row}\n").as_bytes())
                    .map_err(werr)
            })();
            step.map_err(|e| {
                failed = Some(e);
                crate::ledger::LedgerError::Data("manifest build stopped".into())
            })
        })
        .map_err(|e| failed.take().unwrap_or_else(|| e.into()))?;
    if seq != count {
        return Err(changed());
    }
    let merkle_root = writer.merkle_root();
    let trailer = Trailer {
        kind: "trailer".into(),
        count,
        merkle_root: merkle_root.clone(),
        line_sha256: String::new(),
    };
    writer
        .line(format::encode(&trailer).map_err(canon_err)?.as_bytes())
        .map_err(werr)?;

    let Written {
        file,
        sha256,
        jws,
    } = writer
        .finish_verified(&req.out, &sig_path, &site.trust.roots, "recorded")?
        .map_err(|report| {
            ManifestError::Refused(format!(
                "the manifest just built does not verify against the site's roots ({}), so it was not written: {report}",
                site.trust.source
            ))
        })?;

    let out_abs = std::path::absolute(&req.out).unwrap_or_else(|_| req.out.clone());
    let row = ManifestRow {
        id: 0,
        sequence,
        batches: batches.clone(),
        path: out_abs.display().to_string(),
        sha256: sha256.clone(),
        merkle_root,
        count,
        range_first: range.first,
        range_last: range.last,
        prev_sha256: last.map(|m| m.sha256),
        signer_kid: site.signer.kid(),
        state: "pending".into(),
        created_at: crate::clock::rfc3339(req.now),
    };
    let spill = std::io::BufReader::new(claimed.read_back().map_err(werr)?);
    let devices = std::io::BufRead::lines(spill).map(|l| {
        let bad = |m: String| {
            crate::ledger::LedgerError::Data(format!("manifest build scratch file: {m}"))
        };
        let l = l.map_err(|e| bad(e.to_string()))?;
        let (profile, device_id, serial, state): (String, String, String, String) =
            serde_json::from_str(&l).map_err(|e| bad(e.to_string()))?;
        let state = state
            .parse::<crate::ledger::DeviceState>()
            .map_err(|_| bad(format!("state {state}")))?;
        Ok((profile, device_id, serial, state))
    });
    let id = site.ledger.begin_manifest_with(&row, devices)?;
    drop(claimed);
    file.commit(
        crate::output::Existing::Refuse,
        crate::output::Durability::Now,
    )
    .map_err(werr)?;
    write(&sig_path, jws.as_bytes())?;
    let exported = site.ledger.complete_manifest(id)?;
    let mut out = outcome_of(&row, false, recovered);
    out.path = req.out.clone();
    out.signature = sig_path;
    out.exported = exported;
    Ok(out)
}

/// The ledger's devices changed between the two passes of a build.
fn changed() -> ManifestError {
    ManifestError::Refused(
        "the batch's devices changed in the ledger while the manifest was being built (a batch or station still issuing, or another manifest build); nothing was written or recorded: run manifest build again".into(),
    )
}

/// The profile file a batch was issued under: `--profile` if given, else the path the batch
/// recorded, else the profile name in `profiles_dir`; it must have the recorded SHA-256.
fn find_profile(
    config: &crate::config::SiteConfig,
    batch: &crate::ledger::BatchRow,
    sha256: &str,
    given: Option<&Path>,
) -> Result<Profile, ManifestError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    match given {
        Some(p) => candidates.push(p.to_path_buf()),
        None => {
            let recorded = serde_json::from_str::<serde_json::Value>(&batch.source)
                .ok()
                .and_then(|v| v["profile_path"].as_str().map(PathBuf::from));
            candidates.extend(recorded);
            candidates.push(config.profile_path(&batch.profile));
        }
    }
    let mut tried = Vec::new();
    for c in &candidates {
        match Profile::load(c) {
            Ok(p) if hex::encode(p.sha256) == sha256 && p.name == batch.profile => return Ok(p),
            Ok(p) => tried.push(format!(
                "{} (profile {}, SHA-256 {})",
                c.display(),
                p.name,
                hex::encode(p.sha256)
            )),
            Err(e) if given.is_some() => return Err(ManifestError::Usage(e.to_string())),
            Err(_) => tried.push(format!("{} (not readable)", c.display())),
        }
    }
    Err(ManifestError::Usage(format!(
        "cannot find the profile batch {} was issued under (profile {} with SHA-256 {sha256}); tried {}; pass --profile with that exact file",
        batch.id,
        batch.profile,
        tried.join(", ")
    )))
}

fn outcome_of(m: &ManifestRow, already: bool, recovered: Vec<String>) -> BuildOutcome {
    let path = PathBuf::from(&m.path);
    BuildOutcome {
        signature: super::signature_path(&path),
        path,
        sha256: m.sha256.clone(),
        sequence: m.sequence,
        prev_sha256: m.prev_sha256.clone(),
        count: m.count,
        merkle_root: m.merkle_root.clone(),
        range: Range {
            first: m.range_first,
            last: m.range_last,
        },
        exported: 0,
        batches: m.batches.clone(),
        signer_kid: m.signer_kid.clone(),
        already_built: already,
        recovered,
    }
}

/// A complete manifest for exactly these batches at `out` whose file is intact: a re-run.
fn already_built(
    ledger: &Ledger,
    batches: &[String],
    out: &Path,
) -> Result<Option<ManifestRow>, ManifestError> {
    let out_abs = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
    Ok(ledger.manifests("complete")?.into_iter().rev().find(|m| {
        m.batches == batches
            && Path::new(&m.path) == out_abs
            && file_sha256(Path::new(&m.path)).as_deref() == Some(m.sha256.as_str())
    }))
}

/// The SHA-256 of a file, read in pieces.
pub(super) fn file_sha256(p: &Path) -> Option<String> {
    use sha2::Digest;
    let mut h = sha2::Sha256::default();
    each_piece(p, |piece| h.update(piece)).ok()?;
    Some(hex::encode(h.finalize()))
}

/// Calls `f` with the file's bytes in pieces, none held beyond its piece.
fn each_piece(p: &Path, mut f: impl FnMut(&[u8])) -> std::io::Result<()> {
    use std::io::Read;
    let mut file = std::fs::File::open(p)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => f(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn write(path: &Path, data: &[u8]) -> Result<(), ManifestError> {
    crate::output::write_new(path, data).map_err(|e| ManifestError::Write {
        path: path.display().to_string(),
        msg: e.msg,
    })
}

/// Completes or abandons manifests a crashed run left pending; returns what happened.
fn recover_pending<K: Signer>(
    ledger: &mut Ledger,
    signer: &DocumentSigner<K>,
    now: OffsetDateTime,
) -> Result<Vec<String>, ManifestError> {
    let mut done = Vec::new();
    for m in ledger.manifests("pending")? {
        let path = PathBuf::from(&m.path);
        if file_sha256(&path).as_deref() == Some(m.sha256.as_str()) {
            let sig = super::signature_path(&path);
            if !sig.exists() {
                let mut signing = jws::start_signing(signer, FORMAT, now)?;
                each_piece(&path, |piece| signing.update(piece)).map_err(|e| {
                    ManifestError::Read {
                        path: m.path.clone(),
                        msg: e.to_string(),
                    }
                })?;
                let jws = signing.finish()?;
                write(&sig, jws.as_bytes())?;
            }
            ledger.complete_manifest(m.id)?;
            done.push(format!(
                "manifest #{} ({}) was written before an interruption: completed, its devices marked exported",
                m.sequence, m.path
            ));
        } else {
            ledger.abandon_manifest(m.id, "its file was not written before an interruption")?;
            done.push(format!(
                "manifest #{} ({}) was interrupted before its file was written: abandoned, its devices go into the next manifest",
                m.sequence, m.path
            ));
        }
    }
    Ok(done)
}

/// A device line's `key_origin` for the ledger's.
fn key_origin(ledger: KeyOrigin) -> ManifestKeyOrigin {
    match ledger {
        KeyOrigin::Device => ManifestKeyOrigin::Device,
        KeyOrigin::Host => ManifestKeyOrigin::Host,
        // A CSR or a bare public key delivered in a file.
        KeyOrigin::Csr | KeyOrigin::Pubkey => ManifestKeyOrigin::CsrFile,
    }
}

fn device_line(
    seq: u64,
    d: &ExportRow,
    profile: &Profile,
    vars: &BTreeMap<String, String>,
) -> Result<DeviceLine, ManifestError> {
    let facts = super::verify::cert_facts(&d.der).map_err(|e| {
        ManifestError::Refused(format!(
            "ledger certificate of device {} does not parse: {e}",
            d.device_id
        ))
    })?;
    if facts.serial != d.serial || facts.spki_sha256 != d.spki_sha256 {
        return Err(ManifestError::Refused(format!(
            "ledger row of device {} disagrees with its certificate (serial or public key); the ledger needs an audit",
            d.device_id
        )));
    }
    let cert_sha256 = hex::encode(crate::crypto::sha256(&d.der));
    let mut v = Vars {
        device_id: Some(d.device_id.clone()),
        values: BTreeMap::new(),
    };
    v.values.insert("var.batch".into(), d.batch_id.clone());
    v.values.insert("var.station".into(), d.station.clone());
    for (k, x) in vars {
        v.values.insert(format!("var.{k}"), x.clone());
    }
    v.values.insert("cert.serial".into(), d.serial.clone());
    v.values.insert("cert.sha256".into(), cert_sha256.clone());
    v.values
        .insert("cert.spki_sha256".into(), d.spki_sha256.clone());
    if let Ok(c) = <x509_cert::Certificate as der::Decode>::from_der(&d.der) {
        for rdn in c.tbs_certificate.subject.0.iter() {
            for atv in rdn.0.iter() {
                if let Some(text) = crate::x509::any_text(&atv.value) {
                    let key = crate::x509::AttrType::name_of(atv.oid);
                    v.values.entry(format!("cert.{key}")).or_insert(text);
                }
            }
        }
    }
    let cloud = profile.cloud.render(&v).map_err(|e| {
        ManifestError::Usage(format!(
            "device {}: {e} (pass --var NAME=VALUE for {{var.NAME}})",
            d.device_id
        ))
    })?;
    Ok(DeviceLine {
        kind: "device".into(),
        seq,
        device_id: d.device_id.clone(),
        serial: d.serial.clone(),
        cert_sha256,
        spki_sha256: d.spki_sha256.clone(),
        not_before: facts.not_before,
        not_after: facts.not_after,
        key_origin: key_origin(d.key_origin).as_str().into(),
        state: d.state.as_str().into(),
        batch: d.batch_id.clone(),
        station: d.station.clone(),
        cert: crate::x509::pem(&d.der),
        cloud,
        line_sha256: String::new(),
    })
}
