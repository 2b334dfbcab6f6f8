//! Azure IoT Hub Device Provisioning Service (DPS), service API 2021-10-01.
//!
//! Two shapes, both request bodies of the DPS service REST API
//! (`specification/deviceprovisioningservices/data-plane/.../stable/2021-10-01/service.json`):
//! - [`render`]: individual enrollments as `BulkEnrollmentOperation` bodies for
//!   `POST https://{dps}.azure-devices-provisioning.net/enrollments?api-version=2021-10-01`
//!   ("Individual Enrollment - Run Bulk Operation", at most 10 enrollments per call);
//! - [`render_group`]: one X.509 `EnrollmentGroup` for `PUT /enrollmentGroups/{id}`, trusting
//!   the issuing CA either inline (`signingCertificates`) or by the name of a CA certificate
//!   uploaded to DPS and verified by proof of possession (`caReferences`).
//!
//! Settings read from the profile's `cloud:` section: `azure.iot_hubs` (list of hub host
//! names), `azure.allocation_policy` (`hashed`|`geoLatency`|`static`|`custom`; `static`
//! takes exactly one hub, `custom` a webhook: `azure.custom_allocation.webhook_url` and
//! `azure.custom_allocation.api_version`), `azure.iot_edge` (bool),
//! `azure.provisioning_status` (`enabled`|`disabled`), `azure.enrollment_group_id`,
//! `azure.ca_reference`. Per device (rendered cloud values): `azure.registration_id`
//! (defaults to the certificate's CN, which DPS requires it to equal, so at most 64
//! characters), `azure.device_id` (the IoT Hub device id; defaults to the registration id)
//! and `azure.twin_tags` (a mapping: initial twin tags).

use super::support::{device_error, issuing_ca_der, pretty, row_limit, CertFacts, Settings};
use super::{
    shard_name, ExportDevice, ExportError, ExportFile, ExportInput, ExportOptions, Format, Out,
};
use serde_json::{json, Map, Value};

const FORMAT: Format = Format::AzureDps;
const GROUP_FORMAT: Format = Format::AzureDpsGroup;

/// DPS accepts at most this many enrollments in one bulk operation ("Bulk device enrollment
/// operation with maximum of 10 enrollments", service.json 2021-10-01).
pub const BULK_LIMIT: usize = 10;

/// Longest registration id (or enrollment group id) DPS accepts.
pub const REGISTRATION_ID_MAX: usize = 128;

/// Longest registration id with X.509 attestation: it is the certificate's subject CN, which
/// X.509 limits to 64 characters ("The registration ID, therefore, is limited to 64
/// characters when using X.509 certificates", DPS X.509 attestation concepts).
pub const REGISTRATION_ID_MAX_X509: usize = 64;

/// The `customAllocationDefinition.apiVersion` used when none is set: the version of the
/// enrollment types certfab writes (the spec's minimum is 2018-09-01-preview).
pub const CUSTOM_ALLOCATION_API_VERSION: &str = "2021-10-01";

/// Checks a DPS registration id: lowercase ASCII letters and digits plus `-._:`, not starting
/// or ending with one of those four, at most `max` characters. Returns why not.
pub fn check_registration_id(id: &str, max: usize) -> Result<(), String> {
    if id.is_empty() {
        return Err("the registration id is empty".into());
    }
    if id.len() > max {
        let why = if max == REGISTRATION_ID_MAX_X509 {
            " with X.509 attestation (it is the certificate's CN, at most 64 characters)"
        } else {
            ""
        };
        return Err(format!(
            "the registration id is {} characters; DPS allows at most {max}{why}",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "-._:".contains(*c)))
    {
        return Err(format!(
            "registration id '{id}' has '{c}'; DPS registration ids are lowercase letters, digits and - . _ : only"
        ));
    }
    let special = |c: char| "-._:".contains(c);
    if id.starts_with(special) || id.ends_with(special) {
        return Err(format!(
            "registration id '{id}' starts or ends with - . _ or :, which DPS refuses"
        ));
    }
    Ok(())
}

/// Checks an IoT Hub device id: at most 128 ASCII letters, digits and `-.+%_#*?!(),:=@$'`
/// (the `deviceId` property in
/// <https://learn.microsoft.com/en-us/azure/iot-hub/iot-hub-devguide-identity-registry>).
fn check_hub_device_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err(format!(
            "IoT Hub device id '{id}' must be 1 to 128 characters"
        ));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-.+%_#*?!(),:=@$'".contains(*c)))
    {
        Some(c) => Err(format!(
            "IoT Hub device id '{id}' has '{c}'; IoT Hub allows letters, digits and - . + % _ # * ? ! ( ) , : = @ $ ' only"
        )),
        None => Ok(()),
    }
}

