//! AWS IoT Core exports. Every file is a request body for one AWS IoT API operation (usable
//! as `aws iot <operation> --cli-input-json file://…`), an input file such an operation reads,
//! or the PEM it names. Field names and limits are those of the AWS IoT API reference and
//! botocore's `iot/2015-05-28` service model; docs/exports.md cites each page.
//!
//! Settings (profile `cloud:` section or `--set`), all under `aws.`:
//! `region`, `account_id`, `partition` (default `aws`), `role_arn`, `bucket`, `key_prefix`,
//! `policy_name`, `thing_type`, `thing_groups`, `topics`, `shadow`, `jobs`,
//! `certificate_mode`, `certificate_status`, `jitp_template_name`, `jitr_lambda_arn`,
//! `jitr_rule_name`,
//! `template_name`, `claim_policy_name`, `claim_flow`, `pre_provisioning_hook_arn`.
//! Per device (the manifest's rendered `cloud:` values): `aws.thing_name` (or `thing_name`;
//! default: the device id) and `aws.attributes` (or `attributes`; a map of thing attributes).

use super::sink::Rows;
use super::{
    require_devices, require_str, setting_bool, setting_list, setting_str, shard_name,
    ExportDevice, ExportError, ExportFile, ExportInput, ExportOptions, Format, Out,
};
use serde_json::{json, Map, Value};

/// AWS IoT's limit on a provisioning template body (`templateBody`, 10240 characters).
pub const TEMPLATE_BODY_MAX: usize = 10240;
/// The thing-name policy variable every device resource in certfab's policies is scoped by.
pub const THING_VAR: &str = "${iot:Connection.Thing.ThingName}";

const BULK_ROLE: &str = "the IAM role that lets AWS IoT read the input file from S3 and register things (managed policy AWSIoTThingsRegistration)";
const BULK_BUCKET: &str = "the S3 bucket the input files are uploaded to";

