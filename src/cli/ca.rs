use super::Ctx;
use crate::error::{Error, ExitCode};
use crate::hsm::CaKeyAlgorithm;
use crate::x509::CaCert;
use clap::Subcommand;
use std::path::PathBuf;

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

pub(super) fn run(ctx: &Ctx, cmd: CaCommand) -> Result<ExitCode, Error> {
    use crate::site::ceremony::{self, CaCertArgs, SignRequest};
    let site = &ctx.site;
    match cmd {
        CaCommand::Status { warn_days } => return status(ctx, warn_days),
        CaCommand::Bundle { profile, out } => return bundle(ctx, &profile, &out),
        CaCommand::Keygen { key, algorithm } => {
            let k = ceremony::keygen(site, &key, algorithm)?;
            ctx.print(
                &serde_json::json!({"key": k.uri, "id": hex::encode(&k.id), "algorithm": algorithm, "spki_sha256": k.spki_sha256}),
                &format!(
                    "generated {algorithm:?} key {} (id {}) in token '{}': sensitive, non-extractable, sign-only\nSPKI SHA-256 {}",
                    k.uri,
                    hex::encode(&k.id),
                    k.token,
                    k.spki_sha256
                ),
            );
        }
        CaCommand::Selfsign {
            key,
            subject,
            validity,
            not_before,
            path_len,
            out,
        } => {
            let c = ceremony::selfsign(
                site,
                &key,
                &CaCertArgs {
                    subject: Some(subject),
                    validity,
                    not_before,
                    path_len,
                    out: out.clone(),
                },
            )?;
            done(ctx, &out, &c, "root CA certificate");
        }
        CaCommand::Csr { key, subject, out } => {
            ceremony::csr(site, &key, &subject, &out)?;
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
            validity,
            not_before,
            path_len,
            end_entity,
            out,
        } => {
            let c = ceremony::sign(
                site,
                &SignRequest {
                    issuer_key,
                    issuer_cert,
                    csr,
                    end_entity,
                    cert: CaCertArgs {
                        subject,
                        validity,
                        not_before,
                        path_len,
                        out: out.clone(),
                    },
                },
            )?;
            let what = if end_entity {
                "end-entity signer certificate"
            } else {
                "CA certificate"
            };
            done(ctx, &out, &c, what);
        }
        CaCommand::VerificationCert {
            ca,
            cn,
            validity,
            out,
        } => {
            let v = ceremony::verification_cert(site, &ca, &cn, &validity, &out)?;
            let c = &v.cert;
            let na = c.not_after.map(crate::clock::rfc3339).unwrap_or_default();
            ctx.print(
                &serde_json::json!({
                    "cert": out, "ca": ca, "cn": cn, "serial": v.serial, "sha256": v.sha256,
                    "not_before": crate::clock::rfc3339(c.not_before), "not_after": na,
                }),
                &format!(
                    "wrote verification certificate {} (CN={cn}, signed by CA '{ca}', valid until {na}); its key was discarded",
                    out.display()
                ),
            );
        }
        CaCommand::Import { key, cert } => {
            let uri = ceremony::import(site, &key, &cert)?;
            ctx.print(
                &serde_json::json!({"key": uri, "cert": cert}),
                &format!(
                    "imported {} beside {uri}: the key matches the certificate",
                    cert.display()
                ),
            );
        }
    }
    Ok(ExitCode::Ok)
}

fn done(ctx: &Ctx, out: &std::path::Path, c: &CaCert, what: &str) {
    let na = c
        .not_after
        .map(crate::clock::rfc3339)
        .unwrap_or_else(|| "99991231235959Z (no expiry)".into());
    ctx.print(
        &serde_json::json!({
            "cert": out, "sha256": hex::encode(crate::crypto::sha256(&c.der)),
            "not_before": crate::clock::rfc3339(c.not_before), "not_after": na,
        }),
        &format!(
            "wrote {what} {} (valid {} .. {na})",
            out.display(),
            crate::clock::rfc3339(c.not_before)
        ),
    );
}

fn status(ctx: &Ctx, warn_days: i64) -> Result<ExitCode, Error> {
    let r = crate::site::ceremony::status(&ctx.site, warn_days)?;
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
    let (name, names) = crate::site::ceremony::bundle(&ctx.site, profile, out)?;
    ctx.print(
        &serde_json::json!({"profile": name, "cas": names, "out": out}),
        &format!(
            "trust bundle for {} (CAs {}) written to {}",
            name,
            names.join(", "),
            out.display()
        ),
    );
    Ok(ExitCode::Ok)
}
