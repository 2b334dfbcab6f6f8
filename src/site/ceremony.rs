//! `certfab ca …`: the key ceremony on the site's token (keygen, self-sign, CSR, sign,
//! verification certificate, import), each after the one login, and the CA status and trust
//! bundle, which need no token.

use super::{read_input, Site, SiteRef};
use crate::ca::CaParams;
use crate::crypto::Signer;
use crate::error::Error;
use crate::hsm::CaKeyAlgorithm;
use crate::x509::CaCert;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use time::OffsetDateTime;
use x509_cert::name::Name;

/// The site, opened and logged in: every ceremony step signs or reads a private key.
fn logged_in(site: &SiteRef) -> Result<Site, Error> {
    let site = site.open()?;
    site.login()?;
    Ok(site)
}

/// A CA key made in the token.
#[derive(Debug, Clone)]
pub struct KeyMade {
    /// The key's URI.
    pub uri: String,
    /// Its CKA_ID.
    pub id: Vec<u8>,
    /// The token's label.
    pub token: String,
    /// SHA-256 of its SPKI, hex.
    pub spki_sha256: String,
}

/// `ca keygen`: a CA key pair generated inside the token (non-extractable, sensitive,
/// sign-only), read back and checked.
pub fn keygen(site: &SiteRef, key: &str, algorithm: CaKeyAlgorithm) -> Result<KeyMade, Error> {
    let site = logged_in(site)?;
    let uri = site.key_uri(key)?;
    let id = crate::hsm::generate_ca_key(&site.hsm, &uri, algorithm)?;
    let k = site.hsm.key(&uri, None)?;
    Ok(KeyMade {
        uri: uri.to_string(),
        id,
        token: site.hsm.token_label(),
        spki_sha256: hex::encode(crate::crypto::sha256(k.public_key().spki_der())),
    })
}

/// What `ca selfsign` and `ca sign` were asked about the certificate's name and validity.
#[derive(Debug, Clone)]
pub struct CaCertArgs {
    /// Subject DN, RFC 4514 (required for a root; overrides the CSR's when signing).
    pub subject: Option<String>,
    /// Lifetime (`20y`) or `none`.
    pub validity: String,
    /// notBefore, RFC 3339 (default: now).
    pub not_before: Option<String>,
    /// pathLenConstraint.
    pub path_len: Option<u8>,
    /// Output PEM file (must not exist).
    pub out: PathBuf,
}

/// `ca selfsign`: a root CA certificate signed by its own key in the token, written to
/// `args.out`.
pub fn selfsign(site: &SiteRef, key: &str, args: &CaCertArgs) -> Result<CaCert, Error> {
    let site = logged_in(site)?;
    crate::output::check_free(&[&args.out])?;
    let signer = site.hsm.key(&site.key_uri(key)?, None)?;
    let (nb, na) = validity(&args.validity, args.not_before.as_deref(), site.clock.now())?;
    let subject = dn(args.subject.as_deref().unwrap_or_default())?;
    let der = crate::ca::self_sign(
        &signer,
        &CaParams {
            subject: Some(subject),
            not_before: nb,
            not_after: na,
            path_len: args.path_len,
            serial_prefix: site.config.serial_prefix,
        },
    )?;
    write_ca(&args.out, der)
}

/// `ca csr`: a CSR for a CA whose key is in the token, written as PEM to `out`.
pub fn csr(site: &SiteRef, key: &str, subject: &str, out: &Path) -> Result<(), Error> {
    let site = logged_in(site)?;
    crate::output::check_free(&[out])?;
    let signer = site.hsm.key(&site.key_uri(key)?, None)?;
    let der = crate::ca::make_csr(&signer, dn(subject)?)?;
    let pem = pem_rfc7468::encode_string("CERTIFICATE REQUEST", pem_rfc7468::LineEnding::LF, &der)
        .unwrap_or_default();
    crate::output::write_new(out, pem.as_bytes())?;
    Ok(())
}

/// What `ca sign` was asked.
#[derive(Debug, Clone)]
pub struct SignRequest {
    /// The issuer's key: a `pkcs11:` URI, a label, or a CA name from the site config.
    pub issuer_key: String,
    /// The issuer's certificate (default: the named CA's).
    pub issuer_cert: Option<PathBuf>,
    /// The subordinate's CSR.
    pub csr: PathBuf,
    /// An end-entity (document signer) certificate instead of a CA's.
    pub end_entity: bool,
    /// Name, validity and output.
    pub cert: CaCertArgs,
}

