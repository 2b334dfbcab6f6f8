//! Peridio: JITP settings for the issuing CA, and device records for pre-registration.
//!
//! Field names come from Peridio's own SDK and CLI (`peridio/peridio-rust`
//! `src/api/ca_certificates.rs` `CaCertificateJitp`, `src/api/devices.rs`,
//! `src/api/device_certificates.rs`; `peridio/peridio-cli` `ca-certificates create` flags);
//! docs.peridio.com describes the same JITP settings (product, cohort, tags, description).
//! Files:
//! - `peridio-ca-jitp.json`: `{"description", "jitp": {"description", "tags", "product_name",
//!   "target"?, "cohort_prn"?}}`, the JITP part of the CA certificate create/update body (the
//!   create body adds `certificate` and `verification_certificate`, base64 of the PEM text);
//! - `peridio-ca.pem`: the issuing CA to upload;
//! - `peridio-devices-NNNN.jsonl`: per line `{"device": <POST /devices body>,
//!   "device_certificate": {"certificate": <base64 of the PEM text>}}`; the importer adds the
//!   `device_prn` returned by the device create to the certificate body.
//!
//! Settings: `peridio.product_name` (JITP), `peridio.product_prn` (device records),
//! `peridio.cohort_prn`, `peridio.target`, `peridio.tags` (list; `peridio.jitp_tags` for JITP
//! when the device tags differ), `peridio.jitp_description`
//! (the JITP description template), `peridio.ca_description`; per device (rendered cloud
//! values) also `peridio.identifier` (default the ledger id) and `peridio.device_description`.

use super::support::{b64, device_list, device_str, issuing_ca_der, json_lines, pretty, Settings};
use super::{shard, shard_name, ExportError, ExportFile, ExportInput, ExportOptions, Format};
use serde_json::{json, Map, Value};

const FORMAT: Format = Format::Peridio;

/// The CA's JITP settings and the device records.
pub fn render(input: &ExportInput, opts: &ExportOptions) -> Result<Vec<ExportFile>, ExportError> {
    super::require_devices(FORMAT, input)?;
    let s = Settings::new(FORMAT, input, opts);
    let ca_der = issuing_ca_der(FORMAT, input)?;
    let mut files = Vec::new();

    let product_name = s.str("peridio.product_name")?;
    let product_prn = s.str("peridio.product_prn")?;
    if product_name.is_none() && product_prn.is_none() {
        return Err(s.missing(
            "peridio.product_name",
            "the Peridio product JITP assigns devices to (or peridio.product_prn for device records)",
        ));
    }
    let cohort = s.str("peridio.cohort_prn")?;
    let target = s.str("peridio.target")?;
    // The tags JITP gives every device: peridio.jitp_tags, else peridio.tags when it is the
    // same for every device.
    let tags = match s.list("peridio.jitp_tags")? {
        Some(t) => t,
        None => s.list("peridio.tags")?.unwrap_or_default(),
    };

    if let Some(product) = &product_name {
        let mut jitp = Map::new();
        jitp.insert(
            "description".into(),
            json!(s
                .str("peridio.jitp_description")?
                .unwrap_or_else(|| format!("certfab {} devices", input.profile))),
        );
        jitp.insert("tags".into(), json!(tags));
        jitp.insert("product_name".into(), json!(product));
        if let Some(t) = &target {
            jitp.insert("target".into(), json!(t));
        }
        if let Some(c) = &cohort {
            jitp.insert("cohort_prn".into(), json!(c));
        }
        let mut body = Map::new();
        if let Some(d) = s.str("peridio.ca_description")? {
            body.insert("description".into(), json!(d));
        }
        body.insert("jitp".into(), Value::Object(jitp));
        files.push(ExportFile {
            name: "peridio-ca-jitp.json".into(),
            bytes: pretty(&Value::Object(body)),
            devices: 0,
            consumer: "Peridio admin API: the jitp settings of POST /ca_certificates (create, with certificate and verification_certificate) or PATCH /ca_certificates/{prn}; peridio ca-certificates create --jitp-* flags".into(),
        });
        files.push(ExportFile {
            name: "peridio-ca.pem".into(),
            bytes: crate::issue::pem(&ca_der).into_bytes(),
            devices: 0,
            consumer: "Peridio admin API POST /ca_certificates (certificate = base64 of this file), after certfab ca verification-cert --cn <verification code>".into(),
        });
    }

    if let Some(product_prn) = &product_prn {
        let mut lines = Vec::with_capacity(input.devices.len());
        let mut idents = super::support::Unique::default();
        for d in &input.devices {
            let mut dev = Map::new();
            dev.insert("product_prn".into(), json!(product_prn));
            let ident = device_str(FORMAT, input, opts, d, "peridio.identifier")?
                .unwrap_or(d.device_id.clone());
            idents.check(FORMAT, d, "identifier", &ident)?;
            dev.insert("identifier".into(), json!(ident));
            if let Some(desc) = device_str(FORMAT, input, opts, d, "peridio.device_description")? {
                dev.insert("description".into(), json!(desc));
            }
            let dev_tags = device_list(FORMAT, input, opts, d, "peridio.tags")?.unwrap_or_default();
            dev.insert("tags".into(), json!(dev_tags));
            if let Some(t) = device_str(FORMAT, input, opts, d, "peridio.target")? {
                dev.insert("target".into(), json!(t));
            }
            if let Some(c) = device_str(FORMAT, input, opts, d, "peridio.cohort_prn")? {
                dev.insert("cohort_prn".into(), json!(c));
            }
            lines.push(json!({
                "device": Value::Object(dev),
                "device_certificate": { "certificate": b64(d.cert_pem.as_bytes()) },
            }));
        }
        for (i, chunk) in shard(&lines, opts.max_rows).into_iter().enumerate() {
            files.push(ExportFile {
                name: shard_name("peridio-devices", i, "jsonl"),
                bytes: json_lines(chunk),
                devices: chunk.len(),
                consumer: "Peridio admin API, per line: POST /devices with .device, then POST /device_certificates with .device_certificate plus the returned device_prn".into(),
            });
        }
    }
    Ok(files)
}