/// Bulk registration (StartThingRegistrationTask): one newline-delimited JSON input file per
/// shard, the provisioning template, and, when `aws.role_arn` and `aws.bucket` are set, one
/// StartThingRegistrationTask request per shard.
pub fn bulk(input: &ExportInput, opts: &ExportOptions, out: &mut Out) -> Result<(), ExportError> {
    const F: Format = Format::AwsBulk;
    require_devices(F, input)?;
    // The input files and the template need nothing of the account; the start-task request
    // does (role and bucket), so it is written only when both are known, never invented.
    let given =
        |k| Ok::<_, ExportError>(setting_str(input, opts, k)?.is_some_and(|s| !s.is_empty()));
    let task = if given("aws.role_arn")? || given("aws.bucket")? {
        // One of them given: both are needed, and the missing one is named.
        let role_arn = role_arn(F, input, opts, BULK_ROLE)?;
        let bucket = require_str(F, input, opts, "aws.bucket", BULK_BUCKET)?;
        check_pattern("aws.bucket", &bucket, 3, 256, |c| {
            c.is_ascii_alphanumeric() || "._-".contains(c)
        })?;
        Some((role_arn, bucket))
    } else {
        None
    };
    let prefix = setting_str(input, opts, "aws.key_prefix")?.unwrap_or_default();
    let ca_pem = issuing_ca(F, input)?;

    // Thing attributes become template parameters: every device must give the same set, the
    // first device's (checked row by row below).
    let attr_keys: Vec<String> = match input.first_device() {
        Some(d) => attributes(d)?.keys().cloned().collect(),
        None => Vec::new(),
    };

    let mut params = Map::new();
    for p in ["ThingName", "CertificatePem", "CACertificatePem"] {
        params.insert(p.into(), json!({"Type": "String"}));
    }
    let mut payload = Map::new();
    for k in &attr_keys {
        params.insert(attr_param(k), json!({"Type": "String"}));
        payload.insert(k.clone(), json!({"Ref": attr_param(k)}));
    }
    let mut thing_props = Map::new();
    thing_props.insert("ThingName".into(), json!({"Ref": "ThingName"}));
    if !payload.is_empty() {
        thing_props.insert("AttributePayload".into(), Value::Object(payload));
    }
    thing_extras(input, opts, &mut thing_props)?;
    let template = provisioning_template(
        Value::Object(params),
        thing_props,
        json!({
            "CertificatePem": {"Ref": "CertificatePem"},
            "CACertificatePem": {"Ref": "CACertificatePem"},
            "Status": "ACTIVE"
        }),
        input,
        opts,
    )?;
    let body = template_body(&template)?;

    out.file(json_file(
        "aws-bulk-template.json",
        &template,
        0,
        "the provisioning template (its text is the templateBody of each start-task request); keep it with the input files",
    ))?;
    // Each shard is written row by row as the devices are read; its start-task request
    // (which names only the shard) follows it in the listing.
    let open_shard = |out: &mut Out, i: usize| -> Result<super::sink::FileId, ExportError> {
        let name = shard_name("aws-bulk", i, "jsonl");
        let key = format!("{prefix}{name}");
        check_pattern("S3 key (aws.key_prefix + file name)", &key, 1, 1024, |c| {
            c.is_ascii_alphanumeric() || "!_.*'()-/".contains(c)
        })?;
        let consumer = match &task {
            Some((_, bucket)) => format!("upload to s3://{bucket}/{key} (aws s3 cp {name} s3://{bucket}/{key}); read by StartThingRegistrationTask"),
            None => format!("upload to your S3 bucket as {key}, then aws iot start-thing-registration-task --template-body file://aws-bulk-template.json --input-file-bucket BUCKET --input-file-key {key} --role-arn ROLE_ARN (or export again with --set aws.bucket=… --set aws.role_arn=… and certfab writes that request)"),
        };
        let id = out.open(&name, consumer)?;
        if let Some((role_arn, bucket)) = &task {
            let req = json!({
                "templateBody": body,
                "inputFileBucket": bucket,
                "inputFileKey": key,
                "roleArn": role_arn,
            });
            let req_name = shard_name("aws-bulk", i, "start-task.json");
            out.file(json_file(
                &req_name,
                &req,
                0,
                &format!("after the upload: aws iot start-thing-registration-task --cli-input-json file://{req_name} (one task runs at a time per account; then aws iot list-thing-registration-task-reports --task-id ID --report-type ERRORS)"),
            ))?;
        }
        Ok(id)
    };
    let mut shards = Rows::new(opts.max_rows);
    let mut line = String::new();
    input.each_device(|d| {
        let thing = thing_name(d)?;
        let attrs = attributes(d)?;
        if !attrs.keys().eq(attr_keys.iter()) {
            let keys: Vec<String> = attrs.keys().cloned().collect();
            return Err(device_err(
                d,
                format!(
                    "its thing attributes {keys:?} differ from the first device's {attr_keys:?}; a bulk template takes one set of parameters for every line"
                ),
            ));
        }
        let mut row = Map::new();
        row.insert("ThingName".into(), Value::String(thing));
        row.insert("CertificatePem".into(), Value::String(d.cert_pem.clone()));
        row.insert("CACertificatePem".into(), Value::String(ca_pem.clone()));
        for (k, v) in attrs {
            row.insert(attr_param(&k), Value::String(v));
        }
        line.clear();
        line.push_str(&serde_json::to_string(&Value::Object(row)).unwrap_or_default());
        line.push('\n');
        let id = shards.next(out, open_shard)?;
        out.write(id, line.as_bytes())
    })?;
    shards.finish(out)
}