/// `ca sign`: a subordinate CA's (or a document signer's) certificate signed by a CA key in
/// the token, written to `req.cert.out`.
pub fn sign(site: &SiteRef, req: &SignRequest) -> Result<CaCert, Error> {
    let site = logged_in(site)?;
    let out = &req.cert.out;
    crate::output::check_free(&[out])?;
    let (uri, cert_path) = match site.config.cas.get(&req.issuer_key) {
        Some(ca) => (
            ca.key.clone(),
            req.issuer_cert.clone().unwrap_or(ca.cert.clone()),
        ),
        None => (
            site.key_uri(&req.issuer_key)?,
            req.issuer_cert.clone().ok_or_else(|| Error::Usage("--issuer-cert is required when --issuer-key is not a CA name from the site config".into()))?,
        ),
    };
    let issuer = CaCert::load(&cert_path)?;
    let signer = site
        .hsm
        .key(&uri, Some((&issuer.public_key, &issuer.source)))?;
    let (nb, na) = validity(
        &req.cert.validity,
        req.cert.not_before.as_deref(),
        site.clock.now(),
    )?;
    let csr_bytes = read_input(&req.csr, "CSR")?;
    let params = CaParams {
        subject: req.cert.subject.as_deref().map(dn).transpose()?,
        not_before: nb,
        not_after: na,
        path_len: req.cert.path_len,
        serial_prefix: site.config.serial_prefix,
    };
    let der = if req.end_entity {
        crate::ca::sign_end_entity(&signer, &issuer, &csr_bytes, &params)?
    } else {
        crate::ca::sign_ca(&signer, &issuer, &csr_bytes, &params)?
    };
    write_ca(out, der)
}

/// A verification certificate signed and recorded.
#[derive(Debug, Clone)]
pub struct VerificationCert {
    /// The certificate as written.
    pub cert: CaCert,
    /// Its serial, hex.
    pub serial: String,
    /// SHA-256 of its DER, hex.
    pub sha256: String,
}

/// `ca verification-cert`: a proof-of-possession certificate (CN = the cloud's code) signed
/// by CA `ca`'s token key, recorded in the ledger before the file exists; its key is
/// discarded.
pub fn verification_cert(
    site: &SiteRef,
    ca: &str,
    cn: &str,
    lifetime: &str,
    out: &Path,
) -> Result<VerificationCert, Error> {
    let site = logged_in(site)?;
    crate::output::check_free(&[out])?;
    let ca_ref = site
        .config
        .ca(ca)
        .map_err(|e| Error::Usage(format!("--ca: {e}")))?;
    let lifetime = crate::profile::parse_duration(lifetime)
        .map_err(|e| Error::Usage(format!("--validity: {e}")))?;
    let now = site.now();
    let mut ledger = crate::ledger::Ledger::open_with_clock(
        &site.config.ledger,
        &site.config.station_id,
        site.clock.clone(),
    )?;
    let issuer = site.issuer(&ca_ref, now)?;
    // A few minutes back, for a cloud whose clock is a little behind ours.
    let nb = (now - time::Duration::minutes(5)).max(issuer.ca.cert.not_before);
    let der = crate::ca::verification_cert(
        &issuer.key,
        &issuer.ca.cert,
        cn,
        nb,
        lifetime,
        site.config.serial_prefix,
    )?;
    let c = CaCert::from_der(der.clone(), out.display().to_string())?;
    let serial = {
        use der::Decode;
        x509_cert::Certificate::from_der(&der)
            .map(|x| hex::encode(x.tbs_certificate.serial_number.as_bytes()))
            .unwrap_or_default()
    };
    let sha256 = hex::encode(crate::crypto::sha256(&der));
    // Everything the CA key signs is accounted for: recorded before the file exists.
    ledger.record_event(
        "verification_cert_signed",
        None,
        None,
        &serde_json::json!({"ca": ca, "cn": cn, "serial": serial, "sha256": sha256}),
    )?;
    crate::output::write_new(out, c.pem().as_bytes())?;
    Ok(VerificationCert {
        cert: c,
        serial,
        sha256,
    })
}

