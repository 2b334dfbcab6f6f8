//! Per-device output under the output directory: `cert.pem` and `chain.pem`; host-generated
//! keys make a bundle that adds `key.pem` and `device.json`. Certificates are written only after the ledger holds
//! them, so they are not fsynced one by one: a resume compares and rewrites them from the
//! ledger, and the directory is synced once at the end of a run. A generated private key has
//! no other copy, so each group's keys are made durable (one syncfs) before any of their
//! certificates is signed.

use super::{BatchError, BatchJob};
use crate::signer::Signer;
use secrecy::{ExposeSecret, SecretString};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use x509_parser::prelude::*;
use zeroize::Zeroizing;

pub(super) struct Writer {
    out: PathBuf,
    chain_tail: String,
    passphrase: Option<SecretString>,
    iterations: u32,
    /// Host-keygen bundles also get device.json describing the key and certificate.
    bundle: bool,
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

impl Writer {
    pub(super) fn new<S: Signer + Sync>(
        job: &BatchJob<'_, S>,
        out: &Path,
    ) -> Result<Self, BatchError> {
        std::fs::create_dir_all(out)
            .map_err(|e| BatchError::Output(format!("cannot create {}: {e}", out.display())))?;
        let chain_tail = job.ca.device_chain_pem(job.chain_above, false);
        Ok(Self {
            out: out.to_path_buf(),
            chain_tail,
            passphrase: if job.plain_keys {
                None
            } else {
                job.key_passphrase.clone()
            },
            iterations: job.kdf_iterations,
            bundle: matches!(job.source, super::Source::Count { .. }),
        })
    }

    fn dir(&self, id: &str) -> Result<PathBuf, String> {
        check_component(id)?;
        let d = self.out.join(id);
        std::fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        Ok(d)
    }

    /// Writes (or checks) a device's certificate files from the ledger's DER.
    pub(super) fn deliver(&self, id: &str, der: &[u8]) -> Result<(), String> {
        let d = self.dir(id)?;
        let leaf = crate::issue::pem(der);
        ensure(&d.join("cert.pem"), leaf.as_bytes())?;
        ensure(
            &d.join("chain.pem"),
            format!("{leaf}{}", self.chain_tail).as_bytes(),
        )?;
        if !self.bundle {
            return Ok(());
        }
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("{id}: ledger certificate does not parse: {e}"))?;
        let key = d.join("key.pem");
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
                "key": key.exists().then_some("key.pem"),
            },
            "key_encrypted": key.exists().then(|| self.passphrase.is_some()),
        });
        ensure(&d.join("device.json"), format!("{:#}\n", info).as_bytes())
    }

    /// Stores a generated private key: encrypted PKCS#8 (PBES2, PBKDF2-SHA256, AES-256-CBC)
    /// unless plain keys were explicitly asked for; mode 0600. The caller syncs the filesystem
    /// once for the group before any of these keys' certificates is signed.
    pub(super) fn write_key(&self, id: &str, key: &p256::SecretKey) -> Result<(), String> {
        let d = self.dir(id)?;
        let pem = encode_key_pem(key, self.passphrase.as_ref(), self.iterations)?;
        let path = d.join("key.pem");
        // A fixed temporary name, created 0600: a process killed mid-write leaves at most this
        // one file, which the device's retry overwrites (an earlier attempt's key, whose serial
        // was burned, is replaced the same way).
        let tmp = d.join("key.pem.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        f.write_all(pem.as_bytes())
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(())
    }

    /// Makes every file written so far durable (one syncfs instead of an fsync per file).
    pub(super) fn sync(&self) -> Result<(), String> {
        let f =
            std::fs::File::open(&self.out).map_err(|e| format!("{}: {e}", self.out.display()))?;
        rustix::fs::syncfs(&f).map_err(|e| format!("syncing {}: {e}", self.out.display()))
    }
}

/// A generated key as PKCS#8 PEM: encrypted (PBES2, PBKDF2-SHA256 with `iterations`,
/// AES-256-CBC, fresh salt and IV) under `passphrase`, or plain when it is `None`.
pub fn encode_key_pem(
    key: &p256::SecretKey,
    passphrase: Option<&SecretString>,
    iterations: u32,
) -> Result<Zeroizing<String>, String> {
    use p256::pkcs8::EncodePrivateKey;
    let doc = key.to_pkcs8_der().map_err(|e| e.to_string())?;
    Ok(match passphrase {
        Some(pass) => {
            let mut salt = [0u8; 16];
            let mut iv = [0u8; 16];
            getrandom::getrandom(&mut salt).map_err(|e| e.to_string())?;
            getrandom::getrandom(&mut iv).map_err(|e| e.to_string())?;
            let params =
                pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(iterations, &salt, &iv)
                    .map_err(|e| e.to_string())?;
            let info =
                pkcs8::PrivateKeyInfo::try_from(doc.as_bytes()).map_err(|e| e.to_string())?;
            let enc = info
                .encrypt_with_params(params, pass.expose_secret().as_bytes())
                .map_err(|e| e.to_string())?;
            Zeroizing::new(
                enc.to_pem("ENCRYPTED PRIVATE KEY", pkcs8::LineEnding::LF)
                    .map_err(|e| e.to_string())?
                    .to_string(),
            )
        }
        None => Zeroizing::new(
            doc.to_pem("PRIVATE KEY", pkcs8::LineEnding::LF)
                .map_err(|e| e.to_string())?
                .to_string(),
        ),
    })
}

/// Writes `data` to `path` unless it already holds exactly that; refuses different content
/// (another batch or a person wrote there).
fn ensure(path: &Path, data: &[u8]) -> Result<(), String> {
    match std::fs::read(path) {
        Ok(existing) if existing == data => return Ok(()),
        Ok(_) => {
            return Err(format!(
                "{} exists with different content; certfab never overwrites an issued file. Use a new --out",
                path.display()
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    // A fixed temporary name renamed into place: a crash leaves no file or a whole one (a stale
    // .tmp is overwritten next time).
    let tmp = path.with_extension("pem.tmp");
    std::fs::write(&tmp, data).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}