/// Just-in-Time Provisioning: the provisioning template and the CA registration bundle
/// (CA certificate, verification certificate, RegisterCACertificate request carrying the
/// template and role).
pub fn jitp(input: &ExportInput, opts: &ExportOptions, out: &mut Out) -> Result<(), ExportError> {
    const F: Format = Format::AwsJitp;
    let role_arn = role_arn(F, input, opts, "the IAM role AWS IoT assumes to run the JITP template (managed policy AWSIoTThingsRegistration)")?;
    // JITP sees only the certificate subject: the thing name must be the subject CN.
    input.each_device(|d| {
        let thing = thing_name(d)?;
        match subject_cn(d)? {
            Some(cn) if cn == thing => Ok(()),
            Some(cn) => {
                Err(device_err(
                    d,
                    format!("its thing name {thing:?} is not its certificate's CN {cn:?}; JITP names the thing from the subject only. Use aws-bulk, or make the profile's CN the thing name"),
                ))
            }
            None => {
                Err(device_err(
                    d,
                    "its certificate subject has no CN, which the JITP template names the thing from".into(),
                ))
            }
        }
    })?;
    let mut thing_props = Map::new();
    thing_props.insert(
        "ThingName".into(),
        json!({"Ref": "AWS::IoT::Certificate::CommonName"}),
    );
    thing_extras(input, opts, &mut thing_props)?;
    let template = provisioning_template(
        json!({
            "AWS::IoT::Certificate::CommonName": {"Type": "String"},
            "AWS::IoT::Certificate::Id": {"Type": "String"}
        }),
        thing_props,
        certificate_by_id(),
        input,
        opts,
    )?;
    let body = template_body(&template)?;
    let mut files = vec![json_file(
        "aws-jitp-template.json",
        &template,
        0,
        "the JITP provisioning template, readable form (its text is registrationConfig.templateBody in aws-jitp-register-ca.json)",
    )];
    // Two documented ways to attach the template: inline in the CA registration, or as a
    // named JITP provisioning template the registration refers to.
    let registration = match setting_str(input, opts, "aws.jitp_template_name")? {
        None => json!({"templateBody": body, "roleArn": role_arn}),
        Some(name) => {
            check_pattern("aws.jitp_template_name", &name, 1, 36, |c| {
                c.is_ascii_alphanumeric() || "_-".contains(c)
            })?;
            let req = json!({
                "templateName": name,
                "description": format!("certfab JITP for profile {}", input.profile),
                "templateBody": body,
                "enabled": true,
                "provisioningRoleArn": role_arn,
                "type": "JITP",
            });
            files.push(json_file(
                "aws-jitp-create-template.json",
                &req,
                0,
                "first: aws iot create-provisioning-template --cli-input-json file://aws-jitp-create-template.json (the CA registration names it)",
            ));
            json!({"templateName": name})
        }
    };
    files.extend(register_ca(F, input, opts, Some(registration))?);
    files.into_iter().try_for_each(|f| out.file(f))
}

/// Just-in-Time Registration: CA registration with auto-registration (no template), the
/// devices' certificate ids for the registration Lambda to check, and the topic rule when a
/// Lambda ARN is set.
pub fn jitr(input: &ExportInput, opts: &ExportOptions, out: &mut Out) -> Result<(), ExportError> {
    const F: Format = Format::AwsJitr;
    require_devices(F, input)?;
    let ca_der = pem_der(&issuing_ca(F, input)?)
        .map_err(|e| ExportError::Input(format!("the manifest's CA certificate: {e}")))?;
    let ca_id = hex::encode(crate::crypto::sha256(&ca_der));
    let topic = format!("$aws/events/certificates/registered/{ca_id}");
    for f in register_ca(F, input, opts, None)? {
        out.file(f)?;
    }
    ndjson_rows(
        input,
        opts,
        out,
        "aws-jitr-devices",
        |_| {
            format!("allow-list for the JITR Lambda behind {topic}: activate (UpdateCertificate newStatus=ACTIVE) only certificateIds listed here, create the thing and attach the policy")
        },
        |d| {
            Ok(json!({
                "certificateId": d.cert_sha256,
                "thingName": thing_name(d)?,
                "deviceId": d.device_id,
                "serial": d.serial,
                "notAfter": d.not_after,
            }))
        },
    )?;
    if let Some(lambda) = setting_str(input, opts, "aws.jitr_lambda_arn")? {
        let rule_name = setting_str(input, opts, "aws.jitr_rule_name")?
            .unwrap_or_else(|| format!("certfab_jitr_{}", &ca_id[..16]));
        check_pattern("aws.jitr_rule_name", &rule_name, 1, 128, |c| {
            c.is_ascii_alphanumeric() || c == '_'
        })?;
        let req = json!({
            "ruleName": rule_name,
            "topicRulePayload": {
                "sql": format!("SELECT * FROM '{topic}'"),
                "description": format!("certfab JITR: certificates registered under CA {ca_id}"),
                "awsIotSqlVersion": "2016-03-23",
                "ruleDisabled": false,
                "actions": [{"lambda": {"functionArn": lambda}}]
            }
        });
        out.file(json_file(
            "aws-jitr-rule.json",
            &req,
            0,
            "aws iot create-topic-rule --cli-input-json file://aws-jitr-rule.json (then let AWS IoT invoke the Lambda: aws lambda add-permission --principal iot.amazonaws.com)",
        ))?;
    }
    Ok(())
}

/// Multi-account registration: one RegisterCertificateWithoutCA request per line.
pub fn multi_account(
    input: &ExportInput,
    opts: &ExportOptions,
    out: &mut Out,
) -> Result<(), ExportError> {
    const F: Format = Format::AwsMultiAccount;
    require_devices(F, input)?;
    let status = cert_status(input, opts)?;
    ndjson_rows(
        input,
        opts,
        out,
        "aws-multi-account",
        |name| {
            format!("in each target account, one call per line: while IFS= read -r req; do aws iot register-certificate-without-ca --cli-input-json \"$req\"; done < {name}")
        },
        |d| Ok(json!({"certificatePem": d.cert_pem, "status": status})),
    )
}

