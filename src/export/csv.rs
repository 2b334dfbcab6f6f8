//! Plain CSV for spreadsheets and ad-hoc tools: one header row, then one row per device with
//! `device_id, serial, cert_sha256, spki_sha256, not_before, not_after, key_origin, state`
//! and every per-device cloud attribute flattened into `cloud.<key>` columns (nested objects
//! as `cloud.<key>.<sub>`, lists as JSON text).
//!
//! Spreadsheet-safe: a cell that starts with `=`, `+`, `-`, `@`, tab or carriage return would
//! be run as a formula by Excel, LibreOffice or Google Sheets (CSV injection, OWASP), so it is
//! written with a leading `'`, which those programs show as text and do not evaluate.

use super::{shard, shard_name, ExportError, ExportFile, ExportInput, ExportOptions, Format};
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

/// `devices-NNNN.csv`, `--max-rows` devices a file (no platform limit).
pub fn render(input: &ExportInput, opts: &ExportOptions) -> Result<Vec<ExportFile>, ExportError> {
    super::require_devices(FORMAT, input)?;
    let flat: Vec<BTreeMap<String, String>> = input
        .devices
        .iter()
        .map(|d| {
            let mut m = BTreeMap::new();
            for (k, v) in &d.cloud {
                flatten(&format!("cloud.{k}"), v, &mut m);
            }
            m
        })
        .collect();
    // One set of columns for every file, so shards concatenate.
    let extra: Vec<String> = flat
        .iter()
        .flat_map(|m| m.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let rows: Vec<Vec<String>> = input
        .devices
        .iter()
        .zip(&flat)
        .map(|(d, m)| {
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
            r.into_iter().map(|c| guard(&c)).collect()
        })
        .collect();
    let header: Vec<String> = COLUMNS
        .iter()
        .map(|c| c.to_string())
        .chain(extra.iter().map(|c| guard(c)))
        .collect();
    shard(&rows, opts.max_rows)
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let err =
                |e: &dyn std::fmt::Display| ExportError::Input(format!("{}: {e}", FORMAT.name()));
            let mut w = ::csv::WriterBuilder::new()
                .quote_style(::csv::QuoteStyle::Necessary)
                .from_writer(Vec::new());
            w.write_record(&header).map_err(|e| err(&e))?;
            for r in chunk {
                w.write_record(r).map_err(|e| err(&e))?;
            }
            let bytes = w.into_inner().map_err(|e| err(&e))?;
            Ok(ExportFile {
                name: shard_name("devices", i, "csv"),
                bytes,
                devices: chunk.len(),
                consumer: "spreadsheets and scripts (plain CSV, RFC 4180, formula cells neutralized with a leading ')".into(),
            })
        })
        .collect()
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
