//! The issuance pipeline, as one readable flow:
//! parse → proof of possession → key policy → name policy → TBS → lint → HSM sign → verify.
//!
//! It is split in two halves, [`prepare`] (everything before the HSM) and [`sign`] (the HSM and
//! the check of its work), so the ledger commits the serial and TBS in between: [`record`] is
//! that ledger half, which every caller goes through ([`claim`] is one of them).

pub mod claim;
#[cfg(test)]
mod golden;
mod lint;
pub mod record;

pub use claim::{ClaimError, ClaimMaterial};
pub use lint::lint;
pub use record::{IssuingCa, RecordError};

use crate::crypto::{PublicKey, SignatureAlgorithm};
use crate::crypto::{SignError, Signer};
use crate::csr::{self, PolicyError};
use crate::ledger::KeyOrigin;
use crate::profile::{DeviceIdFrom, KeyUsageBit, Profile, SanEntry, Vars};
use crate::x509::{
    self as tbs, assemble, build_tbs, pem, BuildError, CaCert, CertSpec, SerialSource,
};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use x509_cert::ext::pkix::KeyUsages;
use x509_cert::ext::Extension;

/// How the device's key reaches certfab.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A CSR (PEM or DER) made by the device: proof of possession is checked.
    Csr(Vec<u8>),
    /// A known public key (SPKI PEM or DER), e.g. read from a secure element.
    PublicKey(Vec<u8>),
}

/// One device's request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Device id, if the input gives one.
    pub device_id: Option<String>,
    pub key: KeySource,
    /// Template values (`csv.X`, `var.X`).
    pub vars: BTreeMap<String, String>,
}

/// Everything about the issuing side that does not change per device.
pub struct IssueContext<'a> {
    pub profile: &'a Profile,
    /// The issuing CA certificate.
    pub ca: &'a CaCert,
    /// The CA's signature algorithm.
    pub signature: SignatureAlgorithm,
    /// Station serial prefix.
    pub serial_prefix: u8,
    /// Issuance time: the caller's clock, so a certificate can be built for a fixed instant.
    pub now: OffsetDateTime,
    /// Where the serial comes from (random in production, fixed in golden tests).
    pub serials: &'a dyn SerialSource,
}

/// A certificate ready to be signed: serial and TBS are final.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub device_id: String,
    /// Serial bytes.
    pub serial: Vec<u8>,
    /// TBSCertificate DER.
    pub tbs: Vec<u8>,
    /// Signature algorithm in the TBS.
    pub signature: SignatureAlgorithm,
    /// The device key.
    pub public_key: PublicKey,
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter (None = no expiry).
    pub not_after: Option<OffsetDateTime>,
    /// Where the key was made: a CSR or a public key as given; the caller sets `Host` or
    /// `Device` when it knows the key's maker.
    pub key_origin: KeyOrigin,
}

/// A signed, verified certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    /// What was prepared.
    pub prepared: Prepared,
    /// Certificate DER.
    pub der: Vec<u8>,
}

impl Issued {
    /// Serial, lower-case hex.
    pub fn serial_hex(&self) -> String {
        hex::encode(&self.prepared.serial)
    }
    /// PEM text.
    pub fn pem(&self) -> String {
        pem(&self.der)
    }
}

/// Why issuance stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The request breaks policy (input rejected).
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The built certificate fails lint: it never reaches the HSM.
    #[error("certificate failed pre-issuance lint, not signed: {}", .0.join("; "))]
    Lint(Vec<String>),
    /// A value could not be encoded.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The HSM failed.
    #[error("signing failed: {0}")]
    Sign(#[from] SignError),
    /// The HSM's signature does not verify with the CA certificate's key.
    #[error("the HSM's signature does not verify with the CA certificate's public key; the certificate is discarded. Check that the profile's CA key and certificate belong together")]
    VerifyFailed,
    /// No randomness.
    #[error("the OS random number generator failed: {0}")]
    Random(String),
}

impl IssueError {
    /// Policy, lint and encoding refusals are rejected input (exit 3); the token's failures
    /// keep their own code; anything else on the signing side is exit 4.
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            Self::Policy(_) | Self::Lint(_) | Self::Build(_) => crate::exit::ExitCode::Rejected,
            Self::Sign(s) => s.exit_code(),
            Self::VerifyFailed | Self::Random(_) => crate::exit::ExitCode::Hsm,
        }
    }
}

