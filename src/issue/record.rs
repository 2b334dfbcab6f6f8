//! The ledger half of issuing: intent → sign → record (DESIGN.md invariants 2, 5 and 6).
//!
//! Every certificate certfab signs goes through here, whoever asks for it (`certfab issue`, a
//! batch, a station, a renewal, the fleet claim): the serial and TBS are committed as an
//! [`Intent`] before the HSM sees them, the signature is verified and recorded before the
//! certificate leaves the process, and a failed signature burns its serial. [`intent`] is the
//! one place an intent is built, so every caller commits the same record.

use super::{sign, IssueError, Prepared};
use crate::crypto::Signer;
use crate::ledger::{BatchSpec, Intent, Ledger, LedgerError, Reserve, Signed, StateChange};
use crate::profile::Profile;
use crate::x509::CaCert;

/// The CA a run issues under: the name the site config gives it (recorded with each batch),
/// its certificate and the certificates above it, nearest first. Its key travels separately:
/// a batch holds one per worker.
#[derive(Debug, Clone)]
pub struct IssuingCa {
    /// The name recorded in the ledger (a `cas:` entry, or an inline CA's profile path).
    pub name: String,
    /// The issuing CA's certificate, checked usable and matched against its token key.
    pub cert: CaCert,
    /// Certificates above it, nearest first.
    pub chain: Vec<CaCert>,
}

impl IssuingCa {
    /// `chain.pem` for a device: its leaf, this CA and the intermediates above it, with the
    /// root only when `with_root` (relying parties hold the root).
    pub fn chain_pem(&self, leaf_der: &[u8], with_root: bool) -> String {
        format!(
            "{}{}",
            crate::x509::pem(leaf_der),
            self.cert.device_chain_pem(&self.chain, with_root)
        )
    }
}

/// The intent the ledger commits for `prepared` (input line `line`) before it is signed.
pub fn intent(profile: &Profile, ca: &CaCert, prepared: &Prepared, line: u64) -> Intent {
    Intent {
        profile: profile.name.clone(),
        device_id: prepared.device_id.clone(),
        spki_sha256: hex::encode(crate::crypto::sha256(prepared.public_key.spki_der())),
        key_origin: prepared.key_origin,
        line,
        issuer_key_id: hex::encode(&ca.key_id),
        serial: hex::encode(&prepared.serial),
        tbs: prepared.tbs.clone(),
    }
}

/// What the ledger records once `intent`'s signature verified.
pub fn signed(intent: &Intent, der: Vec<u8>) -> Signed {
    Signed {
        issuer_key_id: intent.issuer_key_id.clone(),
        serial: intent.serial.clone(),
        profile: intent.profile.clone(),
        device_id: intent.device_id.clone(),
        der,
    }
}

/// A certificate issued through the ledger.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Issued on an earlier run for the same device and key: returned, nothing signed.
    pub already: bool,
}

/// Why one device's issuance through the ledger stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The ledger cannot be written: nothing more is signed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Signing failed after recovery: the serial is burned.
    #[error("{0}; the affected serials are burned and the devices will get new ones on resume")]
    Sign(IssueError),
    /// The ledger's exactly-one-identity rules refuse this request.
    #[error("refused: {0}")]
    Refused(String),
}

impl RecordError {
    /// Refusals are rejected input (exit 3), the ledger exit 5, a signature the token's own.
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            Self::Ledger(e) => e.exit_code(),
            Self::Sign(IssueError::Sign(s)) => s.exit_code(),
            Self::Sign(_) => crate::exit::ExitCode::Hsm,
            Self::Refused(_) => crate::exit::ExitCode::Rejected,
        }
    }
}

/// Issues one prepared device within batch `batch_id` (input line `line`): reserve, sign,
/// verify, record. A device already issued for the same key gets its certificate back.
pub fn issue_one<S: Signer>(
    ledger: &mut Ledger,
    batch_id: &str,
    line: u64,
    profile: &Profile,
    ca: &CaCert,
    prepared: Prepared,
    signer: &S,
) -> Result<Recorded, RecordError> {
    issue_one_then(ledger, batch_id, line, profile, ca, prepared, signer, None)
}

/// [`issue_one`], and when `then` is given, the device's next state committed in the same
/// transaction as the new certificate (a station's `installing`: one durable commit before the
/// certificate leaves the process instead of two). Not applied to a certificate returned from
/// an earlier run (`already`): the caller commits that state itself.
#[allow(clippy::too_many_arguments)]
pub fn issue_one_then<S: Signer>(
    ledger: &mut Ledger,
    batch_id: &str,
    line: u64,
    profile: &Profile,
    ca: &CaCert,
    prepared: Prepared,
    signer: &S,
    then: Option<&StateChange>,
) -> Result<Recorded, RecordError> {
    let intent = intent(profile, ca, &prepared, line);
    match ledger
        .reserve(batch_id, std::slice::from_ref(&intent))?
        .remove(0)
    {
        Reserve::Reserved => {}
        Reserve::AlreadyIssued { der } => return Ok(Recorded { der, already: true }),
        Reserve::Duplicate { .. } => {
            return Err(RecordError::Refused(
                "the same request is already being signed".into(),
            ))
        }
        Reserve::Refused(reason) => return Err(RecordError::Refused(reason)),
    }
    match sign(prepared, ca, signer) {
        Ok(issued) => {
            let record = signed(&intent, issued.der.clone());
            match then {
                Some(change) => {
                    ledger.record_signed_with(batch_id, &record, change)?;
                }
                None => ledger.record_group(batch_id, &[record], &[], &[])?,
            }
            Ok(Recorded {
                der: issued.der,
                already: false,
            })
        }
        Err(e) => {
            ledger.record_failed(batch_id, &[(intent, e.to_string())])?;
            Err(RecordError::Sign(e))
        }
    }
}

/// One device outside any batch run (`certfab issue`, the fleet claim): it goes into the
/// standing batch of its profile and CA, then through [`issue_one`]. A re-run for the same
/// device and key returns the certificate already issued, without a new serial.
pub fn single<S: Signer>(
    ledger: &mut Ledger,
    profile: &Profile,
    ca_name: &str,
    ca: &CaCert,
    prepared: Prepared,
    signer: &S,
) -> Result<Recorded, RecordError> {
    let (batch, _) = ledger.ensure_batch(&single_spec(profile, ca_name))?;
    issue_one(ledger, &batch.id, 0, profile, ca, prepared, signer)
}

/// The standing batch that single issues of `profile` by `ca_name` go into (what a dry run
/// looks up to answer as `certfab issue` would).
pub fn single_spec(profile: &Profile, ca_name: &str) -> BatchSpec {
    let key = format!("single\n{}\n{ca_name}", hex::encode(profile.sha256));
    BatchSpec {
        input_key: hex::encode(crate::crypto::sha256(key.as_bytes())),
        profile: profile.name.clone(),
        profile_sha256: hex::encode(profile.sha256),
        ca: ca_name.to_string(),
        source: serde_json::json!({"source": {"kind": "single"}, "profile_path": profile.path})
            .to_string(),
        out_dir: String::new(),
        tenant: profile.tenant.clone(),
    }
}
