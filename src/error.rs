//! The top-level error and the one place exit codes are decided (DESIGN.md "Exit codes").

use crate::ca::{CaError, CeremonyError};
use crate::config::ConfigError;
use crate::hsm::{HsmError, UriError};
use crate::issue::IssueError;
use crate::secret::SecretError;
use crate::signer::SignError;
use crate::yaml::YamlError;

/// Documented process exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Success.
    Ok = 0,
    /// Usage or configuration error.
    Usage = 2,
    /// Input rejected by policy.
    Rejected = 3,
    /// HSM unavailable or login refused.
    Hsm = 4,
    /// Ledger or output storage failure.
    Storage = 5,
    /// Device or station failure.
    Station = 6,
    /// Batch finished with some devices failed.
    Partial = 10,
    /// Stopped by Ctrl-C / SIGINT / SIGTERM after finishing the devices in flight.
    Interrupted = 130,
}

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
    /// HSM.
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
        /// The file.
        path: String,
        /// What is wrong and the fix.
        msg: String,
        /// Exit code.
        code: ExitCode,
    },
    /// Writing output failed.
    #[error("cannot write {path}: {msg}")]
    Output {
        /// The file.
        path: String,
        /// Why.
        msg: String,
    },
    /// Ledger.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    /// Batch.
    #[error(transparent)]
    Batch(#[from] crate::batch::BatchError),
    /// Station.
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
    /// The exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Config(_)
            | Self::Yaml(_)
            | Self::Secret(_)
            | Self::Uri(_)
            | Self::Ca(_)
            | Self::Usage(_) => ExitCode::Usage,
            Self::Hsm(h) => hsm_code(h),
            Self::Ceremony(CeremonyError::Sign(SignError::Hsm(h))) => hsm_code(h),
            Self::Ceremony(CeremonyError::Csr(_)) => ExitCode::Rejected,
            Self::Ceremony(_) => ExitCode::Usage,
            Self::Issue(IssueError::Policy(_) | IssueError::Lint(_)) => ExitCode::Rejected,
            Self::Issue(IssueError::Sign(SignError::Hsm(h))) => hsm_code(h),
            Self::Issue(IssueError::Build(_)) => ExitCode::Rejected,
            Self::Issue(_) => ExitCode::Hsm,
            Self::Input { code, .. } => *code,
            Self::Output { .. } | Self::Ledger(_) => ExitCode::Storage,
            Self::Batch(b) => match b {
                crate::batch::BatchError::Input(_) | crate::batch::BatchError::Usage(_) => {
                    ExitCode::Usage
                }
                crate::batch::BatchError::Ledger(_)
                | crate::batch::BatchError::Output(_)
                | crate::batch::BatchError::OutputUnsigned(_) => ExitCode::Storage,
                crate::batch::BatchError::Sign(IssueError::Sign(SignError::Hsm(h))) => hsm_code(h),
                crate::batch::BatchError::Sign(_) => ExitCode::Hsm,
                crate::batch::BatchError::Refused(_) => ExitCode::Rejected,
            },
            Self::Export(e) => match e {
                crate::export::ExportError::Device { .. }
                | crate::export::ExportError::Input(_) => ExitCode::Rejected,
                crate::export::ExportError::Write { .. } => ExitCode::Storage,
                crate::export::ExportError::Sign {
                    source: SignError::Hsm(h),
                    ..
                } => hsm_code(h),
                crate::export::ExportError::Sign { .. } => ExitCode::Hsm,
                _ => ExitCode::Usage,
            },
            Self::AuditLog(a) => {
                use crate::auditlog::AuditLogError as A;
                match a {
                    A::Ledger(_) => ExitCode::Storage,
                    A::Jws(j) => jws_code(j),
                    A::Broken(_) => ExitCode::Rejected,
                    A::Empty | A::Malformed(_) => ExitCode::Usage,
                }
            }
            Self::Lifecycle(l) => {
                use crate::lifecycle::LifecycleError as L;
                match l {
                    L::Refused(_) => ExitCode::Rejected,
                    L::Usage(_) => ExitCode::Usage,
                    L::Ledger(_) | L::Corrupt(_) => ExitCode::Storage,
                    L::Issue(
                        IssueError::Policy(_) | IssueError::Lint(_) | IssueError::Build(_),
                    ) => ExitCode::Rejected,
                    L::Issue(IssueError::Sign(SignError::Hsm(h))) => hsm_code(h),
                    L::Issue(_) => ExitCode::Hsm,
                }
            }
            Self::Jws(j) => jws_code(j),
            Self::Manifest(m) => {
                use crate::manifest::ManifestError as M;
                match m {
                    M::Read { .. } | M::Trust(_) | M::Usage(_) => ExitCode::Usage,
                    M::Invalid(_) | M::Refused(_) => ExitCode::Rejected,
                    M::Jws(j) => jws_code(j),
                    M::Ledger(_) | M::Write { .. } => ExitCode::Storage,
                }
            }
            Self::Audit(a) => match a {
                crate::audit::CorpusError::File { .. } => ExitCode::Usage,
                crate::audit::CorpusError::Ledger(_) => ExitCode::Storage,
            },
            Self::Station(s) => match s {
                crate::station::StationError::Usage(_) => ExitCode::Usage,
                crate::station::StationError::Adapter { .. } => ExitCode::Station,
                crate::station::StationError::Ledger(_) => ExitCode::Storage,
                crate::station::StationError::Hsm(IssueError::Sign(SignError::Hsm(h))) => {
                    hsm_code(h)
                }
                crate::station::StationError::Hsm(_) => ExitCode::Hsm,
            },
        }
    }
}

fn jws_code(j: &crate::manifest::jws::JwsError) -> ExitCode {
    use crate::manifest::jws::JwsError;
    match j {
        JwsError::Signer(_) => ExitCode::Usage,
        JwsError::Sign(SignError::Hsm(h)) => hsm_code(h),
        JwsError::Sign(_) => ExitCode::Hsm,
        // A signature or chain that does not verify: input rejected.
        _ => ExitCode::Rejected,
    }
}

fn hsm_code(h: &HsmError) -> ExitCode {
    match h {
        // The key exists but does not belong to the configured certificate: a config error.
        HsmError::KeyMismatch { .. } => ExitCode::Usage,
        _ => ExitCode::Hsm,
    }
}
