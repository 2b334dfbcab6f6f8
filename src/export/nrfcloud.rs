//! nRF Cloud bulk onboarding CSV, the body of `POST https://api.nrfcloud.com/v1/devices`
//! (OnboardDevices, formerly ProvisionDevices; `Content-Type: text/csv` or
//! `application/octet-stream`), written exactly as Nordic's own `nrfcloud-utils` writes it
//! (`cli_helpers.save_onboarding_csv`): no header, five columns `deviceId, subType, tags
//! (|-separated), fwTypes (|-separated), certPem`, comma-delimited, `\n` line ends, fields
//! quoted only when needed, at most 1000 rows a file.
//!
//! Every field follows the validation pattern the OnboardDevices operation publishes (nRF
//! Cloud REST API OpenAPI description, as carried by Nordic's `hello-nrfcloud/
//! nrfcloud-api-helpers` `src/api/devices.ts` and the generated API docs): deviceId
//! `/^[a-z0-9:_-]{1,128}$/i`, subType `[a-zA-Z0-9_.,@/:#-]{0,799}`, each tag
//! `^[a-zA-Z0-9_.@:#-]+$`, each firmware type one of `APP MODEM BOOT SOFTDEVICE BOOTLOADER
//! MDM_FULL`, and an ES256 (P-256) certificate. A row that breaks one is refused with the
//! device named, before anything is written.
//!
//! Spreadsheet safety: a cell that a spreadsheet would run as a formula (starting with `=`,
//! `+`, `-`, `@`) is neutralised by the `csv` export with a leading `'`, which none of these
//! patterns allows and which would change the value nRF Cloud stores. The patterns already
//! refuse `=` and `+`; a deviceId, subType or tags cell starting with `-` or `@` is refused.
//! The certificate cell necessarily starts with `-----BEGIN`: the file is an API body, not a
//! sheet.
//!
//! Settings (per device, from the manifest's rendered cloud values, `--set` first):
//! `nrfcloud.device_id` (default the ledger's device id), `nrfcloud.subtype`, `nrfcloud.tags`
//! (list); for all devices `nrfcloud.fw_types` (list, default `APP|MODEM` as the installer
//! uses).

use super::sink::Rows;
use super::support::{device_error, device_list, device_str, row_limit, CertFacts, Settings};
use super::{shard_name, ExportError, ExportFile, ExportInput, ExportOptions, Format, Out};
use crate::crypto::KeyKind;

const FORMAT: Format = Format::Nrfcloud;

/// Rows per onboarding file ("Max number of rows is 1000" in the OnboardDevices description;
/// `MAX_CSV_ROWS = 1000` in nrfcloud-utils, which refuses larger files).
pub const ROW_LIMIT: usize = 1000;

/// Longest deviceId the API accepts (`{1,128}`).
pub const DEVICE_ID_MAX: usize = 128;

/// Longest subType the API accepts (`{0,799}`).
pub const SUBTYPE_MAX: usize = 799;

/// Firmware types the OnboardDevices operation accepts (`fwTypes`, each
/// `^(APP|MODEM|BOOT|SOFTDEVICE|BOOTLOADER|MDM_FULL)$`).
pub const FW_TYPES: &[&str] = &[
    "APP",
    "MODEM",
    "BOOT",
    "SOFTDEVICE",
    "BOOTLOADER",
    "MDM_FULL",
];

/// The first character of `text` that `allowed` refuses.
fn first_bad(text: &str, allowed: impl Fn(char) -> bool) -> Option<char> {
    text.chars().find(|c| !allowed(*c))
}

/// deviceId: `/^[a-z0-9:_-]{1,128}$/i`.
fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || ":_-".contains(c)
}

/// A tag: `^[a-zA-Z0-9_.@:#-]+$`.
fn tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_.@:#-".contains(c)
}

/// subType: `[a-zA-Z0-9_.,@/:#-]{0,799}`.
fn subtype_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_.,@/:#-".contains(c)
}

