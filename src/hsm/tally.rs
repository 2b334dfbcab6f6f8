//! How many signatures the token made for this process, by key and purpose: what the
//! `token_signatures` audit event records, so that a call log captured in front of the token
//! (OpenSC's pkcs11-spy) can be reconciled with the ledger (docs/audit.md, "Every signature
//! accounted for").

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The audit event kind a signing command records its counts under when it ends (defined
/// here, below both the audit log and the audit that read it).
pub const TOKEN_SIGNATURES_EVENT: &str = "token_signatures";

/// Why the token was asked to sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignPurpose {
    /// A document: a certificate, CRL, manifest, checkpoint, export or verification
    /// certificate (what the key's own records show).
    Document,
    /// The challenge signed when a key is opened, proving the private key matches the public
    /// one (no record of its own: it is only in this count).
    SelfTest,
}

/// Signatures one key made, per purpose.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeySignatures {
    /// The key's PKCS#11 URI.
    pub key: String,
    /// Documents signed.
    pub document: u64,
    /// Self-tests signed.
    pub self_test: u64,
}

impl KeySignatures {
    /// Every successful `C_Sign` of this key.
    pub fn total(&self) -> u64 {
        self.document + self.self_test
    }
}

/// Counts of successful `C_Sign` calls (those that returned a signature), kept by the shared
/// [`super::Hsm`]. A call that failed and was retried after a recovery counts once: the spy
/// log shows the failed call with an error, which the reconciliation does not count either.
#[derive(Debug, Default)]
pub(super) struct Tally(Mutex<BTreeMap<String, KeySignatures>>);

impl Tally {
    pub(super) fn add(&self, key: &str, purpose: SignPurpose) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(key.to_string()).or_insert_with(|| KeySignatures {
            key: key.to_string(),
            ..Default::default()
        });
        match purpose {
            SignPurpose::Document => e.document += 1,
            SignPurpose::SelfTest => e.self_test += 1,
        }
    }

    /// The counts so far, and resets them (what is taken is recorded once).
    pub(super) fn take(&self) -> Vec<KeySignatures> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *m).into_values().collect()
    }
}
