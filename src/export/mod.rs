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
    /// The devices, in manifest order, when they are held in memory (the library's
    /// [`From<&VerifiedManifest>`]); empty when they are streamed from the file ([`Self::stream`]).
    pub devices: Vec<ExportDevice>,
    /// The devices read again from the verified manifest file, one at a time, instead of
    /// [`Self::devices`] (`certfab export`: memory does not grow with the batch).
    pub stream: Option<stream::DeviceStream>,
    /// Profile-level cloud settings (the profile's `cloud:` section, unrendered keys that are
    /// not per-device, e.g. `aws.thing_type`, `azure.iot_hub_host_name`).
    pub cloud: BTreeMap<String, serde_json::Value>,
}

impl From<&crate::manifest::VerifiedManifest> for ExportInput {
    /// The only way to an export's input from a manifest: the verified header facts and
    /// devices (an unverified manifest has no way in).
    fn from(m: &crate::manifest::VerifiedManifest) -> Self {
        let h = &m.header;
        Self {
            manifest_path: m.path.clone(),
            manifest_sha256: m.sha256.clone(),
            batch_ids: h.batches.clone(),
            station_ids: h.stations.clone(),
            profile: h.profile.clone(),
            tenant: h.tenant.clone(),
            ca_chain_pem: h.ca_chain.clone(),
            devices: m
                .devices
                .iter()
                .map(|d| ExportDevice {
                    seq: d.line.seq,
                    device_id: d.line.device_id.clone(),
                    serial: d.line.serial.clone(),
                    cert_der: d.cert_der.clone(),
                    cert_pem: d.line.cert.clone(),
                    cert_sha256: d.line.cert_sha256.clone(),
                    spki_sha256: d.line.spki_sha256.clone(),
                    not_before: d.line.not_before.clone(),
                    not_after: d.line.not_after.clone(),
                    key_origin: d.line.key_origin.clone(),
                    state: d.line.state.clone(),
                    cloud: d.line.cloud.clone(),
                })
                .collect(),
            cloud: h.cloud.clone().into_iter().collect(),
            stream: None,
        }
    }
}

impl ExportInput {
    /// The input of a manifest verified by a streamed pass that fed `stream` (see
    /// [`stream::DeviceStream::observe`]): devices are read again from the file when rendered.
    pub fn streamed(m: &crate::manifest::VerifiedManifest, stream: stream::DeviceStream) -> Self {
        let mut i = Self::from(m);
        i.devices = Vec::new();
        i.stream = Some(stream);
        i
    }

    /// How many devices the manifest lists.
    pub fn device_count(&self) -> usize {
        match &self.stream {
            Some(s) => s.count,
            None => self.devices.len(),
        }
    }

    /// Hands every device to `f` in manifest order (from the file when streamed).
    pub fn each_device(
        &self,
        f: impl FnMut(&ExportDevice) -> Result<(), ExportError>,
    ) -> Result<(), ExportError> {
        match &self.stream {
            Some(s) => s.each(f),
            None => self.devices.iter().try_for_each(f),
        }
    }

    /// The first device in the manifest.
    pub fn first_device(&self) -> Option<&ExportDevice> {
        match &self.stream {
            Some(s) => s.first.as_ref(),
            None => self.devices.first(),
        }
    }
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

pub mod aws;
pub mod claim;
pub mod sink;
mod spool;
pub mod stream;
#[cfg(test)]
mod write;

pub use sink::Out;

pub use crate::issue::ClaimMaterial;

use std::path::{Path, PathBuf};

/// The export formats `certfab export --format` accepts.
///
/// Names are the CLI spellings. Each format is rendered by one function with the signature
/// `fn(&ExportInput, &ExportOptions) -> Result<Vec<ExportFile>, ExportError>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Format {
    /// AWS IoT bulk registration: NDJSON input file(s) + template + StartThingRegistrationTask.
    AwsBulk,
    /// AWS IoT Just-in-Time Provisioning: template and CA registration bundle.
    AwsJitp,
    /// AWS IoT Just-in-Time Registration: CA registration with auto-registration, rule, allow-list.
    AwsJitr,
    /// AWS IoT multi-account registration: RegisterCertificateWithoutCA requests.
    AwsMultiAccount,
    /// AWS IoT least-privilege device policy (thing-name policy variables).
    AwsPolicy,
    /// AWS IoT Fleet Provisioning by claim: claim certificate, claim policy, template.
    AwsFleetClaim,
    /// Azure IoT Hub DPS individual X.509 enrollments (bulk operation bodies, 10 per call).
    AzureDps,
    /// Azure IoT Hub DPS X.509 enrollment group for the issuing CA.
    AzureDpsGroup,
    /// Eclipse Hono: tenant with the trusted CA, device registrations and x509-cert credentials.
    Hono,
    /// Peridio: CA certificate JITP settings and device records.
    Peridio,
    /// nRF Cloud bulk onboarding CSV (1000 rows a file).
    Nrfcloud,
    /// Microchip-style secure element manifest: a JSON array of per-device JWS, signed by the
    /// manifest signer in the HSM.
    MicrochipJws,
    /// Plain CSV for spreadsheets (formula cells neutralized).
    Csv,
}

