//! Certificate serial numbers: the station prefix byte, then 16 bytes from the OS CSPRNG.
//! 17 octets, positive (prefix ≤ 0x7f), never starting with 0x00, so DER keeps all 17.

/// Random bytes after the prefix (≥ 16 per CA/Browser Forum practice and DESIGN.md).
pub const RANDOM_BYTES: usize = 16;

/// A fresh serial for a station with `prefix` (0x01..=0x7f).
pub fn new_serial(prefix: u8) -> Result<Vec<u8>, getrandom::Error> {
    debug_assert!((1..=0x7f).contains(&prefix));
    let mut s = vec![0u8; 1 + RANDOM_BYTES];
    s[0] = prefix;
    getrandom::getrandom(&mut s[1..])?;
    Ok(s)
}

/// Where serial numbers come from. Issuance asks its source for every serial, so a test can
/// fix the serial (and with a fixed clock, the whole TBS) and compare certificates byte for
/// byte; production uses [`RandomSerials`].
pub trait SerialSource: Send + Sync {
    /// The serial for the next certificate of a station with `prefix` (0x01..=0x7f).
    fn next_serial(&self, prefix: u8) -> Result<Vec<u8>, getrandom::Error>;
}

/// The station prefix, then [`RANDOM_BYTES`] from the OS CSPRNG ([`new_serial`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomSerials;

impl SerialSource for RandomSerials {
    fn next_serial(&self, prefix: u8) -> Result<Vec<u8>, getrandom::Error> {
        new_serial(prefix)
    }
}

/// The station prefix, then the same fixed bytes every time: for golden tests only (two
/// certificates of one CA with one serial are a defect anywhere else).
#[derive(Debug, Clone)]
pub struct FixedSerials(pub [u8; RANDOM_BYTES]);

impl SerialSource for FixedSerials {
    fn next_serial(&self, prefix: u8) -> Result<Vec<u8>, getrandom::Error> {
        let mut s = Vec::with_capacity(1 + RANDOM_BYTES);
        s.push(prefix);
        s.extend_from_slice(&self.0);
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_positive_prefixed_and_distinct() {
        let a = new_serial(0x7f).unwrap();
        let b = new_serial(0x7f).unwrap();
        assert_eq!(a.len(), 17);
        assert_eq!(a[0], 0x7f);
        assert_ne!(a, b);
        let sn = x509_cert::serial_number::SerialNumber::<x509_cert::certificate::Rfc5280>::new(&a)
            .unwrap();
        assert_eq!(sn.as_bytes(), &a[..]);
    }
}
