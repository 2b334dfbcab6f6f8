use super::{validity, Ctx};
use crate::ca::CaParams;
use crate::crypto::Signer;
use crate::error::{Error, ExitCode};
use crate::hsm::CaKeyAlgorithm;
use crate::site::read_input;
use crate::x509::CaCert;
use clap::Subcommand;
use std::path::PathBuf;
use std::str::FromStr;
use x509_cert::name::Name;

/// `certfab ca …`
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Generate a CA key pair inside the token (non-extractable, sensitive, sign-only).
    Keygen {
        /// pkcs11: URI or label for the new key (object=LABEL).
        #[arg(long)]
        key: String,
        /// Key algorithm.
        #[arg(long, value_enum, default_value = "p256")]
        algorithm: CaKeyAlgorithm,
    },
    /// Self-sign a root CA certificate with a key in the token.
    Selfsign {
        /// The root's key (pkcs11: URI or label).
        #[arg(long)]
        key: String,
        /// Subject DN, RFC 4514 (e.g. "CN=Acme Device Root,O=Acme").
        #[arg(long)]
        subject: String,
        /// Lifetime (e.g. 20y) or "none" for 99991231235959Z.
        #[arg(long, default_value = "20y")]
        validity: String,
        /// notBefore, RFC 3339 (default: now).
        #[arg(long)]
        not_before: Option<String>,
        /// pathLenConstraint.
        #[arg(long)]
        path_len: Option<u8>,
        /// Output PEM file (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a CSR for a CA whose key is in the token (for signing by a root here or offline).
    Csr {
        /// The key (pkcs11: URI or label).
        #[arg(long)]
        key: String,
        /// Subject DN, RFC 4514.
        #[arg(long)]
        subject: String,
        /// Output PEM file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a subordinate CA certificate (or, with --end-entity, a manifest/audit signer's
    /// certificate) with a CA key in the token.
    Sign {
        /// Issuing CA's key (pkcs11: URI, label, or CA name from the site config).
        #[arg(long)]
        issuer_key: String,
        /// Issuing CA's certificate (default: the named CA's from the site config).
        #[arg(long)]
        issuer_cert: Option<PathBuf>,
        /// The subordinate's CSR.
        #[arg(long)]
        csr: PathBuf,
        /// Override the CSR's subject (RFC 4514).
        #[arg(long)]
        subject: Option<String>,
        /// Lifetime, or "none" (only under a no-expiry issuer).
        #[arg(long, default_value = "10y")]
        validity: String,
        /// notBefore, RFC 3339 (default: now).
        #[arg(long)]
        not_before: Option<String>,
        /// pathLenConstraint (0 for an issuing CA that signs only devices).
        #[arg(long)]
        path_len: Option<u8>,
        /// Sign an end-entity certificate (CA:FALSE, keyUsage digitalSignature only) for a
        /// document-signing key such as the manifest signer, instead of a CA certificate.
        #[arg(long)]
        end_entity: bool,
        /// Output PEM file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a proof-of-possession certificate (CN = a cloud's registration/verification code)
    /// with a CA's key in the token, for AWS IoT RegisterCACertificate or Azure DPS verify.
    VerificationCert {
        /// CA name from the site config (its key signs, its certificate is the issuer).
        #[arg(long)]
        ca: String,
        /// The code: AWS `aws iot get-registration-code`, Azure DPS generateVerificationCode.
        #[arg(long)]
        cn: String,
        /// Lifetime (the cloud checks it once, at registration).
        #[arg(long, default_value = "1d")]
        validity: String,
        /// Output PEM file (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Store a CA certificate on the token beside its key, after checking they match.
    Import {
        /// The key (pkcs11: URI or label).
        #[arg(long)]
        key: String,
        /// The certificate (PEM or DER).
        #[arg(long)]
        cert: PathBuf,
    },
    /// Every configured CA: expiry, dependants in the ledger, rollover, warnings (no token
    /// needed).
    Status {
        /// Warn when a CA expires within this many days.
        #[arg(long, default_value_t = 90)]
        warn_days: i64,
    },
    /// Write the trust bundle for a profile: its issuer's chain and, during a rollover, the
    /// next issuer's (no token needed).
    Bundle {
        /// The profile.
        #[arg(long)]
        profile: String,
        /// Output PEM file (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

fn dn(s: &str) -> Result<Name, Error> {
    // Dotted attribute types go through the exact OID parser first: the X.509 library's own
    // wraps arcs over 2^32 into another OID.
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

pub(super) fn run(ctx: &Ctx, cmd: CaCommand) -> Result<ExitCode, Error> {
    match cmd {
        CaCommand::Status { warn_days } => return status(ctx, warn_days),
        CaCommand::Bundle { profile, out } => return bundle(ctx, &profile, &out),
        _ => {}
    }
    let site = ctx.site()?;
    site.login()?;
    let prefix = site.config.serial_prefix;
    match cmd {
        CaCommand::Keygen { key, algorithm } => {
            let uri = site.key_uri(&key)?;
            let id = crate::hsm::generate_ca_key(&site.hsm, &uri, algorithm)?;
            let k = site.hsm.key(&uri, None)?;
            let spki = crate::crypto::sha256(k.public_key().spki_der());
            ctx.print(
                &serde_json::json!({"key": uri.to_string(), "id": hex::encode(&id), "algorithm": algorithm, "spki_sha256": hex::encode(spki)}),
                &format!(
                    "generated {algorithm:?} key {uri} (id {}) in token '{}': sensitive, non-extractable, sign-only\nSPKI SHA-256 {}",
                    hex::encode(&id),
                    site.hsm.token_label(),
                    hex::encode(spki)
                ),
            );
        }
        CaCommand::Selfsign {
            key,
            subject,
            validity: v,
            not_before,
            path_len,
            out,
        } => {
            crate::output::check_free(&[&out])?;
            let uri = site.key_uri(&key)?;
            let signer = site.hsm.key(&uri, None)?;
            let (nb, na) = validity(&v, not_before.as_deref(), site.clock.now())?;
            let der = crate::ca::self_sign(
                &signer,
                &CaParams {
                    subject: Some(dn(&subject)?),
                    not_before: nb,
                    not_after: na,
                    path_len,
                    serial_prefix: prefix,
                },
            )?;
            done(ctx, &out, &der, "root CA certificate")?;
        }
        CaCommand::Csr { key, subject, out } => {
            crate::output::check_free(&[&out])?;
            let signer = site.hsm.key(&site.key_uri(&key)?, None)?;
            let der = crate::ca::make_csr(&signer, dn(&subject)?)?;
            let pem = pem_rfc7468::encode_string(
                "CERTIFICATE REQUEST",
                pem_rfc7468::LineEnding::LF,
                &der,
            )
            .unwrap_or_default();
            crate::output::write_new(&out, pem.as_bytes())?;
            ctx.print(
                &serde_json::json!({"csr": out}),
                &format!("wrote CA CSR {}", out.display()),
            );
        }
        CaCommand::Sign {
            issuer_key,
            issuer_cert,
            csr,
            subject,
            validity: v,
            not_before,
            path_len,
            end_entity,
            out,
        } => {
            crate::output::check_free(&[&out])?;
            let (uri, cert_path) = match site.config.cas.get(&issuer_key) {
                Some(ca) => (ca.key.clone(), issuer_cert.unwrap_or(ca.cert.clone())),
                None => (
                    site.key_uri(&issuer_key)?,
                    issuer_cert.ok_or_else(|| Error::Usage("--issuer-cert is required when --issuer-key is not a CA name from the site config".into()))?,
                ),
            };
            let issuer = CaCert::load(&cert_path)?;
            let signer = site
                .hsm
                .key(&uri, Some((&issuer.public_key, &issuer.source)))?;
            let (nb, na) = validity(&v, not_before.as_deref(), site.clock.now())?;
            let csr_bytes = read_input(&csr, "CSR")?;
            let params = CaParams {
                subject: subject.as_deref().map(dn).transpose()?,
                not_before: nb,
                not_after: na,
                path_len,
                serial_prefix: prefix,
            };
            if end_entity {
                let der = crate::ca::sign_end_entity(&signer, &issuer, &csr_bytes, &params)?;
                done(ctx, &out, &der, "end-entity signer certificate")?;
            } else {
                let der = crate::ca::sign_ca(&signer, &issuer, &csr_bytes, &params)?;
                done(ctx, &out, &der, "CA certificate")?;
            }
        }
        CaCommand::VerificationCert {
            ca,
            cn,
            validity: v,
            out,
        } => {
            crate::output::check_free(&[&out])?;
            let ca_ref = site
                .config
                .ca(&ca)
                .map_err(|e| Error::Usage(format!("--ca: {e}")))?;
            let lifetime = crate::profile::parse_duration(&v)
                .map_err(|e| Error::Usage(format!("--validity: {e}")))?;
            let now = site.now();
            let mut ledger =
                crate::ledger::Ledger::open(&site.config.ledger, &site.config.station_id)?;
            let issuer = site.issuer(&ca_ref, now)?;
            // A few minutes back, for a cloud whose clock is a little behind ours.
            let nb = (now - time::Duration::minutes(5)).max(issuer.ca.cert.not_before);
            let der = crate::ca::verification_cert(
                &issuer.key,
                &issuer.ca.cert,
                &cn,
                nb,
                lifetime,
                prefix,
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
            crate::output::write_new(&out, c.pem().as_bytes())?;
            let na = c.not_after.map(crate::clock::rfc3339).unwrap_or_default();
            ctx.print(
                &serde_json::json!({
                    "cert": out, "ca": ca, "cn": cn, "serial": serial, "sha256": sha256,
                    "not_before": crate::clock::rfc3339(c.not_before), "not_after": na,
                }),
                &format!(
                    "wrote verification certificate {} (CN={cn}, signed by CA '{ca}', valid until {na}); its key was discarded",
                    out.display()
                ),
            );
        }
        // Answered above without the token; kept here so the match stays complete.
        CaCommand::Status { warn_days } => return status(ctx, warn_days),
        CaCommand::Bundle { profile, out } => return bundle(ctx, &profile, &out),
        CaCommand::Import { key, cert } => {
            let uri = site.key_uri(&key)?;
            let c = CaCert::load(&cert)?;
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
            ctx.print(
                &serde_json::json!({"key": uri.to_string(), "cert": cert}),
                &format!(
                    "imported {} beside {uri}: the key matches the certificate",
                    cert.display()
                ),
            );
        }
    }
    Ok(ExitCode::Ok)
}

fn done(ctx: &Ctx, out: &std::path::Path, der: &[u8], what: &str) -> Result<(), Error> {
    let c = CaCert::from_der(der.to_vec(), out.display().to_string())?;
    crate::output::write_new(out, c.pem().as_bytes())?;
    let na = c
        .not_after
        .map(crate::clock::rfc3339)
        .unwrap_or_else(|| "99991231235959Z (no expiry)".into());
    ctx.print(
        &serde_json::json!({
            "cert": out, "sha256": hex::encode(crate::crypto::sha256(der)),
            "not_before": crate::clock::rfc3339(c.not_before), "not_after": na,
        }),
        &format!(
            "wrote {what} {} (valid {} .. {na})",
            out.display(),
            crate::clock::rfc3339(c.not_before)
        ),
    );
    Ok(())
}

fn site_config(ctx: &Ctx) -> Result<crate::config::SiteConfig, Error> {
    let path = ctx
        .config
        .as_ref()
        .ok_or(Error::Config(crate::config::ConfigError::Missing))?;
    Ok(crate::config::SiteConfig::load(path)?)
}

fn status(ctx: &Ctx, warn_days: i64) -> Result<ExitCode, Error> {
    use crate::lifecycle::ca_status;
    let cfg = site_config(ctx)?;
    let (profiles, errors) = ca_status::site_profiles(&cfg);
    let ledger = if cfg.ledger.exists() {
        Some(crate::ledger::Ledger::open_read(
            &cfg.ledger,
            &cfg.station_id,
        )?)
    } else {
        None
    };
    let r = ca_status::status(
        &cfg,
        &profiles,
        errors,
        ledger.as_ref(),
        ctx.site.clock().now(),
        warn_days,
    )?;
    let mut h = String::new();
    for c in &r.cas {
        h.push_str(&format!(
            "{}{}: {}\n  expires {} · {} live device certificates{} · issuer of [{}] · next issuer of [{}]\n",
            c.name,
            c.tenant.as_ref().map(|t| format!(" (tenant {t})")).unwrap_or_default(),
            c.subject,
            match (&c.not_after, c.days_left) {
                (Some(na), Some(d)) => format!("{na} ({d} days)"),
                _ => "never (99991231235959Z)".into(),
            },
            c.live_certificates,
            c.latest_device_not_after
                .as_ref()
                .map(|l| format!(", latest expiring {l}"))
                .unwrap_or_default(),
            c.issuer_of.join(", "),
            c.next_issuer_of.join(", "),
        ));
        for w in &c.warnings {
            h.push_str(&format!("  WARNING: {w}\n"));
        }
    }
    for e in &r.profile_errors {
        h.push_str(&format!("profile not loaded: {e}\n"));
    }
    ctx.print(&serde_json::json!(r), h.trim_end());
    Ok(ExitCode::Ok)
}

fn bundle(ctx: &Ctx, profile: &str, out: &std::path::Path) -> Result<ExitCode, Error> {
    let cfg = site_config(ctx)?;
    crate::output::check_free(&[out])?;
    let p = crate::profile::Profile::load(&cfg.profile_path(profile))?;
    let cas = crate::lifecycle::ca_status::transition_cas(&cfg, &p)?;
    let pem = crate::lifecycle::ca_status::trust_bundle(&cfg, &p)?;
    crate::output::write_new(out, pem.as_bytes())?;
    let names: Vec<&str> = cas.iter().map(|c| c.name.as_str()).collect();
    ctx.print(
        &serde_json::json!({"profile": p.name, "cas": names, "out": out}),
        &format!(
            "trust bundle for {} (CAs {}) written to {}",
            p.name,
            names.join(", "),
            out.display()
        ),
    );
    Ok(ExitCode::Ok)
}
