//! certfab: a certificate factory for manufacturing lines.
//!
//! CA keys live in an HSM reached over PKCS#11; device certificates are built from
//! device-class profiles by one issuance pipeline (parse → proof of possession → key policy →
//! name policy → TBS → lint → HSM sign → verify) whose ledger half commits every serial and
//! TBS before the HSM sees it. docs/architecture.md describes the modules and their layers.
//!
//! The modules are private; the library's surface is the list below: what the `certfab`
//! binary, the tests and the fuzz targets use. Everything a command does is reachable through
//! it (`run` takes a parsed command line; [`Site`] and [`SiteRef`] open a site in process).
// One audited exception: `process::die_with_parent` (a pre-exec hook, the only way to set
// the adapter's parent-death signal); everything else stays free of unsafe code.
#![deny(unsafe_code)]

mod audit;
mod auditlog;
mod batch;
mod ca;
mod cli;
mod clock;
mod config;
mod crypto;
mod csr;
mod error;
mod exit;
mod export;
#[doc(hidden)]
pub mod fuzzing;
mod hsm;
mod identity;
mod input;
mod issue;
#[cfg(test)]
mod layers;
mod ledger;
mod lifecycle;
mod manifest;
mod output;
mod pkcs11_uri;
mod process;
mod profile;
mod secret;
mod site;
mod station;
mod text;
mod x509;
mod yaml;

// The binary: harden the process, parse, run, print the error once with its exit code.
pub use cli::{run, Cli};
pub use error::{Error, ExitCode};
pub use process::{file_size_limit_hit, file_size_limit_message, harden};
pub use text::escape_keep_lines;

// A site: its config, profiles, token and the sessions that issue on it.
pub use config::SiteConfig;
pub use hsm::{Hsm, HsmError, HsmKey};
pub use pkcs11_uri::Pkcs11Uri;
pub use profile::Profile;
pub use site::{issue_claim, Issuer, IssuingSession, Site, SiteRef};

// Issuance, and what it is built from.
pub use batch::GROUP as BATCH_GROUP;
pub use clock::{rfc3339, Clock, FixedClock, SystemClock};
pub use crypto::{
    raw_ecdsa_to_der, sha256, HashAlg, PublicKey, SignError, SignatureAlgorithm, Signer, SoftSigner,
};
pub use issue::{
    prepare, sign, IssueContext, IssueError, Issued, IssuingCa, KeySource, Prepared, Request,
};
pub use x509::{CaCert, FixedSerials, RandomSerials, SerialSource, RANDOM_BYTES};

// The ledger.
pub use ledger::{
    AuditEvent, CertState, DeviceState, KeyOrigin, Ledger, LedgerError, LedgerLocation,
    ManifestRow, PendingManifest, PgTarget, PgTls, GENESIS,
};

/// Signed checkpoints of the ledger's audit chain and their verification
/// (docs/audit-log.md).
pub mod checkpoints {
    pub use crate::auditlog::{
        checkpoint, read_doc, verify, AuditLogError, CheckpointDoc, CheckpointTrust, VerifyReport,
    };
}

/// Manifests: the canonical line format, the Merkle root, the detached JWS, and offline
/// verification (docs/manifest.md).
pub mod manifests {
    pub use crate::manifest::{
        format, jws, merkle, signature_path, verify, verify_bytes, verify_file, ManifestError,
        Trust, VerifiedManifest,
    };
}

/// Cloud exports rendered from a verified manifest, and each format's renderer
/// (docs/exports.md).
pub mod exports {
    pub use crate::export::{
        aws, azure, claim, csv, export, export_signed, hono, microchip, nrfcloud, peridio,
        preflight, render, render_into, render_signed, sink, stream, support, warnings,
        ClaimMaterial, ExportDevice, ExportError, ExportFile, ExportInput, ExportOptions, Format,
        Out, Summary,
    };
}