/// Fields shared by individual enrollments and groups, from profile settings.
fn common_fields(
    format: Format,
    input: &ExportInput,
    opts: &ExportOptions,
) -> Result<Map<String, Value>, ExportError> {
    let s = Settings::new(format, input, opts);
    let mut m = Map::new();
    let status = s
        .str("azure.provisioning_status")?
        .unwrap_or_else(|| "enabled".into());
    if status != "enabled" && status != "disabled" {
        return Err(s.bad(
            "azure.provisioning_status",
            &status,
            "DPS takes enabled or disabled".into(),
        ));
    }
    m.insert("provisioningStatus".into(), json!(status));
    if let Some(edge) = s.bool("azure.iot_edge")? {
        m.insert("capabilities".into(), json!({ "iotEdge": edge }));
    }
    let policy = s.str("azure.allocation_policy")?;
    if let Some(policy) = &policy {
        if !["hashed", "geoLatency", "static", "custom"].contains(&policy.as_str()) {
            return Err(s.bad(
                "azure.allocation_policy",
                policy,
                "DPS takes hashed, geoLatency, static or custom".into(),
            ));
        }
        m.insert("allocationPolicy".into(), json!(policy));
    }
    let hubs = s.list("azure.iot_hubs")?;
    if policy.as_deref() == Some("static") {
        // "Specification of the desired IoT hub in the enrollment list": one hub (the Azure
        // CLI refuses none and more than one for static).
        match hubs.as_deref() {
            Some([_]) => {}
            None | Some([]) => {
                return Err(s.missing(
                    "azure.iot_hubs",
                    "static allocation assigns every device to the one IoT hub listed",
                ))
            }
            Some(more) => {
                return Err(s.bad(
                    "azure.iot_hubs",
                    &more.join(","),
                    "static allocation takes exactly one IoT hub; list one, or choose hashed or geoLatency".into(),
                ))
            }
        }
    }
    if let Some(hubs) = hubs {
        m.insert("iotHubs".into(), json!(hubs));
    }
    let webhook = s.str("azure.custom_allocation.webhook_url")?;
    let api_version = s.str("azure.custom_allocation.api_version")?;
    if policy.as_deref() == Some("custom") {
        let url = webhook.ok_or_else(|| {
            s.missing(
                "azure.custom_allocation.webhook_url",
                "custom allocation calls this webhook (the Azure Function) to pick the IoT hub; DPS requires customAllocationDefinition with it",
            )
        })?;
        if !url.starts_with("https://") {
            return Err(s.bad(
                "azure.custom_allocation.webhook_url",
                &url,
                "the allocation webhook is an https:// URL (an Azure Function URL with its key)"
                    .into(),
            ));
        }
        let version = api_version.unwrap_or_else(|| CUSTOM_ALLOCATION_API_VERSION.into());
        let dated = version.len() >= 10
            && version[..10].bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            })
            && (version.len() == 10 || &version[10..] == "-preview");
        if !dated || version.as_str() < "2018-09-01-preview" {
            return Err(s.bad(
                "azure.custom_allocation.api_version",
                &version,
                "a DPS service API version such as 2021-10-01 (at least 2018-09-01-preview)".into(),
            ));
        }
        m.insert(
            "customAllocationDefinition".into(),
            json!({ "webhookUrl": url, "apiVersion": version }),
        );
    } else if webhook.is_some() || api_version.is_some() {
        let key = if webhook.is_some() {
            "azure.custom_allocation.webhook_url"
        } else {
            "azure.custom_allocation.api_version"
        };
        return Err(s.bad(
            key,
            &webhook.or(api_version).unwrap_or_default(),
            "a custom allocation webhook is only used with azure.allocation_policy: custom".into(),
        ));
    }
    Ok(m)
}