/// Whether a spreadsheet opening the file would evaluate a cell starting like `cell`
/// (the rule of the `csv` export, [`super::csv::guard`]).
fn formula_start(cell: &str) -> bool {
    cell.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

/// Refuses a cell value a spreadsheet would run as a formula: it cannot be prefixed with `'`
/// without changing what nRF Cloud stores (and `'` is outside every field's pattern).
fn refuse_formula(d: &super::ExportDevice, what: &str, cell: &str) -> Result<(), ExportError> {
    if formula_start(cell) {
        return Err(device_error(
            FORMAT.name(),
            d,
            format!(
                "{what} '{cell}' starts with '{}', which a spreadsheet opening the CSV would run as a formula; a leading ' would change the value nRF Cloud stores, so choose a value that starts with a letter or digit",
                cell.chars().next().unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

/// The firmware types for every row.
fn fw_types(s: &Settings<'_>) -> Result<String, ExportError> {
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
    Ok(fw.join("|"))
}

/// One device's subType (may be empty), checked.
fn subtype(
    input: &ExportInput,
    opts: &ExportOptions,
    d: &super::ExportDevice,
) -> Result<String, ExportError> {
    let bad = |msg: String| device_error(FORMAT.name(), d, msg);
    let sub = device_str(FORMAT, input, opts, d, "nrfcloud.subtype")?.unwrap_or_default();
    if sub.chars().count() > SUBTYPE_MAX {
        return Err(bad(format!(
            "subType is {} characters; nRF Cloud takes at most {SUBTYPE_MAX}",
            sub.chars().count()
        )));
    }
    if let Some(c) = first_bad(&sub, subtype_char) {
        return Err(bad(format!(
            "subType '{sub}' has {c:?}; nRF Cloud subTypes are letters, digits and _ . , @ / : # - only"
        )));
    }
    refuse_formula(d, "subType", &sub)?;
    Ok(sub)
}

/// One device's row.
fn row(
    input: &ExportInput,
    opts: &ExportOptions,
    d: &super::ExportDevice,
    fw: &str,
) -> Result<[String; 5], ExportError> {
    let bad = |msg: String| device_error(FORMAT.name(), d, msg);
    let id =
        device_str(FORMAT, input, opts, d, "nrfcloud.device_id")?.unwrap_or(d.device_id.clone());
    if id.is_empty() || id.len() > DEVICE_ID_MAX {
        return Err(bad(format!(
            "nRF Cloud deviceId '{id}' must be 1 to {DEVICE_ID_MAX} characters"
        )));
    }
    if let Some(c) = first_bad(&id, id_char) {
        return Err(bad(format!(
            "nRF Cloud deviceId '{id}' has {c:?}; deviceIds are letters, digits and : _ - only (set nrfcloud.device_id)"
        )));
    }
    refuse_formula(d, "deviceId", &id)?;
    let sub = subtype(input, opts, d)?;
    let tags = device_list(FORMAT, input, opts, d, "nrfcloud.tags")?.unwrap_or_default();
    if let Some(t) = tags
        .iter()
        .find(|t| t.is_empty() || first_bad(t, tag_char).is_some())
    {
        return Err(bad(format!(
            "tag '{t}' is not one nRF Cloud takes: each tag is one or more letters, digits and _ . @ : # - (no '|', the CSV's list separator)"
        )));
    }
    let tags = tags.join("|");
    refuse_formula(d, "tags", &tags)?;
    // "A unique ES256 X.509 certificate": the device key signs ES256, so it is P-256.
    let facts = CertFacts::of(FORMAT, d)?;
    let kind = crate::crypto::PublicKey::from_spki_der(&facts.spki_der)
        .map(|k| k.kind())
        .map_err(|e| bad(format!("the certificate's public key does not parse: {e}")))?;
    if kind != KeyKind::P256 {
        return Err(bad(format!(
            "the device certificate holds a {kind} key; nRF Cloud onboards ES256 certificates only (an EC P-256 device key): issue this device with a p256 key"
        )));
    }
    Ok([id, sub, tags, fw.to_string(), crate::x509::pem(&d.cert_der)])
}

/// Onboarding CSVs of at most `min(1000, --max-rows)` devices: `nrfcloud-onboard-NNNN.csv`.
pub fn render(input: &ExportInput, opts: &ExportOptions) -> Result<Vec<ExportFile>, ExportError> {
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
    let s = Settings::new(FORMAT, input, opts);
    let fw = fw_types(&s)?;
    let mut ids = super::support::Unique::default();
    let mut shards = Rows::new(row_limit(Some(ROW_LIMIT), opts));
    let err = |e: &dyn std::fmt::Display| ExportError::Input(format!("nrfcloud: CSV: {e}"));
    input.each_device(|d| {
        let r = row(input, opts, d, &fw)?;
        // The pattern is case-insensitive; two ids differing only in case are one risk too many.
        ids.check(FORMAT, d, "nRF Cloud deviceId", &r[0].to_ascii_lowercase())?;
        let mut w = ::csv::WriterBuilder::new()
            .has_headers(false)
            .terminator(::csv::Terminator::Any(b'\n'))
            .quote_style(::csv::QuoteStyle::Necessary)
            .from_writer(Vec::new());
        w.write_record(&r).map_err(|e| err(&e))?;
        let bytes = w.into_inner().map_err(|e| err(&e))?;
        let id = shards.next(out, |out, i| {
            out.open(
                &shard_name("nrfcloud-onboard", i, "csv"),
                "nRF Cloud REST API OnboardDevices: POST https://api.nrfcloud.com/v1/devices with the file as the body (curl --data-binary, Content-Type: application/octet-stream or text/csv), or nrf_cloud_onboard --csv FILE from nrfcloud-utils".into(),
            )
        })?;
        out.write(id, &bytes)
    })?;
    shards.finish(out)?;
    ids.confirm(FORMAT, input, |d| {
        Ok(row(input, opts, d, &fw)?[0].to_ascii_lowercase())
    })
}

/// Devices whose subType contains "gateway": nRF Cloud onboards them as Gateway devices with
/// additional MQTT permissions for gateway topics ("Include \"gateway\" in your subType if
/// you want to provision it as a Gateway"), which a subtype chosen for another reason grants
/// by accident.
pub fn warnings(input: &ExportInput, opts: &ExportOptions) -> Result<Vec<String>, ExportError> {
    // A count and the first few: bounded whatever the batch.
    let mut count = 0usize;
    let mut gateways = Vec::new();
    input.each_device(|d| {
        let sub = device_str(FORMAT, input, opts, d, "nrfcloud.subtype")?.unwrap_or_default();
        if sub.to_ascii_lowercase().contains("gateway") {
            count += 1;
            if gateways.len() < 5 {
                gateways.push(d.device_id.clone());
            }
        }
        Ok(())
    })?;
    if count == 0 {
        return Ok(Vec::new());
    }
    let shown: Vec<&str> = gateways.iter().map(String::as_str).collect();
    let more = if count > 5 { ", …" } else { "" };
    Ok(vec![format!(
        "nrfcloud: {} device(s) ({}{more}) have a subType containing \"gateway\": nRF Cloud onboards them as Gateway devices with additional MQTT permissions for gateway topics; choose another subType unless they are gateways",
        count,
        shown.join(", ")
    )])
}
