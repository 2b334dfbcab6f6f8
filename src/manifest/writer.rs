//! A manifest written to its temporary as its lines are made: every line goes into the file's
//! SHA-256 and the JWS signing input on the way, device lines into the Merkle tree too, so
//! `manifest build` and `manifest merge` hold no device to sign a million of them.

use super::jws::{self, DocumentSigner, Signing};
use super::verify::Report;
use super::{merkle, ManifestError};
use crate::crypto::Signer;
use crate::output::{StagedFile, WriteError};
use crate::x509::CaCert;
use sha2::Digest;
use std::path::Path;
use time::OffsetDateTime;

pub(super) struct Writer<'s, K> {
    file: StagedFile,
    signing: Signing<'s, K>,
    file_hash: sha2::Sha256,
    tree: merkle::Stream,
}

/// What is left once the trailer is written: the temporary (to verify read back, then rename),
/// the file's SHA-256 and the detached JWS.
pub(super) struct Written {
    pub file: StagedFile,
    pub sha256: String,
    pub jws: String,
}

impl<'s, K: Signer> Writer<'s, K> {
    /// Writes into `file` (a staged temporary), signed by `signer` as of `now`.
    pub fn new(
        file: StagedFile,
        signer: &'s DocumentSigner<K>,
        now: OffsetDateTime,
    ) -> Result<Self, ManifestError> {
        Ok(Self {
            file,
            signing: jws::start_signing(signer, super::format::FORMAT, now)?,
            file_hash: sha2::Sha256::default(),
            tree: merkle::Stream::default(),
        })
    }

    /// The header or the trailer line (not a leaf of the Merkle tree).
    pub fn line(&mut self, line: &[u8]) -> Result<(), WriteError> {
        for piece in [line, b"\n"] {
            self.file_hash.update(piece);
            self.signing.update(piece);
            self.file.write_all(piece)?;
        }
        Ok(())
    }

    /// A device line: a leaf of the Merkle tree, then written as any line.
    pub fn device(&mut self, line: &[u8]) -> Result<(), WriteError> {
        self.tree.push(line);
        self.line(line)
    }

    /// The Merkle root of the device lines so far (hex), for the trailer.
    pub fn merkle_root(&self) -> String {
        hex::encode(self.tree.root())
    }

    /// Signs what was written (the trailer included), then checks it the way an auditor will,
    /// reading the temporary back, before anything is recorded or renamed into place:
    /// `Ok(Err(report))` when it does not verify against `roots`; an error when it reads back
    /// different from what was written (`unless` says what that stopped, "nothing was …").
    pub fn finish_verified(
        mut self,
        out: &Path,
        sig_path: &Path,
        roots: &[CaCert],
        unless: &str,
    ) -> Result<Result<Written, Report>, ManifestError> {
        let sha256 = hex::encode(self.file_hash.finalize());
        let jws = self.signing.finish()?;
        let sig_name = sig_path.display().to_string();
        match super::verify::verify_staged(&mut self.file, out, &sig_name, &jws, roots)? {
            Err(report) => Ok(Err(report)),
            Ok(v) if v.sha256 != sha256 => Err(ManifestError::Write {
                path: out.display().to_string(),
                msg: format!(
                    "its temporary reads back different from what was written; nothing was {unless}"
                ),
            }),
            Ok(_) => Ok(Ok(Written {
                file: self.file,
                sha256,
                jws,
            })),
        }
    }
}
