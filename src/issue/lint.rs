//! Pre-issuance lint: the TBS is signed with a throwaway software key, the result re-parsed by
//! an independent parser (x509-parser), and checked against RFC 5280 and the profile. Nothing
//! that fails here reaches the HSM.

use crate::ca::CaCert;
use crate::crypto::{KeyKind, PublicKey, SignatureAlgorithm, SoftSigner};
use crate::profile::{Preset, Profile};
use crate::signer::Signer;
use std::collections::HashSet;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::*;

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
    let throwaway = SoftSigner::generate_p256();
    let der = match throwaway
        .sign(tbs)
        .map_err(|e| e.to_string())
        .and_then(|sig| super::tbs::assemble(tbs, alg, &sig).map_err(|e| e.to_string()))
    {
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
        if !seen.insert(ext.oid.to_id_string()) {
            f.push(format!("extension {} appears twice", ext.oid));
        }
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) => {
                if bc.ca {
                    f.push("basicConstraints CA:TRUE on a device certificate".into());
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
            }
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
            match attr(&crate::profile::MATTER_VID) {
                Some(v) if hex4(&v) => {
                    if ca.matter_vid.as_deref().is_some_and(|pai| pai != v) {
                        f.push(format!("Matter: DAC VID {v} differs from the PAI's VID"));
                    }
                }
                _ => f.push("Matter: subject VID must be 4 upper-case hex digits".into()),
            }
            if !attr(&crate::profile::MATTER_PID).is_some_and(|v| hex4(&v)) {
                f.push("Matter: subject PID must be 4 upper-case hex digits".into());
            }
        }
    }
}
