//! A certificate as text, in the layout of `openssl x509 -noout -text`, so what `--dry-run`
//! shows before anything is signed reads line for line like what a reviewer would get from
//! OpenSSL after. It renders a TBSCertificate: a dry run has no signature.
//!
//! Where OpenSSL prints nothing useful certfab says more: a hardwareModuleName SAN shows its
//! hwType and hwSerialNum (OpenSSL: `<unsupported>`), and an extension certfab does not know is
//! shown as its DER in hex. Values are escaped ([`crate::text::escape`]): a subject is input.

use super::BuildError;
use crate::crypto::{KeyKind, PublicKey, SignatureAlgorithm};
use const_oid::db::{rfc4519, rfc5280};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use std::fmt::Write as _;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::name::Name;
use x509_cert::time::Time;
use x509_cert::TbsCertificate;

/// `TBSCertificate` DER as `openssl x509 -text` prints a certificate's `Data:` part, headed
/// `Certificate:` (no signature lines: there is none yet).
pub fn tbs_text(tbs_der: &[u8]) -> Result<String, BuildError> {
    let tbs = TbsCertificate::from_der(tbs_der)?;
    let mut o = String::from("Certificate:\n    Data:\n");
    let v = tbs.version as u8;
    let _ = writeln!(o, "        Version: {} (0x{v:x})", v + 1);
    let serial = tbs.serial_number.as_bytes();
    if serial.len() <= 8 && serial.first().is_none_or(|b| b & 0x80 == 0) {
        let n = serial.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
        let _ = writeln!(o, "        Serial Number: {n} (0x{n:x})");
    } else {
        let _ = writeln!(
            o,
            "        Serial Number:\n            {}",
            colon_hex(serial)
        );
    }
    let alg_der = tbs.signature.to_der()?;
    let alg = spki::AlgorithmIdentifierRef::from_der(&alg_der)
        .ok()
        .and_then(|id| SignatureAlgorithm::from_identifier(&id).ok());
    let _ = write!(o, "        Signature Algorithm: ");
    match alg {
        Some(a) => o.push_str(&signature_text(a, "        ")),
        None => {
            let _ = writeln!(o, "{}", tbs.signature.oid);
        }
    }
    let _ = writeln!(o, "        Issuer: {}", name_text(&tbs.issuer));
    let _ = writeln!(
        o,
        "        Validity\n            Not Before: {}\n            Not After : {}",
        time_text(&tbs.validity.not_before),
        time_text(&tbs.validity.not_after)
    );
    let _ = writeln!(o, "        Subject: {}", name_text(&tbs.subject));
    o.push_str("        Subject Public Key Info:\n");
    let spki = tbs.subject_public_key_info.to_der()?;
    match PublicKey::from_spki_der(&spki) {
        Ok(k) => o.push_str(&key_text(&k)),
        Err(_) => {
            let _ = writeln!(
                o,
                "            Public Key Algorithm: {}\n{}",
                tbs.subject_public_key_info.algorithm.oid,
                hex_block(
                    tbs.subject_public_key_info.subject_public_key.raw_bytes(),
                    "                "
                )
            );
        }
    }
    if let Some(exts) = tbs.extensions.as_ref().filter(|e| !e.is_empty()) {
        o.push_str("        X509v3 extensions:\n");
        for x in exts {
            let value = x.extn_value.as_bytes();
            let (name, body) = extension_text(x.extn_id, value);
            let _ = writeln!(
                o,
                "            {name}: {}",
                if x.critical { "critical" } else { "" }
            );
            for line in body.lines() {
                let _ = writeln!(o, "                {line}");
            }
        }
    }
    Ok(o)
}

