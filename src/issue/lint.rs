//! Pre-issuance lint: the TBS is signed with a throwaway software key, the result re-parsed by
//! an independent parser (x509-parser), and checked against RFC 5280 and the profile. Nothing
//! that fails here reaches the HSM.

use crate::crypto::Signer;
use crate::crypto::{KeyKind, PublicKey, SignatureAlgorithm, SoftSigner};
use crate::profile::{Preset, Profile};
use crate::x509::CaCert;
use std::collections::HashSet;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::*;

/// A real signature by a throwaway key, made once per process. The lint needs a complete,
/// parseable certificate, never a valid signature, so one placeholder of the right shape serves
/// every TBS (making a key and a signature per certificate cost a third of batch throughput).
fn throwaway_signature() -> &'static [u8] {
    static SIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    SIG.get_or_init(|| {
        SoftSigner::generate_p256()
            .sign(b"certfab pre-issuance lint")
            .unwrap_or_default()
    })
}

/// Lints `tbs` as a certificate for `key` issued by `ca` under `profile`. Returns the findings;
/// empty means it may be signed.
pub fn lint(
    tbs: &[u8],
    alg: SignatureAlgorithm,
    key: &PublicKey,
    ca: &CaCert,
    profile: Option<&Profile>,
    extra_critical_ok: &[der::asn1::ObjectIdentifier],
) -> Vec<String> {
    let der = match super::tbs::assemble(tbs, alg, throwaway_signature()) {
        Ok(d) => d,
        Err(e) => return vec![format!("TBS does not assemble: {e}")],
    };
    let mut f = Vec::new();
    let cert = match X509Certificate::from_der(&der) {
        Ok(([], c)) => c,
        Ok(_) => return vec!["trailing bytes after certificate".into()],
        Err(e) => return vec![format!("certificate does not re-parse: {e}")],
    };
    let tbs_c = &cert.tbs_certificate;
    if tbs_c.version() != X509Version::V3 {
        f.push("version is not v3".into());
    }
    let serial = tbs_c.raw_serial();
    if serial.is_empty() || serial.len() > 20 {
        f.push(format!(
            "serial is {} octets; RFC 5280 allows 1..=20",
            serial.len()
        ));
    }
    if serial.first().is_some_and(|b| b & 0x80 != 0) {
        f.push("serial is negative".into());
    }
    if serial.iter().all(|b| *b == 0) {
        f.push("serial is zero".into());
    }
    if serial.len() > 1 && serial[0] == 0 && serial[1] & 0x80 == 0 {
        f.push("serial is not minimally encoded".into());
    }
    if tbs_c.signature.algorithm != cert.signature_algorithm.algorithm {
        f.push("inner and outer signature algorithms differ".into());
    }
    if tbs_c.issuer.as_raw() != ca.subject_der.as_slice() {
        f.push("issuer name does not match the CA certificate's subject byte for byte".into());
    }
    let nb = tbs_c.validity.not_before.timestamp();
    let na = tbs_c.validity.not_after.timestamp();
    if nb >= na {
        f.push("notBefore is not before notAfter".into());
    }
    if nb < ca.not_before.unix_timestamp() {
        f.push("notBefore is before the CA's notBefore".into());
    }
    match ca.not_after {
        Some(ca_na) if na > ca_na.unix_timestamp() => f.push(format!(
            "notAfter is after the CA's ({}); shorten validity, set validity.clamp_to_issuer, or use a longer-lived CA",
            crate::clock::rfc3339(ca_na)
        )),
        _ => {}
    }
    if tbs_c.subject_pki.raw != key.spki_der() {
        f.push("subjectPublicKeyInfo is not the requested key".into());
    }

    let mut seen = HashSet::new();
    let (mut bc_ok, mut ku_seen, mut ski_seen, mut aki_ok, mut san) =
        (false, false, false, false, None);
    for ext in tbs_c.extensions() {
        // By the OID's encoded bytes: the dotted text costs an allocation and a formatting pass
        // per extension, and equal OIDs have equal DER contents.
        if !seen.insert(ext.oid.as_bytes()) {
            f.push(format!("extension {} appears twice", ext.oid));
        }
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) => {
                if bc.ca {
                    f.push("basicConstraints CA:TRUE on a device certificate".into());
                } else if bc.path_len_constraint.is_some() {
                    f.push("basicConstraints pathLenConstraint on a device certificate (CA only, RFC 5280 §4.2.1.9)".into());
                } else if !ext.critical {
                    f.push("basicConstraints is not critical".into());
                } else {
                    bc_ok = true;
                }
            }
            ParsedExtension::KeyUsage(ku) => {
                ku_seen = true;
                if !ext.critical {
                    f.push("keyUsage is not critical".into());
                }
                if ku.key_cert_sign() || ku.crl_sign() {
                    f.push("keyUsage keyCertSign/cRLSign on a device certificate".into());
                }
                match key.kind() {
                    KeyKind::P256 | KeyKind::P384 => {
                        if ku.key_encipherment() || ku.data_encipherment() {
                            f.push("keyEncipherment/dataEncipherment with an EC key (use keyAgreement)".into());
                        }
                    }
                    KeyKind::Rsa(_) => {
                        if ku.key_agreement() {
                            f.push("keyAgreement with an RSA key".into());
                        }
                    }
                    KeyKind::Ed25519 => {
                        if ku.key_encipherment() || ku.data_encipherment() || ku.key_agreement() {
                            f.push("Ed25519 keys only sign: key usage allows digitalSignature and nonRepudiation".into());
                        }
                    }
                }
                if !(ku.digital_signature()
                    || ku.non_repudiation()
                    || ku.key_agreement()
                    || ku.key_encipherment())
                {
                    f.push("keyUsage grants nothing a device uses".into());
                }
            }
            ParsedExtension::SubjectKeyIdentifier(_) => ski_seen = true,
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki_ok = aki
                    .key_identifier
                    .as_ref()
                    .is_some_and(|k| k.0 == ca.key_id.as_slice());
                if !aki_ok {
                    f.push("authorityKeyIdentifier does not match the CA's key identifier".into());
                }
            }
            ParsedExtension::SubjectAlternativeName(s) => {
                san = Some((ext.critical, s.general_names.len()));
                for g in &s.general_names {
                    if let Some(why) = san_syntax(g) {
                        f.push(format!("subjectAltName {why}"));
                    }
                }
            }
            ParsedExtension::NameConstraints(_)
            | ParsedExtension::PolicyConstraints(_)
            | ParsedExtension::InhibitAnyPolicy(_)
            | ParsedExtension::PolicyMappings(_) => f.push(format!(
                "extension {} ({}) belongs on CA certificates only (RFC 5280 §4.2.1)",
                ext.oid,
                ca_only_name(&ext.oid.to_id_string()).unwrap_or("CA-only")
            )),
            ParsedExtension::UnsupportedExtension { .. } | ParsedExtension::ParseError { .. }
                if ext.critical =>
            {
                let known = extra_critical_ok
                    .iter()
                    .any(|o| o.to_string() == ext.oid.to_id_string());
                if !known {
                    f.push(format!(
                        "critical extension {} that relying parties may not know",
                        ext.oid
                    ));
                }
            }
            ParsedExtension::ParseError { error } => {
                f.push(format!("extension {} does not parse: {error}", ext.oid))
            }
            _ => {}
        }
    }
    if !bc_ok && !f.iter().any(|x| x.contains("basicConstraints")) {
        f.push("basicConstraints (critical, CA:FALSE) missing".into());
    }
    if !ku_seen {
        f.push("keyUsage missing".into());
    }
    if !ski_seen {
        f.push("subjectKeyIdentifier missing".into());
    }
    if !aki_ok && !f.iter().any(|x| x.contains("authorityKeyIdentifier")) {
        f.push("authorityKeyIdentifier missing".into());
    }
    let subject_empty = tbs_c.subject.iter_attributes().next().is_none();
    match san {
        None if subject_empty => f.push("empty subject and no subjectAltName".into()),
        Some((false, _)) if subject_empty => {
            f.push("subjectAltName must be critical when the subject is empty".into())
        }
        Some((_, 0)) => f.push("subjectAltName is empty".into()),
        _ => {}
    }
    for cn in tbs_c.subject.iter_common_name() {
        if let Ok(s) = cn.as_str() {
            if s.chars().count() > 64 {
                f.push("commonName longer than 64 characters (RFC 5280 ub-common-name)".into());
            }
        }
    }
    if let Some(p) = profile {
        preset_rules(p, &cert, key, ca, &mut f);
    }
    f
}

