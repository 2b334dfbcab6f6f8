//! AWS IoT exports from certificates certfab really issued on a SoftHSM dev line, checked
//! against AWS's own API model (botocore's iot service model, through its ParamValidator),
//! with OpenSSL for every certificate the HSM signed for them.

use crate::common;

use crate::common::{openssl, text, Line};
use certfab::exports::{self as export, ExportFile, ExportInput, ExportOptions, Format};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const DEVICES: usize = 5;
const ACCOUNT: &str = "123456789012";
const ROLE: &str = "arn:aws:iam::123456789012:role/certfab-registration";

/// One dev line, one batch of devices and its signed manifest for the whole file.
struct Fixture {
    line: Line,
    manifest: PathBuf,
    input: ExportInput,
}

/// The test profile: aws-iot plus a `cloud:` section (class-level settings and per-device
/// templates the manifest renders for each device).
fn test_profile(dir: &Path) -> PathBuf {
    common::derived_profile(
        dir,
        "aws-export.yaml",
        "aws-iot.yaml",
        &[
            ("name: aws-iot\n", "name: aws-export\n"),
            (
                "names:\n",
                "cloud:\n  aws:\n    region: eu-central-1\n    account_id: \"123456789012\"\n    topics: [\"${{iot:Connection.Thing.ThingName}}/telemetry/*\"]\n    thing_name: \"{device_id}\"\n    attributes:\n      certSerial: \"{cert.serial}\"\nnames:\n",
            ),
        ],
    )
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let line = Line::new();
        let profile = test_profile(line.path());
        let out = line.file("devices");
        let summary = line.host_batch(
            profile.to_str().unwrap(),
            DEVICES,
            "thing-{seq:03}",
            &out,
            &["--plain-keys"],
        );
        let batch = summary["batch"].as_str().unwrap();
        let manifest = line.file("batch.manifest.jsonl");
        let o = line.manifest_build(&[batch], Some(profile.to_str().unwrap()), &manifest);
        assert!(o.status.success(), "{}", text(&o));
        let trust = certfab::manifests::Trust::resolve(None, Some(&line.config())).unwrap();
        let input = ExportInput::from(&certfab::manifests::verify(&manifest, &trust).unwrap());
        assert_eq!(input.devices.len(), DEVICES);
        Fixture {
            line,
            manifest,
            input,
        }
    })
}

/// The tests that sign a claim write the line's ledger, which one certfab holds at a time:
/// they take turns.
fn ledger_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn opts(settings: &[(&str, &str)]) -> ExportOptions {
    ExportOptions {
        settings: settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn aws_settings() -> Vec<(&'static str, &'static str)> {
    vec![
        ("aws.region", "eu-central-1"),
        ("aws.account_id", ACCOUNT),
        ("aws.role_arn", ROLE),
        ("aws.bucket", "certfab-line-1"),
        ("aws.key_prefix", "batches/"),
        ("aws.template_name", "certfab-fleet"),
    ]
}

fn file<'a>(files: &'a [ExportFile], name: &str) -> &'a ExportFile {
    files
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", names(files)))
}

fn names(files: &[ExportFile]) -> Vec<&str> {
    files.iter().map(|f| f.name.as_str()).collect()
}

fn json_of(f: &ExportFile) -> Value {
    serde_json::from_slice(&f.bytes).unwrap_or_else(|e| panic!("{}: {e}", f.name))
}

