//! Names: subject attribute types as profiles spell them, Name encoding, and reading string
//! attributes back out of a certificate or CSR.

use super::{ia5, parse_oid, BuildError};
use const_oid::ObjectIdentifier;
use der::asn1::{PrintableString, Utf8StringRef};
use der::Tagged;
use std::str::FromStr;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};

/// Matter Vendor ID subject attribute (Matter Core spec §6.5.6.1).
pub const MATTER_VID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.37244.2.1");
/// Matter Product ID subject attribute.
pub const MATTER_PID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.37244.2.2");

/// A subject attribute type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrType {
    pub oid: ObjectIdentifier,
    /// The name used in the profile.
    pub name: String,
    /// Encoded as PrintableString (C, serialNumber); others as UTF8String.
    pub printable: bool,
}

impl AttrType {
    /// The profile name of an attribute OID (`CN`, `serialNumber`, `matter-vid`, …), or the
    /// dotted OID: what `{csr.NAME}` placeholders use.
    pub fn name_of(oid: ObjectIdentifier) -> String {
        for n in [
            "CN",
            "O",
            "OU",
            "C",
            "ST",
            "L",
            "serialNumber",
            "DC",
            "UID",
            "matter-vid",
            "matter-pid",
        ] {
            if Self::from_str(n).is_ok_and(|a| a.oid == oid) {
                return n.into();
            }
        }
        oid.to_string()
    }
}

impl FromStr for AttrType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        use const_oid::db::rfc4519 as n;
        let (oid, printable) = match s {
            "CN" => (n::CN, false),
            "O" => (n::O, false),
            "OU" => (n::OU, false),
            "C" => (n::C, true),
            "ST" => (n::ST, false),
            "L" => (n::L, false),
            "serialNumber" => (n::SERIAL_NUMBER, true),
            "DC" => (n::DC, false),
            "UID" => (n::UID, false),
            "matter-vid" => (MATTER_VID, false),
            "matter-pid" => (MATTER_PID, false),
            other if other.starts_with(|c: char| c.is_ascii_digit()) => (parse_oid(other)?, false),
            other => {
                return Err(format!("unknown subject attribute '{other}'; use CN, O, OU, C, ST, L, serialNumber, DC, UID, matter-vid, matter-pid or a dotted OID"))
            }
        };
        Ok(Self {
            oid,
            name: s.into(),
            printable,
        })
    }
}

/// A Name with one attribute per RDN, in the given order.
pub fn name(attrs: &[(AttrType, String)]) -> Result<Name, BuildError> {
    let mut rdns = Vec::new();
    for (a, v) in attrs {
        // RFC 4519: domainComponent is an IA5String.
        let value = if a.oid == const_oid::db::rfc4519::DC {
            der::Any::encode_from(&ia5(v)?)?
        } else if a.printable {
            der::Any::encode_from(&PrintableString::new(v)?)?
        } else {
            der::Any::encode_from(&Utf8StringRef::new(v)?)?
        };
        let atv = AttributeTypeAndValue { oid: a.oid, value };
        rdns.push(RelativeDistinguishedName(der::asn1::SetOfVec::try_from(
            vec![atv],
        )?));
    }
    Ok(RdnSequence(rdns))
}

/// Value of a subject attribute as text, if it is a string type.
pub fn attr_text(name: &Name, oid: ObjectIdentifier) -> Option<String> {
    name.0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|atv| atv.oid == oid)
        .find_map(|atv| any_text(&atv.value))
}

/// Decodes a string-typed ASN.1 value.
pub fn any_text(v: &der::Any) -> Option<String> {
    use der::asn1::{Ia5StringRef, PrintableStringRef, TeletexStringRef, Utf8StringRef};
    match v.tag() {
        der::Tag::Utf8String => v
            .decode_as::<Utf8StringRef<'_>>()
            .ok()
            .map(|s| s.to_string()),
        der::Tag::PrintableString => v
            .decode_as::<PrintableStringRef<'_>>()
            .ok()
            .map(|s| s.to_string()),
        der::Tag::Ia5String => v
            .decode_as::<Ia5StringRef<'_>>()
            .ok()
            .map(|s| s.to_string()),
        der::Tag::TeletexString => v
            .decode_as::<TeletexStringRef<'_>>()
            .ok()
            .map(|s| s.to_string()),
        _ => None,
    }
}