fn ca_only_name(oid: &str) -> Option<&'static str> {
    crate::profile::CA_ONLY
        .iter()
        .find(|(o, _)| *o == oid)
        .map(|(_, n)| *n)
}

/// Why a general name in the SAN is not what its type says, if it is not; re-checked here on
/// the independent parser's view of the certificate.
fn san_syntax(g: &GeneralName<'_>) -> Option<String> {
    let (kind, r) = match g {
        GeneralName::DNSName(v) => ("dNSName", crate::profile::san::dns_name(v)),
        GeneralName::URI(v) => ("uniformResourceIdentifier", crate::profile::san::uri(v)),
        GeneralName::RFC822Name(v) => ("rfc822Name", crate::profile::san::email(v)),
        GeneralName::IPAddress(b) if b.len() == 4 || b.len() == 16 => return None,
        GeneralName::IPAddress(b) => {
            return Some(format!(
                "iPAddress of {} octets; an address is 4 (IPv4) or 16 (IPv6)",
                b.len()
            ))
        }
        _ => return None,
    };
    r.err().map(|why| {
        let shown = match g {
            GeneralName::DNSName(v) | GeneralName::URI(v) | GeneralName::RFC822Name(v) => {
                crate::text::escape(v)
            }
            _ => String::new(),
        };
        format!("{kind} \"{shown}\": {why}")
    })
}

