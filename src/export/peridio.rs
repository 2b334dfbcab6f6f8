//! Peridio: device records (admin API v2), Peridio's console bulk device import CSV, and the
//! issuing CA with its just-in-time provisioning (JITP) settings for the v1 (legacy) API.
//!
//! Field names come from Peridio's own API description and SDK: the admin API OpenAPI
//! documents `peridio-admin-openapi.yaml` (v2) and `peridio-admin-openapi-v1.yaml` (v1,
//! "Legacy CA Certificates") in `peridio/docs` (last published at 86194a95, before their
//! removal on 2026-08-18), `peridio/peridio-rust` (`CreateDeviceParams`,
//! `CreateDeviceCertificateParams`) and the device import format of Peridio's "Creating
//! devices" guide (same repository, removed in the 2026-04-14 site revamp). Files:
//! - `peridio-devices-NNNN.jsonl` (with `peridio.product_prn`): per line `{"device": <POST
//!   /devices body>, "device_certificate": {"certificate": <base64 of the PEM text>}}`; the
//!   importer adds the `device_prn` returned by the device create to the certificate body;
//! - `peridio-device-import-NNNN.csv` (with `peridio.product_prn`): the "Peridio device import
//!   manifest" the web console imports in bulk: header `identifier, description, tags,
//!   product_prn, cohort_prn, certificates, target`, every field quoted;
//! - `peridio-ca.pem` (with `peridio.product_name`): the issuing CA, for
//!   `peridio ca-certificates create` with a verification certificate;
//! - `peridio-ca-jitp-v1.json` (with `peridio.product_name`): `{"description"?, "jitp":
//!   {"description", "tags", "product_name", "target"?, "cohort_prn"?}}`, the body of the v1
//!   `PUT /orgs/{organization_name}/ca_certificates/{ca_certificate_serial}`. JITP settings
//!   exist only there: the v2 CA certificate create/update bodies, the v2 SDK (peridio-rust
//!   098c6fb3) and the current CLI (peridio-cli 87d62c24, "v2 ca_certificates") have none,
//!   and Peridio's JITP page was removed.
//!
//! A device's `identifier` must match its certificate's common name ("The identifier for the
//! devices, must match the common name of the device's certificate(s)"): it defaults to the
//! CN and a different `peridio.identifier` is refused.
//!
//! Settings: `peridio.product_name` (JITP), `peridio.product_prn` (device records),
//! `peridio.cohort_prn`, `peridio.target`, `peridio.tags` (list; `peridio.jitp_tags` for JITP
//! when the device tags differ), `peridio.jitp_description` (the JITP description template),
//! `peridio.ca_description`; per device (rendered cloud values) also `peridio.identifier`
//! (default, and required to be, the certificate's CN) and `peridio.device_description`.

use super::sink::Rows;
use super::support::{
    b64, device_error, device_list, device_str, issuing_ca_der, json_lines, pretty, CertFacts,
    Settings,
};
use super::{shard_name, ExportError, ExportFile, ExportInput, ExportOptions, Format, Out};
use serde_json::{json, Map, Value};

const FORMAT: Format = Format::Peridio;

/// The columns of Peridio's device import manifest, in the order its importer expects.
pub const IMPORT_COLUMNS: &[&str] = &[
    "identifier",
    "description",
    "tags",
    "product_prn",
    "cohort_prn",
    "certificates",
    "target",
];

/// One device's record, shared by the API lines and the import CSV.
struct Record {
    identifier: String,
    description: Option<String>,
    tags: Vec<String>,
    target: Option<String>,
    cohort_prn: Option<String>,
    cert_pem: String,
}