/// Everything before the HSM: checks the request, builds the TBS and lints it.
pub fn prepare(ctx: &IssueContext<'_>, req: &Request) -> Result<Prepared, IssueError> {
    let p = ctx.profile;
    // 1-2. Parse; for CSRs verify the self-signature (proof of possession).
    let (public_key, csr, key_origin) = match &req.key {
        KeySource::Csr(b) => {
            let c = csr::parse_csr(b)?;
            (c.public_key.clone(), Some(c), KeyOrigin::Csr)
        }
        KeySource::PublicKey(b) => (csr::parse_public_key(b)?, None, KeyOrigin::Pubkey),
    };
    // 3. Key policy.
    csr::check_key(&public_key, &p.keys, &p.name)?;
    let copied = match &csr {
        Some(c) => csr::requested_extensions(c, &p.csr_allowed_extensions)?,
        None => Vec::new(),
    };

    // 4. Names: device id, then every rendered subject and SAN value.
    let mut vars = Vars {
        device_id: None,
        values: req.vars.clone(),
    };
    if let Some(c) = &csr {
        for rdn in c.subject.0.iter() {
            for atv in rdn.0.iter() {
                if let Some(v) = crate::x509::any_text(&atv.value) {
                    let key = crate::x509::AttrType::name_of(atv.oid);
                    vars.values.entry(format!("csr.{key}")).or_insert(v);
                }
            }
        }
    }
    let device_id = match (&req.device_id, &p.device_id) {
        (Some(id), _) => id.clone(),
        (None, DeviceIdFrom::CsrAttr(a)) => csr
            .as_ref()
            .and_then(|c| crate::x509::attr_text(&c.subject, a.oid))
            .ok_or_else(|| PolicyError::DeviceId(format!("the CSR subject has no {} to take the device id from (profile device_id.from); pass --device-id", a.name)))?,
        (None, DeviceIdFrom::Input) => {
            return Err(PolicyError::DeviceId("no device id: pass --device-id (or set device_id.from: csr.CN in the profile)".into()).into())
        }
    };
    csr::check_name("device id", &device_id, &p.names, false)?;
    vars.device_id = Some(device_id.clone());

    // Values built only from profile text are the profile author's; values that carry any
    // request input go through the name policy.
    let check = |attr: &str, t: &crate::profile::Template, v: &str, printable: bool| {
        if t.placeholders().next().is_some() {
            csr::check_name(attr, v, &p.names, printable)
        } else {
            Ok(())
        }
    };
    let mut subject = Vec::new();
    for (attr, t) in &p.subject {
        let v = t.render(&vars).map_err(PolicyError::Template)?;
        check(&attr.name, t, &v, attr.printable)?;
        subject.push((attr.clone(), v));
    }
    let mut san = Vec::new();
    for s in &p.san {
        use x509_cert::ext::pkix::name::GeneralName as G;
        let render = |t: &crate::profile::Template, kind: &str| -> Result<String, PolicyError> {
            let v = t.render(&vars).map_err(PolicyError::Template)?;
            check(kind, t, &v, false)?;
            Ok(v)
        };
        // Every rendered SAN value must also be what its type says it is (RFC 5280 §4.2.1.6),
        // whatever the name policy allowed: `{csv.site}.example` with site `a/../b` is no name.
        let syntax = |kind: &str, v: String, f: fn(&str) -> Result<(), String>| {
            f(&v).map_err(|why| PolicyError::Name {
                attr: kind.into(),
                value: crate::text::escape(&v.chars().take(80).collect::<String>()),
                why,
            })?;
            Ok::<_, PolicyError>(v)
        };
        san.push(match s {
            SanEntry::Dns(t) => G::DnsName(tbs::ia5(&syntax(
                "SAN dns",
                render(t, "SAN dns")?,
                crate::profile::san::dns_name,
            )?)?),
            SanEntry::Uri(t) => G::UniformResourceIdentifier(tbs::ia5(&syntax(
                "SAN uri",
                render(t, "SAN uri")?,
                crate::profile::san::uri,
            )?)?),
            SanEntry::Email(t) => G::Rfc822Name(tbs::ia5(&syntax(
                "SAN email",
                render(t, "SAN email")?,
                crate::profile::san::email,
            )?)?),
            SanEntry::Ip(t) => {
                let v = render(t, "SAN ip")?;
                let ip: std::net::IpAddr = v.parse().map_err(|_| PolicyError::Name {
                    attr: "SAN ip".into(),
                    value: v.clone(),
                    why: "not an IP address".into(),
                })?;
                let bytes = match ip {
                    std::net::IpAddr::V4(a) => a.octets().to_vec(),
                    std::net::IpAddr::V6(a) => a.octets().to_vec(),
                };
                G::IpAddress(der::asn1::OctetString::new(bytes).map_err(BuildError::from)?)
            }
            SanEntry::HardwareModuleName { hw_type, hw_serial } => {
                let serial = render(hw_serial, "SAN hw_serial")?;
                tbs::hardware_module_name(*hw_type, serial.as_bytes())?
            }
        });
    }

    // 5. Validity.
    let not_before = ctx
        .now
        .checked_sub(p.validity.backdate)
        .unwrap_or(ctx.now)
        .max(ctx.ca.not_before);
    // Checked: the profile bounds the duration, but `now` comes from the caller.
    let mut not_after = match p.validity.duration {
        None => None,
        Some(d) => Some(ctx.now.checked_add(d).ok_or_else(|| {
            BuildError(format!(
                "validity {} s from {} is past the last time X.509 can express; use a shorter validity or 'none'",
                d.whole_seconds(),
                crate::clock::rfc3339(ctx.now)
            ))
        })?),
    };
    if p.validity.clamp_to_issuer {
        if let Some(ca_na) = ctx.ca.not_after {
            not_after = Some(not_after.map_or(ca_na, |na| na.min(ca_na)));
        }
    }

    // 6. Serial and TBS. Extensions come from the profile, plus allow-listed CSR requests.
    let serial = ctx
        .serials
        .next_serial(ctx.serial_prefix)
        .map_err(|e| IssueError::Random(e.to_string()))?;
    let mut exts: Vec<Extension> = vec![
        tbs::basic_constraints(false, None)?,
        tbs::key_usage(usage_bits(&p.key_usage))?,
    ];
    if !p.extended_key_usage.is_empty() {
        exts.push(tbs::extended_key_usage(&p.extended_key_usage)?);
    }
    exts.push(tbs::subject_key_id(&crate::crypto::key_identifier(
        &public_key.subject_public_key(),
    ))?);
    exts.push(tbs::authority_key_id(&ctx.ca.key_id)?);
    if !san.is_empty() {
        exts.push(tbs::subject_alt_name(san, subject.is_empty())?);
    }
    for x in &p.extensions {
        exts.push(Extension {
            extn_id: x.oid,
            critical: x.critical,
            extn_value: der::asn1::OctetString::new(x.value.clone()).map_err(BuildError::from)?,
        });
    }
    exts.extend(copied);
    let spec = CertSpec {
        serial: serial.clone(),
        signature: ctx.signature,
        issuer: ctx.ca.subject.clone(),
        subject: tbs::name(&subject)?,
        not_before,
        not_after,
        spki: public_key.spki_der().to_vec(),
        extensions: exts,
    };
    let tbs_der = build_tbs(&spec)?;

    // 7. Lint before anything is signed.
    let critical_ok: Vec<_> = p
        .extensions
        .iter()
        .map(|x| x.oid)
        .chain(p.csr_allowed_extensions.iter().copied())
        .collect();
    let findings = lint(
        &tbs_der,
        ctx.signature,
        &public_key,
        ctx.ca,
        Some(p),
        &critical_ok,
    );
    if !findings.is_empty() {
        return Err(IssueError::Lint(findings));
    }
    Ok(Prepared {
        device_id,
        serial,
        tbs: tbs_der,
        signature: ctx.signature,
        public_key,
        not_before,
        not_after,
        key_origin,
    })
}