impl Format {
    /// The CLI spelling (`aws-bulk`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::AwsBulk => "aws-bulk",
            Self::AwsJitp => "aws-jitp",
            Self::AwsJitr => "aws-jitr",
            Self::AwsMultiAccount => "aws-multi-account",
            Self::AwsPolicy => "aws-policy",
            Self::AwsFleetClaim => "aws-fleet-claim",
            Self::AzureDps => "azure-dps",
            Self::AzureDpsGroup => "azure-dps-group",
            Self::Hono => "hono",
            Self::Peridio => "peridio",
            Self::Nrfcloud => "nrfcloud",
            Self::MicrochipJws => "microchip-jws",
            Self::Csv => "csv",
        }
    }

    /// Whether each device entry is signed by the manifest signer (`signer:` in the site
    /// config) at export time; such formats render through [`render_signed`].
    pub fn needs_signer(self) -> bool {
        matches!(self, Self::MicrochipJws)
    }

    /// Whether the format needs a certificate signed by the HSM at export time (the CLI opens
    /// the site for it and passes the result in [`ExportOptions`]).
    pub fn needs_claim(self) -> bool {
        matches!(self, Self::AwsFleetClaim)
    }
}

/// Options shared by every format.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// At most this many devices per row file (`--max-rows`); `None` = one file.
    pub max_rows: Option<usize>,
    /// Settings from `--set KEY=VALUE` (e.g. `aws.region=eu-west-1`); they override the
    /// profile's `cloud:` settings of the same key.
    pub settings: BTreeMap<String, String>,
    /// A verification certificate (PEM) made by `certfab ca verification-cert`, for formats
    /// that register the CA with proof of possession.
    pub verification_cert_pem: Option<String>,
    /// The claim certificate for [`Format::AwsFleetClaim`].
    pub claim: Option<ClaimMaterial>,
}

/// Why an export could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// A setting the format needs is absent.
    #[error("{format} needs {key}: set it in the profile's cloud: section or pass --set {key}=VALUE ({why})")]
    MissingSetting {
        /// Format name.
        format: &'static str,
        /// Setting key, e.g. `aws.region`.
        key: String,
        /// What it is used for.
        why: String,
    },
    /// A setting has a value the platform would refuse.
    #[error("{key} = {value:?} is not accepted: {why}")]
    BadSetting {
        /// Setting key.
        key: String,
        value: String,
        /// The platform's rule.
        why: String,
    },
    /// A device cannot be exported in this format (e.g. its name breaks the platform's rules).
    #[error("device {device_id} (manifest line {seq}): {why}")]
    Device {
        device_id: String,
        /// Manifest position.
        seq: u64,
        why: String,
    },
    /// The manifest's content does not suit the format.
    #[error("{0}")]
    Input(String),
    /// Bad options.
    #[error("{0}")]
    Usage(String),
    /// The HSM refused to sign an export entry.
    #[error("{format}: signing failed: {source}")]
    Sign {
        /// Format name.
        format: &'static str,
        /// The signer's error.
        #[source]
        source: crate::crypto::SignError,
    },
    /// Output could not be written.
    #[error("cannot write {path}: {msg}")]
    Write { path: PathBuf, msg: String },
}

impl ExportError {
    /// The exit code: a device or input the format cannot take 3, a write 5, a signature the
    /// signer's own code, settings and usage 2.
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            Self::Device { .. } | Self::Input(_) => crate::exit::ExitCode::Rejected,
            Self::Write { .. } => crate::exit::ExitCode::Storage,
            Self::Sign { source, .. } => source.exit_code(),
            Self::MissingSetting { .. } | Self::BadSetting { .. } | Self::Usage(_) => {
                crate::exit::ExitCode::Usage
            }
        }
    }
}

