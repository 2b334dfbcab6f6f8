//! Signed structures (certificates, CSRs) taken apart without re-encoding, and PEM armour.

use der::{Decode, Reader, SliceReader};

/// Splits a signed structure (CSR or certificate) into the exact signed bytes, the algorithm
/// and the signature. The signed bytes are taken as sent, never re-encoded.
pub fn split_signed(der: &[u8]) -> der::Result<(&[u8], spki::AlgorithmIdentifierRef<'_>, &[u8])> {
    let mut r = SliceReader::new(der)?;
    let outer = der::Header::decode(&mut r)?;
    outer.tag.assert_eq(der::Tag::Sequence)?;
    let start: usize = r.position().try_into()?;
    let inner = der::Header::decode(&mut r)?;
    r.read_slice(inner.length)?;
    let end: usize = r.position().try_into()?;
    let alg = spki::AlgorithmIdentifierRef::decode(&mut r)?;
    let sig = der::asn1::BitStringRef::decode(&mut r)?;
    r.finish(())?;
    let sig = sig.as_bytes().ok_or(der::Tag::BitString.value_error())?;
    Ok((&der[start..end], alg, sig))
}

/// A certificate's serial number as its INTEGER's content octets (what x509-parser's
/// `raw_serial` gives), read without decoding the rest of the certificate: writing a batch's
/// bundle line needs only the serial, and a full parse per device cost as much as the line.
pub fn cert_serial(der: &[u8]) -> der::Result<&[u8]> {
    tbs_past_serial(der).map(|(_, _, serial)| serial)
}

/// A certificate's TBS, a reader over it just past the serial number, and the serial's
/// content octets: the walk [`cert_serial`] and [`cert_spki`] share.
fn tbs_past_serial(der: &[u8]) -> der::Result<(&[u8], SliceReader<'_>, &[u8])> {
    let (tbs, _, _) = split_signed(der)?;
    let mut r = SliceReader::new(tbs)?;
    der::Header::decode(&mut r)?
        .tag
        .assert_eq(der::Tag::Sequence)?;
    let mut h = der::Header::decode(&mut r)?;
    if h.tag
        == (der::Tag::ContextSpecific {
            constructed: true,
            number: der::TagNumber::N0,
        })
    {
        // [0] EXPLICIT version
        r.read_slice(h.length)?;
        h = der::Header::decode(&mut r)?;
    }
    h.tag.assert_eq(der::Tag::Integer)?;
    let serial = r.read_slice(h.length)?;
    Ok((tbs, r, serial))
}

/// A certificate's SubjectPublicKeyInfo as it stands in the certificate (its DER, header
/// included), read without decoding the rest: a station checks each device's proof of
/// possession with its certificate's key, and a full decode of the certificate cost more
/// than taking the key from it.
pub fn cert_spki(der: &[u8]) -> der::Result<&[u8]> {
    let (tbs, mut r, _) = tbs_past_serial(der)?;
    // signature, issuer, validity, subject
    for _ in 0..4 {
        let h = der::Header::decode(&mut r)?;
        h.tag.assert_eq(der::Tag::Sequence)?;
        r.read_slice(h.length)?;
    }
    let start: usize = r.position().try_into()?;
    let h = der::Header::decode(&mut r)?;
    h.tag.assert_eq(der::Tag::Sequence)?;
    r.read_slice(h.length)?;
    let end: usize = r.position().try_into()?;
    Ok(&tbs[start..end])
}

/// PEM text for a certificate.
pub fn pem(der: &[u8]) -> String {
    pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, der).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Signer, SoftSigner};
    use crate::x509::{assemble, basic_constraints, build_tbs, CertSpec};
    use std::str::FromStr;
    use x509_parser::prelude::*;

    /// The serial read from the DER is x509-parser's `raw_serial`, with and without a leading
    /// zero octet (a serial whose top bit is set, given with or without it); the key read
    /// from it is x509-cert's SubjectPublicKeyInfo, encoded.
    #[test]
    fn cert_serial_and_spki_are_the_parsers() {
        let key = SoftSigner::generate_p256();
        for serial in [
            vec![0x42, 0x01],
            vec![0x00, 0x80, 0x01, 0x02],
            vec![0x80, 0x01],
            vec![0x01; 20],
        ] {
            let tbs = build_tbs(&CertSpec {
                serial: serial.clone(),
                signature: key.algorithm(),
                issuer: x509_cert::name::Name::from_str("CN=Issuer").unwrap(),
                subject: x509_cert::name::Name::from_str("CN=SN-1").unwrap(),
                not_before: ::time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
                not_after: None,
                spki: key.public_key().spki_der().to_vec(),
                extensions: vec![basic_constraints(false, None).unwrap()],
            })
            .unwrap();
            let der = assemble(&tbs, key.algorithm(), &key.sign(&tbs).unwrap()).unwrap();
            let (_, parsed) = X509Certificate::from_der(&der).unwrap();
            assert_eq!(
                cert_serial(&der).unwrap(),
                parsed.tbs_certificate.raw_serial()
            );
            // And x509-cert's, whose hex station mode printed and stored before it read the
            // serial this way.
            let cert = <x509_cert::Certificate as der::Decode>::from_der(&der).unwrap();
            assert_eq!(
                cert_serial(&der).unwrap(),
                cert.tbs_certificate.serial_number.as_bytes()
            );
            assert_eq!(
                cert_spki(&der).unwrap(),
                der::Encode::to_der(&cert.tbs_certificate.subject_public_key_info).unwrap()
            );
            assert_eq!(cert_spki(&der).unwrap(), key.public_key().spki_der());
        }
        assert!(cert_serial(b"\x30\x03\x02\x01\x01").is_err());
        assert!(cert_spki(b"\x30\x03\x02\x01\x01").is_err());
    }
}