/// Individual X.509 enrollments, sharded into bulk-operation bodies of at most
/// `min(10, --max-rows)` enrollments: `azure-dps-enrollments-NNNN.json`.
pub fn render(input: &ExportInput, opts: &ExportOptions) -> Result<Vec<ExportFile>, ExportError> {
    let mut out = Out::memory();
    render_into(input, opts, &mut out)?;
    out.into_files()
}

/// The registration id of a device: `azure.registration_id`, else its certificate's CN.
fn registration_id(
    input: &ExportInput,
    opts: &ExportOptions,
    d: &ExportDevice,
) -> Result<String, ExportError> {
    let cn = CertFacts::of(FORMAT, d)?.common_name.unwrap_or_default();
    Ok(super::support::device_str(FORMAT, input, opts, d, "azure.registration_id")?.unwrap_or(cn))
}

/// [`render`] into `out`: each bulk-operation body (at most 10 enrollments) is written when
/// it is full.
pub fn render_into(
    input: &ExportInput,
    opts: &ExportOptions,
    out: &mut Out,
) -> Result<(), ExportError> {
    super::require_devices(FORMAT, input)?;
    let common = common_fields(FORMAT, input, opts)?;
    let limit = row_limit(Some(BULK_LIMIT), opts).unwrap_or(BULK_LIMIT);
    let mut enrollments = Vec::with_capacity(limit);
    let mut shard = 0usize;
    let flush = |out: &mut Out, enrollments: &mut Vec<Value>, shard: &mut usize| {
        if enrollments.is_empty() {
            return Ok(());
        }
        out.file(ExportFile {
            name: shard_name("azure-dps-enrollments", *shard, "json"),
            bytes: pretty(&json!({ "mode": "create", "enrollments": enrollments })),
            devices: enrollments.len(),
            consumer: "Azure DPS service API: POST https://<dps>.azure-devices-provisioning.net/enrollments?api-version=2021-10-01 (Individual Enrollment - Run Bulk Operation)".into(),
        })?;
        enrollments.clear();
        *shard += 1;
        Ok::<_, ExportError>(())
    };
    let twice = |d: &ExportDevice, reg_id: &str| {
        device_error(
            FORMAT.name(),
            d,
            format!("registration id '{reg_id}' appears twice in the manifest"),
        )
    };
    let mut seen = super::support::Unique::default();
    input.each_device(|d| {
        let bad = |msg: String| device_error(FORMAT.name(), d, msg);
        let facts = CertFacts::of(FORMAT, d)?;
        let cn = facts.common_name.clone().ok_or_else(|| {
            bad("the certificate subject has no single CN; DPS takes the registration id from the CN".into())
        })?;
        let reg_id = super::support::device_str(FORMAT, input, opts, d, "azure.registration_id")?
            .unwrap_or(cn.clone());
        check_registration_id(&reg_id, REGISTRATION_ID_MAX_X509).map_err(|m| {
            bad(format!(
                "{m}; issue the certificate with a CN that is a valid registration id (profile subject template)"
            ))
        })?;
        if reg_id != cn {
            return Err(bad(format!(
                "registration id '{reg_id}' differs from the certificate CN '{cn}'; DPS X.509 attestation requires them to be equal"
            )));
        }
        seen.check_with(d, &reg_id, |_| twice(d, &reg_id))?;
        let mut e = Map::new();
        e.insert("registrationId".into(), json!(reg_id));
        let hub_id = super::support::device_str(FORMAT, input, opts, d, "azure.device_id")?
            .unwrap_or(reg_id.clone());
        check_hub_device_id(&hub_id).map_err(bad)?;
        e.insert("deviceId".into(), json!(hub_id));
        e.insert(
            "attestation".into(),
            json!({
                "type": "x509",
                "x509": { "clientCertificates": { "primary": { "certificate": d.cert_pem.trim_end() } } }
            }),
        );
        if let Some(tags) =
            super::support::device_object(FORMAT, input, opts, d, "azure.twin_tags")?
        {
            e.insert("initialTwin".into(), json!({ "tags": tags }));
        }
        for (k, v) in &common {
            e.insert(k.clone(), v.clone());
        }
        enrollments.push(Value::Object(e));
        if enrollments.len() >= limit {
            flush(out, &mut enrollments, &mut shard)?;
        }
        Ok(())
    })?;
    flush(out, &mut enrollments, &mut shard)?;
    seen.confirm_with(
        input,
        |d| registration_id(input, opts, d),
        |d, reg_id, _| twice(d, reg_id),
    )
}