/// Renders `input` in `format` in memory. Nothing is written; see [`export`].
pub fn render(
    format: Format,
    input: &ExportInput,
    opts: &ExportOptions,
) -> Result<Vec<ExportFile>, ExportError> {
    let mut out = Out::memory();
    render_into(format, input, opts, &mut out)?;
    out.into_files()
}

/// Renders `input` in `format` into `out`, a row at a time for the streamed formats.
pub fn render_into(
    format: Format,
    input: &ExportInput,
    opts: &ExportOptions,
    out: &mut Out,
) -> Result<(), ExportError> {
    if opts.max_rows == Some(0) {
        return Err(ExportError::Usage("--max-rows must be at least 1".into()));
    }
    match format {
        Format::AwsBulk => aws::bulk(input, opts, out),
        Format::AwsJitp => aws::jitp(input, opts, out),
        Format::AwsJitr => aws::jitr(input, opts, out),
        Format::AwsMultiAccount => aws::multi_account(input, opts, out),
        // Class-level settings only: nothing per device is read.
        Format::AwsPolicy => aws::policy(input, opts)?
            .into_iter()
            .try_for_each(|f| out.file(f)),
        Format::AwsFleetClaim => aws::fleet_claim(input, opts, out),
        Format::AzureDps => azure::render_into(input, opts, out),
        // Class-level settings and the device count only.
        Format::AzureDpsGroup => azure::render_group(input, opts)?
            .into_iter()
            .try_for_each(|f| out.file(f)),
        Format::Hono => hono::render_into(input, opts, out),
        Format::Peridio => peridio::render_into(input, opts, out),
        Format::Nrfcloud => nrfcloud::render_into(input, opts, out),
        Format::Csv => csv::render_into(input, opts, out),
        Format::MicrochipJws => Err(ExportError::Usage(
            "microchip-jws entries are signed by the manifest signer in the HSM: render them with export::render_signed (certfab export opens signer: from the site config)".into(),
        )),
    }
}

/// Renders a format whose entries are signed by the manifest signer (see
/// [`Format::needs_signer`]); other formats render as [`render`] does.
pub fn render_signed<K: crate::crypto::Signer>(
    format: Format,
    input: &ExportInput,
    opts: &ExportOptions,
    signer: &crate::manifest::jws::DocumentSigner<K>,
) -> Result<Vec<ExportFile>, ExportError> {
    if opts.max_rows == Some(0) {
        return Err(ExportError::Usage("--max-rows must be at least 1".into()));
    }
    let mut out = Out::memory();
    render_signed_into(format, input, opts, signer, &mut out)?;
    out.into_files()
}

/// [`render_signed`] into `out`.
pub fn render_signed_into<K: crate::crypto::Signer>(
    format: Format,
    input: &ExportInput,
    opts: &ExportOptions,
    signer: &crate::manifest::jws::DocumentSigner<K>,
    out: &mut Out,
) -> Result<(), ExportError> {
    if opts.max_rows == Some(0) {
        return Err(ExportError::Usage("--max-rows must be at least 1".into()));
    }
    match format {
        Format::MicrochipJws => microchip::render_signed_into(input, opts, signer, out),
        other => render_into(other, input, opts, out),
    }
}

/// The name of shard `index` (0-based): `PREFIX-0001.EXT`, numbered from 1, at least four
/// digits so names sort in order.
pub fn shard_name(prefix: &str, index: usize, ext: &str) -> String {
    format!("{prefix}-{:04}.{ext}", index + 1)
}

/// Refuses an input without devices for formats made of device rows.
pub fn require_devices(format: Format, input: &ExportInput) -> Result<(), ExportError> {
    if input.device_count() == 0 {
        return Err(ExportError::Input(format!(
            "{}: the manifest {} lists no devices; there is nothing to register",
            format.name(),
            input.manifest_path.display()
        )));
    }
    Ok(())
}

/// The value at a dotted key (`aws.region`) in a cloud tree: flat (`"aws.region"`) or nested.
fn lookup<'a>(
    get: impl Fn(&str) -> Option<&'a serde_json::Value>,
    key: &str,
) -> Option<&'a serde_json::Value> {
    if let Some(v) = get(key) {
        return Some(v);
    }
    let mut parts = key.split('.');
    let mut cur = get(parts.next()?)?;
    for p in parts {
        cur = cur.get(p)?;
    }
    Some(cur)
}

