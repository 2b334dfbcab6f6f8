//! AWS IoT exports from certificates certfab really issued on a SoftHSM dev line, checked
//! against AWS's own API model (botocore's iot service model, through its ParamValidator),
//! with OpenSSL for every certificate the HSM signed for them.

mod common;

use certfab::export::{self, ExportDevice, ExportFile, ExportInput, ExportOptions, Format};
use common::{openssl, text, Line};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const DEVICES: usize = 5;
const ACCOUNT: &str = "123456789012";
const ROLE: &str = "arn:aws:iam::123456789012:role/certfab-registration";

/// One dev line and one batch of devices for the whole file.
struct Fixture {
    line: Line,
    input: ExportInput,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let line = Line::new();
        let out = line.file("devices");
        let o = line.certfab(&[
            "--json",
            "batch",
            "--profile",
            "aws-iot",
            "--count",
            &DEVICES.to_string(),
            "--keygen",
            "host",
            "--id-template",
            "thing-{seq:03}",
            "--plain-keys",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
        let input = input_from_batch(&line, &out, summary["batch"].as_str().unwrap());
        Fixture { line, input }
    })
}

/// The facts a verified manifest gives exporters, read from the batch's real output.
fn input_from_batch(line: &Line, out: &Path, batch: &str) -> ExportInput {
    let mut ids: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    let devices = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let pem = std::fs::read_to_string(out.join(id).join("cert.pem")).unwrap();
            let info: Value =
                serde_json::from_slice(&std::fs::read(out.join(id).join("device.json")).unwrap())
                    .unwrap();
            let der = pem_rfc7468::decode_vec(pem.as_bytes()).unwrap().1;
            ExportDevice {
                seq: i as u64 + 1,
                device_id: id.clone(),
                serial: info["serial"].as_str().unwrap().into(),
                cert_sha256: hex::encode(certfab::crypto::sha256(&der)),
                spki_sha256: String::new(),
                cert_der: der,
                cert_pem: pem,
                not_before: info["not_before"].as_str().unwrap().into(),
                not_after: info["not_after"].as_str().unwrap().into(),
                key_origin: "host".into(),
                state: "signed".into(),
                cloud: serde_json::Map::new(),
            }
        })
        .collect();
    ExportInput {
        manifest_path: line.file("batch.manifest.jsonl"),
        manifest_sha256: "00".repeat(32),
        batch_ids: vec![batch.into()],
        station_ids: vec!["dev-line".into()],
        profile: "aws-iot".into(),
        tenant: None,
        ca_chain_pem: vec![
            std::fs::read_to_string(line.file("ca/issuing.pem")).unwrap(),
            std::fs::read_to_string(line.file("ca/root.pem")).unwrap(),
        ],
        devices,
        cloud: BTreeMap::new(),
    }
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

/// Validates request bodies with botocore's ParamValidator and the model's limits; panics
/// with botocore's report on any error.
fn botocore_validate(reqs: &[(&str, &str, Value)]) {
    let body: Vec<Value> = reqs
        .iter()
        .map(|(label, op, params)| json!({"label": label, "operation": op, "params": params}))
        .collect();
    let script = common::repo().join("tests/support/aws_validate.py");
    let mut child = std::process::Command::new("python3")
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&body).unwrap().as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "botocore validation could not run (hsm-fixtures/setup-host.sh installs botocore): {}",
        text(&o)
    );
    let results: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(results.len(), reqs.len());
    for r in results {
        assert_eq!(r["errors"], json!([]), "{}: {}", r["label"], r["errors"]);
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
        "aws-iot-device"
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
        let v = openssl(&[
            "verify",
            "-partial_chain",
            "-CAfile",
            ca.to_str().unwrap(),
            cert.to_str().unwrap(),
        ]);
        assert!(v.status.success(), "{}", text(&v));
    }
    // One JSON object per line, newline-terminated (NDJSON).
    let raw = std::str::from_utf8(&file(&files, "aws-bulk-0001.jsonl").bytes).unwrap();
    assert!(raw.ends_with('\n') && raw.lines().count() == DEVICES);

    // Missing settings are named, not invented.
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
    let e = export::render(
        Format::AwsPolicy,
        &fx.input,
        &opts(&[("aws.region", "eu-central-1")]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("aws.account_id"), "{e}");
}

