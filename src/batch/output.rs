//! The batch's output in the layout it asked for: per-device directories (below) or bundle
//! files ([`super::bundle`]).
//!
//! Per-device output under the output directory: `cert.pem` and `chain.pem`; host-generated
//! keys make a bundle that adds `key.pem` and `device.json`. Every file goes through
//! [`crate::output`] (unique exclusive temporaries, no symlink followed, explicit modes): a
//! device directory or file that is a symlink is refused, whatever it points at.
//! Certificates are written only after the ledger holds them, so they are not fsynced one by
//! one: a resume compares and rewrites them from the ledger, and the filesystem is synced once
//! at the end of a run. A generated private key has no other copy, so each group's keys are
//! made durable (one syncfs) before any of their certificates is signed.

use super::{BatchError, BatchJob};
use crate::crypto::Signer;
use crate::output::{Access, Durability, Existing, OutDir};
use secrecy::SecretString;
use std::path::Path;
use x509_parser::prelude::*;

/// Where a batch's certificates and generated keys go.
pub(super) enum Writer {
    Dirs(Dirs),
    Bundle(super::bundle::Bundles),
}

impl Writer {
    /// Opens (creating, mode 0750) the output directory. Nothing has been signed yet.
    /// `resuming`: the ledger knows this batch already (its files may be in `out`).
    pub(super) fn new<S: Signer + Sync>(
        job: &BatchJob<'_, S>,
        out: &Path,
        resuming: bool,
    ) -> Result<Self, BatchError> {
        let dir = OutDir::create(out).map_err(|e| BatchError::OutputUnsigned(e.to_string()))?;
        // Device directories and files a killed run was assembling (see `Dirs::deliver`).
        dir.take_for_writing()
            .map_err(|e| BatchError::OutputUnsigned(e.to_string()))?;
        Ok(match job.layout {
            super::Layout::Dirs => Self::Dirs(Dirs::new(job, dir)),
            super::Layout::Bundle { devices_per_file } => Self::Bundle(
                super::bundle::Bundles::new(job, dir, devices_per_file, resuming)?,
            ),
        })
    }

    /// Writes (or checks) the files of input row `row`'s device from the ledger's DER.
    pub(super) fn deliver(&self, row: u64, id: &str, der: &[u8]) -> Result<(), String> {
        match self {
            Self::Dirs(d) => d.deliver(id, der),
            Self::Bundle(b) => b.deliver(row, id, der),
        }
    }

    /// Stores a group's generated keys durably before any of their certificates is signed.
    pub(super) fn write_keys(
        &self,
        keys: &[(u64, &str, &p256::SecretKey)],
        jobs: usize,
    ) -> Result<(), String> {
        match self {
            Self::Dirs(d) => {
                for r in super::parallel_map(keys, jobs, |(_, id, key)| d.write_key(id, key)) {
                    r?;
                }
                d.sync()
            }
            Self::Bundle(b) => b.write_keys(keys, jobs),
        }
    }

    /// Every input row before `row` is settled in the ledger and delivered.
    pub(super) fn settled(&self, row: u64) -> Result<(), String> {
        match self {
            Self::Dirs(_) => Ok(()),
            Self::Bundle(b) => b.settled(row),
        }
    }

    /// The whole input is settled: everything goes into place and is made durable.
    pub(super) fn finish(&self) -> Result<(), String> {
        match self {
            Self::Dirs(d) => d.sync(),
            Self::Bundle(b) => b.finish(),
        }
    }

    /// The run stops early: what was written is made durable (bundles are rebuilt on resume).
    pub(super) fn sync(&self) -> Result<(), String> {
        match self {
            Self::Dirs(d) => d.sync(),
            Self::Bundle(_) => Ok(()),
        }
    }
}

pub(super) struct Dirs {
    out: OutDir,
    chain_tail: String,
    passphrase: Option<SecretString>,
    iterations: u32,
    /// Host-keygen bundles also get device.json describing the key and certificate.
    bundle: bool,
    /// Devices whose directory this run created when it wrote their key, until their
    /// certificate files are delivered: nothing else can be in there, so delivery neither
    /// scans for stale temporaries nor looks before writing (a group's worth at a time).
    created: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// A device id is used as a directory name: it must be one plain path component.
pub(super) fn check_component(id: &str) -> Result<(), String> {
    if id.is_empty() || id == "." || id == ".." || id.contains(['/', '\\', '\0']) {
        return Err(format!(
            "device id {id:?} cannot name an output directory (no '/', '.' or '..')"
        ));
    }
    Ok(())
}

impl Dirs {
    fn new<S: Signer + Sync>(job: &BatchJob<'_, S>, dir: OutDir) -> Self {
        let chain_tail = job.ca.cert.device_chain_pem(&job.ca.chain, false);
        Self {
            out: dir,
            chain_tail,
            passphrase: if job.plain_keys {
                None
            } else {
                job.key_passphrase.clone()
            },
            iterations: job.kdf_iterations,
            bundle: matches!(job.source, super::Source::Count { .. }),
            created: Default::default(),
        }
    }