/// A class-level setting by dotted key (`aws.region`): `--set` first; then the profile's
/// `cloud:` section as the manifest rendered it into every device line (templates and `{{`
/// escapes resolved), which must be the same for every device; then the header's copy of the
/// section as written (for a manifest without devices). Nested or flat keys both work.
pub fn setting(
    input: &ExportInput,
    opts: &ExportOptions,
    key: &str,
) -> Result<Option<serde_json::Value>, ExportError> {
    if let Some(v) = opts.settings.get(key) {
        return Ok(Some(serde_json::Value::String(v.clone())));
    }
    if let Some(s) = &input.stream {
        // Streamed: the first device's value, if every device has the same at both places
        // the key may be (flat and nested); otherwise a pass over the file says which device
        // differs, as below.
        let nested: Vec<&str> = key.split('.').collect();
        if let (Some(first), true) = (
            &s.first,
            s.agreement.agrees(&[key]) && s.agreement.agrees(&nested),
        ) {
            if let Some(v) = lookup(|k| first.cloud.get(k), key) {
                return Ok(Some(v.clone()));
            }
            return Ok(lookup(|k| input.cloud.get(k), key).cloned());
        }
    }
    let mut first: Option<(String, Option<serde_json::Value>)> = None;
    let mut differs = None;
    input.each_device(|d| {
        let w = lookup(|k| d.cloud.get(k), key);
        match &first {
            None => first = Some((d.device_id.clone(), w.cloned())),
            Some((_, v)) if differs.is_none() && w != v.as_ref() => {
                differs = Some((d.device_id.clone(), w.cloned()))
            }
            Some(_) => {}
        }
        Ok(())
    })?;
    if let Some((first, v)) = first {
        if let Some((d, w)) = differs {
            return Err(ExportError::BadSetting {
                key: key.into(),
                value: w.map(|w| w.to_string()).unwrap_or_else(|| "(absent)".into()),
                why: format!(
                    "it renders differently for device {d} than for device {first} ({}); a class-level setting must be the same for every device, so set it without per-device placeholders or with --set",
                    v.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "absent".into())
                ),
            });
        }
        if let Some(v) = v {
            return Ok(Some(v));
        }
    }
    Ok(lookup(|k| input.cloud.get(k), key).cloned())
}

/// A string setting; numbers and booleans are accepted in their text form.
pub fn setting_str(
    input: &ExportInput,
    opts: &ExportOptions,
    key: &str,
) -> Result<Option<String>, ExportError> {
    Ok(match setting(input, opts, key)? {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    })
}

/// A string setting the format cannot do without.
pub fn require_str(
    format: Format,
    input: &ExportInput,
    opts: &ExportOptions,
    key: &str,
    why: &str,
) -> Result<String, ExportError> {
    setting_str(input, opts, key)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ExportError::MissingSetting {
            format: format.name(),
            key: key.into(),
            why: why.into(),
        })
}

/// A boolean setting (`true`/`false`, as JSON or text), with a default.
pub fn setting_bool(
    input: &ExportInput,
    opts: &ExportOptions,
    key: &str,
    default: bool,
) -> Result<bool, ExportError> {
    match setting(input, opts, key)? {
        None => Ok(default),
        Some(serde_json::Value::Bool(b)) => Ok(b),
        Some(serde_json::Value::String(s)) if s == "true" => Ok(true),
        Some(serde_json::Value::String(s)) if s == "false" => Ok(false),
        Some(v) => Err(ExportError::BadSetting {
            key: key.into(),
            value: v.to_string(),
            why: "write true or false".into(),
        }),
    }
}

/// A list-of-strings setting (a YAML/JSON list, or comma-separated text from `--set`).
pub fn setting_list(
    input: &ExportInput,
    opts: &ExportOptions,
    key: &str,
) -> Result<Option<Vec<String>>, ExportError> {
    match setting(input, opts, key)? {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        )),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| ExportError::BadSetting {
                        key: key.into(),
                        value: v.to_string(),
                        why: "list items must be strings".into(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(v) => Err(ExportError::BadSetting {
            key: key.into(),
            value: v.to_string(),
            why: "write a list of strings".into(),
        }),
    }
}

/// What an export wrote: one entry per file, with its devices and its consumer. The files'
/// lines are read back from the export's scratch records as they are written out
/// ([`Summary::files`], [`Summary::write_json`], [`Summary::each_line`]), never all held.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Format name.
    pub format: &'static str,
    /// The verified manifest it came from.
    pub manifest: PathBuf,
    /// SHA-256 of that manifest.
    pub manifest_sha256: String,
    /// Output directory.
    pub out: PathBuf,
    /// Devices in the manifest.
    pub devices: usize,
    files: sink::Listing,
    /// What the platform accepts but does differently from what a user may expect (e.g. a
    /// subtype that grants gateway permissions); printed after the files.
    pub warnings: Vec<String>,
}

