//! The fleet claim certificate, issued on the site before `certfab export aws-fleet-claim`
//! renders it: the ledger, the login and the CA are opened as they always were for the claim
//! (plain, unrecorded), then `issue::claim` issues it like any device.

use super::Site;
use crate::error::Error;
use crate::issue::claim::{self, ClaimRequest};
use crate::issue::ClaimMaterial;
use crate::ledger::Ledger;
use crate::profile::Profile;
use secrecy::SecretString;

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
    claim::check_profile(profile)?;
    let now = site.now();
    let ca_ref = site.ca_ref(profile)?;
    let mut ledger = Ledger::open_with_clock(
        &site.config.ledger,
        &site.config.station_id,
        site.clock.clone(),
    )?;
    site.login()?;
    let issuer = site.issuer(&ca_ref, now)?;
    Ok(claim::issue_claim(
        &mut ledger,
        &issuer.ca,
        &issuer.key,
        &*site.serials,
        &ClaimRequest {
            profile,
            claim_id,
            passphrase,
            kdf_iterations,
            serial_prefix: site.config.serial_prefix,
            now,
        },
    )?)
}