/// A least-privilege IoT policy for the device class: connect only as its own thing, and
/// publish/subscribe/receive only under topics scoped by its thing name.
pub fn policy(input: &ExportInput, opts: &ExportOptions) -> Result<Vec<ExportFile>, ExportError> {
    const F: Format = Format::AwsPolicy;
    let arn = arn_base(F, input, opts)?;
    let mut topics =
        setting_list(input, opts, "aws.topics")?.unwrap_or_else(|| vec![format!("{THING_VAR}/*")]);
    if setting_bool(input, opts, "aws.shadow", true)? {
        topics.push(format!("$aws/things/{THING_VAR}/shadow/*"));
    }
    if setting_bool(input, opts, "aws.jobs", false)? {
        topics.push(format!("$aws/things/{THING_VAR}/jobs/*"));
    }
    for t in &topics {
        if !t.contains(THING_VAR) {
            return Err(ExportError::BadSetting {
                key: "aws.topics".into(),
                value: t.clone(),
                why: format!("every device topic must contain {THING_VAR}, so that no device can reach another's topics"),
            });
        }
    }
    let doc = json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["iot:Connect"],
                "Resource": [format!("{arn}:client/{THING_VAR}")],
                "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}
            },
            {
                "Effect": "Allow",
                "Action": ["iot:Publish", "iot:Receive"],
                "Resource": topics.iter().map(|t| format!("{arn}:topic/{t}")).collect::<Vec<_>>()
            },
            {
                "Effect": "Allow",
                "Action": ["iot:Subscribe"],
                "Resource": topics.iter().map(|t| format!("{arn}:topicfilter/{t}")).collect::<Vec<_>>()
            }
        ]
    });
    let name = policy_name(input, opts)?;
    Ok(policy_files("aws-policy", &name, &doc, &format!(
        "aws iot create-policy --cli-input-json file://aws-policy.json; the bulk, JITP and fleet templates attach policy {name} to each device certificate"
    )))
}

