//! The top-level error: every failure a command can report, each converted from the
//! sub-error that knows its exit code (DESIGN.md "Exit codes"). Nothing is decided here.

pub use crate::exit::ExitCode;

use crate::ca::CeremonyError;
use crate::config::ConfigError;
use crate::hsm::HsmError;
use crate::issue::IssueError;
use crate::pkcs11_uri::UriError;
use crate::secret::SecretError;
use crate::x509::CaError;
use crate::yaml::YamlError;

/// Any failure a certfab command reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Site config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Profile or other YAML.
    #[error(transparent)]
    Yaml(#[from] YamlError),
    /// Secret source.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// PKCS#11 URI.
    #[error(transparent)]
    Uri(#[from] UriError),
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// CA certificate.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// CA ceremony.
    #[error(transparent)]
    Ceremony(#[from] CeremonyError),
    /// Issuance.
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// A file named on the command line (input) could not be used.
    #[error("{path}: {msg}")]
    Input {
        path: String,
        /// What is wrong and the fix.
        msg: String,
        /// Exit code.
        code: ExitCode,
    },
    /// Writing output failed.
    #[error("cannot write {path}: {msg}")]
    Output { path: String, msg: String },
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    /// `ledger import`: refused (conflicts named) or not possible.
    #[error(transparent)]
    Import(#[from] crate::ledger::ImportError),
    #[error(transparent)]
    Batch(#[from] crate::batch::BatchError),
    #[error(transparent)]
    Station(#[from] crate::station::StationError),
    /// Cloud export.
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
    /// Audit log checkpoints.
    #[error(transparent)]
    AuditLog(#[from] crate::auditlog::AuditLogError),
    /// Revocation, CRL, renewal, rollover.
    #[error(transparent)]
    Lifecycle(#[from] crate::lifecycle::LifecycleError),
    /// Manifest build, verify or merge.
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    /// Detached JWS (manifest or audit signature).
    #[error(transparent)]
    Jws(#[from] crate::manifest::jws::JwsError),
    /// Audit input that cannot be read.
    #[error(transparent)]
    Audit(#[from] crate::audit::CorpusError),
    /// A spy log `certfab audit --spy-log` cannot use.
    #[error(transparent)]
    SpyLog(#[from] crate::audit::spy::SpyError),
    /// One device's issuance through the ledger (refused, ledger, or signature).
    #[error(transparent)]
    Record(#[from] crate::issue::RecordError),
    /// Bad argument combination.
    #[error("{0}")]
    Usage(String),
}

impl From<crate::batch::DryRunError> for Error {
    /// A dry run fails as the run it stands for would, with the same exit code.
    fn from(e: crate::batch::DryRunError) -> Self {
        use crate::batch::{BatchError, DryRunError};
        match e {
            DryRunError::Issue(i) => Self::Issue(i),
            DryRunError::Refused(r) => Self::Batch(BatchError::Refused(r)),
            DryRunError::Ledger(l) => Self::Ledger(l),
            DryRunError::Batch(b) => Self::Batch(b),
        }
    }
}

impl Error {
    /// The exit code for this error: the sub-error's own.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Config(e) => e.exit_code(),
            Self::Yaml(e) => e.exit_code(),
            Self::Secret(e) => e.exit_code(),
            Self::Uri(e) => e.exit_code(),
            Self::Hsm(e) => e.exit_code(),
            Self::Ca(e) => e.exit_code(),
            Self::Ceremony(e) => e.exit_code(),
            Self::Issue(e) => e.exit_code(),
            Self::Input { code, .. } => *code,
            Self::Output { .. } => ExitCode::Storage,
            Self::Ledger(e) => e.exit_code(),
            Self::Import(e) => e.exit_code(),
            Self::Batch(e) => e.exit_code(),
            Self::Station(e) => e.exit_code(),
            Self::Export(e) => e.exit_code(),
            Self::AuditLog(e) => e.exit_code(),
            Self::Lifecycle(e) => e.exit_code(),
            Self::Manifest(e) => e.exit_code(),
            Self::Jws(e) => e.exit_code(),
            Self::Audit(e) => e.exit_code(),
            Self::SpyLog(e) => e.exit_code(),
            Self::Record(e) => e.exit_code(),
            Self::Usage(_) => ExitCode::Usage,
        }
    }
}

impl From<crate::issue::ClaimError> for Error {
    fn from(e: crate::issue::ClaimError) -> Self {
        use crate::issue::ClaimError as C;
        match e {
            C::Usage(m) => Error::Usage(m),
            C::Issue(e) => Error::Issue(e),
            C::Record(e) => Error::Record(e),
        }
    }
}

impl From<crate::output::WriteError> for Error {
    fn from(e: crate::output::WriteError) -> Self {
        Error::Output {
            path: e.path.display().to_string(),
            msg: e.msg,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{CryptoError, SignError};
    use crate::hsm::HsmError;
    use crate::issue::IssueError;

    fn mismatch() -> HsmError {
        HsmError::KeyMismatch {
            uri: "pkcs11:object=ca".into(),
            cert: "ca.pem".into(),
        }
    }

    #[test]
    fn item3_sign_error_carries_the_token_error_boxed_with_its_message_and_exit_code() {
        // The signing seam knows nothing of PKCS#11, yet the token's own message and exit
        // code come through it unchanged.
        let s: SignError = mismatch().into();
        assert_eq!(s.to_string(), mismatch().to_string());
        assert_eq!(s.exit_code(), ExitCode::Usage);
        let s: SignError = HsmError::Other("token gone".into()).into();
        assert_eq!(s.exit_code(), ExitCode::Hsm);
        assert_eq!(
            SignError::Crypto(CryptoError::BadSignature).exit_code(),
            ExitCode::Hsm
        );
    }

    #[test]
    fn item4_each_error_knows_its_exit_code_and_the_top_level_only_delegates() {
        let sign = |h: HsmError| IssueError::Sign(h.into());
        let cases: Vec<(Error, ExitCode)> = vec![
            (Error::Issue(sign(mismatch())), ExitCode::Usage),
            (
                Error::Issue(sign(HsmError::Other("x".into()))),
                ExitCode::Hsm,
            ),
            (
                Error::Issue(IssueError::Lint(vec!["x".into()])),
                ExitCode::Rejected,
            ),
            (Error::Issue(IssueError::VerifyFailed), ExitCode::Hsm),
            (
                Error::Ceremony(crate::ca::CeremonyError::Sign(SignError::Crypto(
                    CryptoError::BadSignature,
                ))),
                ExitCode::Usage,
            ),
            (
                Error::Batch(crate::batch::BatchError::Sign(sign(mismatch()))),
                ExitCode::Usage,
            ),
            (
                Error::Batch(crate::batch::BatchError::Refused("x".into())),
                ExitCode::Rejected,
            ),
            (
                Error::Station(crate::station::StationError::Hsm(IssueError::Lint(vec![]))),
                ExitCode::Hsm,
            ),
            (
                Error::Lifecycle(crate::lifecycle::LifecycleError::Issue(IssueError::Lint(
                    vec![],
                ))),
                ExitCode::Rejected,
            ),
            (
                Error::Jws(crate::manifest::jws::JwsError::Sign(mismatch().into())),
                ExitCode::Usage,
            ),
            (
                Error::Export(crate::export::ExportError::Sign {
                    format: "x",
                    source: SignError::Crypto(CryptoError::BadSignature),
                }),
                ExitCode::Hsm,
            ),
            (Error::Hsm(mismatch()), ExitCode::Usage),
            (Error::Usage("x".into()), ExitCode::Usage),
        ];
        for (e, want) in cases {
            assert_eq!(e.exit_code(), want, "{e:?}");
        }
    }
}
