//! The bundle layout (`--layout bundle`): the batch as `OUT/bundle-NNNNN.jsonl` files, one JSON
//! object per device line, instead of a directory and two or three files per device.
//!
//! Input rows are numbered from 0 in input order (the same on every run of a batch: resume reads
//! the same input). Row `r` belongs to range `r / per_file`, and range `k`'s devices go to
//! `bundle-k.jsonl`. A range's file is written to a temporary as its devices are recorded and
//! only fsynced and renamed into place once every row of the range is settled in the ledger
//! (signed, refused or a duplicate) — never before its lines' ledger rows exist, and never with
//! a device missing that a later run of the same batch would have to add. A run that stops early
//! (signal, error, kill) leaves no partial bundle: the next run rebuilds the range's file from
//! the ledger. A row refused on an earlier run and fixed since is issued into a supplement,
//! `bundle-k.J.jsonl` (J from 1), so a file once in place is never rewritten.
//!
//! Host-generated keys have no other copy, so before a group's certificates are signed its keys
//! are written (encrypted unless `--plain-keys`) to a key spool `.bundle-k.keys-*.jsonl`, fsynced;
//! a bundle line takes its key from there (the one whose public key the certificate certifies),
//! and a range's spools are removed once its bundle is in place.

use super::{BatchError, BatchJob};
use crate::crypto::Signer;
use crate::output::{Access, Durability, Existing, OutDir, StagedFile};
use secrecy::SecretString;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufRead;
use std::sync::Mutex;
use x509_parser::prelude::*;

/// Devices per bundle file unless the batch says otherwise.
pub const DEVICES_PER_FILE: u64 = 10_000;

/// The largest bundle line certfab reads back (a device's certificate, chain and key are a few
/// KiB; anything far larger is not a line certfab wrote).
const MAX_LINE: u64 = 1024 * 1024;

/// One device's line.
#[derive(serde::Serialize)]
struct Line<'a> {
    device_id: &'a str,
    serial: String,
    cert: &'a str,
    chain: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
}

/// A key spool line.
#[derive(serde::Serialize, serde::Deserialize)]
struct SpooledKey {
    device_id: String,
    /// SHA-256 of the key's SubjectPublicKeyInfo: matches the certificate that certifies it.
    spki_sha256: String,
    key: String,
}

impl Drop for SpooledKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

/// What is already in place for a range whose main file exists: device id -> serial (hex).
type Index = HashMap<String, String>;

pub(super) struct Bundles {
    out: OutDir,
    per_file: u64,
    chain_tail: String,
    passphrase: Option<SecretString>,
    iterations: u32,
    keygen: bool,
    /// Makes this run's spool names unique (an earlier run's spools stay until their range is
    /// in place).
    run_tag: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Ranges with a file being written in this run (the main file or a supplement).
    open: BTreeMap<u64, StagedFile>,
    /// Ranges whose main file existed when this run first touched them: what they hold, and
    /// the next supplement number.
    placed: BTreeMap<u64, (Index, u64)>,
    /// Generated keys by range, then device (several after burned attempts).
    keys: BTreeMap<u64, HashMap<String, Vec<SpooledKey>>>,
    /// Spool files written so far in this run.
    spools: u64,
}

fn bundle_name(k: u64) -> String {
    format!("bundle-{k:05}.jsonl")
}

fn supplement_name(k: u64, j: u64) -> String {
    format!("bundle-{k:05}.{j}.jsonl")
}

