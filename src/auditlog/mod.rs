//! `certfab log checkpoint` and `certfab log verify`: signed checkpoints of the audit chain
//! head, and the check of the whole log against them.
//!
//! A checkpoint is a statement `{checkpoint, ledger_id, station, head_seq, head_hash, at}`
//! (canonical JSON), signed in the HSM by the manifest/audit signer as a detached JWS
//! (`cty` [`CTY`]), stored in the ledger's `checkpoints` table and followed by a `checkpoint`
//! audit event that names it. The exported file (`--out`) is the same document:
//! `{"certfab_checkpoint": 1, "statement": {...}, "signature": "<header>..<signature>"}`.
//!
//! Verification checks the chain from the first event (hashes, links, numbering), every
//! checkpoint's signature (chained to a trusted root *and* made by the configured signer
//! certificate), that every checkpointed head is still in the chain with the same hash, that
//! checkpoint numbers are contiguous and each `checkpoint` event's checkpoint still exists.
//! Because each hash covers everything before it, an intact checkpointed head proves every
//! event up to it unchanged. Events after the last checkpoint are only as good as the file:
//! they are reported as not yet checkpointed.

use crate::crypto::Signer;
use crate::ledger::{
    ChainBreak, ChainReport, ChainVerifier, Ledger, LedgerError, SignedCheckpoint,
};
use crate::manifest::jws::{self, DocumentSigner, JwsError};
use crate::x509::CaCert;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The JWS content type of checkpoint statements.
pub const CTY: &str = "certfab-audit-checkpoint/1";

/// What a checkpoint says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// Checkpoint number in this ledger (1, 2, …).
    pub checkpoint: i64,
    /// The ledger's id (hash of its first audit event).
    pub ledger_id: String,
    /// Station that made it.
    pub station: String,
    /// Sequence number of the chain head covered.
    pub head_seq: i64,
    /// Hash of that event.
    pub head_hash: String,
    /// When, RFC 3339 UTC.
    pub at: String,
}

/// A checkpoint document: the statement and its detached signature.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointDoc {
    /// Format version (1).
    pub certfab_checkpoint: u32,
    pub statement: Statement,
    /// Detached compact JWS over the statement's canonical JSON.
    pub signature: String,
}

impl CheckpointDoc {
    /// The exact bytes signed.
    pub fn payload(&self) -> Result<String, AuditLogError> {
        payload(&self.statement)
    }

    /// The document as stored and exported (one line of JSON).
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn payload(s: &Statement) -> Result<String, AuditLogError> {
    let v = serde_json::to_value(s).map_err(|e| AuditLogError::Malformed(e.to_string()))?;
    crate::manifest::canon::to_string(&v).map_err(|e| AuditLogError::Malformed(e.0))
}

/// Why a checkpoint could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditLogError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Jws(#[from] JwsError),
    /// The chain is broken: nothing is signed over it.
    #[error("the audit chain is broken, so it is not checkpointed: {0}")]
    Broken(ChainBreak),
    /// Nothing to checkpoint.
    #[error("the audit log is empty; nothing to checkpoint yet")]
    Empty,
    /// A checkpoint document does not parse.
    #[error("checkpoint document: {0}")]
    Malformed(String),
}

impl AuditLogError {
    /// The exit code: 5 ledger, a broken chain 3, no events or a malformed checkpoint 2, and
    /// the JWS's own code.
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            Self::Ledger(_) => crate::exit::ExitCode::Storage,
            Self::Jws(j) => j.exit_code(),
            Self::Broken(_) => crate::exit::ExitCode::Rejected,
            Self::Empty | Self::Malformed(_) => crate::exit::ExitCode::Usage,
        }
    }
}

/// Signs and stores a checkpoint of the current head, after checking the whole chain (a broken
/// chain is never signed over).
pub fn checkpoint<K: Signer>(
    ledger: &mut Ledger,
    signer: &DocumentSigner<K>,
    now: OffsetDateTime,
) -> Result<CheckpointDoc, AuditLogError> {
    let chain = ledger.verify_chain()?.map_err(AuditLogError::Broken)?;
    let ledger_id = ledger.ledger_id()?.ok_or(AuditLogError::Empty)?;
    let station = ledger.station().to_string();
    let mut signed = None;
    ledger.store_checkpoint(|number| -> Result<_, AuditLogError> {
        let statement = Statement {
            checkpoint: number,
            ledger_id,
            station,
            head_seq: chain.head_seq,
            head_hash: chain.head_hash,
            at: crate::clock::rfc3339(now),
        };
        let signature = jws::sign_detached(signer, payload(&statement)?.as_bytes(), CTY, now)?;
        let doc = CheckpointDoc {
            certfab_checkpoint: 1,
            statement,
            signature,
        };
        let row = SignedCheckpoint {
            head_seq: doc.statement.head_seq,
            head_hash: doc.statement.head_hash.clone(),
            at: doc.statement.at.clone(),
            statement: doc.to_text(),
            signer_sha256: hex::encode(crate::crypto::sha256(&signer.cert.der)),
        };
        signed = Some(doc);
        Ok(row)
    })?;
    signed.ok_or(AuditLogError::Empty)
}