fn preset_rules(
    p: &Profile,
    cert: &X509Certificate<'_>,
    key: &PublicKey,
    ca: &CaCert,
    f: &mut Vec<String>,
) {
    let attr = |oid: &der::asn1::ObjectIdentifier| {
        let want = oid.to_string();
        cert.subject()
            .iter_attributes()
            .find(|a| a.attr_type().to_id_string() == want)
            .and_then(|a| a.as_str().ok().map(str::to_string))
    };
    match p.preset {
        Preset::Generic | Preset::AwsIot => {}
        Preset::Idevid => {
            if attr(&const_oid::db::rfc4519::SERIAL_NUMBER).is_none() {
                f.push("IEEE 802.1AR: subject serialNumber missing".into());
            }
        }
        Preset::MatterDac => {
            if key.kind() != KeyKind::P256 {
                f.push("Matter: DAC key must be P-256".into());
            }
            let hex4 = |s: &str| {
                s.len() == 4
                    && s.chars()
                        .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
            };
            match attr(&crate::x509::MATTER_VID) {
                Some(v) if hex4(&v) => {
                    if ca.matter_vid.as_deref().is_some_and(|pai| pai != v) {
                        f.push(format!("Matter: DAC VID {v} differs from the PAI's VID"));
                    }
                }
                _ => f.push("Matter: subject VID must be 4 upper-case hex digits".into()),
            }
            if !attr(&crate::x509::MATTER_PID).is_some_and(|v| hex4(&v)) {
                f.push("Matter: subject PID must be 4 upper-case hex digits".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Pure logic: a software CA stands in for the HSM here (the lint never touches the token).
    use super::*;
    use crate::ca::{self_sign, CaParams};
    use crate::x509::AttrType;
    use crate::x509::{
        authority_key_id, basic_constraints, build_tbs, key_usage, name, subject_key_id, CertSpec,
    };
    use ::time::{Duration, OffsetDateTime};
    use std::str::FromStr;
    use x509_cert::ext::pkix::KeyUsages;

    struct Fixture {
        ca: CaCert,
        ca_signer: SoftSigner,
        device: SoftSigner,
        now: OffsetDateTime,
    }

    fn fixture() -> Fixture {
        let ca_signer = SoftSigner::generate_p256();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let der = self_sign(
            &ca_signer,
            &CaParams {
                subject: Some(x509_cert::name::Name::from_str("CN=Test CA").unwrap()),
                not_before: now - Duration::days(1),
                not_after: Some(now + Duration::days(3650)),
                path_len: Some(0),
                serial_prefix: 1,
            },
        )
        .unwrap();
        Fixture {
            ca: CaCert::from_der(der, "test-ca".into()).unwrap(),
            ca_signer,
            device: SoftSigner::generate_p256(),
            now,
        }
    }

    fn good_spec(f: &Fixture) -> CertSpec {
        let pk = f.device.public_key();
        CertSpec {
            serial: vec![1; 17],
            signature: f.ca_signer.algorithm(),
            issuer: f.ca.subject.clone(),
            subject: name(&[(AttrType::from_str("CN").unwrap(), "SN1".into())]).unwrap(),
            not_before: f.now,
            not_after: Some(f.now + Duration::days(365)),
            spki: pk.spki_der().to_vec(),
            extensions: vec![
                basic_constraints(false, None).unwrap(),
                key_usage(KeyUsages::DigitalSignature.into()).unwrap(),
                subject_key_id(&crate::crypto::key_identifier(&pk.subject_public_key())).unwrap(),
                authority_key_id(&f.ca.key_id).unwrap(),
            ],
        }
    }

    fn findings(f: &Fixture, spec: &CertSpec) -> Vec<String> {
        let tbs = build_tbs(spec).unwrap();
        lint(
            &tbs,
            spec.signature,
            f.device.public_key(),
            &f.ca,
            None,
            &[],
        )
    }

    #[test]
    fn clean_certificate_passes() {
        let f = fixture();
        assert_eq!(findings(&f, &good_spec(&f)), Vec::<String>::new());
    }

    #[test]
    fn each_violation_is_found() {
        let f = fixture();
        type Mutation = Box<dyn Fn(&mut CertSpec)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("serial is zero", Box::new(|s| s.serial = vec![0])),
            (
                "CA:TRUE",
                Box::new(|s| s.extensions[0] = basic_constraints(true, None).unwrap()),
            ),
            (
                "keyEncipherment/dataEncipherment with an EC key",
                Box::new(|s| {
                    s.extensions[1] = key_usage(KeyUsages::KeyEncipherment.into()).unwrap()
                }),
            ),
            (
                "keyCertSign/cRLSign",
                Box::new(|s| {
                    s.extensions[1] =
                        key_usage(KeyUsages::DigitalSignature | KeyUsages::KeyCertSign).unwrap()
                }),
            ),
            (
                "notAfter is after the CA's",
                Box::new(|s| s.not_after = Some(s.not_before + Duration::days(20_000))),
            ),
            (
                "notBefore is before the CA's",
                Box::new(|s| s.not_before -= Duration::days(30)),
            ),
            (
                "issuer name does not match",
                Box::new(|s| s.issuer = x509_cert::name::Name::from_str("CN=Other").unwrap()),
            ),
            (
                "authorityKeyIdentifier does not match",
                Box::new(|s| s.extensions[3] = authority_key_id(&[9; 20]).unwrap()),
            ),
            (
                "appears twice",
                Box::new(|s| s.extensions.push(basic_constraints(false, None).unwrap())),
            ),
            (
                "subjectKeyIdentifier missing",
                Box::new(|s| {
                    s.extensions.remove(2);
                }),
            ),
            (
                "empty subject and no subjectAltName",
                Box::new(|s| s.subject = x509_cert::name::RdnSequence(vec![])),
            ),
            (
                "critical extension 1.2.3.4",
                Box::new(|s| {
                    s.extensions.push(x509_cert::ext::Extension {
                        extn_id: der::asn1::ObjectIdentifier::new_unwrap("1.2.3.4"),
                        critical: true,
                        extn_value: der::asn1::OctetString::new(vec![5, 0]).unwrap(),
                    })
                }),
            ),
            (
                "subjectPublicKeyInfo is not the requested key",
                Box::new(|s| s.spki = SoftSigner::generate_p256().public_key().spki_der().to_vec()),
            ),
            (
                "nameConstraints) belongs on CA certificates only",
                Box::new(|s| {
                    // Critical nameConstraints permitting dNSName example.com.
                    s.extensions.push(x509_cert::ext::Extension {
                        extn_id: der::asn1::ObjectIdentifier::new_unwrap("2.5.29.30"),
                        critical: true,
                        extn_value: der::asn1::OctetString::new(
                            hex::decode("3011a00f300d820b6578616d706c652e636f6d").unwrap(),
                        )
                        .unwrap(),
                    })
                }),
            ),
            (
                "inhibitAnyPolicy) belongs on CA certificates only",
                Box::new(|s| {
                    s.extensions.push(x509_cert::ext::Extension {
                        extn_id: der::asn1::ObjectIdentifier::new_unwrap("2.5.29.54"),
                        critical: true,
                        extn_value: der::asn1::OctetString::new(vec![2, 1, 0]).unwrap(),
                    })
                }),
            ),
            (
                "policyConstraints) belongs on CA certificates only",
                Box::new(|s| {
                    s.extensions.push(x509_cert::ext::Extension {
                        extn_id: der::asn1::ObjectIdentifier::new_unwrap("2.5.29.36"),
                        critical: true,
                        extn_value: der::asn1::OctetString::new(vec![0x30, 3, 0x80, 1, 0]).unwrap(),
                    })
                }),
            ),
            (
                "pathLenConstraint on a device certificate",
                Box::new(|s| s.extensions[0] = basic_constraints(false, Some(0)).unwrap()),
            ),
            (
                "dNSName \"a/../b.example\"",
                Box::new(|s| {
                    use x509_cert::ext::pkix::name::GeneralName as G;
                    s.extensions.push(
                        crate::x509::subject_alt_name(
                            vec![G::DnsName(
                                der::asn1::Ia5String::new("a/../b.example").unwrap(),
                            )],
                            false,
                        )
                        .unwrap(),
                    )
                }),
            ),
            (
                "iPAddress of 5 octets",
                Box::new(|s| {
                    use x509_cert::ext::pkix::name::GeneralName as G;
                    s.extensions.push(
                        crate::x509::subject_alt_name(
                            vec![G::IpAddress(
                                der::asn1::OctetString::new(vec![1; 5]).unwrap(),
                            )],
                            false,
                        )
                        .unwrap(),
                    )
                }),
            ),
        ];
        for (want, mutate) in cases {
            let mut spec = good_spec(&f);
            mutate(&mut spec);
            let got = findings(&f, &spec);
            assert!(
                got.iter().any(|g| g.contains(want)),
                "expected '{want}', got {got:?}"
            );
        }
    }
}