/// Lower-case hex pairs joined by colons (serials, keys).
fn colon_hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Upper-case hex pairs joined by colons (key identifiers, as OpenSSL prints them).
fn colon_hex_upper(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// OpenSSL's public-key dump: 15 bytes a line, each line but the last ending in a colon.
fn hex_block(b: &[u8], indent: &str) -> String {
    let lines: Vec<String> = b.chunks(15).map(colon_hex).collect();
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{indent}{l}{}", if i + 1 < lines.len() { ":" } else { "" }))
        .collect::<Vec<_>>()
        .join("\n")
}

fn signature_text(a: SignatureAlgorithm, indent: &str) -> String {
    use crate::crypto::HashAlg;
    let h = |h: HashAlg| match h {
        HashAlg::Sha256 => "sha256",
        HashAlg::Sha384 => "sha384",
        HashAlg::Sha512 => "sha512",
    };
    match a {
        SignatureAlgorithm::Ecdsa(x) => format!("ecdsa-with-{}\n", h(x).to_uppercase()),
        SignatureAlgorithm::RsaPkcs1(x) => format!("{}WithRSAEncryption\n", h(x)),
        SignatureAlgorithm::Ed25519 => "ED25519\n".into(),
        SignatureAlgorithm::RsaPss(x) => format!(
            "rsassaPss\n{indent}Hash Algorithm: {0}\n{indent}Mask Algorithm: mgf1 with {0}\n{indent} Salt Length: 0x{1:X}\n{indent}Trailer Field: 0x01 (default)\n",
            h(x),
            x.output_len()
        ),
    }
}

/// The short names OpenSSL prints for the attributes certfab's profiles use; others dotted.
fn attr_name(oid: ObjectIdentifier) -> String {
    match oid {
        rfc4519::CN => "CN".into(),
        rfc4519::O => "O".into(),
        rfc4519::OU => "OU".into(),
        rfc4519::C => "C".into(),
        rfc4519::ST => "ST".into(),
        rfc4519::L => "L".into(),
        rfc4519::SERIAL_NUMBER => "serialNumber".into(),
        rfc4519::DC => "DC".into(),
        rfc4519::UID => "UID".into(),
        const_oid::db::rfc3280::EMAIL_ADDRESS => "emailAddress".into(),
        other => other.to_string(),
    }
}

/// `CN = SN0001, O = certfab development` (OpenSSL's default name layout; multi-valued RDNs
/// joined by ` + `).
fn name_text(n: &Name) -> String {
    n.0.iter()
        .map(|rdn| {
            rdn.0
                .iter()
                .map(|atv| {
                    let v = super::any_text(&atv.value).unwrap_or_else(|| {
                        format!("#{}", hex::encode(atv.value.to_der().unwrap_or_default()))
                    });
                    format!("{} = {}", attr_name(atv.oid), crate::text::escape(&v))
                })
                .collect::<Vec<_>>()
                .join(" + ")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Dec  3 12:45:43 2026 GMT`, as OpenSSL prints ASN.1 times.
fn time_text(t: &Time) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let d = t.to_date_time();
    format!(
        "{} {:>2} {:02}:{:02}:{:02} {} GMT",
        MONTHS[usize::from(d.month().clamp(1, 12)) - 1],
        d.day(),
        d.hour(),
        d.minutes(),
        d.seconds(),
        d.year()
    )
}

fn key_text(k: &PublicKey) -> String {
    let ec = |bits: u32, pubkey: &[u8], oid: &str, nist: &str| {
        format!(
            "            Public Key Algorithm: id-ecPublicKey\n                Public-Key: ({bits} bit)\n                pub:\n{}\n                ASN1 OID: {oid}\n                NIST CURVE: {nist}\n",
            hex_block(pubkey, "                    ")
        )
    };
    match k.kind() {
        KeyKind::P256 => ec(256, &k.subject_public_key(), "prime256v1", "P-256"),
        KeyKind::P384 => ec(384, &k.subject_public_key(), "secp384r1", "P-384"),
        KeyKind::Ed25519 => format!(
            "            Public Key Algorithm: ED25519\n                ED25519 Public-Key:\n                pub:\n{}\n",
            hex_block(&k.subject_public_key(), "                    ")
        ),
        KeyKind::Rsa(bits) => {
            let (n, e) = match k.rsa_parts() {
                Some(p) => p,
                None => return String::new(),
            };
            let mut modulus = n.to_bytes_be();
            // OpenSSL shows the modulus as a DER INTEGER's content: a leading zero when the top
            // bit is set.
            if modulus.first().is_some_and(|b| b & 0x80 != 0) {
                modulus.insert(0, 0);
            }
            let e = e.to_bytes_be().iter().fold(0u64, |a, b| (a << 8) | u64::from(*b));
            format!(
                "            Public Key Algorithm: rsaEncryption\n                Public-Key: ({bits} bit)\n                Modulus:\n{}\n                Exponent: {e} (0x{e:x})\n",
                hex_block(&modulus, "                    ")
            )
        }
    }
}

#[derive(der::Sequence)]
struct HardwareModuleName {
    hw_type: ObjectIdentifier,
    hw_serial_num: OctetString,
}

const HARDWARE_MODULE_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.8.4");

/// The extension's heading as OpenSSL names it, and its value lines.
fn extension_text(oid: ObjectIdentifier, value: &[u8]) -> (String, String) {
    let known = |name: &str, body: Option<String>| match body {
        Some(b) => (name.to_string(), b),
        None => (
            name.to_string(),
            format!("<cannot decode: {}>", hex::encode(value)),
        ),
    };
    match oid {
        rfc5280::ID_CE_BASIC_CONSTRAINTS => known(
            "X509v3 Basic Constraints",
            BasicConstraints::from_der(value).ok().map(|bc| {
                let mut s = format!("CA:{}", if bc.ca { "TRUE" } else { "FALSE" });
                if let Some(p) = bc.path_len_constraint {
                    let _ = write!(s, ", pathlen:{p}");
                }
                s
            }),
        ),
        rfc5280::ID_CE_KEY_USAGE => known(
            "X509v3 Key Usage",
            KeyUsage::from_der(value).ok().map(|ku| {
                [
                    (KeyUsages::DigitalSignature, "Digital Signature"),
                    (KeyUsages::NonRepudiation, "Non Repudiation"),
                    (KeyUsages::KeyEncipherment, "Key Encipherment"),
                    (KeyUsages::DataEncipherment, "Data Encipherment"),
                    (KeyUsages::KeyAgreement, "Key Agreement"),
                    (KeyUsages::KeyCertSign, "Certificate Sign"),
                    (KeyUsages::CRLSign, "CRL Sign"),
                    (KeyUsages::EncipherOnly, "Encipher Only"),
                    (KeyUsages::DecipherOnly, "Decipher Only"),
                ]
                .iter()
                .filter(|(bit, _)| ku.0.contains(*bit))
                .map(|(_, n)| *n)
                .collect::<Vec<_>>()
                .join(", ")
            }),
        ),
        rfc5280::ID_CE_EXT_KEY_USAGE => known(
            "X509v3 Extended Key Usage",
            ExtendedKeyUsage::from_der(value).ok().map(|eku| {
                eku.0
                    .iter()
                    .map(|o| match *o {
                        rfc5280::ID_KP_CLIENT_AUTH => "TLS Web Client Authentication".into(),
                        rfc5280::ID_KP_SERVER_AUTH => "TLS Web Server Authentication".into(),
                        rfc5280::ID_KP_CODE_SIGNING => "Code Signing".into(),
                        rfc5280::ID_KP_EMAIL_PROTECTION => "E-mail Protection".into(),
                        rfc5280::ID_KP_TIME_STAMPING => "Time Stamping".into(),
                        rfc5280::ID_KP_OCSP_SIGNING => "OCSP Signing".into(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<String>>()
                    .join(", ")
            }),
        ),
        rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER => known(
            "X509v3 Subject Key Identifier",
            SubjectKeyIdentifier::from_der(value)
                .ok()
                .map(|s| colon_hex_upper(s.0.as_bytes())),
        ),
        rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER => known(
            "X509v3 Authority Key Identifier",
            AuthorityKeyIdentifier::from_der(value).ok().map(|a| {
                a.key_identifier
                    .map(|k| colon_hex_upper(k.as_bytes()))
                    .unwrap_or_default()
            }),
        ),
        rfc5280::ID_CE_SUBJECT_ALT_NAME => known(
            "X509v3 Subject Alternative Name",
            SubjectAltName::from_der(value).ok().map(|san| {
                san.0
                    .iter()
                    .map(general_name)
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
        ),
        other => (
            const_oid::db::DB
                .by_oid(&other)
                .map(|n| format!("{n} ({other})"))
                .unwrap_or_else(|| other.to_string()),
            format!("DER: {}", colon_hex(value)),
        ),
    }
}

fn general_name(g: &GeneralName) -> String {
    let esc = crate::text::escape;
    match g {
        GeneralName::DnsName(s) => format!("DNS:{}", esc(s.as_str())),
        GeneralName::UniformResourceIdentifier(s) => format!("URI:{}", esc(s.as_str())),
        GeneralName::Rfc822Name(s) => format!("email:{}", esc(s.as_str())),
        GeneralName::IpAddress(b) => match b.as_bytes() {
            [a, b, c, d] => format!("IP Address:{a}.{b}.{c}.{d}"),
            v6 if v6.len() == 16 => format!(
                "IP Address:{}",
                v6.chunks(2)
                    .map(|p| format!("{:X}", u16::from_be_bytes([p[0], p[1]])))
                    .collect::<Vec<_>>()
                    .join(":")
            ),
            other => format!("IP Address:<invalid {}>", colon_hex(other)),
        },
        GeneralName::OtherName(on) if on.type_id == HARDWARE_MODULE_NAME => {
            match on.value.decode_as::<HardwareModuleName>() {
                Ok(h) => format!(
                    "othername: hardwareModuleName::hwType={}, hwSerialNum={}",
                    h.hw_type,
                    match std::str::from_utf8(h.hw_serial_num.as_bytes()) {
                        Ok(s) => esc(s),
                        Err(_) => colon_hex(h.hw_serial_num.as_bytes()),
                    }
                ),
                Err(_) => format!("othername: {}::<cannot decode>", on.type_id),
            }
        }
        GeneralName::OtherName(on) => format!(
            "othername: {}::{}",
            on.type_id,
            colon_hex(&on.value.to_der().unwrap_or_default())
        ),
        GeneralName::DirectoryName(n) => format!("DirName:{}", name_text(n)),
        GeneralName::RegisteredId(o) => format!("Registered ID:{o}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_block_wraps_like_openssl() {
        let b: Vec<u8> = (0..17).collect();
        assert_eq!(
            super::hex_block(&b, "  "),
            "  00:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:\n  0f:10"
        );
    }
}
