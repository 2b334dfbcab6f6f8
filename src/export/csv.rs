//! Plain CSV for spreadsheets and ad-hoc tools: one header row, then one row per device with
//! `device_id, serial, cert_sha256, spki_sha256, not_before, not_after, key_origin, state`
//! and every per-device cloud attribute flattened into `cloud.<key>` columns (nested objects
//! as `cloud.<key>.<sub>`, lists as JSON text).
//!
//! Spreadsheet-safe: a cell that starts with `=`, `+`, `-`, `@`, tab or carriage return would
//! be run as a formula by Excel, LibreOffice or Google Sheets (CSV injection, OWASP), so it is
//! written with a leading `'`, which those programs show as text and do not evaluate.

use super::sink::Rows;
use super::{shard_name, ExportError, ExportInput, ExportOptions, Format, Out};
use serde_json::Value;
use std::collections::BTreeMap;

const FORMAT: Format = Format::Csv;

/// The fixed columns, in order.
pub const COLUMNS: &[&str] = &[
    "device_id",
    "serial",
    "cert_sha256",
    "spki_sha256",
    "not_before",
    "not_after",
    "key_origin",
    "state",
];

/// Neutralizes a cell a spreadsheet would evaluate as a formula.
pub fn guard(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell.to_string()
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        Value::Null => {
            out.insert(prefix.to_string(), String::new());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// `devices-NNNN.csv`, `--max-rows` devices a file (no platform limit). Two passes over the
/// devices: the cloud columns every device contributes to, then the rows, written as they are
/// made.
pub fn render(
    input: &ExportInput,
    opts: &ExportOptions,
) -> Result<Vec<super::ExportFile>, ExportError> {
    let mut out = Out::memory();
    render_into(input, opts, &mut out)?;
    out.into_files()
}

/// [`render`] into `out`, a row at a time.
pub fn render_into(
    input: &ExportInput,
    opts: &ExportOptions,
    out: &mut Out,
) -> Result<(), ExportError> {
    super::require_devices(FORMAT, input)?;
    let flat = |d: &super::ExportDevice| {
        let mut m = BTreeMap::new();
        for (k, v) in &d.cloud {
            flatten(&format!("cloud.{k}"), v, &mut m);
        }
        m
    };
    // One set of columns for every file, so shards concatenate.
    let mut columns = std::collections::BTreeSet::new();
    input.each_device(|d| {
        for k in flat(d).into_keys() {
            if !columns.contains(&k) {
                columns.insert(k);
            }
        }
        Ok(())
    })?;
    let extra: Vec<String> = columns.into_iter().collect();
    let header: Vec<String> = COLUMNS
        .iter()
        .map(|c| c.to_string())
        .chain(extra.iter().map(|c| guard(c)))
        .collect();
    let err = |e: &dyn std::fmt::Display| ExportError::Input(format!("{}: {e}", FORMAT.name()));
    let record = |r: &[String]| -> Result<Vec<u8>, ExportError> {
        let mut w = ::csv::WriterBuilder::new()
            .quote_style(::csv::QuoteStyle::Necessary)
            .from_writer(Vec::new());
        w.write_record(r).map_err(|e| err(&e))?;
        w.into_inner().map_err(|e| err(&e))
    };
    let head = record(&header)?;
    let mut shards = Rows::new(opts.max_rows);
    input.each_device(|d| {
        let m = flat(d);
        let mut r = vec![
            d.device_id.clone(),
            d.serial.clone(),
            d.cert_sha256.clone(),
            d.spki_sha256.clone(),
            d.not_before.clone(),
            d.not_after.clone(),
            d.key_origin.clone(),
            d.state.clone(),
        ];
        r.extend(extra.iter().map(|k| m.get(k).cloned().unwrap_or_default()));
        let r: Vec<String> = r.into_iter().map(|c| guard(&c)).collect();
        let bytes = record(&r)?;
        let id = shards.next(out, |out, i| {
            let id = out.open(
                &shard_name("devices", i, "csv"),
                "spreadsheets and scripts (plain CSV, RFC 4180, formula cells neutralized with a leading ')".into(),
            )?;
            out.write(id, &head)?;
            Ok(id)
        })?;
        out.write(id, &bytes)
    })?;
    shards.finish(out)
}

#[cfg(test)]
mod tests {
    use super::guard;

    #[test]
    fn formula_cells_are_neutralized() {
        for bad in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert!(guard(bad).starts_with('\''), "{bad}");
        }
        assert_eq!(guard("dev-0001"), "dev-0001");
        assert_eq!(guard("a=b"), "a=b");
    }
}