fn lines_of(f: &ExportFile) -> Vec<Value> {
    std::str::from_utf8(&f.bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", f.name)))
        .collect()
}

/// Runs the python `script` (relative to the repo) with `body` as JSON on stdin and returns
/// the JSON list it prints; `cannot_run` says what a failure to run means.
fn python_json(script: &str, body: &[Value], cannot_run: &str) -> Vec<Value> {
    use std::io::Write;
    let mut child = std::process::Command::new(common::python())
        .arg(common::repo().join(script))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the test Python (common::python)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(body).unwrap().as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{cannot_run}: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Validates request bodies with botocore's ParamValidator and the model's limits; panics
/// with botocore's report on any error.
fn botocore_validate(reqs: &[(&str, &str, Value)]) {
    let body: Vec<Value> = reqs
        .iter()
        .map(|(label, op, params)| json!({"label": label, "operation": op, "params": params}))
        .collect();
    let results = python_json(
        "tests/support/aws_validate.py",
        &body,
        "botocore validation could not run (hsm-fixtures/setup-host.sh installs botocore)",
    );
    assert_eq!(results.len(), reqs.len());
    for r in results {
        assert_eq!(r["errors"], json!([]), "{}: {}", r["label"], r["errors"]);
    }
}

/// Lints IoT policy documents with parliament (AWS's IAM action/resource database): actions
/// exist and each resource is of the type its action takes (client/topic/topicfilter).
fn policy_lint(docs: &[(&str, Value)]) {
    let body: Vec<Value> = docs
        .iter()
        .map(|(label, d)| json!({"label": label, "document": d}))
        .collect();
    let results = python_json(
        "tests/support/iot_policy_lint.py",
        &body,
        "parliament could not run (hsm-fixtures/setup-host.sh installs it)",
    );
    assert_eq!(results.len(), docs.len());
    for r in results {
        assert_eq!(
            r["findings"],
            json!([]),
            "{}: {}",
            r["label"],
            r["findings"]
        );
    }
}

/// Checks a template's shape: Parameters with Type String, Resources of the three IoT types,
/// every Ref naming a declared parameter (fleet templates may also use AWS IoT's own
/// pseudo-parameters such as `AWS::IoT::Certificate::Id` undeclared, as AWS's fleet example
/// does), and its text within AWS's templateBody limit.
fn check_template(body: &str, must_have_params: &[&str]) -> Value {
    check_template_with(body, must_have_params, false)
}

fn check_template_with(body: &str, must_have_params: &[&str], fleet: bool) -> Value {
    assert!(body.len() <= 10240, "templateBody {} chars", body.len());
    let t: Value = serde_json::from_str(body).unwrap();
    let params = t["Parameters"].as_object().unwrap();
    for p in must_have_params {
        assert_eq!(params[*p]["Type"], "String", "{p}");
    }
    let res = t["Resources"].as_object().unwrap();
    let types: Vec<&str> = res.values().map(|r| r["Type"].as_str().unwrap()).collect();
    for ty in [
        "AWS::IoT::Thing",
        "AWS::IoT::Certificate",
        "AWS::IoT::Policy",
    ] {
        assert!(types.contains(&ty), "{ty} in {types:?}");
    }
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("Ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut r = Vec::new();
    refs(&t["Resources"], &mut r);
    for name in r {
        let pseudo = fleet && name.starts_with("AWS::IoT::");
        assert!(
            pseudo || params.contains_key(&name),
            "Ref {name} is not a declared parameter"
        );
    }
    t
}

fn write_tmp(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn bulk_registration_lines_template_and_start_task_requests() {
    let fx = fixture();
    let o = opts(&aws_settings());
    let files = export::render(Format::AwsBulk, &fx.input, &o).unwrap();
    let rows = lines_of(file(&files, "aws-bulk-0001.jsonl"));
    assert_eq!(rows.len(), DEVICES);
    let tpl = json_of(file(&files, "aws-bulk-template.json"));
    let req = json_of(file(&files, "aws-bulk-0001.start-task.json"));
    botocore_validate(&[("bulk", "StartThingRegistrationTask", req.clone())]);
    assert_eq!(req["inputFileKey"], "batches/aws-bulk-0001.jsonl");
    assert_eq!(req["inputFileBucket"], "certfab-line-1");
    assert_eq!(req["roleArn"], ROLE);
    let t = check_template(
        req["templateBody"].as_str().unwrap(),
        &["ThingName", "CertificatePem", "CACertificatePem"],
    );
    assert_eq!(t, tpl, "the readable template is the templateBody");
    assert_eq!(
        t["Resources"]["policy"]["Properties"]["PolicyName"],
        "aws-export-device"
    );
    // Every line carries exactly the template's parameters; the certificates are the devices'
    // own, each chaining to the CA sent beside it.
    let params: Vec<&String> = t["Parameters"].as_object().unwrap().keys().collect();
    let tmp = tempfile::tempdir().unwrap();
    for (row, d) in rows.iter().zip(&fx.input.devices) {
        let keys: Vec<&String> = row.as_object().unwrap().keys().collect();
        let mut k = keys.clone();
        k.sort();
        let mut p = params.clone();
        p.sort();
        assert_eq!(k, p);
        assert_eq!(row["ThingName"], d.device_id);
        assert_eq!(row["CertificatePem"], d.cert_pem);
        let cert = write_tmp(
            tmp.path(),
            "c.pem",
            row["CertificatePem"].as_str().unwrap().as_bytes(),
        );
        let ca = write_tmp(
            tmp.path(),
            "ca.pem",
            row["CACertificatePem"].as_str().unwrap().as_bytes(),
        );
        let v = common::openssl_verify(&ca, &[], &["-partial_chain"], &cert);
        assert!(v.status.success(), "{}", text(&v));
    }
    // Thing names and attributes as AWS's model allows them: each line as the CreateThing
    // request the template amounts to.
    let things: Vec<(&str, &str, Value)> = rows
        .iter()
        .map(|r| {
            (
                "thing",
                "CreateThing",
                json!({"thingName": r["ThingName"],
                       "attributePayload": {"attributes": {"certSerial": r["Attribute_certSerial"]}}}),
            )
        })
        .collect();
    botocore_validate(&things);
    assert_eq!(
        t["Resources"]["thing"]["Properties"]["AttributePayload"],
        json!({"certSerial": {"Ref": "Attribute_certSerial"}})
    );
    // One JSON object per line, newline-terminated (NDJSON).
    let raw = std::str::from_utf8(&file(&files, "aws-bulk-0001.jsonl").bytes).unwrap();
    assert!(raw.ends_with('\n') && raw.lines().count() == DEVICES);

    // Without the account's role and bucket the input files and template are still exported
    // (they need neither); the start-task request, which does, is not invented.
    let bare = export::render(Format::AwsBulk, &fx.input, &opts(&[])).unwrap();
    let names: Vec<&str> = bare.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["aws-bulk-template.json", "aws-bulk-0001.jsonl"]);
    assert_eq!(
        file(&bare, "aws-bulk-0001.jsonl").bytes,
        file(&files, "aws-bulk-0001.jsonl").bytes
    );
    // Half of them is a mistake: the missing one is named.
    let e =
        export::render(Format::AwsBulk, &fx.input, &opts(&[("aws.bucket", "b-1")])).unwrap_err();
    assert!(e.to_string().contains("aws.role_arn"), "{e}");
    let mut s = aws_settings();
    s.push(("aws.bucket", "bad bucket!"));
    let e = export::render(Format::AwsBulk, &fx.input, &opts(&s)).unwrap_err();
    assert!(e.to_string().contains("aws.bucket"), "{e}");
}

#[test]
fn max_rows_shards_every_row_format_without_losing_or_repeating_devices() {
    let fx = fixture();
    let mut o = opts(&aws_settings());
    o.max_rows = Some(2);
    let mut reqs = Vec::new();
    for (format, prefix) in [
        (Format::AwsBulk, "aws-bulk"),
        (Format::AwsMultiAccount, "aws-multi-account"),
    ] {
        let files = export::render(format, &fx.input, &o).unwrap();
        let shards: Vec<&ExportFile> = files
            .iter()
            .filter(|f| f.name.starts_with(prefix) && f.name.ends_with(".jsonl"))
            .collect();
        assert_eq!(
            shards.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            [
                format!("{prefix}-0001.jsonl"),
                format!("{prefix}-0002.jsonl"),
                format!("{prefix}-0003.jsonl")
            ]
        );
        assert_eq!(
            shards.iter().map(|f| f.devices).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        let mut pems: Vec<String> = shards
            .iter()
            .flat_map(|f| lines_of(f))
            .map(|r| {
                r.get("CertificatePem")
                    .or(r.get("certificatePem"))
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        for (f, l) in shards.iter().zip([2, 2, 1]) {
            assert_eq!(lines_of(f).len(), l, "{}", f.name);
        }
        pems.dedup();
        let mut want: Vec<String> = fx
            .input
            .devices
            .iter()
            .map(|d| d.cert_pem.clone())
            .collect();
        want.dedup();
        assert_eq!(pems, want, "{prefix}: every device once, in manifest order");
        if format == Format::AwsBulk {
            for i in 1..=3 {
                let r = json_of(file(&files, &format!("aws-bulk-{i:04}.start-task.json")));
                assert_eq!(r["inputFileKey"], format!("batches/aws-bulk-{i:04}.jsonl"));
                reqs.push(r);
            }
        }
    }
    let labelled: Vec<(&str, &str, Value)> = reqs
        .into_iter()
        .map(|r| ("shard", "StartThingRegistrationTask", r))
        .collect();
    botocore_validate(&labelled);
    o.max_rows = Some(0);
    assert!(export::render(Format::AwsBulk, &fx.input, &o).is_err());
}

#[test]
fn multi_account_lines_are_register_certificate_without_ca_requests() {
    let fx = fixture();
    let files = export::render(Format::AwsMultiAccount, &fx.input, &opts(&[])).unwrap();
    let rows = lines_of(file(&files, "aws-multi-account-0001.jsonl"));
    assert_eq!(rows.len(), DEVICES);
    let reqs: Vec<(&str, &str, Value)> = rows
        .iter()
        .map(|r| ("line", "RegisterCertificateWithoutCA", r.clone()))
        .collect();
    botocore_validate(&reqs);
    assert!(rows.iter().all(|r| r["status"] == "ACTIVE"));
    let e = export::render(
        Format::AwsMultiAccount,
        &fx.input,
        &opts(&[("aws.certificate_status", "REVOKED")]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("aws.certificate_status"), "{e}");
}

/// Every resource of a device policy is scoped by the thing-name variable; the only
/// statements are Connect (client = thing name, thing attached) and topic access.
#[test]
fn device_policy_is_least_privilege_with_thing_name_variables() {
    let fx = fixture();
    let files = export::render(Format::AwsPolicy, &fx.input, &opts(&aws_settings())).unwrap();
    let req = json_of(file(&files, "aws-policy.json"));
    botocore_validate(&[("policy", "CreatePolicy", req.clone())]);
    let doc: Value = serde_json::from_str(req["policyDocument"].as_str().unwrap()).unwrap();
    assert_eq!(doc, json_of(file(&files, "aws-policy-document.json")));
    policy_lint(&[("device policy", doc.clone())]);
    assert_eq!(doc["Version"], "2012-10-17");
    let arn = format!("arn:aws:iot:eu-central-1:{ACCOUNT}:");
    let mut actions = Vec::new();
    for st in doc["Statement"].as_array().unwrap() {
        assert_eq!(st["Effect"], "Allow");
        for a in st["Action"].as_array().unwrap() {
            actions.push(a.as_str().unwrap().to_string());
        }
        for r in st["Resource"].as_array().unwrap() {
            let r = r.as_str().unwrap();
            assert!(r.starts_with(&arn), "{r}");
            assert!(
                r.contains("${iot:Connection.Thing.ThingName}"),
                "unscoped resource {r}"
            );
            assert!(
                !r.trim_end_matches("/*").contains('*'),
                "wildcard inside {r}"
            );
        }
        if st["Action"] == json!(["iot:Subscribe"]) {
            // The profile's aws.topics (written with {{ }} escapes) as the manifest rendered
            // it, plus the shadow.
            assert_eq!(
                st["Resource"],
                json!([
                    format!("{arn}topicfilter/${{iot:Connection.Thing.ThingName}}/telemetry/*"),
                    format!(
                        "{arn}topicfilter/$aws/things/${{iot:Connection.Thing.ThingName}}/shadow/*"
                    )
                ])
            );
        }
        if st["Action"] == json!(["iot:Connect"]) {
            assert_eq!(
                st["Resource"],
                json!([format!("{arn}client/${{iot:Connection.Thing.ThingName}}")])
            );
            assert_eq!(
                st["Condition"]["Bool"]["iot:Connection.Thing.IsAttached"],
                "true"
            );
        }
    }
    actions.sort();
    assert_eq!(
        actions,
        ["iot:Connect", "iot:Publish", "iot:Receive", "iot:Subscribe"]
    );
    // A topic outside the device's own namespace is refused.
    let mut s = aws_settings();
    s.push(("aws.topics", "telemetry/*"));
    let e = export::render(Format::AwsPolicy, &fx.input, &opts(&s)).unwrap_err();
    assert!(e.to_string().contains("aws.topics"), "{e}");
    // Region and account come from the profile's cloud: section (the manifest header);
    // without them the export names what is missing, and --set overrides them.
    assert_eq!(fx.input.cloud["aws"]["account_id"], ACCOUNT);
    let mut bare = fx.input.clone();
    bare.cloud.clear();
    bare.devices.iter_mut().for_each(|d| d.cloud.clear());
    let e = export::render(
        Format::AwsPolicy,
        &bare,
        &opts(&[("aws.region", "eu-central-1")]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("aws.account_id"), "{e}");
    let files = export::render(
        Format::AwsPolicy,
        &fx.input,
        &opts(&[("aws.region", "us-east-2")]),
    )
    .unwrap();
    assert!(
        std::str::from_utf8(&file(&files, "aws-policy-document.json").bytes)
            .unwrap()
            .contains("arn:aws:iot:us-east-2:123456789012:client/")
    );
}

/// `certfab ca verification-cert` signs CN=<registration code> with the CA key in the HSM;
/// JITP and JITR register the CA with it, and refuse one from another CA.
#[test]
fn verification_cert_jitp_and_jitr_bundles() {
    let fx = fixture();
    let _turn = ledger_turn();
    let line = &fx.line;
    let code = "5e9ac1a0c2d4b1f8a3e6d7c9b0a1f2e3d4c5b6a7980f1e2d3c4b5a69788796a5";
    let vpath = line.file("verification.pem");
    let out = line.verification_cert(code, &vpath);
    assert_eq!(out["cn"], code);
    // The CA signature is in the ledger's audit chain before the file exists.
    let detail: String = common::ledger(line)
        .query_row(
            "SELECT detail FROM audit WHERE kind = 'verification_cert_signed' ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let detail: Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["cn"], code);
    assert_eq!(detail["serial"], out["serial"]);
    assert_eq!(detail["sha256"], out["sha256"]);
    assert_eq!(
        common::openssl_x509(&vpath, &["-serial"])
            .trim()
            .to_lowercase(),
        format!("serial={}", detail["serial"].as_str().unwrap())
    );
    let chain = certfab::Ledger::open_read(line.file("ledger.sqlite"), "dev-line")
        .unwrap()
        .verify_audit_chain();
    assert!(chain.is_ok(), "{chain:?}");
    let s = common::openssl_x509(&vpath, &["-subject", "-ext", "basicConstraints", "-dates"]);
    assert!(
        s.contains(&format!("subject=CN = {code}")) || s.contains(&format!("subject=CN={code}")),
        "{s}"
    );
    assert!(s.contains("CA:FALSE"), "{s}");
    // Short-lived: at most a day (plus the 5-minute backdate).
    let nb = time::OffsetDateTime::parse(
        out["not_before"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let na = time::OffsetDateTime::parse(
        out["not_after"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(na - nb <= time::Duration::days(1), "{nb} .. {na}");
    // Refusals: an existing file, and a CN that cannot be a code.
    let again = line.run_verification_cert(&[], "issuing", code, &vpath);
    assert_eq!(again.status.code(), Some(5), "{}", text(&again));
    let bad = line.run_verification_cert(&[], "issuing", "a b/c", &line.file("bad.pem"));
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(!line.file("bad.pem").exists());
    let noca = line.run_verification_cert(&[], "nope", code, &line.file("bad.pem"));
    assert_eq!(noca.status.code(), Some(2), "{}", text(&noca));

    let vpem = std::fs::read_to_string(&vpath).unwrap();
    let mut o = opts(&aws_settings());
    o.verification_cert_pem = Some(vpem.clone());
    let jitp = export::render(Format::AwsJitp, &fx.input, &o).unwrap();
    let reg = json_of(file(&jitp, "aws-jitp-register-ca.json"));
    botocore_validate(&[("jitp", "RegisterCACertificate", reg.clone())]);
    assert_eq!(reg["caCertificate"], fx.input.ca_chain_pem[0]);
    assert_eq!(reg["verificationCertificate"], vpem);
    assert_eq!(reg["allowAutoRegistration"], true);
    assert_eq!(reg["setAsActive"], true);
    assert_eq!(reg["registrationConfig"]["roleArn"], ROLE);
    let t = check_template(
        reg["registrationConfig"]["templateBody"].as_str().unwrap(),
        &[
            "AWS::IoT::Certificate::CommonName",
            "AWS::IoT::Certificate::Id",
        ],
    );
    assert_eq!(t, json_of(file(&jitp, "aws-jitp-template.json")));
    // JITP may declare only subject-derived parameters (and the certificate id).
    for p in t["Parameters"].as_object().unwrap().keys() {
        assert!(p.starts_with("AWS::IoT::Certificate::"), "{p}");
    }
    assert_eq!(
        t["Resources"]["certificate"]["Properties"]["CertificateId"],
        json!({"Ref": "AWS::IoT::Certificate::Id"})
    );
    assert_eq!(
        file(&jitp, "ca.pem").bytes,
        fx.input.ca_chain_pem[0].as_bytes()
    );
    // The named-template form: CreateProvisioningTemplate (type JITP) + registrationConfig
    // naming it.
    let mut named = o.clone();
    named
        .settings
        .insert("aws.jitp_template_name".into(), "certfab-jitp".into());
    let files = export::render(Format::AwsJitp, &fx.input, &named).unwrap();
    let create = json_of(file(&files, "aws-jitp-create-template.json"));
    let reg2 = json_of(file(&files, "aws-jitp-register-ca.json"));
    botocore_validate(&[
        ("jitp-named", "CreateProvisioningTemplate", create.clone()),
        ("jitp-named-ca", "RegisterCACertificate", reg2.clone()),
    ]);
    assert_eq!(create["type"], "JITP");
    assert_eq!(
        create["templateBody"],
        reg["registrationConfig"]["templateBody"]
    );
    assert_eq!(
        reg2["registrationConfig"],
        json!({"templateName": "certfab-jitp"})
    );

    let jitr = export::render(
        Format::AwsJitr,
        &fx.input,
        &ExportOptions {
            settings: [(
                "aws.jitr_lambda_arn".to_string(),
                "arn:aws:lambda:eu-central-1:123456789012:function:certfab-jitr".to_string(),
            )]
            .into(),
            verification_cert_pem: Some(vpem.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let reg = json_of(file(&jitr, "aws-jitr-register-ca.json"));
    assert!(reg.get("registrationConfig").is_none());
    let rule = json_of(file(&jitr, "aws-jitr-rule.json"));
    botocore_validate(&[
        ("jitr", "RegisterCACertificate", reg),
        ("jitr-rule", "CreateTopicRule", rule.clone()),
    ]);
    let ca_der = pem_rfc7468::decode_vec(fx.input.ca_chain_pem[0].as_bytes())
        .unwrap()
        .1;
    let ca_id = hex::encode(certfab::sha256(&ca_der));
    assert_eq!(
        rule["topicRulePayload"]["sql"],
        format!("SELECT * FROM '$aws/events/certificates/registered/{ca_id}'")
    );
    let allow = lines_of(file(&jitr, "aws-jitr-devices-0001.jsonl"));
    assert_eq!(
        allow
            .iter()
            .map(|r| r["certificateId"].as_str().unwrap())
            .collect::<Vec<_>>(),
        fx.input
            .devices
            .iter()
            .map(|d| d.cert_sha256.as_str())
            .collect::<Vec<_>>()
    );

    // A verification certificate from another CA is refused; SNI_ONLY needs none.
    let other = line.file("verification-matter.pem");
    let o2 = line.run_verification_cert(&[], "matter-pai", code, &other);
    assert!(o2.status.success(), "{}", text(&o2));
    let mut wrong = opts(&aws_settings());
    wrong.verification_cert_pem = Some(std::fs::read_to_string(&other).unwrap());
    let e = export::render(Format::AwsJitp, &fx.input, &wrong).unwrap_err();
    assert!(
        e.to_string()
            .contains("not signed by the manifest's issuing CA"),
        "{e}"
    );
    let e = export::render(Format::AwsJitp, &fx.input, &opts(&aws_settings())).unwrap_err();
    assert!(
        e.to_string().contains("certfab ca verification-cert"),
        "{e}"
    );
    let mut sni = aws_settings();
    sni.push(("aws.certificate_mode", "SNI_ONLY"));
    let files = export::render(Format::AwsJitp, &fx.input, &opts(&sni)).unwrap();
    let reg = json_of(file(&files, "aws-jitp-register-ca.json"));
    assert!(reg.get("verificationCertificate").is_none());
    assert_eq!(reg["certificateMode"], "SNI_ONLY");
    botocore_validate(&[("jitp-sni", "RegisterCACertificate", reg)]);
}

/// A device whose thing name is not its CN cannot be provisioned by JITP: refused, naming it.
#[test]
fn jitp_refuses_thing_names_the_subject_cannot_give() {
    let fx = fixture();
    let mut input = fx.input.clone();
    // As the manifest renders a profile's `cloud: {aws: {thing_name: …}}` for each device.
    input.devices[2].cloud.insert(
        "aws".into(),
        json!({"thing_name": "other-name", "attributes": {"certSerial": "x1"}}),
    );
    let mut s = aws_settings();
    s.push(("aws.certificate_mode", "SNI_ONLY"));
    let e = export::render(Format::AwsJitp, &input, &opts(&s)).unwrap_err();
    assert!(
        e.to_string().contains("thing-003") && e.to_string().contains("aws-bulk"),
        "{e}"
    );
    // …while bulk registration takes it, and rejects a name AWS would refuse.
    let files = export::render(Format::AwsBulk, &input, &opts(&aws_settings())).unwrap();
    assert_eq!(
        lines_of(file(&files, "aws-bulk-0001.jsonl"))[2]["ThingName"],
        "other-name"
    );
    // The flat, platform-neutral spelling is read too.
    input.devices[2].cloud.clear();
    input.devices[2]
        .cloud
        .insert("thing_name".into(), json!("bad name"));
    input.devices[2]
        .cloud
        .insert("attributes".into(), json!({"certSerial": "x1"}));
    let e = export::render(Format::AwsBulk, &input, &opts(&aws_settings())).unwrap_err();
    assert!(e.to_string().contains("thing-003"), "{e}");
}

#[test]
fn writing_refuses_existing_files_and_reports_every_file() {
    let fx = fixture();
    let out = fx.line.file("export-write");
    let o = opts(&aws_settings());
    let s = export::export(Format::AwsBulk, &fx.input, &o, &out, false).unwrap();
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(out.join("aws-bulk.summary.json")).unwrap()).unwrap();
    assert_eq!(on_disk["format"], "aws-bulk");
    assert_eq!(on_disk["devices"], DEVICES);
    let rows: u64 = on_disk["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["devices"].as_u64().unwrap())
        .sum();
    assert_eq!(rows as usize, DEVICES);
    for f in &s.files().unwrap() {
        let bytes = std::fs::read(out.join(&f.name)).unwrap();
        assert_eq!(hex::encode(certfab::sha256(&bytes)), f.sha256, "{}", f.name);
        assert!(!f.consumer.is_empty());
    }
    let e = export::preflight(Format::AwsBulk, &fx.input, &o, &out, false).unwrap_err();
    assert!(e.to_string().contains("--force"), "{e}");
    assert!(export::export(Format::AwsBulk, &fx.input, &o, &out, false).is_err());
    export::export(Format::AwsBulk, &fx.input, &o, &out, true).unwrap();
}

/// The batch's claim certificate: a host key (encrypted), a certificate from the claim
/// profile signed by the HSM CA through the ledger, the restricted claim policy and the
/// fleet template; a second claim for the same id with a new key is refused.
#[test]
fn fleet_claim_certificate_policy_and_template() {
    let fx = fixture();
    let _turn = ledger_turn();
    let line = &fx.line;
    let site = certfab::Site::open(&line.config()).unwrap();
    let profile =
        certfab::Profile::load(&common::repo().join("profiles/aws-fleet-claim.yaml")).unwrap();
    let claim_id = export::claim::default_claim_id(&fx.input).unwrap();
    assert_eq!(claim_id, format!("fleet-claim-{}", fx.input.batch_ids[0]));
    let pass = secrecy::SecretString::from("claim passphrase 1".to_string());
    let claim = certfab::issue_claim(&site, &profile, &claim_id, Some(&pass), 2048).unwrap();
    assert!(claim.key_encrypted);
    let mut o = opts(&aws_settings());
    o.claim = Some(claim.clone());
    let files = export::render(Format::AwsFleetClaim, &fx.input, &o).unwrap();

    // The claim chains to the dev root through the issuing CA (OpenSSL), CN = claim id.
    let tmp = tempfile::tempdir().unwrap();
    let cert = write_tmp(
        tmp.path(),
        "claim.pem",
        &file(&files, "aws-fleet-claim-cert.pem").bytes,
    );
    let v = common::openssl_verify(
        &line.file("ca/root.pem"),
        &[&line.file("ca/issuing.pem")],
        &["-purpose", "sslclient"],
        &cert,
    );
    assert!(v.status.success(), "{}", text(&v));
    let chain = write_tmp(
        tmp.path(),
        "chain.pem",
        &file(&files, "aws-fleet-claim-chain.pem").bytes,
    );
    let v = common::openssl_verify(&line.file("ca/root.pem"), &[&chain], &[], &cert);
    assert!(
        v.status.success(),
        "chain.pem carries the issuing CA: {}",
        text(&v)
    );
    let subj = common::openssl_x509(&cert, &["-subject"]);
    assert!(subj.contains(&claim_id), "{subj}");
    // The key is encrypted, opens with the passphrase, and belongs to the certificate.
    let key = write_tmp(
        tmp.path(),
        "key.pem",
        &file(&files, "aws-fleet-claim-key.pem").bytes,
    );
    let keytext = std::fs::read_to_string(&key).unwrap();
    assert!(keytext.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let passfile = write_tmp(tmp.path(), "pass", b"claim passphrase 1");
    let pubk = openssl(&[
        "pkey",
        "-in",
        key.to_str().unwrap(),
        "-passin",
        &format!("file:{}", passfile.display()),
        "-pubout",
    ]);
    assert!(pubk.status.success(), "{}", text(&pubk));
    let certpub = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"]);
    assert_eq!(pubk.stdout, certpub.stdout);
    let wrong = write_tmp(tmp.path(), "wrong", b"not it");
    let bad = openssl(&[
        "pkey",
        "-in",
        key.to_str().unwrap(),
        "-passin",
        &format!("file:{}", wrong.display()),
    ]);
    assert!(!bad.status.success());
    // Recorded in the ledger like any device.
    let n: i64 = common::ledger(line)
        .query_row(
            "SELECT count(*) FROM devices WHERE device_id = ?1",
            [&claim_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);

    let reg = json_of(file(&files, "aws-fleet-claim-register.json"));
    let pol = json_of(file(&files, "aws-fleet-claim-policy.json"));
    let tpl = json_of(file(&files, "aws-fleet-template.json"));
    botocore_validate(&[
        (
            "claim-register",
            "RegisterCertificateWithoutCA",
            reg.clone(),
        ),
        ("claim-policy", "CreatePolicy", pol.clone()),
        ("fleet-template", "CreateProvisioningTemplate", tpl.clone()),
    ]);
    assert_eq!(reg["certificatePem"], claim.cert_pem);
    assert_eq!(tpl["type"], "FLEET_PROVISIONING");
    assert_eq!(tpl["provisioningRoleArn"], ROLE);
    let t = check_template_with(tpl["templateBody"].as_str().unwrap(), &["ThingName"], true);
    assert_eq!(
        t["Resources"]["certificate"]["Properties"]["CertificateId"],
        json!({"Ref": "AWS::IoT::Certificate::Id"})
    );
    // Claim policy: Connect, and only the two provisioning topic trees.
    let doc: Value = serde_json::from_str(pol["policyDocument"].as_str().unwrap()).unwrap();
    policy_lint(&[("claim policy", doc.clone())]);
    let arn = format!("arn:aws:iot:eu-central-1:{ACCOUNT}:");
    let allowed = [
        format!("{arn}topic/$aws/certificates/create-from-csr/*"),
        format!("{arn}topic/$aws/provisioning-templates/certfab-fleet/provision/*"),
        format!("{arn}topicfilter/$aws/certificates/create-from-csr/*"),
        format!("{arn}topicfilter/$aws/provisioning-templates/certfab-fleet/provision/*"),
    ];
    for st in doc["Statement"].as_array().unwrap() {
        let actions: Vec<&str> = st["Action"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        for r in st["Resource"].as_array().unwrap() {
            let r = r.as_str().unwrap();
            if actions == ["iot:Connect"] {
                assert_eq!(r, format!("{arn}client/*"));
            } else {
                assert!(
                    allowed.contains(&r.to_string()),
                    "claim policy grants {actions:?} on {r}"
                );
                assert!(actions
                    .iter()
                    .all(|a| ["iot:Publish", "iot:Receive", "iot:Subscribe"].contains(a)));
                assert_eq!(
                    r.contains(":topicfilter/"),
                    actions == ["iot:Subscribe"],
                    "{r}"
                );
            }
        }
    }
    let things = lines_of(file(&files, "aws-fleet-things-0001.jsonl"));
    assert_eq!(things.len(), DEVICES);

    // The same claim id again, with a fresh key: refused by the ledger.
    let e = certfab::issue_claim(&site, &profile, &claim_id, Some(&pass), 2048).unwrap_err();
    assert_eq!(e.exit_code(), certfab::ExitCode::Rejected, "{e}");
    // Without a claim the format refuses to render.
    assert!(export::render(Format::AwsFleetClaim, &fx.input, &opts(&aws_settings())).is_err());
}

fn set_args(settings: &[(&str, &str)]) -> Vec<String> {
    settings
        .iter()
        .flat_map(|(k, v)| ["--set".to_string(), format!("{k}={v}")])
        .collect()
}

/// `certfab export` end to end: verifies the manifest, shards, writes the files and the
/// summary, refuses to overwrite, and names a missing setting before writing anything.
#[test]
fn export_cli_writes_shards_and_summary() {
    let fx = fixture();
    let line = &fx.line;
    let out = line.file("cli-bulk");
    let m = fx.manifest.to_str().unwrap();
    let mut args: Vec<String> = [
        "--json",
        "export",
        "--format",
        "aws-bulk",
        "--manifest",
        m,
        "--out",
        out.to_str().unwrap(),
        "--max-rows",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(set_args(&[
        ("aws.role_arn", ROLE),
        ("aws.bucket", "certfab-line-1"),
    ]));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = line.certfab(&argv);
    assert!(o.status.success(), "{}", text(&o));
    let summary = common::stdout_json(&o);
    assert_eq!(summary["format"], "aws-bulk");
    assert_eq!(summary["devices"], DEVICES);
    let manifest_sha = hex::encode(certfab::sha256(&std::fs::read(&fx.manifest).unwrap()));
    assert_eq!(summary["manifest_sha256"], manifest_sha);
    let files = summary["files"].as_array().unwrap();
    let rows: Vec<(String, u64)> = files
        .iter()
        .filter(|f| f["name"].as_str().unwrap().ends_with(".jsonl"))
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["devices"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("aws-bulk-0001.jsonl".into(), 2),
            ("aws-bulk-0002.jsonl".into(), 2),
            ("aws-bulk-0003.jsonl".into(), 1)
        ]
    );
    for f in files {
        let name = f["name"].as_str().unwrap();
        let bytes = std::fs::read(out.join(name)).unwrap();
        assert_eq!(f["sha256"], hex::encode(certfab::sha256(&bytes)), "{name}");
        assert!(!f["consumer"].as_str().unwrap().is_empty(), "{name}");
    }
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(out.join("aws-bulk.summary.json")).unwrap()).unwrap();
    assert_eq!(on_disk, summary);
    // The thing attribute the profile's cloud: section renders per device reaches the rows.
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(out.join("aws-bulk-0001.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["Attribute_certSerial"], fx.input.devices[0].serial);

    // Again into the same directory: refused, nothing changed; --force replaces.
    let before = std::fs::read(out.join("aws-bulk-0001.jsonl")).unwrap();
    let again = line.certfab(&argv);
    assert_eq!(again.status.code(), Some(5), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(
        std::fs::read(out.join("aws-bulk-0001.jsonl")).unwrap(),
        before
    );
    let mut forced = argv.clone();
    forced.push("--force");
    let o = line.certfab(&forced);
    assert!(o.status.success(), "{}", text(&o));

    // The contract's bare command exports the input files and template; the summary says
    // how to start the task.
    let bare = line.file("cli-bulk-bare");
    let o = line.certfab(&[
        "export",
        "--format",
        "aws-bulk",
        "--manifest",
        m,
        "--out",
        bare.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(bare.join("aws-bulk-0001.jsonl").exists());
    assert!(!bare.join("aws-bulk-0001.start-task.json").exists());
    assert!(
        text(&o).contains("start-thing-registration-task"),
        "{}",
        text(&o)
    );

    // A half-given setting is named; nothing is written.
    let out2 = line.file("cli-bulk-missing");
    let o = line.certfab(&[
        "export",
        "--format",
        "aws-bulk",
        "--manifest",
        m,
        "--out",
        out2.to_str().unwrap(),
        "--set",
        "aws.bucket=certfab-line-1",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("aws.role_arn"),
        "{}",
        text(&o)
    );
    assert!(!out2.exists());

    // Human output lists each file with its consumer.
    let out3 = line.file("cli-policy");
    let o = line.certfab(&[
        "export",
        "--format",
        "aws-policy",
        "--manifest",
        m,
        "--out",
        out3.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let human = String::from_utf8_lossy(&o.stdout);
    assert!(
        human.contains("aws-policy.json") && human.contains("aws iot create-policy"),
        "{human}"
    );
}

/// A manifest that does not verify is refused before anything is rendered: a changed
/// device line, a missing signature, a root that did not sign it.
#[test]
fn export_refuses_an_unverified_manifest() {
    let fx = fixture();
    let line = &fx.line;
    let dir = tempfile::tempdir().unwrap();
    let text_m = std::fs::read_to_string(&fx.manifest).unwrap();
    let jws = std::fs::read(certfab::manifests::signature_path(&fx.manifest)).unwrap();
    let run = |m: &Path, extra: &[&str]| {
        let out = dir
            .path()
            .join(format!("out-{}", m.file_name().unwrap().to_string_lossy()));
        let mut a = vec![
            "export",
            "--format",
            "aws-multi-account",
            "--manifest",
            m.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        (line.certfab(&a), out)
    };
    // The untouched copy exports.
    let good = dir.path().join("good.jsonl");
    std::fs::write(&good, &text_m).unwrap();
    std::fs::write(certfab::manifests::signature_path(&good), &jws).unwrap();
    let (o, out) = run(&good, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.join("aws-multi-account-0001.jsonl").exists());

    // One device line changed (another device id): refused, exit 3, nothing written.
    let bad = dir.path().join("changed.jsonl");
    assert!(text_m.contains("thing-002"));
    std::fs::write(&bad, text_m.replacen("thing-002", "thing-00X", 1)).unwrap();
    std::fs::write(certfab::manifests::signature_path(&bad), &jws).unwrap();
    let (o, out) = run(&bad, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(!out.exists(), "an unverified manifest produced output");

    // A device line dropped: refused.
    let short = dir.path().join("short.jsonl");
    let kept: Vec<&str> = text_m
        .lines()
        .filter(|l| !l.contains("thing-004"))
        .collect();
    std::fs::write(&short, kept.join("\n") + "\n").unwrap();
    std::fs::write(certfab::manifests::signature_path(&short), &jws).unwrap();
    let (o, out) = run(&short, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(!out.exists());

    // No signature: refused.
    let unsigned = dir.path().join("unsigned.jsonl");
    std::fs::write(&unsigned, &text_m).unwrap();
    let (o, out) = run(&unsigned, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(!out.exists());

    // Verified against a root that is not the manifest's: refused.
    let other = dir.path().join("other-root.jsonl");
    std::fs::write(&other, &text_m).unwrap();
    std::fs::write(certfab::manifests::signature_path(&other), &jws).unwrap();
    let (o, out) = run(
        &other,
        &["--trust", line.file("ca/matter-paa.pem").to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(!out.exists());
}

/// The fleet claim through the CLI: nothing is signed when the export would be refused, and
/// the claim key lands encrypted, owner-only.
#[test]
fn fleet_claim_cli_signs_only_when_the_export_can_land() {
    let fx = fixture();
    let _turn = ledger_turn();
    let line = &fx.line;
    let m = fx.manifest.to_str().unwrap();
    let claims = |id: &str| -> i64 {
        common::ledger(line)
            .query_row(
                "SELECT count(*) FROM devices WHERE device_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap()
    };
    let pass = line.file("claim.pass");
    std::fs::write(&pass, "cli claim passphrase\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let passarg = format!("file:{}", pass.display());
    let out = line.file("cli-fleet");
    let base = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--json",
            "export",
            "--format",
            "aws-fleet-claim",
            "--manifest",
            m,
            "--out",
            out.to_str().unwrap(),
            "--claim-id",
            "fleet-claim-cli",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    // No template name: refused before signing.
    let mut a = base(&["--key-passphrase", &passarg]);
    a.extend(set_args(&[("aws.role_arn", ROLE)]));
    let o = line.certfab(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("aws.template_name"));
    assert_eq!(
        claims("fleet-claim-cli"),
        0,
        "a claim was signed for a refused export"
    );
    // No passphrase and no --plain-keys: refused before signing.
    let mut a = base(&[]);
    a.extend(set_args(&[
        ("aws.role_arn", ROLE),
        ("aws.template_name", "certfab-fleet"),
    ]));
    let o = line.certfab(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(claims("fleet-claim-cli"), 0);
    // Complete: signed once, files written, key encrypted and 0600.
    let mut a = base(&["--key-passphrase", &passarg]);
    a.extend(set_args(&[
        ("aws.role_arn", ROLE),
        ("aws.template_name", "certfab-fleet"),
    ]));
    let o = line.certfab(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(claims("fleet-claim-cli"), 1);
    let key = out.join("aws-fleet-claim-key.pem");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let k = openssl(&[
        "pkey",
        "-in",
        key.to_str().unwrap(),
        "-passin",
        &passarg,
        "-noout",
    ]);
    assert!(k.status.success(), "{}", text(&k));
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .contains("ENCRYPTED PRIVATE KEY"));
    let summary = common::stdout_json(&o);
    let names: Vec<&str> = summary["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for n in [
        "aws-fleet-claim-cert.pem",
        "aws-fleet-claim-policy.json",
        "aws-fleet-template.json",
        "aws-fleet-things-0001.jsonl",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    // The passphrase appears nowhere in the output.
    assert!(!String::from_utf8_lossy(&o.stdout).contains("cli claim passphrase"));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("cli claim passphrase"));
}