/// Refuses a CSV cell a spreadsheet would run as a formula (the `csv` export's rule): a
/// leading `'` would change the value Peridio stores.
fn refuse_formula(d: &super::ExportDevice, what: &str, cell: &str) -> Result<(), ExportError> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        return Err(device_error(
            FORMAT.name(),
            d,
            format!(
                "{what} '{cell}' starts with a character a spreadsheet opening the import CSV would run as a formula, and a leading ' would change the value Peridio stores; choose a value that starts with a letter or digit"
            ),
        ));
    }
    Ok(())
}

fn record(
    input: &ExportInput,
    opts: &ExportOptions,
    d: &super::ExportDevice,
) -> Result<Record, ExportError> {
    let bad = |msg: String| device_error(FORMAT.name(), d, msg);
    let facts = CertFacts::of(FORMAT, d)?;
    let cn = facts.common_name.clone().ok_or_else(|| {
        bad("the certificate subject has no single common name; Peridio matches a device's identifier to its certificate's CN".into())
    })?;
    let identifier =
        device_str(FORMAT, input, opts, d, "peridio.identifier")?.unwrap_or(cn.clone());
    if identifier != cn {
        return Err(bad(format!(
            "identifier '{identifier}' differs from the certificate's common name '{cn}'; Peridio requires a device's identifier to match its certificate's CN (leave peridio.identifier unset to use the CN)"
        )));
    }
    let description = device_str(FORMAT, input, opts, d, "peridio.device_description")?;
    let tags = device_list(FORMAT, input, opts, d, "peridio.tags")?.unwrap_or_default();
    if let Some(t) = tags.iter().find(|t| t.is_empty() || t.contains(',')) {
        return Err(bad(format!(
            "tag '{t}' is empty or contains ',', which separates tags in Peridio's device import"
        )));
    }
    let target = device_str(FORMAT, input, opts, d, "peridio.target")?;
    let cohort_prn = device_str(FORMAT, input, opts, d, "peridio.cohort_prn")?;
    refuse_formula(d, "identifier", &identifier)?;
    for (what, v) in [
        ("description", description.as_deref()),
        ("target", target.as_deref()),
        ("cohort_prn", cohort_prn.as_deref()),
    ] {
        if let Some(v) = v {
            refuse_formula(d, what, v)?;
        }
    }
    refuse_formula(d, "tags", &tags.join(","))?;
    Ok(Record {
        identifier,
        description,
        tags,
        target,
        cohort_prn,
        cert_pem: crate::x509::pem(&d.cert_der),
    })
}

/// The device records, the import CSV and the CA with its v1 JITP settings.
pub fn render(input: &ExportInput, opts: &ExportOptions) -> Result<Vec<ExportFile>, ExportError> {
    let mut out = Out::memory();
    render_into(input, opts, &mut out)?;
    out.into_files()
}