/// One file in a [`Summary`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct SummaryFile {
    /// Path relative to the output directory.
    pub name: String,
    /// Devices (rows) in it.
    pub devices: usize,
    /// Size in bytes.
    pub bytes: usize,
    /// SHA-256 of the content.
    pub sha256: String,
    /// What consumes it (console page, API call, CLI command).
    pub consumer: String,
}

/// Serializes a listing as a JSON array, element by element from the scratch records.
struct FilesSer<'a> {
    files: &'a sink::Listing,
    /// Keys in alphabetical order (what a `serde_json::Value` prints).
    sorted: bool,
}

impl serde::Serialize for FilesSer<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut seq = s.serialize_seq(Some(self.files.len()))?;
        let mut failed: Option<S::Error> = None;
        let r = self.files.each(|f| {
            let r = if self.sorted {
                seq.serialize_element(&SortedFile(&f))
            } else {
                seq.serialize_element(&f)
            };
            r.map_err(|e| {
                failed = Some(e);
                ExportError::Usage(String::new())
            })
        });
        if let Some(e) = failed {
            return Err(e);
        }
        r.map_err(S::Error::custom)?;
        seq.end()
    }
}

/// A [`SummaryFile`] with its keys in alphabetical order.
struct SortedFile<'a>(&'a SummaryFile);

impl serde::Serialize for SortedFile<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let f = self.0;
        let mut st = s.serialize_struct("SummaryFile", 5)?;
        st.serialize_field("bytes", &f.bytes)?;
        st.serialize_field("consumer", &f.consumer)?;
        st.serialize_field("devices", &f.devices)?;
        st.serialize_field("name", &f.name)?;
        st.serialize_field("sha256", &f.sha256)?;
        st.end()
    }
}

/// A [`Summary`] with its keys in struct order (the summary file) or alphabetical order (the
/// printed `--json`, which was a `serde_json::Value`).
struct SummarySer<'a> {
    s: &'a Summary,
    sorted: bool,
}

impl serde::Serialize for SummarySer<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let s = self.s;
        let files = FilesSer {
            files: &s.files,
            sorted: self.sorted,
        };
        let mut st = ser.serialize_struct("Summary", 7)?;
        if self.sorted {
            st.serialize_field("devices", &s.devices)?;
            st.serialize_field("files", &files)?;
            st.serialize_field("format", &s.format)?;
            st.serialize_field("manifest", &s.manifest)?;
            st.serialize_field("manifest_sha256", &s.manifest_sha256)?;
            st.serialize_field("out", &s.out)?;
            st.serialize_field("warnings", &s.warnings)?;
        } else {
            st.serialize_field("format", &s.format)?;
            st.serialize_field("manifest", &s.manifest)?;
            st.serialize_field("manifest_sha256", &s.manifest_sha256)?;
            st.serialize_field("out", &s.out)?;
            st.serialize_field("devices", &s.devices)?;
            st.serialize_field("files", &files)?;
            st.serialize_field("warnings", &s.warnings)?;
        }
        st.end()
    }
}

impl serde::Serialize for Summary {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        SummarySer {
            s: self,
            sorted: false,
        }
        .serialize(ser)
    }
}

impl Summary {
    /// The summary of `files` rendered in `format` from `input` into `out`.
    pub fn new(format: Format, input: &ExportInput, out: &Path, files: &[ExportFile]) -> Self {
        Self {
            format: format.name(),
            manifest: input.manifest_path.clone(),
            manifest_sha256: input.manifest_sha256.clone(),
            out: out.to_path_buf(),
            devices: input.device_count(),
            files: sink::Listing::of(
                files
                    .iter()
                    .map(|f| SummaryFile {
                        name: f.name.clone(),
                        devices: f.devices,
                        bytes: f.bytes.len(),
                        sha256: hex::encode(crate::crypto::sha256(&f.bytes)),
                        consumer: f.consumer.clone(),
                    })
                    .collect(),
            ),
            warnings: Vec::new(),
        }
    }

    /// The summary of the files in `out`, rendered in `format` from `input` into `dir`.
    pub fn of(
        format: Format,
        input: &ExportInput,
        dir: &Path,
        out: &mut Out,
    ) -> Result<Self, ExportError> {
        Ok(Self {
            format: format.name(),
            manifest: input.manifest_path.clone(),
            manifest_sha256: input.manifest_sha256.clone(),
            out: dir.to_path_buf(),
            devices: input.device_count(),
            files: out.listing()?,
            warnings: Vec::new(),
        })
    }