/// Fleet Provisioning by claim: the batch's claim certificate and key (issued through the
/// ledger before rendering), its RegisterCertificateWithoutCA request, the claim policy
/// restricted to the provisioning topics, the fleet provisioning template, and the batch's
/// thing names for a pre-provisioning hook.
pub fn fleet_claim(
    input: &ExportInput,
    opts: &ExportOptions,
    out: &mut Out,
) -> Result<(), ExportError> {
    const F: Format = Format::AwsFleetClaim;
    require_devices(F, input)?;
    let claim = opts.claim.as_ref().ok_or_else(|| {
        ExportError::Usage("aws-fleet-claim needs a claim certificate: certfab export issues one through the ledger when run with --config (see docs/exports.md)".into())
    })?;
    let arn = arn_base(F, input, opts)?;
    let role_arn = role_arn(F, input, opts, "the provisioning role AWS IoT assumes to run the fleet template (managed policy AWSIoTThingsRegistration)")?;
    let template_name = require_str(
        F,
        input,
        opts,
        "aws.template_name",
        "the fleet provisioning template's name, which the claim policy's topics name",
    )?;
    check_pattern("aws.template_name", &template_name, 1, 36, |c| {
        c.is_ascii_alphanumeric() || "_-".contains(c)
    })?;
    let flow = setting_str(input, opts, "aws.claim_flow")?.unwrap_or_else(|| "csr".into());
    let create = match flow.as_str() {
        "csr" => "$aws/certificates/create-from-csr/*",
        "keys" => "$aws/certificates/create/*",
        other => {
            return Err(ExportError::BadSetting {
                key: "aws.claim_flow".into(),
                value: other.into(),
                why: "write csr (CreateCertificateFromCsr: the device keeps its key) or keys (CreateKeysAndCertificate: AWS makes the key)".into(),
            })
        }
    };
    let provision = format!("$aws/provisioning-templates/{template_name}/provision/*");
    let claim_doc = json!({
        "Version": "2012-10-17",
        "Statement": [
            // AWS's example allows Connect on "*"; the account's and region's client
            // resources are the same grant, written so it cannot name anything else.
            {"Effect": "Allow", "Action": ["iot:Connect"], "Resource": [format!("{arn}:client/*")]},
            {
                "Effect": "Allow",
                "Action": ["iot:Publish", "iot:Receive"],
                "Resource": [format!("{arn}:topic/{create}"), format!("{arn}:topic/{provision}")]
            },
            {
                "Effect": "Allow",
                "Action": ["iot:Subscribe"],
                "Resource": [format!("{arn}:topicfilter/{create}"), format!("{arn}:topicfilter/{provision}")]
            }
        ]
    });
    let claim_policy = setting_str(input, opts, "aws.claim_policy_name")?
        .unwrap_or_else(|| format!("{template_name}-claim"));
    check_policy_name("aws.claim_policy_name", &claim_policy)?;

    let mut thing_props = Map::new();
    thing_props.insert("ThingName".into(), json!({"Ref": "ThingName"}));
    thing_extras(input, opts, &mut thing_props)?;
    let template = provisioning_template(
        json!({"ThingName": {"Type": "String"}}),
        thing_props,
        certificate_by_id(),
        input,
        opts,
    )?;
    let mut req = json!({
        "templateName": template_name,
        "description": format!("certfab fleet provisioning for profile {}", input.profile),
        "templateBody": template_body(&template)?,
        "enabled": true,
        "provisioningRoleArn": role_arn,
        "type": "FLEET_PROVISIONING",
    });
    if let Some(hook) = setting_str(input, opts, "aws.pre_provisioning_hook_arn")? {
        req["preProvisioningHook"] = json!({"targetArn": hook, "payloadVersion": "2020-04-01"});
    }

    let mut files = vec![
        pem_file("aws-fleet-claim-cert.pem", &claim.cert_pem, "the claim certificate, installed on every device of the batch with its key"),
        pem_file("aws-fleet-claim-chain.pem", &claim.chain_pem, "the claim certificate and its CA chain, for devices that present the chain"),
        ExportFile {
            name: "aws-fleet-claim-key.pem".into(),
            bytes: claim.key_pem.as_bytes().to_vec(),
            devices: 0,
            consumer: if claim.key_encrypted {
                "the claim private key, PKCS#8 encrypted with --key-passphrase; installed on the batch's devices".into()
            } else {
                "the claim private key, UNENCRYPTED (--plain-keys); installed on the batch's devices".into()
            },
        },
        json_file(
            "aws-fleet-claim-register.json",
            &json!({"certificatePem": claim.cert_pem, "status": "ACTIVE"}),
            0,
            "aws iot register-certificate-without-ca --cli-input-json file://aws-fleet-claim-register.json (prints certificateArn)",
        ),
    ];
    files.extend(policy_files(
        "aws-fleet-claim-policy",
        &claim_policy,
        &claim_doc,
        &format!("aws iot create-policy --cli-input-json file://aws-fleet-claim-policy.json, then aws iot attach-policy --policy-name {claim_policy} --target CLAIM_CERTIFICATE_ARN"),
    ));
    files.push(json_file(
        "aws-fleet-template.json",
        &req,
        0,
        &format!("aws iot create-provisioning-template --cli-input-json file://aws-fleet-template.json; devices then publish to $aws/provisioning-templates/{template_name}/provision/json with parameters.ThingName"),
    ));
    for f in files {
        out.file(f)?;
    }
    ndjson_rows(
        input,
        opts,
        out,
        "aws-fleet-things",
        |_| {
            "the batch's thing names, for the pre-provisioning hook Lambda to allow (parameters.ThingName) and refuse all others".into()
        },
        |d| Ok(json!({"ThingName": thing_name(d)?, "deviceId": d.device_id})),
    )
}

// ---- shared pieces ----

