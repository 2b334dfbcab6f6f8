//! Manifests: the signed, Merkle-bound record of a batch or station shift, built from the
//! ledger only and verifiable offline with certfab alone ([docs/manifest.md]).
//!
//! [docs/manifest.md]: ../../docs/manifest.md

pub mod canon;
pub mod jws;