    /// The same summary with `warnings`.
    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }

    /// The files, in listing order, read into memory.
    pub fn files(&self) -> Result<Vec<SummaryFile>, ExportError> {
        self.files.to_vec()
    }

    /// Calls `f` with each file, in listing order (read back one at a time).
    pub fn each_file(
        &self,
        f: impl FnMut(SummaryFile) -> Result<(), ExportError>,
    ) -> Result<(), ExportError> {
        self.files.each(f)
    }

    /// How many files it lists.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Writes the summary as pretty JSON, streamed: with its keys in struct order as the
    /// summary file has them, or (`sorted`) in alphabetical order as `--json` prints it. A
    /// summary whose paths are not UTF-8 cannot be JSON: `null` (sorted) or nothing, as before.
    pub fn write_json(&self, w: impl std::io::Write, sorted: bool) -> std::io::Result<()> {
        use std::io::Write;
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, w);
        if self.manifest.to_str().is_none() || self.out.to_str().is_none() {
            if sorted {
                w.write_all(b"null")?;
            }
            return w.flush();
        }
        serde_json::to_writer_pretty(&mut w, &SummarySer { s: self, sorted })
            .map_err(std::io::Error::other)?;
        w.flush()
    }

    /// Whether the summary's text would hold a private-key marker (then it is written
    /// owner-only, as every file that holds one).
    fn holds_private_key(&self, out: &Out) -> bool {
        out.marked()
            || [&self.manifest, &self.out]
                .iter()
                .any(|p| sink::holds_private_key(p.to_string_lossy().as_bytes()))
            || self
                .warnings
                .iter()
                .any(|w| sink::holds_private_key(w.as_bytes()))
    }

    /// Human-readable text, line by line: the header, two lines per file, the warnings.
    pub fn each_line(
        &self,
        mut line: impl FnMut(&str) -> Result<(), ExportError>,
    ) -> Result<(), ExportError> {
        line(&format!(
            "exported {} device(s) from {} as {} into {}",
            self.devices,
            self.manifest.display(),
            self.format,
            self.out.display()
        ))?;
        self.files.each(|f| {
            let rows = if f.devices > 0 {
                format!(" ({} devices)", f.devices)
            } else {
                String::new()
            };
            line(&format!("  {}{rows}", f.name))?;
            line(&format!("    -> {}", f.consumer))
        })?;
        for w in &self.warnings {
            line(&format!("warning: {w}"))?;
        }
        Ok(())
    }

    /// Human-readable text: one line per file, then the total.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let r = self.each_line(|l| {
            s.push_str(l);
            s.push('\n');
            Ok(())
        });
        if let Err(e) = r {
            s.push_str(&format!("error: {e}\n"));
        }
        s.pop();
        s
    }
}

/// Checks, before anything is signed or written, that `format` can be rendered from `input`
/// with `opts` and that its files can land in `out`. Formats that carry an HSM-signed claim
/// are rendered with a stand-in claim for this check only (never written).
pub fn preflight(
    format: Format,
    input: &ExportInput,
    opts: &ExportOptions,
    out: &Path,
    force: bool,
) -> Result<(), ExportError> {
    let mut o = opts.clone();
    if format.needs_claim() && o.claim.is_none() {
        o.claim = Some(ClaimMaterial {
            claim_id: "preflight".into(),
            cert_pem: String::new(),
            chain_pem: String::new(),
            key_pem: zeroize::Zeroizing::new(String::new()),
            key_encrypted: true,
        });
    }
    // Only the names are looked at: the content is dropped as it is rendered, and each name
    // is checked against `out` as its file is opened.
    let mut names = if force {
        Out::names()
    } else {
        Out::names_in(out)
    };
    render_into(format, input, &o, &mut names)?;
    if !force {
        let summary = out.join(summary_name(format));
        let first = names
            .first_existing()
            .map(Path::to_path_buf)
            .or_else(|| summary.exists().then_some(summary));
        if let Some(p) = first {
            return Err(ExportError::Write {
                path: p,
                msg: "it already exists; choose a new --out directory, move it away, or pass --force to replace it".into(),
            });
        }
    }
    Ok(())
}

/// The summary file an export leaves beside its files: `FORMAT.summary.json`.
pub fn summary_name(format: Format) -> String {
    format!("{}.summary.json", format.name())
}