/// The CA registration files for JITP/JITR: `ca.pem`, `verification.pem` (DEFAULT mode) and
/// the RegisterCACertificate request.
fn register_ca(
    f: Format,
    input: &ExportInput,
    opts: &ExportOptions,
    registration: Option<Value>,
) -> Result<Vec<ExportFile>, ExportError> {
    let ca_pem = issuing_ca(f, input)?;
    let mode =
        setting_str(input, opts, "aws.certificate_mode")?.unwrap_or_else(|| "DEFAULT".into());
    let name = format!("{}-register-ca.json", f.name());
    let mut req = json!({
        "caCertificate": ca_pem,
        "setAsActive": true,
        "allowAutoRegistration": true,
        "certificateMode": mode,
    });
    let mut files = vec![pem_file(
        "ca.pem",
        &ca_pem,
        "the issuing CA certificate the devices chain to (caCertificate)",
    )];
    match mode.as_str() {
        "DEFAULT" => {
            let v = opts.verification_cert_pem.as_ref().ok_or_else(|| ExportError::Usage(format!(
                "{}: registering the CA in DEFAULT mode needs a verification certificate: run aws iot get-registration-code, then certfab ca verification-cert --ca NAME --cn CODE --out verification.pem, and pass --verification-cert verification.pem (or --set aws.certificate_mode=SNI_ONLY)",
                f.name()
            )))?;
            check_verification(&ca_pem, v)?;
            req["verificationCertificate"] = Value::String(v.clone());
            files.push(pem_file("verification.pem", v, "the verification certificate (CN = the account's registration code, signed by the CA key in the HSM): verificationCertificate"));
        }
        "SNI_ONLY" => {
            if opts.verification_cert_pem.is_some() {
                return Err(ExportError::Usage("aws.certificate_mode SNI_ONLY takes no verification certificate (AWS requires it empty); drop --verification-cert".into()));
            }
        }
        other => {
            return Err(ExportError::BadSetting {
                key: "aws.certificate_mode".into(),
                value: other.into(),
                why: "write DEFAULT (one account, proof of possession) or SNI_ONLY (several accounts, devices must send SNI)".into(),
            })
        }
    }
    if let Some(r) = registration {
        req["registrationConfig"] = r;
    }
    let next = format!("aws iot register-ca-certificate --cli-input-json file://{name} (setAsActive and allowAutoRegistration are on)");
    files.push(json_file(&name, &req, 0, &next));
    Ok(files)
}

/// Checks that `verification` is an end-entity certificate signed by the CA in `ca_pem`.
fn check_verification(ca_pem: &str, verification: &str) -> Result<(), ExportError> {
    let bad = |why: String| ExportError::Usage(format!("--verification-cert: {why}"));
    let ca =
        crate::x509::CaCert::from_der(pem_der(ca_pem).map_err(&bad)?, "the manifest's CA".into())
            .map_err(|e| bad(e.to_string()))?;
    let v = crate::x509::CaCert::from_der(
        pem_der(verification).map_err(&bad)?,
        "the verification certificate".into(),
    )
    .map_err(|e| bad(e.to_string()))?;
    v.check_signed_by(&ca).map_err(|_| {
        bad("it is not signed by the manifest's issuing CA; make it with certfab ca verification-cert --ca <the CA that issued these devices>".into())
    })
}

fn role_arn(
    f: Format,
    input: &ExportInput,
    opts: &ExportOptions,
    why: &str,
) -> Result<String, ExportError> {
    let r = require_str(f, input, opts, "aws.role_arn", why)?;
    if !(20..=2048).contains(&r.len()) || !r.starts_with("arn:") || !r.contains(":role/") {
        return Err(ExportError::BadSetting {
            key: "aws.role_arn".into(),
            value: r,
            why: "an IAM role ARN, e.g. arn:aws:iam::123456789012:role/IoTRegistration (20..2048 characters)".into(),
        });
    }
    Ok(r)
}

/// `arn:PARTITION:iot:REGION:ACCOUNT`, from the settings.
fn arn_base(f: Format, input: &ExportInput, opts: &ExportOptions) -> Result<String, ExportError> {
    let region = require_str(
        f,
        input,
        opts,
        "aws.region",
        "the AWS region in the policy's resource ARNs",
    )?;
    check_pattern("aws.region", &region, 1, 32, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
    })?;
    let account = require_str(
        f,
        input,
        opts,
        "aws.account_id",
        "the 12-digit AWS account id in the policy's resource ARNs",
    )?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ExportError::BadSetting {
            key: "aws.account_id".into(),
            value: account,
            why: "an AWS account id is 12 digits".into(),
        });
    }
    let partition = setting_str(input, opts, "aws.partition")?.unwrap_or_else(|| "aws".into());
    if !["aws", "aws-cn", "aws-us-gov"].contains(&partition.as_str()) {
        return Err(ExportError::BadSetting {
            key: "aws.partition".into(),
            value: partition,
            why: "write aws, aws-cn or aws-us-gov".into(),
        });
    }
    Ok(format!("arn:{partition}:iot:{region}:{account}"))
}

/// The device policy name: `aws.policy_name`, default `<profile>-device`.
fn policy_name(input: &ExportInput, opts: &ExportOptions) -> Result<String, ExportError> {
    let name = setting_str(input, opts, "aws.policy_name")?
        .unwrap_or_else(|| format!("{}-device", input.profile));
    check_policy_name("aws.policy_name", &name)?;
    Ok(name)
}

