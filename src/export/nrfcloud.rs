//! nRF Cloud bulk onboarding CSV, the body of `POST https://api.nrfcloud.com/v1/devices`
//! (ProvisionDevices, `Content-Type: text/csv`), written exactly as Nordic's own
//! `nrfcloud-utils` writes it (`cli_helpers.save_onboarding_csv`): no header, five columns
//! `device id, sub-type, tags (|-separated), firmware types (|-separated), certificate PEM`,
//! comma-delimited, `\n` line ends, fields quoted only when needed, at most 1000 rows a file.
//!
//! Settings (per device, from the manifest's rendered cloud values, `--set` first):
//! `nrfcloud.device_id` (default the ledger's device id), `nrfcloud.subtype`, `nrfcloud.tags`
//! (list); for all devices `nrfcloud.fw_types` (list of `APP MODEM BOOT SOFTDEVICE
//! BOOTLOADER`, default `APP|MODEM` as the installer uses).

use super::support::{device_error, device_list, device_str, row_limit, Settings};
use super::{shard, shard_name, ExportError, ExportFile, ExportInput, ExportOptions, Format};

const FORMAT: Format = Format::Nrfcloud;

/// Rows per onboarding file (`MAX_CSV_ROWS = 1000` in nrfcloud-utils `cli_helpers.py` and
/// `nrf_cloud_onboard.py`, which refuse larger files).
pub const ROW_LIMIT: usize = 1000;

/// Longest device id nrfcloud-utils accepts (`DEV_ID_MAX_LEN`).
pub const DEVICE_ID_MAX: usize = 64;

/// Firmware types nRF Cloud knows.
pub const FW_TYPES: &[&str] = &["APP", "MODEM", "BOOT", "SOFTDEVICE", "BOOTLOADER"];

fn pipe_list(d: &super::ExportDevice, what: &str, items: &[String]) -> Result<String, ExportError> {
    if let Some(bad) = items.iter().find(|t| t.is_empty() || t.contains('|')) {
        return Err(device_error(
            FORMAT.name(),
            d,
            format!("{what} '{bad}' is empty or contains '|', the CSV's list separator"),
        ));
    }
    Ok(items.join("|"))
}

/// Onboarding CSVs of at most `min(1000, --max-rows)` devices: `nrfcloud-onboard-NNNN.csv`.
pub fn render(input: &ExportInput, opts: &ExportOptions) -> Result<Vec<ExportFile>, ExportError> {
    super::require_devices(FORMAT, input)?;
    let s = Settings::new(FORMAT, input, opts);
    let fw = s
        .list("nrfcloud.fw_types")?
        .unwrap_or_else(|| vec!["APP".into(), "MODEM".into()]);
    if let Some(bad) = fw.iter().find(|f| !FW_TYPES.contains(&f.as_str())) {
        return Err(s.bad(
            "nrfcloud.fw_types",
            bad,
            format!("nRF Cloud firmware types are {}", FW_TYPES.join(", ")),
        ));
    }
    let fw = fw.join("|");
    let mut rows = Vec::with_capacity(input.devices.len());
    let mut seen = std::collections::HashSet::new();
    for d in &input.devices {
        let id = device_str(FORMAT, input, opts, d, "nrfcloud.device_id")?
            .unwrap_or(d.device_id.clone());
        let bad = |msg: String| device_error(FORMAT.name(), d, msg);
        if id.is_empty() || id.len() > DEVICE_ID_MAX {
            return Err(bad(format!(
                "nRF Cloud device id '{id}' must be 1 to {DEVICE_ID_MAX} characters"
            )));
        }
        if id.chars().any(|c| c.is_control()) {
            return Err(bad(format!(
                "nRF Cloud device id '{id}' has a control character"
            )));
        }
        if !seen.insert(id.clone()) {
            return Err(bad(format!("nRF Cloud device id '{id}' appears twice")));
        }
        let sub = device_str(FORMAT, input, opts, d, "nrfcloud.subtype")?.unwrap_or_default();
        let dev_tags = device_list(FORMAT, input, opts, d, "nrfcloud.tags")?.unwrap_or_default();
        let dev_tags = pipe_list(d, "tag", &dev_tags)?;
        if !d.cert_pem.is_ascii() {
            return Err(bad("certificate PEM is not ASCII".into()));
        }
        rows.push([id, sub, dev_tags, fw.clone(), d.cert_pem.clone()]);
    }
    shard(&rows, row_limit(Some(ROW_LIMIT), opts))
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut w = ::csv::WriterBuilder::new()
                .has_headers(false)
                .terminator(::csv::Terminator::Any(b'\n'))
                .quote_style(::csv::QuoteStyle::Necessary)
                .from_writer(Vec::new());
            for r in chunk {
                w.write_record(r)
                    .map_err(|e| ExportError::Input(format!("nrfcloud: CSV: {e}")))?;
            }
            let bytes = w
                .into_inner()
                .map_err(|e| ExportError::Input(format!("nrfcloud: CSV: {e}")))?;
            Ok(ExportFile {
                name: shard_name("nrfcloud-onboard", i, "csv"),
                bytes,
                devices: chunk.len(),
                consumer: "nRF Cloud REST API ProvisionDevices: POST https://api.nrfcloud.com/v1/devices with Content-Type: text/csv (or nrf_cloud_onboard --csv FILE from nrfcloud-utils)".into(),
            })
        })
        .collect()
}