/// Renders, then writes the files and the summary into `out`; returns the summary. Files are
/// streamed into temporaries as they are rendered and renamed into place only when all of
/// them and the summary are written.
pub fn export(
    format: Format,
    input: &ExportInput,
    opts: &ExportOptions,
    out: &Path,
    force: bool,
) -> Result<Summary, ExportError> {
    if opts.max_rows == Some(0) {
        return Err(ExportError::Usage("--max-rows must be at least 1".into()));
    }
    let mut sink = Out::disk(out, force)?;
    render_into(format, input, opts, &mut sink)?;
    let warnings = warnings(format, input, opts)?;
    finish(format, input, out, sink, warnings)
}

/// [`export`] for a format signed by the manifest signer ([`Format::needs_signer`]).
pub fn export_signed<K: crate::crypto::Signer>(
    format: Format,
    input: &ExportInput,
    opts: &ExportOptions,
    signer: &crate::manifest::jws::DocumentSigner<K>,
    out: &Path,
    force: bool,
) -> Result<Summary, ExportError> {
    if opts.max_rows == Some(0) {
        return Err(ExportError::Usage("--max-rows must be at least 1".into()));
    }
    let mut sink = Out::disk(out, force)?;
    render_signed_into(format, input, opts, signer, &mut sink)?;
    let warnings = warnings(format, input, opts)?;
    finish(format, input, out, sink, warnings)
}

/// What `format` would accept from `input` but a user should know before importing (listed
/// in the summary): nRF Cloud subtypes that grant gateway permissions, Microchip uniqueIds
/// that are not a chip serial.
pub fn warnings(
    format: Format,
    input: &ExportInput,
    opts: &ExportOptions,
) -> Result<Vec<String>, ExportError> {
    match format {
        Format::Nrfcloud => nrfcloud::warnings(input, opts),
        Format::MicrochipJws => microchip::warnings(input, opts),
        _ => Ok(Vec::new()),
    }
}

/// Adds the summary to the rendered files and renames them all into place.
fn finish(
    format: Format,
    input: &ExportInput,
    dir: &Path,
    mut sink: Out,
    warnings: Vec<String>,
) -> Result<Summary, ExportError> {
    let summary = Summary::of(format, input, dir, &mut sink)?.with_warnings(warnings);
    // Streamed from the scratch records into the summary's temporary.
    let access = if summary.holds_private_key(&sink) {
        crate::output::Access::Secret
    } else {
        crate::output::Access::Shared
    };
    let id = sink.open_with(
        &summary_name(format),
        "what this export wrote and where each file goes".into(),
        access,
    )?;
    let name = dir.join(summary_name(format));
    let mut w = SinkWriter {
        sink: &mut sink,
        id,
        failed: None,
    };
    let r = summary
        .write_json(&mut w, false)
        .and_then(|()| std::io::Write::write_all(&mut w, b"\n"));
    if let Some(e) = w.failed.take() {
        return Err(e);
    }
    r.map_err(|e| ExportError::Write {
        path: name,
        msg: format!("cannot write it: {e}"),
    })?;
    sink.close(id, 0)?;
    sink.commit()?;
    Ok(summary)
}

/// `io::Write` into an open file of an [`Out`] (the summary, streamed).
struct SinkWriter<'a> {
    sink: &'a mut Out,
    id: sink::FileId,
    failed: Option<ExportError>,
}