fn spool_prefix(k: u64) -> String {
    format!(".bundle-{k:05}.keys-")
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Bundles {
    pub(super) fn new<S: Signer + Sync>(
        job: &BatchJob<'_, S>,
        out: OutDir,
        per_file: u64,
        resuming: bool,
    ) -> Result<Self, BatchError> {
        if per_file == 0 {
            return Err(BatchError::Usage("--bundle-size must be at least 1".into()));
        }
        // Bundle files are numbered per batch: another batch's would be taken for this one's.
        let names = out
            .names()
            .map_err(|e| BatchError::OutputUnsigned(e.to_string()))?;
        if !resuming {
            if let Some(other) = names
                .iter()
                .find(|n| n.starts_with("bundle-") && n.ends_with(".jsonl"))
            {
                return Err(BatchError::OutputUnsigned(format!(
                    "{}: it holds {other} of another batch; a bundle batch needs an output directory of its own. Use a new --out, or move those files away",
                    out.path().display()
                )));
            }
        }
        // A killed run's unfinished bundle was a temporary here, removed when the writer took
        // the directory (`OutDir::take_for_writing`): this run rebuilds it.
        let mut tag = [0u8; 8];
        getrandom::getrandom(&mut tag)
            .map_err(|e| BatchError::OutputUnsigned(format!("no randomness: {e}")))?;
        Ok(Self {
            out,
            per_file,
            chain_tail: job.ca.cert.device_chain_pem(&job.ca.chain, false),
            passphrase: if job.plain_keys {
                None
            } else {
                job.key_passphrase.clone()
            },
            iterations: job.kdf_iterations,
            keygen: matches!(job.source, super::Source::Count { .. }),
            run_tag: hex::encode(tag),
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, String> {
        self.state
            .lock()
            .map_err(|_| "the bundle writer failed earlier".to_string())
    }

    /// Reads what range `k`'s files in place hold (main and supplements), when its main file
    /// exists; also the first free supplement number.
    fn index(&self, k: u64) -> Result<Option<(Index, u64)>, String> {
        if self.out.probe(&bundle_name(k)).map_err(err)?.is_none() {
            return Ok(None);
        }
        let mut index = Index::new();
        let mut j = 0;
        loop {
            let name = if j == 0 {
                bundle_name(k)
            } else {
                supplement_name(k, j)
            };
            let Some(file) = self.out.open_existing(&name).map_err(err)? else {
                return Ok(Some((index, j)));
            };
            let path = self.out.path().join(&name);
            let mut reader = std::io::BufReader::new(file);
            let mut buf = String::new();
            loop {
                buf.clear();
                let n = std::io::Read::take(&mut reader, MAX_LINE)
                    .read_line(&mut buf)
                    .map_err(|e| format!("{}: cannot read it: {e}", path.display()))?;
                if n == 0 {
                    break;
                }
                #[derive(serde::Deserialize)]
                struct Entry {
                    device_id: String,
                    serial: String,
                }
                let e: Entry = serde_json::from_str(&buf).map_err(|e| {
                    format!(
                        "{}: not a certfab bundle ({e}); move it away or use a new --out",
                        path.display()
                    )
                })?;
                index.insert(e.device_id, e.serial);
            }
            j += 1;
        }
    }

    /// Generated keys spooled for range `k` by earlier runs (loaded once per range).
    fn load_spools(&self, st: &mut State, k: u64) -> Result<(), String> {
        if !self.keygen || st.keys.contains_key(&k) {
            return Ok(());
        }
        let mut keys: HashMap<String, Vec<SpooledKey>> = HashMap::new();
        let prefix = spool_prefix(k);
        for name in self.out.names().map_err(err)? {
            if !name.starts_with(&prefix) || !name.ends_with(".jsonl") {
                continue;
            }
            let Some(file) = self.out.open_existing(&name).map_err(err)? else {
                continue;
            };
            for line in std::io::BufReader::new(file).lines() {
                let line =
                    line.map_err(|e| format!("{}: {e}", self.out.path().join(&name).display()))?;
                // A spool is written whole and fsynced before any of its keys is used; a line
                // that does not parse never had a certificate.
                if let Ok(s) = serde_json::from_str::<SpooledKey>(&line) {
                    keys.entry(s.device_id.clone()).or_default().push(s);
                }
            }
        }
        st.keys.insert(k, keys);
        Ok(())
    }

    /// Stores a group's generated keys durably (one fsynced spool per range the group touches)
    /// before any of their certificates is signed.
    pub(super) fn write_keys(
        &self,
        keys: &[(u64, &str, &p256::SecretKey)],
        jobs: usize,
    ) -> Result<(), String> {
        use p256::pkcs8::EncodePublicKey;
        let encoded = super::parallel_map(keys, jobs, |(row, id, key)| {
            let pem =
                crate::crypto::encode_key_pem(key, self.passphrase.as_ref(), self.iterations)?;
            let spki = key.public_key().to_public_key_der().map_err(err)?;
            Ok::<_, String>((
                row / self.per_file,
                SpooledKey {
                    device_id: id.to_string(),
                    spki_sha256: hex::encode(crate::crypto::sha256(spki.as_bytes())),
                    key: pem.to_string(),
                },
            ))
        });
        let mut by_range: BTreeMap<u64, Vec<SpooledKey>> = BTreeMap::new();
        for e in encoded {
            let (k, s) = e?;
            by_range.entry(k).or_default().push(s);
        }
        let mut st = self.lock()?;
        for (k, spooled) in by_range {
            self.load_spools(&mut st, k)?;
            let mut data = Vec::new();
            for s in &spooled {
                serde_json::to_writer(&mut data, s).map_err(err)?;
                data.push(b'\n');
            }
            st.spools += 1;
            let name = format!("{}{}-{}.jsonl", spool_prefix(k), self.run_tag, st.spools);
            self.out
                .write(
                    &name,
                    &data,
                    Access::Secret,
                    Existing::Refuse,
                    Durability::Now,
                )
                .map_err(err)?;
            let range = st.keys.entry(k).or_default();
            for s in spooled {
                range.entry(s.device_id.clone()).or_default().push(s);
            }
        }
        Ok(())
    }

    /// Adds a recorded device's line to its range's file (or checks the file in place holds it).
    pub(super) fn deliver(&self, row: u64, id: &str, der: &[u8]) -> Result<(), String> {
        let k = row / self.per_file;
        let serial = hex::encode(
            crate::x509::cert_serial(der)
                .map_err(|e| format!("{id}: ledger certificate does not parse: {e}"))?,
        );
        let mut st = self.lock()?;
        let st = &mut *st;
        if !st.open.contains_key(&k) {
            if let std::collections::btree_map::Entry::Vacant(v) = st.placed.entry(k) {
                if let Some(found) = self.index(k)? {
                    v.insert(found);
                }
            }
            if let Some((index, _)) = st.placed.get(&k) {
                match index.get(id) {
                    Some(s) if *s == serial => return Ok(()),
                    Some(s) => {
                        return Err(format!(
                            "{}: it lists device {id} with serial {s}, but this batch issued it serial {serial}: the bundle belongs to another batch. Use a new --out, or move it away",
                            self.out.path().join(bundle_name(k)).display()
                        ))
                    }
                    None => {}
                }
            }
        } else if let Some(Some(s)) = st.placed.get(&k).map(|(i, _)| i.get(id)) {
            if *s == serial {
                return Ok(());
            }
        }
        let key = if self.keygen {
            self.load_spools(st, k)?;
            let (_, cert) = X509Certificate::from_der(der)
                .map_err(|e| format!("{id}: ledger certificate does not parse: {e}"))?;
            let spki = hex::encode(crate::crypto::sha256(cert.tbs_certificate.subject_pki.raw));
            let found = st
                .keys
                .get(&k)
                .and_then(|r| r.get(id))
                .and_then(|v| v.iter().find(|s| s.spki_sha256 == spki))
                .map(|s| zeroize::Zeroizing::new(s.key.clone()));
            Some(found.ok_or_else(|| {
                format!(
                    "{id}: no stored key under {} matches its certificate (serial {serial}); the key spool was removed or changed",
                    self.out.path().display()
                )
            })?)
        } else {
            None
        };
        let file = match st.open.entry(k) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                let name = match st.placed.get(&k) {
                    None => bundle_name(k),
                    Some((_, j)) => supplement_name(k, *j),
                };
                let access = if self.keygen {
                    Access::Secret
                } else {
                    Access::Shared
                };
                v.insert(self.out.stage_file(&name, access).map_err(err)?)
            }
        };
        let leaf = crate::x509::pem(der);
        let chain = format!("{leaf}{}", self.chain_tail);
        let mut line = serde_json::to_vec(&Line {
            device_id: id,
            serial,
            cert: &leaf,
            chain: &chain,
            key: key.as_deref().map(String::as_str),
        })
        .map_err(err)?;
        line.push(b'\n');
        let written = file.write_all(&line).map_err(err);
        zeroize::Zeroize::zeroize(&mut line);
        written
    }

    /// Every row before `row` is settled in the ledger and its line delivered: the ranges that
    /// end there go into place.
    pub(super) fn settled(&self, row: u64) -> Result<(), String> {
        let mut st = self.lock()?;
        let done: Vec<u64> = st
            .open
            .keys()
            .copied()
            .filter(|k| (k + 1) * self.per_file <= row)
            .collect();
        for k in done {
            self.close(&mut st, k)?;
        }
        // Ranges entirely behind us need no index any more.
        let behind: BTreeSet<u64> = st
            .placed
            .keys()
            .copied()
            .filter(|k| (k + 1) * self.per_file <= row)
            .collect();
        for k in behind {
            st.placed.remove(&k);
            st.keys.remove(&k);
        }
        Ok(())
    }

    /// The input is done and every row settled: the last ranges go into place, and no key
    /// spool is needed any more.
    pub(super) fn finish(&self) -> Result<(), String> {
        let mut st = self.lock()?;
        let open: Vec<u64> = st.open.keys().copied().collect();
        for k in open {
            self.close(&mut st, k)?;
        }
        st.keys.clear();
        let mut removed = false;
        for name in self.out.names().map_err(err)? {
            if name.starts_with(".bundle-") && name.contains(".keys-") && name.ends_with(".jsonl") {
                self.out.remove(&name).map_err(err)?;
                removed = true;
            }
        }
        if removed {
            self.out.sync_dir().map_err(err)?;
        }
        Ok(())
    }

    /// fsync, rename into place (never over an existing file), fsync the directory; then the
    /// range's key spools go (their keys are in the bundle now).
    fn close(&self, st: &mut State, k: u64) -> Result<(), String> {
        let Some(file) = st.open.remove(&k) else {
            return Ok(());
        };
        file.commit(Existing::Refuse, Durability::Now)
            .map_err(err)?;
        if self.keygen {
            let prefix = spool_prefix(k);
            for n in self.out.names().map_err(err)? {
                if n.starts_with(&prefix) && n.ends_with(".jsonl") {
                    self.out.remove(&n).map_err(err)?;
                }
            }
            st.keys.remove(&k);
        }
        Ok(())
    }
}
