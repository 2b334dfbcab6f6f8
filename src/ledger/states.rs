//! The ledger's vocabularies as types. Text appears only where rows are read and written
//! (and where the manifest and JSON outputs print them): everything else matches on the enum.

/// Where a device's key was made, as the `devices.key_origin` column records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyOrigin {
    /// A CSR given to `certfab issue`, `batch` or `renew` (proof of possession checked).
    Csr,
    /// A bare public key given in a file.
    Pubkey,
    /// Generated on this host by certfab (batch `--keygen host`, station `keygen: host`, the
    /// fleet claim).
    Host,
    /// Generated on the device at a station (its CSR).
    Device,
}

impl KeyOrigin {
    /// The ledger's (and `certfab issue --json`'s) name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csr => "csr",
            Self::Pubkey => "pubkey",
            Self::Host => "host",
            Self::Device => "device",
        }
    }
}

impl std::fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