fn check_policy_name(key: &str, name: &str) -> Result<(), ExportError> {
    check_pattern(key, name, 1, 128, |c| {
        c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
    })
}

fn cert_status(input: &ExportInput, opts: &ExportOptions) -> Result<String, ExportError> {
    let s = setting_str(input, opts, "aws.certificate_status")?.unwrap_or_else(|| "ACTIVE".into());
    if !["ACTIVE", "INACTIVE"].contains(&s.as_str()) {
        return Err(ExportError::BadSetting {
            key: "aws.certificate_status".into(),
            value: s,
            why: "write ACTIVE or INACTIVE".into(),
        });
    }
    Ok(s)
}

/// Optional thing type and groups, identical for every device of the class.
fn thing_extras(
    input: &ExportInput,
    opts: &ExportOptions,
    props: &mut Map<String, Value>,
) -> Result<(), ExportError> {
    if let Some(t) = setting_str(input, opts, "aws.thing_type")? {
        check_pattern("aws.thing_type", &t, 1, 128, |c| {
            c.is_ascii_alphanumeric() || ":_-".contains(c)
        })?;
        props.insert("ThingTypeName".into(), Value::String(t));
    }
    if let Some(groups) = setting_list(input, opts, "aws.thing_groups")? {
        for g in &groups {
            check_pattern("aws.thing_groups", g, 1, 128, |c| {
                c.is_ascii_alphanumeric() || ":_-".contains(c)
            })?;
        }
        if !groups.is_empty() {
            props.insert("ThingGroups".into(), json!(groups));
        }
    }
    Ok(())
}

/// The device's thing name: its rendered `cloud.aws.thing_name` (or `cloud.thing_name`), else
/// its device id, checked
/// against AWS's thing-name rule (`[a-zA-Z0-9:_-]+`, 1..128).
pub fn thing_name(d: &ExportDevice) -> Result<String, ExportError> {
    let name = match super::device_setting(d, "aws.thing_name") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(device_err(
                d,
                format!("cloud.aws.thing_name is {other}, not text"),
            ))
        }
        None => d.device_id.clone(),
    };
    if name.is_empty()
        || name.len() > 128
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_-".contains(c))
    {
        return Err(device_err(
            d,
            format!("thing name {name:?} breaks AWS IoT's rule [a-zA-Z0-9:_-]{{1,128}}; set the profile's cloud.aws.thing_name template or its names policy"),
        ));
    }
    Ok(name)
}

/// The device's thing attributes (`cloud.aws.attributes`), checked against AWS's attribute rules
/// (name `[a-zA-Z0-9_]` here, so it can also name a template parameter; value
/// `[a-zA-Z0-9_.,@/:#=\[\]-]*`, at most 800 characters).
fn attributes(d: &ExportDevice) -> Result<std::collections::BTreeMap<String, String>, ExportError> {
    let mut out = std::collections::BTreeMap::new();
    let Some(v) = super::device_setting(d, "aws.attributes") else {
        return Ok(out);
    };
    let map = v
        .as_object()
        .ok_or_else(|| device_err(d, "cloud.aws.attributes is not a map".into()))?;
    for (k, v) in map {
        let v = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => return Err(device_err(d, format!("attribute {k} is {other}, not text"))),
        };
        if k.is_empty()
            || k.len() > 128
            || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(device_err(
                d,
                format!("attribute name {k:?}: use letters, digits and _ (at most 128)"),
            ));
        }
        if v.len() > 800
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.,@/:#=[]-".contains(c))
        {
            return Err(device_err(
                d,
                format!("attribute {k} = {v:?} breaks AWS IoT's rule [a-zA-Z0-9_.,@/:#=\\[\\]-]{{0,800}}"),
            ));
        }
        out.insert(k.clone(), v);
    }
    Ok(out)
}

fn attr_param(key: &str) -> String {
    format!("Attribute_{key}")
}

/// The subject CN of the device certificate.
fn subject_cn(d: &ExportDevice) -> Result<Option<String>, ExportError> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(&d.cert_der)
        .map_err(|e| device_err(d, format!("certificate does not parse: {e}")))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(String::from);
    Ok(cn)
}

fn issuing_ca(f: Format, input: &ExportInput) -> Result<String, ExportError> {
    input.ca_chain_pem.first().cloned().ok_or_else(|| {
        ExportError::Input(format!(
            "{}: the manifest {} carries no issuing CA certificate",
            f.name(),
            input.manifest_path.display()
        ))
    })
}

