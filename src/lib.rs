//! certfab: a certificate factory for manufacturing lines.
//!
//! CA keys live in an HSM reached over PKCS#11 ([`hsm`]); device certificates are built from
//! device-class profiles ([`profile`]) by one issuance pipeline ([`issue`]): parse → proof of
//! possession → key policy → name policy → TBS → lint → HSM sign → verify.
// One audited exception: `process::die_with_parent` (a pre-exec hook, the only way to set
// the adapter's parent-death signal); everything else stays free of unsafe code.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod auditlog;
pub mod batch;
pub mod ca;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod csr;
pub mod error;
mod exit;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod hsm;
pub mod identity;
pub mod input;
pub mod issue;
#[cfg(test)]
mod layers;
pub mod ledger;
pub mod lifecycle;
pub mod manifest;
pub mod output;
pub mod pkcs11_uri;
pub mod process;
pub mod profile;
pub mod secret;
pub mod site;
pub mod station;
pub mod text;
pub mod x509;
pub mod yaml;

pub use error::{Error, ExitCode};
