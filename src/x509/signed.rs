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

/// PEM text for a certificate.
pub fn pem(der: &[u8]) -> String {
    pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, der).unwrap_or_default()
}