/// One X.509 enrollment group for every device the issuing CA signed:
/// `azure-dps-enrollment-group.json`, plus the issuing CA as `azure-dps-ca.pem` for the
/// DPS certificate upload and proof-of-possession.
///
/// With `azure.ca_reference` set the group names that uploaded, verified CA certificate
/// (`caReferences.primary`); otherwise it carries the issuing CA inline
/// (`signingCertificates.primary`).
pub fn render_group(
    input: &ExportInput,
    opts: &ExportOptions,
) -> Result<Vec<ExportFile>, ExportError> {
    let s = Settings::new(GROUP_FORMAT, input, opts);
    let ca_der = issuing_ca_der(GROUP_FORMAT, input)?;
    let ca_pem = crate::x509::pem(&ca_der);
    let group_id = match s.str("azure.enrollment_group_id")? {
        Some(id) => id,
        None => input.profile.to_ascii_lowercase(),
    };
    check_registration_id(&group_id, REGISTRATION_ID_MAX).map_err(|m| {
        s.bad(
            "azure.enrollment_group_id",
            &group_id,
            format!(
                "{} (DPS enrollment group ids follow the registration id rules); set azure.enrollment_group_id in the profile's cloud: section or --set",
                m.replace("registration id", "id")
            ),
        )
    })?;
    let ca_reference = s.str("azure.ca_reference")?;
    let reference = ca_reference.is_some();
    let x509 = match ca_reference {
        Some(name) => json!({ "caReferences": { "primary": name } }),
        None => {
            json!({ "signingCertificates": { "primary": { "certificate": ca_pem.trim_end() } } })
        }
    };
    let mut g = Map::new();
    g.insert("enrollmentGroupId".into(), json!(group_id));
    g.insert(
        "attestation".into(),
        json!({ "type": "x509", "x509": x509 }),
    );
    for (k, v) in common_fields(GROUP_FORMAT, input, opts)? {
        g.insert(k, v);
    }
    Ok(vec![
        ExportFile {
            name: "azure-dps-enrollment-group.json".into(),
            bytes: pretty(&Value::Object(g)),
            devices: input.device_count(),
            consumer: format!(
                "Azure DPS service API: PUT https://<dps>.azure-devices-provisioning.net/enrollmentGroups/{group_id}?api-version=2021-10-01 (Enrollment Group - Create Or Update). Devices authenticate only if {which} is uploaded to the DPS instance and verified by proof of possession (certfab ca verification-cert --ca <issuing CA> --cn <verification code>), or chains to a verified CA, and they present the chain up to it",
                which = if reference { "the referenced CA" } else { "the group's signing CA (azure-dps-ca.pem)" },
            ),
        },
        ExportFile {
            name: "azure-dps-ca.pem".into(),
            bytes: ca_pem.into_bytes(),
            devices: 0,
            consumer: "next: upload to DPS (portal: Certificates > Add, or az iot dps certificate create), generate a verification code, then prove possession with certfab ca verification-cert --ca <issuing CA> --cn <verification code> and upload that certificate (az iot dps certificate verify); the enrollment group works only once this CA, or one it chains to, shows Verified".into(),
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_id_rules() {
        let m = REGISTRATION_ID_MAX;
        assert!(check_registration_id("dev-0001", m).is_ok());
        assert!(check_registration_id("a.b_c:d-e", m).is_ok());
        assert!(check_registration_id("Dev-0001", m).is_err());
        assert!(check_registration_id("-dev", m).is_err());
        assert!(check_registration_id("dev:", m).is_err());
        assert!(check_registration_id("dev 1", m).is_err());
        assert!(check_registration_id("", m).is_err());
        assert!(check_registration_id(&"a".repeat(128), m).is_ok());
        assert!(check_registration_id(&"a".repeat(129), m).is_err());
        let x = REGISTRATION_ID_MAX_X509;
        assert!(check_registration_id(&"a".repeat(64), x).is_ok());
        assert!(check_registration_id(&"a".repeat(65), x)
            .unwrap_err()
            .contains("64"));
    }
}