/// [`render`] into `out`: the API lines and the import CSV rows of each device are written as
/// it is read (listed kind by kind), then the CA files.
pub fn render_into(
    input: &ExportInput,
    opts: &ExportOptions,
    out: &mut Out,
) -> Result<(), ExportError> {
    super::require_devices(FORMAT, input)?;
    let s = Settings::new(FORMAT, input, opts);
    let ca_der = issuing_ca_der(FORMAT, input)?;

    let product_name = s.str("peridio.product_name")?;
    let product_prn = s.str("peridio.product_prn")?;
    if product_name.is_none() && product_prn.is_none() {
        return Err(s.missing(
            "peridio.product_prn",
            "the Peridio product the device records belong to (or peridio.product_name for the v1 JITP settings)",
        ));
    }

    if let Some(product_prn) = &product_prn {
        let mut idents = super::support::Unique::default();
        let mut line_files = Rows::new(opts.max_rows);
        let mut row_files = Rows::new(opts.max_rows);
        let err = |e: &dyn std::fmt::Display| ExportError::Input(format!("peridio: CSV: {e}"));
        let csv_record = |r: &[String]| -> Result<Vec<u8>, ExportError> {
            let mut w = ::csv::WriterBuilder::new()
                .quote_style(::csv::QuoteStyle::Always)
                .terminator(::csv::Terminator::Any(b'\n'))
                .from_writer(Vec::new());
            w.write_record(r).map_err(|e| err(&e))?;
            w.into_inner().map_err(|e| err(&e))
        };
        let head = csv_record(
            &IMPORT_COLUMNS
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>(),
        )?;
        input.each_device(|d| {
            let r = record(input, opts, d)?;
            idents.check(FORMAT, d, "identifier", &r.identifier)?;
            let mut dev = Map::new();
            dev.insert("product_prn".into(), json!(product_prn));
            dev.insert("identifier".into(), json!(r.identifier));
            if let Some(desc) = &r.description {
                dev.insert("description".into(), json!(desc));
            }
            dev.insert("tags".into(), json!(r.tags));
            if let Some(t) = &r.target {
                dev.insert("target".into(), json!(t));
            }
            if let Some(c) = &r.cohort_prn {
                dev.insert("cohort_prn".into(), json!(c));
            }
            let line = json_lines(&[json!({
                "device": Value::Object(dev),
                "device_certificate": { "certificate": b64(r.cert_pem.as_bytes()) },
            })]);
            let row = csv_record(&[
                r.identifier,
                r.description.unwrap_or_default(),
                r.tags.join(","),
                product_prn.clone(),
                r.cohort_prn.unwrap_or_default(),
                r.cert_pem.trim_end().to_string(),
                r.target.unwrap_or_default(),
            ])?;
            let id = line_files.next(out, |out, i| {
                out.group(0);
                out.open(
                    &shard_name("peridio-devices", i, "jsonl"),
                    "Peridio admin API v2, per line: POST /devices with .device (peridio devices create), then POST /device_certificates with .device_certificate plus the returned device_prn (peridio device-certificates create --device-prn PRN --certificate-path FILE)".into(),
                )
            })?;
            out.write(id, &line)?;
            let id = row_files.next(out, |out, i| {
                out.group(1);
                let id = out.open(
                    &shard_name("peridio-device-import", i, "csv"),
                    "Peridio web console: create devices in bulk from this Peridio device import manifest (instead of the API lines, not as well)".into(),
                )?;
                out.write(id, &head)?;
                Ok(id)
            })?;
            out.write(id, &row)
        })?;
        line_files.finish(out)?;
        row_files.finish(out)?;
        idents.confirm(FORMAT, input, |d| Ok(record(input, opts, d)?.identifier))?;
    }
    out.group(2);

    if let Some(product) = &product_name {
        // Class-level: JITP gives every device the same values.
        let cohort = s.str("peridio.cohort_prn")?;
        let target = s.str("peridio.target")?;
        // The tags JITP gives every device: peridio.jitp_tags, else peridio.tags when it is
        // the same for every device.
        let tags = match s.list("peridio.jitp_tags")? {
            Some(t) => t,
            None => s.list("peridio.tags")?.unwrap_or_default(),
        };
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
        out.file(ExportFile {
            name: "peridio-ca.pem".into(),
            bytes: crate::x509::pem(&ca_der).into_bytes(),
            devices: 0,
            consumer: "the issuing CA: peridio ca-certificates create-verification-code, certfab ca verification-cert --ca <issuing CA> --cn <verification_code> --out verif.pem, then peridio ca-certificates create --certificate-path peridio-ca.pem --verification-certificate-path verif.pem".into(),
        })?;
        out.file(ExportFile {
            name: "peridio-ca-jitp-v1.json".into(),
            bytes: pretty(&Value::Object(body)),
            devices: 0,
            consumer: "Peridio admin API v1 only (legacy, organization-scoped): PUT /orgs/{organization_name}/ca_certificates/{ca_certificate_serial} with this body, after the CA is created. The v2 API and the current peridio CLI have no JITP settings (the create command lost its JITP flags); ask Peridio whether your organization can still use them, else register devices with the device files".into(),
        })?;
    }
    Ok(())
}