/// A provisioning template with `parameters` and the three resources every certfab template
/// creates: the thing (`thing_props`), its certificate (`certificate` properties) and the
/// policy attached to it.
fn provisioning_template(
    parameters: Value,
    thing_props: Map<String, Value>,
    certificate: Value,
    input: &ExportInput,
    opts: &ExportOptions,
) -> Result<Value, ExportError> {
    Ok(json!({
        "Parameters": parameters,
        "Resources": {
            "thing": {"Type": "AWS::IoT::Thing", "Properties": thing_props},
            "certificate": {"Type": "AWS::IoT::Certificate", "Properties": certificate},
            "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": policy_name(input, opts)?}}
        }
    }))
}

/// Certificate properties for templates run on a certificate AWS already holds (JITP, fleet
/// provisioning), which it names by ID.
fn certificate_by_id() -> Value {
    json!({
        "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"},
        "Status": "ACTIVE"
    })
}

/// The template as the compact JSON string AWS takes in `templateBody`, within its limit.
fn template_body(template: &Value) -> Result<String, ExportError> {
    let body = serde_json::to_string(template).unwrap_or_default();
    if body.len() > TEMPLATE_BODY_MAX {
        return Err(ExportError::Input(format!(
            "the provisioning template is {} characters; AWS IoT accepts at most {TEMPLATE_BODY_MAX} (fewer thing groups or attributes)",
            body.len()
        )));
    }
    Ok(body)
}

/// CreatePolicy request and the readable policy document.
fn policy_files(stem: &str, name: &str, doc: &Value, consumer: &str) -> Vec<ExportFile> {
    let req = json!({
        "policyName": name,
        "policyDocument": serde_json::to_string(doc).unwrap_or_default(),
    });
    vec![
        json_file(&format!("{stem}.json"), &req, 0, consumer),
        json_file(
            &format!("{stem}-document.json"),
            doc,
            0,
            &format!(
                "policy {name}, readable form (the same text is policyDocument in {stem}.json)"
            ),
        ),
    ]
}

fn json_file(name: &str, v: &Value, devices: usize, consumer: &str) -> ExportFile {
    let mut bytes = serde_json::to_vec_pretty(v).unwrap_or_default();
    bytes.push(b'\n');
    ExportFile {
        name: name.into(),
        bytes,
        devices,
        consumer: consumer.into(),
    }
}

/// One JSON line per device (`row`), written as the devices are read into
/// `PREFIX-NNNN.jsonl` shards of `--max-rows` lines; `consumer` describes a shard by name.
fn ndjson_rows(
    input: &ExportInput,
    opts: &ExportOptions,
    out: &mut Out,
    prefix: &str,
    consumer: impl Fn(&str) -> String,
    mut row: impl FnMut(&ExportDevice) -> Result<Value, ExportError>,
) -> Result<(), ExportError> {
    let mut shards = Rows::new(opts.max_rows);
    let mut line = String::new();
    input.each_device(|d| {
        line.clear();
        line.push_str(&serde_json::to_string(&row(d)?).unwrap_or_default());
        line.push('\n');
        let id = shards.next(out, |out, i| {
            let name = shard_name(prefix, i, "jsonl");
            let c = consumer(&name);
            out.open(&name, c)
        })?;
        out.write(id, line.as_bytes())
    })?;
    shards.finish(out)
}

fn pem_file(name: &str, pem: &str, consumer: &str) -> ExportFile {
    ExportFile {
        name: name.into(),
        bytes: pem.as_bytes().to_vec(),
        devices: 0,
        consumer: consumer.into(),
    }
}

fn pem_der(pem: &str) -> Result<Vec<u8>, String> {
    pem_rfc7468::decode_vec(pem.as_bytes())
        .map(|(_, der)| der)
        .map_err(|e| format!("not a PEM certificate: {e}"))
}

fn device_err(d: &ExportDevice, why: String) -> ExportError {
    ExportError::Device {
        device_id: d.device_id.clone(),
        seq: d.seq,
        why,
    }
}

fn check_pattern(
    key: &str,
    value: &str,
    min: usize,
    max: usize,
    ok: impl Fn(char) -> bool,
) -> Result<(), ExportError> {
    if value.len() < min || value.len() > max || !value.chars().all(ok) {
        return Err(ExportError::BadSetting {
            key: key.into(),
            value: value.into(),
            why: format!("AWS IoT takes {min}..{max} characters of its allowed set here (docs/exports.md lists them)"),
        });
    }
    Ok(())
}