    /// The device's directory, created 0750 if missing (a symlink is refused). One that
    /// existed before may hold temporaries of a killed run: they are removed (a key's among
    /// them must not stay behind).
    fn dir(&self, id: &str) -> Result<OutDir, String> {
        check_component(id)?;
        let mut d = self.out.subdir(id).map_err(|e| e.to_string())?;
        let made_for_key = self.bundle
            && !d.is_fresh()
            && self
                .created
                .lock()
                .map(|mut c| c.remove(id))
                .unwrap_or(false);
        if made_for_key {
            d.mark_created();
        } else if !d.is_fresh() {
            d.remove_stale_temps().map_err(|e| e.to_string())?;
        }
        Ok(d)
    }

    /// Writes (or checks) a device's certificate files from the ledger's DER.
    fn deliver(&self, id: &str, der: &[u8]) -> Result<(), String> {
        let leaf = crate::x509::pem(der);
        if !self.bundle {
            // The common case, a device seen for the first time: its directory is assembled
            // under a temporary name and renamed into place whole (one rename instead of a
            // temporary and a rename per file). One that exists (a resume) is checked file by
            // file below.
            check_component(id)?;
            let chain = format!("{leaf}{}", self.chain_tail);
            let files: [(&str, &[u8], Access); 2] = [
                ("cert.pem", leaf.as_bytes(), Access::Shared),
                ("chain.pem", chain.as_bytes(), Access::Shared),
            ];
            if self
                .out
                .create_dir_with(id, &files)
                .map_err(|e| e.to_string())?
            {
                return Ok(());
            }
        }
        let d = self.dir(id)?;
        ensure(&d, "cert.pem", leaf.as_bytes())?;
        ensure(
            &d,
            "chain.pem",
            format!("{leaf}{}", self.chain_tail).as_bytes(),
        )?;
        if !self.bundle {
            return Ok(());
        }
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("{id}: ledger certificate does not parse: {e}"))?;
        let has_key = d.probe("key.pem").map_err(|e| e.to_string())?.is_some();
        let info = serde_json::json!({
            "device_id": id,
            "serial": hex::encode(cert.tbs_certificate.raw_serial()),
            "subject": cert.subject().to_string(),
            "not_before": crate::clock::rfc3339(cert.validity().not_before.to_datetime()),
            "not_after": crate::clock::rfc3339(cert.validity().not_after.to_datetime()),
            "cert_sha256": hex::encode(crate::crypto::sha256(der)),
            "files": {
                "cert": "cert.pem",
                "chain": "chain.pem",
                "key": has_key.then_some("key.pem"),
            },
            "key_encrypted": has_key.then(|| self.passphrase.is_some()),
        });
        ensure(&d, "device.json", format!("{:#}\n", info).as_bytes())
    }

    /// Stores a generated private key: encrypted PKCS#8 (PBES2, PBKDF2-SHA256, AES-256-CBC)
    /// unless plain keys were explicitly asked for; mode 0600. The caller syncs the filesystem
    /// once for the group before any of these keys' certificates is signed. A key.pem left by
    /// an earlier attempt (whose serial was burned) is replaced; a symlink there is refused.
    fn write_key(&self, id: &str, key: &p256::SecretKey) -> Result<(), String> {
        let d = self.dir(id)?;
        let pem = crate::crypto::encode_key_pem(key, self.passphrase.as_ref(), self.iterations)?;
        if d.is_fresh() {
            if let Ok(mut c) = self.created.lock() {
                c.insert(id.to_string());
            }
        }
        d.write(
            "key.pem",
            pem.as_bytes(),
            Access::Secret,
            Existing::Replace,
            Durability::Deferred,
        )
        .map_err(|e| e.to_string())
    }

    /// Makes every file written so far durable (one syncfs instead of an fsync per file).
    fn sync(&self) -> Result<(), String> {
        self.out.sync_fs().map_err(|e| e.to_string())
    }
}

/// Writes `data` as `name` unless it already holds exactly that; refuses different content
/// (another batch or a person wrote there). Not fsynced: the run ends with one syncfs, and a
/// file lost in a crash is rewritten from the ledger on resume.
fn ensure(dir: &OutDir, name: &str, data: &[u8]) -> Result<(), String> {
    dir.write(
        name,
        data,
        Access::Shared,
        Existing::KeepIfSame,
        Durability::Deferred,
    )
    .map_err(|e| e.to_string())
}
