//! The Fleet Provisioning claim certificate for a batch: a P-256 key made on this host, a
//! certificate from the claim profile signed by the HSM through the ledger (intent before
//! signature, one live claim per claim id), and the key encrypted for the export.

use super::{ClaimMaterial, ExportInput};
use crate::crypto::Signer;
use crate::error::Error;
use crate::issue::{self, IssueContext, KeySource, Request};
use crate::profile::Profile;
use crate::site::Site;
use secrecy::SecretString;

/// The claim's ledger device id: `fleet-claim-<batch>` for a manifest of one batch.
pub fn default_claim_id(input: &ExportInput) -> Result<String, Error> {
    match input.batch_ids.as_slice() {
        [one] => Ok(format!("fleet-claim-{one}")),
        ids => Err(Error::Usage(format!(
            "the manifest covers {} batches ({}); a claim certificate is per batch: pass --claim-id NAME",
            ids.len(),
            ids.join(", ")
        ))),
    }
}

/// Issues the claim certificate `claim_id` under `profile` and returns it with its key,
/// encrypted with `passphrase` (plain only when `passphrase` is `None`, which the caller
/// allows only on an explicit request).
pub fn issue_claim(
    site: &Site,
    profile: &Profile,
    claim_id: &str,
    passphrase: Option<&SecretString>,
    kdf_iterations: u32,
) -> Result<ClaimMaterial, Error> {
    if !profile.keys.p256 {
        return Err(Error::Usage(format!(
            "claim profile {} does not allow P-256, the key type certfab generates",
            profile.path.display()
        )));
    }
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let ca_ref = site.ca_ref(profile)?;
    let mut ledger = crate::ledger::Ledger::open(&site.config.ledger, &site.config.station_id)?;
    site.login()?;
    let issuer = site.issuer(&ca_ref, now)?;
    let key = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let spki = {
        use p256::pkcs8::EncodePublicKey;
        key.public_key()
            .to_public_key_der()
            .map_err(|e| Error::Usage(format!("claim key: {e}")))?
    };
    // The key is encrypted before anything is signed, so a signed claim never lacks its key.
    let key_pem = crate::batch::encode_key_pem(&key, passphrase, kdf_iterations)
        .map_err(|e| Error::Usage(format!("claim key: {e}")))?;
    drop(key);
    let ictx = IssueContext {
        profile,
        ca: &issuer.cert,
        signature: issuer.key.algorithm(),
        serial_prefix: site.config.serial_prefix,
        now,
    };
    let req = Request {
        device_id: Some(claim_id.to_string()),
        key: KeySource::PublicKey(spki.as_bytes().to_vec()),
        vars: Default::default(),
    };
    let prepared = issue::prepare(&ictx, &req)?;
    let (der, _) = crate::batch::single(
        &mut ledger,
        profile,
        &ca_ref.name,
        &issuer.cert,
        prepared,
        &issuer.key,
    )?;
    let cert_pem = crate::x509::pem(&der);
    let chain_pem = format!(
        "{cert_pem}{}",
        issuer.cert.device_chain_pem(&issuer.chain, false)
    );
    Ok(ClaimMaterial {
        claim_id: claim_id.to_string(),
        cert_pem,
        chain_pem,
        key_pem,
        key_encrypted: passphrase.is_some(),
    })
}