/// Whom checkpoint signatures must come from.
pub struct CheckpointTrust {
    /// Roots the signer certificate must chain to.
    pub roots: Vec<CaCert>,
    /// The signer certificate itself, when pinned (the site config's `signer.cert`): any other
    /// signer certificate under the same root is refused.
    pub signer: Option<CaCert>,
}

/// One checkpoint's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointCheck {
    /// Checkpoint number (from its statement).
    pub checkpoint: i64,
    /// Where it came from: `ledger` or the file.
    pub source: String,
    /// Head covered.
    pub head_seq: i64,
    /// When it was signed.
    pub at: String,
    /// Problems (empty: good).
    pub problems: Vec<String>,
}

/// The result of `log verify`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Nothing wrong was found.
    pub ok: bool,
    /// The chain check (when it is intact).
    pub chain: Option<ChainReport>,
    /// Where the chain breaks, if it does.
    pub chain_break: Option<ChainBreak>,
    /// Every checkpoint looked at.
    pub checkpoints: Vec<CheckpointCheck>,
    /// Highest head covered by a good checkpoint (0: none).
    pub checkpointed_seq: i64,
    /// Events after it, not covered by any signature yet (the checkpoint's own record
    /// excluded).
    pub not_checkpointed: i64,
    /// Every problem, in plain words.
    pub problems: Vec<String>,
}