/// `ca import`: the CA certificate stored on the token beside its key (same label and
/// CKA_ID), after checking that the key is the certificate's. Returns the key's URI.
pub fn import(site: &SiteRef, key: &str, cert: &Path) -> Result<String, Error> {
    let site = logged_in(site)?;
    let uri = site.key_uri(key)?;
    let c = CaCert::load(cert)?;
    crate::hsm::import_certificate(
        &site.hsm,
        &uri,
        &crate::hsm::CertObject {
            der: &c.der,
            subject_der: &c.subject_der,
            public_key: &c.public_key,
            source: &c.source,
        },
    )?;
    Ok(uri.to_string())
}

/// `ca status`: every configured CA's expiry, dependants in the ledger, rollover and warnings.
pub fn status(
    site: &SiteRef,
    warn_days: i64,
) -> Result<crate::lifecycle::ca_status::StatusReport, Error> {
    use crate::lifecycle::ca_status;
    let cfg = site.config()?;
    let (profiles, errors) = ca_status::site_profiles(&cfg);
    let ledger = match &cfg.ledger {
        crate::ledger::LedgerLocation::Sqlite(p) if !p.exists() => None,
        at => Some(crate::ledger::Ledger::open_read(at, &cfg.station_id)?),
    };
    Ok(ca_status::status(
        &cfg,
        &profiles,
        errors,
        ledger.as_ref(),
        site.clock().now(),
        warn_days,
    )?)
}

/// `ca bundle`: the trust bundle of `profile` (its issuer's chain and, during a rollover, the
/// next issuer's) written to `out`. Returns the profile's name and the CAs in it.
pub fn bundle(site: &SiteRef, profile: &str, out: &Path) -> Result<(String, Vec<String>), Error> {
    let cfg = site.config()?;
    crate::output::check_free(&[out])?;
    let p = crate::profile::Profile::load(&cfg.profile_path(profile))?;
    let cas = crate::lifecycle::ca_status::transition_cas(&cfg, &p)?;
    let pem = crate::lifecycle::ca_status::trust_bundle(&cfg, &p)?;
    crate::output::write_new(out, pem.as_bytes())?;
    Ok((p.name, cas.into_iter().map(|c| c.name).collect()))
}

/// Parses the certificate `der` and writes it as PEM to `out` (which must not exist).
fn write_ca(out: &Path, der: Vec<u8>) -> Result<CaCert, Error> {
    let c = CaCert::from_der(der, out.display().to_string())?;
    crate::output::write_new(out, c.pem().as_bytes())?;
    Ok(c)
}

/// An RFC 4514 `--subject`. Dotted attribute types go through the exact OID parser first: the
/// X.509 library's own wraps arcs over 2^32 into another OID.
fn dn(s: &str) -> Result<Name, Error> {
    for t in s.split([',', '+']).filter_map(|p| p.split_once('=')) {
        let ty = t.0.trim();
        if ty.starts_with(|c: char| c.is_ascii_digit()) {
            crate::x509::parse_oid(ty)
                .map_err(|e| Error::Usage(format!("--subject: attribute type {e}")))?;
        }
    }
    Name::from_str(s).map_err(|e| {
        Error::Usage(format!(
            "--subject '{s}' is not an RFC 4514 DN (e.g. \"CN=Acme Root,O=Acme\"): {e}"
        ))
    })
}

/// `--validity` and `--not-before` of a CA certificate: notBefore (default `now`) in whole
/// seconds, and notAfter (`None` for `none`).
fn validity(
    validity: &str,
    not_before: Option<&str>,
    now: OffsetDateTime,
) -> Result<(OffsetDateTime, Option<OffsetDateTime>), Error> {
    let nb = match not_before {
        Some(s) => OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|e| {
                Error::Usage(format!(
                    "--not-before '{s}' is not RFC 3339 (e.g. 2026-01-01T00:00:00Z): {e}"
                ))
            })?,
        None => now,
    };
    let nb = nb.replace_nanosecond(0).unwrap_or(nb);
    let na = match validity {
        "none" => None,
        v => {
            let d = crate::profile::parse_duration(v)
                .map_err(|e| Error::Usage(format!("--validity: {e}")))?;
            Some(nb.checked_add(d).ok_or_else(|| {
                Error::Usage(format!(
                    "--not-before plus --validity {v} is past the last time X.509 can express"
                ))
            })?)
        }
    };
    Ok((nb, na))
}
