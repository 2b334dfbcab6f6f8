//! PKCS#11 `CKM_ECDSA` returns the signature as raw `r‖s` (IEEE P1363); X.509 wants the DER
//! `Ecdsa-Sig-Value` SEQUENCE. The ecdsa crate does the encoding so it is minimal and exact.

use super::CryptoError;

/// Converts a raw `r‖s` ECDSA signature for a curve whose field is `field_len` bytes into DER.
///
/// Rejects a wrong length and `r` or `s` equal to zero or not below the group order.
pub fn raw_ecdsa_to_der(raw: &[u8], field_len: usize) -> Result<Vec<u8>, CryptoError> {
    if raw.len() != 2 * field_len {
        return Err(CryptoError::BadSignature);
    }
    match field_len {
        32 => p256::ecdsa::Signature::from_slice(raw)
            .map(|s| s.to_der().as_bytes().to_vec())
            .map_err(|_| CryptoError::BadSignature),
        48 => p384::ecdsa::Signature::from_slice(raw)
            .map(|s| s.to_der().as_bytes().to_vec())
            .map_err(|_| CryptoError::BadSignature),
        _ => Err(CryptoError::BadSignature),
    }
}

/// Converts a DER `Ecdsa-Sig-Value` into raw `r‖s` (the JWS ES256/ES384 form, RFC 7518
/// §3.4) for a curve whose field is `field_len` bytes.
pub fn der_ecdsa_to_raw(der: &[u8], field_len: usize) -> Result<Vec<u8>, CryptoError> {
    match field_len {
        32 => p256::ecdsa::Signature::from_der(der)
            .map(|s| s.to_bytes().to_vec())
            .map_err(|_| CryptoError::BadSignature),
        48 => p384::ecdsa::Signature::from_der(der)
            .map(|s| s.to_bytes().to_vec())
            .map_err(|_| CryptoError::BadSignature),
        _ => Err(CryptoError::BadSignature),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_wrong_length_and_zero() {
        assert!(raw_ecdsa_to_der(&[1u8; 63], 32).is_err());
        assert!(raw_ecdsa_to_der(&[0u8; 64], 32).is_err());
    }

    #[test]
    fn minimal_integers_with_sign_padding() {
        let mut raw = [0u8; 64];
        raw[31] = 1; // r = 1
        raw[32] = 0x80; // s has its high bit set: needs a 0x00 pad
        let der = raw_ecdsa_to_der(&raw, 32).unwrap();
        assert_eq!(&der[..5], &[0x30, 0x26, 0x02, 0x01, 0x01]);
        assert_eq!(&der[5..8], &[0x02, 0x21, 0x00]);
        assert_eq!(der_ecdsa_to_raw(&der, 32).unwrap(), raw.to_vec());
    }
}
