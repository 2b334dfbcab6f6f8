//! `certfab hsm …`: the site's token initialised (before it exists), listed and measured.

use super::SiteRef;
use crate::error::Error;
use crate::hsm::{BenchResult, HsmInfo};
use std::path::PathBuf;

/// `hsm init-token`: a new token in a free slot of the site's module, its PINs read from
/// secret sources. The site's token does not exist yet, so the config is used for the module
/// only. Returns the slot.
pub fn init_token(site: &SiteRef, label: &str, so_pin: &str, pin: &str) -> Result<u64, Error> {
    let config = site.config()?;
    config.apply_module_env();
    let cwd = std::path::Path::new(".");
    let so = crate::secret::SecretSource::parse(so_pin, cwd)?.read("Security officer PIN")?;
    let user = crate::secret::SecretSource::parse(pin, cwd)?.read("User PIN")?;
    Ok(crate::hsm::init_token(&config.module, label, &so, &user)?)
}

/// What `hsm info` found.
#[derive(Debug)]
pub struct TokenInfo {
    /// The module's path.
    pub module: PathBuf,
    /// Slots, tokens, mechanisms and objects.
    pub info: HsmInfo,
    /// Whether private objects could be listed (logged in).
    pub logged_in: bool,
}

/// `hsm info`: slots, tokens, mechanisms and key objects; logs in first (to list private
/// objects too) unless `no_login` or no PIN source is configured.
pub fn info(site: &SiteRef, no_login: bool) -> Result<TokenInfo, Error> {
    let site = site.open()?;
    if !no_login && site.config.pin.is_some() {
        site.login()?;
    }
    let info = crate::hsm::info(&site.hsm)?;
    Ok(TokenInfo {
        module: site.config.module.clone(),
        info,
        logged_in: site.hsm.logged_in(),
    })
}

/// What `hsm bench` measured.
#[derive(Debug)]
pub struct Bench {
    /// The key measured.
    pub uri: String,
    /// The token's label.
    pub token: String,
    /// The key's signature algorithm.
    pub algorithm: String,
    /// One result per session count.
    pub results: Vec<BenchResult>,
}

/// `hsm bench`: the raw signing rate of `key` (a URI, a label or a CA name) with each of
/// `sessions` sessions for `seconds` each.
pub fn bench(site: &SiteRef, key: &str, sessions: &[usize], seconds: f64) -> Result<Bench, Error> {
    let site = site.open()?;
    site.login()?;
    let uri = match site.config.cas.get(key) {
        Some(ca) => ca.key.clone(),
        None => site.key_uri(key)?,
    };
    let mut results = Vec::new();
    for &n in sessions {
        if n == 0 {
            return Err(Error::Usage("--sessions values must be at least 1".into()));
        }
        results.push(crate::hsm::bench(
            &site.hsm,
            &uri,
            n,
            std::time::Duration::from_secs_f64(seconds),
        )?);
    }
    let key_alg = site.hsm.key(&uri, None)?;
    Ok(Bench {
        uri: uri.to_string(),
        token: site.hsm.token_label(),
        algorithm: crate::crypto::Signer::algorithm(&key_alg).to_string(),
        results,
    })
}
