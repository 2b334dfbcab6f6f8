//! The certificate lifecycle after day one: revocation ([`revoke`]), CRLs ([`crl`]), rotation
//! of a device's key in the field ([`renew`]), CA rollover and expiry warnings ([`ca_status`]),
//! the revocation lists cloud platforms need ([`revocations`]) and the tenant rule exporters and
//! audits share ([`tenant`]).

pub mod ca_status;
pub mod crl;
pub mod renew;
pub mod revocations;
pub mod revoke;
pub mod tenant;

pub use revocations::{revocations, RevokedEntry};

/// Why a lifecycle operation stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// The request names nothing the ledger knows, or the ledger's rules refuse it.
    #[error("{0}")]
    Refused(String),
    /// Bad arguments or configuration.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    /// Building or signing.
    #[error(transparent)]
    Issue(#[from] crate::issue::IssueError),
    /// A recorded certificate does not parse (the ledger is damaged).
    #[error("certificate in the ledger does not parse: {0}")]
    Corrupt(String),
}

impl LifecycleError {
    /// The exit code: refusals 3, usage 2, ledger and damaged records 5, issuance its own.
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            Self::Refused(_) => crate::exit::ExitCode::Rejected,
            Self::Usage(_) => crate::exit::ExitCode::Usage,
            Self::Ledger(_) | Self::Corrupt(_) => crate::exit::ExitCode::Storage,
            Self::Issue(i) => i.exit_code(),
        }
    }
}

impl From<crate::issue::RecordError> for LifecycleError {
    fn from(e: crate::issue::RecordError) -> Self {
        use crate::issue::RecordError as R;
        match e {
            R::Ledger(l) => Self::Ledger(l),
            R::Sign(i) => Self::Issue(i),
            R::Refused(r) => Self::Refused(r),
        }
    }
}

/// RFC 5280 §5.3.1 revocation reasons certfab records. `certificateHold` and
/// `removeFromCRL` are not offered: revocation in certfab is final (a held certificate would
/// need un-revoking, which a factory has no use for), and `aACompromise` concerns attribute
/// certificates only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Reason {
    /// unspecified (0): the CRL entry carries no reasonCode (RFC 5280: SHOULD be absent).
    #[serde(rename = "unspecified")]
    Unspecified,
    /// keyCompromise (1).
    #[serde(rename = "keyCompromise")]
    KeyCompromise,
    /// cACompromise (2).
    #[serde(rename = "cACompromise")]
    CaCompromise,
    /// affiliationChanged (3).
    #[serde(rename = "affiliationChanged")]
    AffiliationChanged,
    /// superseded (4).
    #[serde(rename = "superseded")]
    Superseded,
    /// cessationOfOperation (5).
    #[serde(rename = "cessationOfOperation")]
    CessationOfOperation,
    /// privilegeWithdrawn (9).
    #[serde(rename = "privilegeWithdrawn")]
    PrivilegeWithdrawn,
}

impl Reason {
    /// Every reason, in code order.
    pub const ALL: [Reason; 7] = [
        Reason::Unspecified,
        Reason::KeyCompromise,
        Reason::CaCompromise,
        Reason::AffiliationChanged,
        Reason::Superseded,
        Reason::CessationOfOperation,
        Reason::PrivilegeWithdrawn,
    ];

    /// The RFC 5280 name (as recorded in the ledger).
    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "keyCompromise",
            Self::CaCompromise => "cACompromise",
            Self::AffiliationChanged => "affiliationChanged",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessationOfOperation",
            Self::PrivilegeWithdrawn => "privilegeWithdrawn",
        }
    }

    /// The CRLReason value for the CRL entry; `None` for unspecified.
    pub fn crl_reason(self) -> Option<x509_cert::ext::pkix::CrlReason> {
        use x509_cert::ext::pkix::CrlReason as R;
        Some(match self {
            Self::Unspecified => return None,
            Self::KeyCompromise => R::KeyCompromise,
            Self::CaCompromise => R::CaCompromise,
            Self::AffiliationChanged => R::AffiliationChanged,
            Self::Superseded => R::Superseded,
            Self::CessationOfOperation => R::CessationOfOperation,
            Self::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
        })
    }
}

impl std::str::FromStr for Reason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let hint = if s.eq_ignore_ascii_case("certificateHold")
                    || s.eq_ignore_ascii_case("removeFromCRL")
                {
                    " (certfab does not support certificate hold: revocation is final)"
                } else {
                    ""
                };
                format!(
                    "unknown revocation reason '{s}'{hint}; use one of {}",
                    Self::ALL.map(Self::name).join(", ")
                )
            })
    }
}

/// The SPKI SHA-256 (hex) of a certificate.
pub(crate) fn spki_sha256(der: &[u8]) -> Result<String, LifecycleError> {
    use der::{Decode, Encode};
    let c = x509_cert::Certificate::from_der(der)
        .map_err(|e| LifecycleError::Corrupt(e.to_string()))?;
    let spki = c
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| LifecycleError::Corrupt(e.to_string()))?;
    Ok(hex::encode(crate::crypto::sha256(&spki)))
}