impl std::io::Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.sink.write(self.id, buf) {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                let msg = e.to_string();
                self.failed = Some(e);
                Err(std::io::Error::other(msg))
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A device's rendered cloud value by dotted key (`aws.thing_name`), nested or flat; then the
/// key's last part at the top level (`thing_name`), the platform-neutral spelling.
pub fn device_setting<'a>(d: &'a ExportDevice, key: &str) -> Option<&'a serde_json::Value> {
    lookup(|k| d.cloud.get(k), key).or_else(|| d.cloud.get(key.rsplit('.').next()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(cloud: serde_json::Value) -> ExportInput {
        ExportInput {
            manifest_path: "m.jsonl".into(),
            manifest_sha256: String::new(),
            batch_ids: vec![],
            station_ids: vec![],
            profile: "p".into(),
            tenant: None,
            ca_chain_pem: vec![],
            devices: vec![],
            stream: None,
            cloud: cloud
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    #[test]
    fn shards_cover_every_item_once_in_order() {
        let runs = |limit: Option<usize>, n: u32| {
            let mut out = Out::memory();
            let mut rows = sink::Rows::new(limit);
            for i in 1..=n {
                let id = rows
                    .next(&mut out, |out, k| {
                        out.open(&shard_name("x", k, "txt"), String::new())
                    })
                    .unwrap();
                out.write(id, i.to_string().as_bytes()).unwrap();
            }
            rows.finish(&mut out).unwrap();
            out.into_files()
                .unwrap()
                .into_iter()
                .map(|f| (String::from_utf8(f.bytes).unwrap(), f.devices))
                .collect::<Vec<_>>()
        };
        let got = runs(Some(3), 7);
        assert_eq!(got, [("123".into(), 3), ("456".into(), 3), ("7".into(), 1)]);
        assert_eq!(runs(None, 7), [("1234567".into(), 7)]);
        assert_eq!(runs(Some(7), 7), [("1234567".into(), 7)]);
        assert!(runs(None, 0).is_empty());
        assert_eq!(shard_name("aws-bulk", 0, "jsonl"), "aws-bulk-0001.jsonl");
        assert_eq!(shard_name("x", 10_000, "csv"), "x-10001.csv");
    }

    #[test]
    fn settings_nested_flat_and_overridden() {
        let i = input(
            json!({"aws": {"region": "eu-west-1", "shadow": false, "groups": ["a", "b"]}, "azure.hub": "h"}),
        );
        let mut o = ExportOptions::default();
        assert_eq!(
            setting_str(&i, &o, "aws.region").unwrap().as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            setting_str(&i, &o, "azure.hub").unwrap().as_deref(),
            Some("h")
        );
        assert!(!setting_bool(&i, &o, "aws.shadow", true).unwrap());
        assert!(setting_bool(&i, &o, "aws.jobs", true).unwrap());
        assert_eq!(
            setting_list(&i, &o, "aws.groups").unwrap().unwrap(),
            ["a", "b"]
        );
        o.settings.insert("aws.region".into(), "us-east-2".into());
        o.settings.insert("aws.groups".into(), "x, y".into());
        assert_eq!(
            setting_str(&i, &o, "aws.region").unwrap().as_deref(),
            Some("us-east-2")
        );
        assert_eq!(
            setting_list(&i, &o, "aws.groups").unwrap().unwrap(),
            ["x", "y"]
        );
        let e = require_str(Format::AwsPolicy, &i, &o, "aws.account_id", "ARNs").unwrap_err();
        assert!(e.to_string().contains("--set aws.account_id=VALUE"), "{e}");
        o.settings.insert("aws.shadow".into(), "maybe".into());
        assert!(setting_bool(&i, &o, "aws.shadow", true).is_err());
    }

    fn device(id: &str, cloud: serde_json::Value) -> ExportDevice {
        ExportDevice {
            seq: 1,
            device_id: id.into(),
            serial: String::new(),
            cert_der: vec![],
            cert_pem: String::new(),
            cert_sha256: String::new(),
            spki_sha256: String::new(),
            not_before: String::new(),
            not_after: String::new(),
            key_origin: String::new(),
            state: String::new(),
            cloud: cloud.as_object().unwrap().clone(),
        }
    }

    /// Class-level settings come from the devices' rendered cloud values (templates and `{{`
    /// escapes resolved) before the header's as-written copy; devices must agree.
    #[test]
    fn settings_prefer_the_rendered_values_and_require_agreement() {
        let mut i = input(
            json!({"aws": {"topics": ["${{iot:Connection.Thing.ThingName}}/t/*"], "bucket": "line-{var.station}"}}),
        );
        let rendered = json!({"aws": {"topics": ["${iot:Connection.Thing.ThingName}/t/*"], "bucket": "line-7", "thing_name": "a"}});
        i.devices = vec![device("a", rendered.clone()), device("b", rendered)];
        let o = ExportOptions::default();
        assert_eq!(
            setting_list(&i, &o, "aws.topics").unwrap().unwrap(),
            ["${iot:Connection.Thing.ThingName}/t/*"]
        );
        assert_eq!(
            setting_str(&i, &o, "aws.bucket").unwrap().as_deref(),
            Some("line-7")
        );
        i.devices[1].cloud["aws"]["bucket"] = json!("line-8");
        let e = setting_str(&i, &o, "aws.bucket").unwrap_err();
        assert!(e.to_string().contains("device b"), "{e}");
        let d = &i.devices[0];
        assert_eq!(device_setting(d, "aws.thing_name"), Some(&json!("a")));
    }
}