/// The HSM half: sign the TBS, then verify the signature with the CA certificate's key before
/// the certificate exists anywhere.
pub fn sign<S: Signer>(prepared: Prepared, ca: &CaCert, signer: &S) -> Result<Issued, IssueError> {
    let sig = signer.sign(&prepared.tbs)?;
    ca.public_key
        .verify(prepared.signature, &prepared.tbs, &sig)
        .map_err(|_| IssueError::VerifyFailed)?;
    let der = assemble(&prepared.tbs, prepared.signature, &sig)?;
    Ok(Issued { prepared, der })
}

/// The keyUsage bits a profile's `key_usage` list means.
pub fn usage_bits(bits: &[KeyUsageBit]) -> flagset::FlagSet<KeyUsages> {
    let mut f = flagset::FlagSet::default();
    for b in bits {
        f |= match b {
            KeyUsageBit::DigitalSignature => KeyUsages::DigitalSignature,
            KeyUsageBit::NonRepudiation => KeyUsages::NonRepudiation,
            KeyUsageBit::KeyEncipherment => KeyUsages::KeyEncipherment,
            KeyUsageBit::DataEncipherment => KeyUsages::DataEncipherment,
            KeyUsageBit::KeyAgreement => KeyUsages::KeyAgreement,
            KeyUsageBit::KeyCertSign => KeyUsages::KeyCertSign,
            KeyUsageBit::CrlSign => KeyUsages::CRLSign,
        };
    }
    f
}
