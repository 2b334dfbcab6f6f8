//! Cloud pre-registration exports, derived from a verified manifest.
//!
//! Exporters never read the ledger or loose certificate files: their only input is an
//! [`ExportInput`], which is built from a manifest whose signature, chain, Merkle root and
//! count have already been verified. Each exporter is a pure function of that input (plus the
//! HSM where a platform needs something signed, e.g. a verification certificate), so the same
//! manifest always yields the same files.

use std::collections::BTreeMap;

pub mod azure;
pub mod csv;
pub mod hono;
pub mod microchip;
pub mod nrfcloud;
pub mod peridio;
pub mod support;

/// One device as the verified manifest records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportDevice {
    /// Position in the manifest (1-based, as in the manifest's device lines).
    pub seq: u64,
    /// Device id (the ledger's and the certificate's).
    pub device_id: String,
    /// Certificate serial number, lower-case hex without separators.
    pub serial: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The certificate, PEM (as in the manifest).
    pub cert_pem: String,
    /// SHA-256 of the certificate DER, lower-case hex (AWS's certificate id).
    pub cert_sha256: String,
    /// SHA-256 of the SubjectPublicKeyInfo DER, lower-case hex.
    pub spki_sha256: String,
    /// notBefore, RFC 3339 UTC.
    pub not_before: String,
    /// notAfter, RFC 3339 UTC, or `99991231235959Z`'s RFC 3339 form for "no expiry".
    pub not_after: String,
    /// Where the key was made: `device`, `host` or `csr-file`.
    pub key_origin: String,
    /// Final ledger state when the manifest was built (e.g. `installed`, `signed`).
    pub state: String,
    /// Cloud attributes rendered from the profile's `cloud:` section for this device
    /// (e.g. `thing_name`, `registration_id`, `attributes`); exporters document the keys they use.
    pub cloud: serde_json::Map<String, serde_json::Value>,
}

/// Everything an exporter may use: the manifest's header facts and its devices.
#[derive(Debug, Clone)]
pub struct ExportInput {
    /// The manifest file this came from (for messages and the summary).
    pub manifest_path: std::path::PathBuf,
    /// SHA-256 of the manifest file, lower-case hex.
    pub manifest_sha256: String,
    /// Batch or station-shift ids covered (several after `manifest merge`).
    pub batch_ids: Vec<String>,
    /// Station ids covered.
    pub station_ids: Vec<String>,
    /// Profile name.
    pub profile: String,
    /// Tenant, when the profile/site declares one (exports never mix tenants).
    pub tenant: Option<String>,
    /// The issuing CA certificate (PEM) the devices chain to, then the chain above it,
    /// nearest first (root last, if the site lists it).
    pub ca_chain_pem: Vec<String>,
    /// The devices, in manifest order.
    pub devices: Vec<ExportDevice>,
    /// Profile-level cloud settings (the profile's `cloud:` section, unrendered keys that are
    /// not per-device, e.g. `aws.thing_type`, `azure.iot_hub_host_name`).
    pub cloud: BTreeMap<String, serde_json::Value>,
}

/// One file an exporter produces, relative to the `--out` directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFile {
    /// Relative path (e.g. `aws-bulk-0001.jsonl`).
    pub name: String,
    /// Content.
    pub bytes: Vec<u8>,
    /// Devices in this file (0 for templates, policies and CA material).
    pub devices: usize,
    /// What the file is for and which console page or API call consumes it.
    pub consumer: String,
}