/// Checks the ledger's audit log: the chain, the stored checkpoints and `external` ones
/// (documents exported earlier and kept elsewhere, which also catch checkpoints removed from
/// the ledger).
pub fn verify(
    ledger: &Ledger,
    trust: &CheckpointTrust,
    external: &[(String, CheckpointDoc)],
) -> Result<VerifyReport, LedgerError> {
    let ledger_id = ledger.ledger_id()?;
    let stored = ledger.checkpoints()?;
    let mut docs: Vec<(String, Result<CheckpointDoc, String>, Option<i64>)> = stored
        .iter()
        .map(|row| {
            (
                "ledger".to_string(),
                serde_json::from_str::<CheckpointDoc>(&row.statement).map_err(|e| e.to_string()),
                Some(row.id),
            )
        })
        .collect();
    docs.extend(
        external
            .iter()
            .map(|(src, d)| (src.clone(), Ok(d.clone()), None)),
    );
    // One pass over the events (never all in memory): the chain check, the hashes at the
    // heads the checkpoints name, the event right after each head, and the `checkpoint`
    // events.
    let heads: std::collections::BTreeSet<i64> = docs
        .iter()
        .filter_map(|(_, d, _)| d.as_ref().ok().map(|d| d.statement.head_seq))
        .collect();
    let mut hashes = std::collections::BTreeMap::new();
    let mut after_head = std::collections::BTreeMap::new();
    let mut second_after_head = std::collections::BTreeMap::new();
    let mut checkpoint_events = Vec::new();
    let mut verifier = ChainVerifier::default();
    let mut chain_break = None;
    let mut head = 0i64;
    ledger.each_audit_event(|e| {
        if chain_break.is_none() {
            if let Err(b) = verifier.push(&e) {
                chain_break = Some(b);
            }
        }
        head = head.max(e.seq);
        if heads.contains(&e.seq) {
            hashes.insert(e.seq, e.hash.clone());
        }
        if heads.contains(&(e.seq - 1)) {
            after_head.insert(e.seq - 1, (e.kind.clone(), e.detail.clone()));
        }
        if heads.contains(&(e.seq - 2)) {
            second_after_head.insert(e.seq - 2, e.kind.clone());
        }
        if e.kind == "checkpoint" {
            checkpoint_events.push((e.seq, e.detail));
        }
        true
    })?;
    let chain = chain_break.is_none().then(|| verifier.finish());
    let mut problems = Vec::new();
    if let Some(b) = &chain_break {
        problems.push(b.to_string());
    }
    let mut checks = Vec::new();
    let mut best = 0i64;
    for (source, doc, row_id) in docs {
        let mut p = Vec::new();
        let doc = match doc {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("checkpoint row {row_id:?} does not parse: {e}"));
                continue;
            }
        };
        let s = &doc.statement;
        if let Err(e) = check_signature(&doc, trust) {
            p.push(format!("signature: {e}"));
        }
        if ledger_id.as_deref() != Some(s.ledger_id.as_str()) {
            p.push(format!(
                "it is for ledger {}, this ledger is {} (first event replaced, or another ledger's checkpoint)",
                s.ledger_id,
                ledger_id.as_deref().unwrap_or("(empty)")
            ));
        }
        if let Some(id) = row_id {
            let row = stored.iter().find(|r| r.id == id);
            if row.is_some_and(|r| {
                r.head_seq != s.head_seq || r.head_hash != s.head_hash || id != s.checkpoint
            }) {
                p.push("the row's columns differ from its signed statement".into());
            }
        }
        match hashes.get(&s.head_seq) {
            Some(h) if *h == s.head_hash => {}
            Some(_) => p.push(format!(
                "event {} no longer has the hash this checkpoint signed: events up to it were edited, removed, reordered or inserted",
                s.head_seq
            )),
            None => p.push(format!(
                "event {} it covers is no longer in the chain: the log was truncated",
                s.head_seq
            )),
        }
        if p.is_empty() {
            best = best.max(s.head_seq);
        }
        for x in &p {
            problems.push(format!("checkpoint {} ({source}): {x}", s.checkpoint));
        }
        checks.push(CheckpointCheck {
            checkpoint: s.checkpoint,
            source,
            head_seq: s.head_seq,
            at: s.at.clone(),
            problems: p,
        });
    }
    // Stored checkpoints are numbered 1..n; `checkpoint` events name checkpoints that must
    // still be there, with the same statement.
    for (i, row) in stored.iter().enumerate() {
        if row.id != i as i64 + 1 {
            problems.push(format!(
                "checkpoint {} is missing (rows jump to {})",
                i + 1,
                row.id
            ));
            break;
        }
    }
    for (seq, detail) in &checkpoint_events {
        let d: serde_json::Value = serde_json::from_str(detail).unwrap_or_default();
        let id = d["checkpoint"].as_i64().unwrap_or(0);
        let want = d["statement_sha256"].as_str().unwrap_or("");
        match stored.iter().find(|r| r.id == id) {
            Some(r) if hex::encode(crate::crypto::sha256(r.statement.as_bytes())) == want => {}
            Some(_) => problems.push(format!(
                "checkpoint {id} was replaced (event {seq} recorded another statement)"
            )),
            None => problems.push(format!(
                "checkpoint {id}, recorded by event {seq}, was removed from the ledger"
            )),
        }
    }
    // Station ledgers imported into this one: their own chains, pinned by this one.
    problems.extend(ledger.verify_imports()?);
    let mut not_checkpointed = head - best;
    // The checkpoint's own record directly after its head is not news.
    if let Some((kind, detail)) = after_head.get(&best) {
        let d: serde_json::Value = serde_json::from_str(detail).unwrap_or_default();
        if kind == "checkpoint" && d["head_seq"].as_i64() == Some(best) {
            not_checkpointed -= 1;
            // Nor is the count of signatures of the command that signed it (that signature
            // included), recorded as it ends: the next checkpoint covers it, and no checkpoint
            // could ever cover its own count.
            if second_after_head.get(&best).map(String::as_str)
                == Some(crate::hsm::TOKEN_SIGNATURES_EVENT)
            {
                not_checkpointed -= 1;
            }
        }
    }
    Ok(VerifyReport {
        ok: problems.is_empty(),
        chain,
        chain_break,
        checkpoints: checks,
        checkpointed_seq: best,
        not_checkpointed,
        problems,
    })
}

fn check_signature(doc: &CheckpointDoc, trust: &CheckpointTrust) -> Result<(), String> {
    if doc.certfab_checkpoint != 1 {
        return Err(format!("unknown format version {}", doc.certfab_checkpoint));
    }
    let payload = doc.payload().map_err(|e| e.to_string())?;
    let v = jws::verify_detached(&doc.signature, payload.as_bytes(), &trust.roots, CTY)
        .map_err(|e| e.to_string())?;
    if let Some(pinned) = &trust.signer {
        if v.signer.der != pinned.der {
            return Err(format!(
                "signed by {} (SHA-256 {}), not by the configured audit signer {}",
                v.signer.subject,
                hex::encode(crate::crypto::sha256(&v.signer.der)),
                pinned.source
            ));
        }
    }
    Ok(())
}

/// Reads an exported checkpoint document.
pub fn read_doc(path: &std::path::Path) -> Result<CheckpointDoc, AuditLogError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AuditLogError::Malformed(format!("{}: {e}", path.display())))?;
    serde_json::from_str(text.trim())
        .map_err(|e| AuditLogError::Malformed(format!("{}: {e}", path.display())))
}