/// `certfab ca verification-cert` signs CN=<registration code> with the CA key in the HSM;
/// JITP and JITR register the CA with it, and refuse one from another CA.
#[test]
fn verification_cert_jitp_and_jitr_bundles() {
    let fx = fixture();
    let line = &fx.line;
    let code = "5e9ac1a0c2d4b1f8a3e6d7c9b0a1f2e3d4c5b6a7980f1e2d3c4b5a69788796a5";
    let vpath = line.file("verification.pem");
    let o = line.certfab(&[
        "--json",
        "ca",
        "verification-cert",
        "--ca",
        "issuing",
        "--cn",
        code,
        "--out",
        vpath.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(out["cn"], code);
    let issuing = line.file("ca/issuing.pem");
    let v = openssl(&[
        "verify",
        "-partial_chain",
        "-CAfile",
        issuing.to_str().unwrap(),
        vpath.to_str().unwrap(),
    ]);
    assert!(v.status.success(), "{}", text(&v));
    let subj = openssl(&[
        "x509",
        "-in",
        vpath.to_str().unwrap(),
        "-noout",
        "-subject",
        "-ext",
        "basicConstraints",
        "-dates",
    ]);
    let s = String::from_utf8_lossy(&subj.stdout);
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
    let again = line.certfab(&[
        "ca",
        "verification-cert",
        "--ca",
        "issuing",
        "--cn",
        code,
        "--out",
        vpath.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(5), "{}", text(&again));
    let bad = line.certfab(&[
        "ca",
        "verification-cert",
        "--ca",
        "issuing",
        "--cn",
        "a b/c",
        "--out",
        line.file("bad.pem").to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(!line.file("bad.pem").exists());
    let noca = line.certfab(&[
        "ca",
        "verification-cert",
        "--ca",
        "nope",
        "--cn",
        code,
        "--out",
        line.file("bad.pem").to_str().unwrap(),
    ]);
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
    let ca_id = hex::encode(certfab::crypto::sha256(&ca_der));
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
    let o2 = line.certfab(&[
        "ca",
        "verification-cert",
        "--ca",
        "matter-pai",
        "--cn",
        code,
        "--out",
        other.to_str().unwrap(),
    ]);
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
    input.devices[2]
        .cloud
        .insert("thing_name".into(), json!("other-name"));
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
    input.devices[2]
        .cloud
        .insert("thing_name".into(), json!("bad name"));
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
    for f in &s.files {
        let bytes = std::fs::read(out.join(&f.name)).unwrap();
        assert_eq!(
            hex::encode(certfab::crypto::sha256(&bytes)),
            f.sha256,
            "{}",
            f.name
        );
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
    let line = &fx.line;
    let site = certfab::site::Site::open(&line.config()).unwrap();
    let profile =
        certfab::profile::Profile::load(&common::repo().join("profiles/aws-fleet-claim.yaml"))
            .unwrap();
    let claim_id = export::claim::default_claim_id(&fx.input).unwrap();
    assert_eq!(claim_id, format!("fleet-claim-{}", fx.input.batch_ids[0]));
    let pass = secrecy::SecretString::from("claim passphrase 1".to_string());
    let claim = export::claim::issue_claim(&site, &profile, &claim_id, Some(&pass), 2048).unwrap();
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
    let v = openssl(&[
        "verify",
        "-CAfile",
        line.file("ca/root.pem").to_str().unwrap(),
        "-untrusted",
        line.file("ca/issuing.pem").to_str().unwrap(),
        "-purpose",
        "sslclient",
        cert.to_str().unwrap(),
    ]);
    assert!(v.status.success(), "{}", text(&v));
    let chain = write_tmp(
        tmp.path(),
        "chain.pem",
        &file(&files, "aws-fleet-claim-chain.pem").bytes,
    );
    let v = openssl(&[
        "verify",
        "-CAfile",
        line.file("ca/root.pem").to_str().unwrap(),
        "-untrusted",
        chain.to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    assert!(
        v.status.success(),
        "chain.pem carries the issuing CA: {}",
        text(&v)
    );
    let subj = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-subject"]);
    assert!(
        String::from_utf8_lossy(&subj.stdout).contains(&claim_id),
        "{}",
        text(&subj)
    );
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
                assert_eq!(r, "*");
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
    let e = export::claim::issue_claim(&site, &profile, &claim_id, Some(&pass), 2048).unwrap_err();
    assert_eq!(e.exit_code(), certfab::ExitCode::Rejected, "{e}");
    // Without a claim the format refuses to render.
    assert!(export::render(Format::AwsFleetClaim, &fx.input, &opts(&aws_settings())).is_err());
}
