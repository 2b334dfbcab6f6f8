//! Non-AWS cloud exports (Azure DPS, Hono, Peridio, nRF Cloud, Microchip-style JWS, plain
//! CSV) rendered from certificates issued on a real SoftHSM line by `certfab batch`, and
//! checked with each platform's own model, schema or verifier (tests/py/export_check.py),
//! Java's X500Principal (Hono's auth-id) and OpenSSL.

use crate::common;

use crate::common::{openssl, text, Line};
use certfab::exports::{ExportDevice, ExportError, ExportFile, ExportInput, ExportOptions};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const DEVICES: usize = 12;

struct Fixture {
    line: Line,
    input: ExportInput,
}

/// One dev line for the whole file: 12 devices `dev-0001`.. issued by `certfab batch`.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let line = Line::new();
        let out = line.file("out");
        line.host_batch(
            "generic-iot",
            DEVICES,
            "dev-{seq:04}",
            &out,
            &["--plain-keys"],
        );
        let ids: Vec<String> = (1..=DEVICES).map(|i| format!("dev-{i:04}")).collect();
        let input = input_from(&line, &out, &ids);
        Fixture { line, input }
    })
}

/// Tests in this file share one SoftHSM token; the ones that use it take turns, so one test's
/// token traffic never races another's (a SoftHSM file token is not built for that).
fn hsm_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// Builds the exporters' input from `certfab batch` output as a verified manifest would.
fn input_from(line: &Line, out: &Path, ids: &[String]) -> ExportInput {
    use der::{Decode, Encode};
    let devices = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let pem = std::fs::read_to_string(out.join(id).join("cert.pem")).unwrap();
            let der = pem_rfc7468::decode_vec(pem.as_bytes()).unwrap().1;
            let cert = x509_cert::Certificate::from_der(&der).unwrap();
            let tbs = &cert.tbs_certificate;
            let spki = tbs.subject_public_key_info.to_der().unwrap();
            let t = |t: &x509_cert::time::Time| certfab::exports::support::x509_time_rfc3339(t);
            ExportDevice {
                seq: i as u64 + 1,
                device_id: id.clone(),
                serial: hex::encode(tbs.serial_number.as_bytes()),
                cert_pem: pem.clone(),
                cert_sha256: sha256_hex(&der),
                spki_sha256: sha256_hex(&spki),
                not_before: t(&tbs.validity.not_before),
                not_after: t(&tbs.validity.not_after),
                key_origin: "host".into(),
                state: "signed".into(),
                cloud: serde_json::Map::new(),
                cert_der: der,
            }
        })
        .collect();
    ExportInput {
        manifest_path: line.file("manifest.jsonl"),
        manifest_sha256: "00".repeat(32),
        batch_ids: vec!["batch-1".into()],
        station_ids: vec!["dev-line".into()],
        profile: "generic-iot".into(),
        tenant: None,
        ca_chain_pem: vec![
            std::fs::read_to_string(line.file("ca/issuing.pem")).unwrap(),
            std::fs::read_to_string(line.file("ca/root.pem")).unwrap(),
        ],
        devices,
        stream: None,
        cloud: Default::default(),
    }
}

fn write(files: &[ExportFile]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for f in files {
        std::fs::write(d.path().join(&f.name), &f.bytes).unwrap();
    }
    d
}

fn names(files: &[ExportFile]) -> Vec<(String, usize)> {
    files.iter().map(|f| (f.name.clone(), f.devices)).collect()
}

/// Runs tests/py/export_check.py KIND DIR EXTRA….
fn run_check(kind: &str, dir: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(common::python())
        .arg(common::repo().join("tests/py/export_check.py"))
        .arg(kind)
        .arg(dir)
        .args(extra)
        .output()
        .expect("run the test Python (common::python)")
}

/// Runs the platform checker (see [`run_check`]) and returns its JSON summary.
fn check(kind: &str, dir: &Path, extra: &[&str]) -> Value {
    let o = run_check(kind, dir, extra);
    assert!(o.status.success(), "export_check {kind}: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Like [`check`] but expects the checker to refuse; returns its message.
fn check_fails(kind: &str, dir: &Path, extra: &[&str]) -> String {
    let o = run_check(kind, dir, extra);
    assert!(
        !o.status.success(),
        "checker accepted a bad file: {}",
        text(&o)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts an exporter refused and that its message contains each of `wants`; returns it.
fn refused(r: Result<Vec<ExportFile>, ExportError>, wants: &[&str]) -> String {
    let msg = match r {
        Ok(files) => panic!("rendered {:?}, expected a refusal", names(&files)),
        Err(e) => e.to_string(),
    };
    for w in wants {
        assert!(msg.contains(w), "{w:?} not in {msg}");
    }
    msg
}

fn opts(max_rows: Option<usize>) -> ExportOptions {
    ExportOptions {
        max_rows,
        ..Default::default()
    }
}

// ------------------------------------------------------------------------------ Azure DPS

#[test]
fn azure_individual_enrollments_load_into_the_dps_sdk_models_ten_per_bulk_call() {
    let f = fixture();
    let files = certfab::exports::azure::render(&f.input, &opts(None)).unwrap();
    assert_eq!(
        names(&files),
        [
            ("azure-dps-enrollments-0001.json".into(), 10),
            ("azure-dps-enrollments-0002.json".into(), 2)
        ]
    );
    let dir = write(&files);
    let r = check("azure", dir.path(), &[]);
    let ids: Vec<&str> = r["registration_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let want: Vec<String> = f
        .input
        .devices
        .iter()
        .map(|d| d.device_id.clone())
        .collect();
    assert_eq!(ids, want);

    // --max-rows below the platform limit wins.
    let files = certfab::exports::azure::render(&f.input, &opts(Some(5))).unwrap();
    assert_eq!(
        files.iter().map(|f| f.devices).collect::<Vec<_>>(),
        [5, 5, 2]
    );
    check("azure", write(&files).path(), &[]);

    // The checker is not a rubber stamp: 11 enrollments in one call, or an unknown field.
    let d = tempfile::tempdir().unwrap();
    let mut body: Value = serde_json::from_slice(
        &certfab::exports::azure::render(&f.input, &opts(Some(12))).unwrap()[0].bytes,
    )
    .unwrap();
    let first = body["enrollments"][0].clone();
    body["enrollments"].as_array_mut().unwrap().push(first);
    std::fs::write(
        d.path().join("azure-dps-enrollments-0001.json"),
        body.to_string(),
    )
    .unwrap();
    assert!(check_fails("azure", d.path(), &[]).contains("1 to 10"));
    body["enrollments"].as_array_mut().unwrap().truncate(1);
    body["enrollments"][0]["registrationID"] = json!("x");
    std::fs::write(
        d.path().join("azure-dps-enrollments-0001.json"),
        body.to_string(),
    )
    .unwrap();
    assert!(check_fails("azure", d.path(), &[]).contains("not a field"));
}

#[test]
fn azure_profile_settings_and_twin_tags_reach_the_enrollment() {
    let f = fixture();
    let mut input = f.input.clone();
    input
        .cloud
        .insert("azure.iot_hubs".into(), json!(["hub1.azure-devices.net"]));
    input
        .cloud
        .insert("azure.allocation_policy".into(), json!("static"));
    input.cloud.insert("azure.iot_edge".into(), json!(false));
    input.devices[0].cloud.insert(
        "azure".into(),
        json!({"twin_tags": {"line": "A", "rev": 3}}),
    );
    let files = certfab::exports::azure::render(&input, &opts(None)).unwrap();
    check("azure", write(&files).path(), &[]);
    let body: Value = serde_json::from_slice(&files[0].bytes).unwrap();
    let e = &body["enrollments"][0];
    assert_eq!(body["mode"], "create");
    assert_eq!(e["registrationId"], "dev-0001");
    assert_eq!(e["deviceId"], "dev-0001");
    assert_eq!(e["iotHubs"], json!(["hub1.azure-devices.net"]));
    assert_eq!(e["allocationPolicy"], "static");
    assert_eq!(e["capabilities"], json!({"iotEdge": false}));
    assert_eq!(e["initialTwin"]["tags"], json!({"line": "A", "rev": 3}));
    assert_eq!(
        e["attestation"]["x509"]["clientCertificates"]["primary"]["certificate"],
        json!(input.devices[0].cert_pem.trim_end())
    );

    input
        .cloud
        .insert("azure.allocation_policy".into(), json!("random"));
    let err = certfab::exports::azure::render(&input, &opts(None)).unwrap_err();
    assert!(matches!(err, ExportError::BadSetting { .. }), "{err}");
    assert!(err
        .to_string()
        .contains("hashed, geoLatency, static or custom"));
}

#[test]
fn azure_refuses_registration_ids_dps_would_reject() {
    let f = fixture();
    let _turn = hsm_turn();
    // A certificate whose CN has upper case: issued for real, refused with the reason.
    let out = f.line.file("out-upper");
    f.line.host_batch(
        "generic-iot",
        1,
        "Dev-Upper-{seq:02}",
        &out,
        &["--plain-keys"],
    );
    let upper = input_from(&f.line, &out, &["Dev-Upper-01".into()]);
    refused(
        certfab::exports::azure::render(&upper, &opts(None)),
        &["Dev-Upper-01", "lowercase"],
    );

    // A registration id that is not the CN.
    let mut input = f.input.clone();
    input.devices[1]
        .cloud
        .insert("azure.registration_id".into(), json!("other-id"));
    refused(
        certfab::exports::azure::render(&input, &opts(None)),
        &["dev-0002", "differs from the certificate CN"],
    );
}

#[test]
fn azure_enrollment_group_trusts_the_issuing_ca_inline_or_by_reference() {
    let f = fixture();
    let _turn = hsm_turn();
    let files = certfab::exports::azure::render_group(&f.input, &opts(None)).unwrap();
    assert_eq!(
        names(&files),
        [
            ("azure-dps-enrollment-group.json".into(), DEVICES),
            ("azure-dps-ca.pem".into(), 0)
        ]
    );
    let r = check("azure", write(&files).path(), &[]);
    assert_eq!(r["group_id"], "generic-iot");
    assert_eq!(
        r["group_ca_subject"],
        "CN=certfab Dev Issuing CA 1,O=certfab development"
    );
    assert_eq!(
        String::from_utf8(files[1].bytes.clone()).unwrap(),
        f.input.ca_chain_pem[0]
    );

    // Proof of possession for caReferences: the verification certificate DPS asks for
    // (subject CN = its verification code), signed by the issuing CA's key in the HSM.
    let code = "2C7B8E1FD0A54C3B9B6E4A1F0D2C3B4A5E6F7A8B9C0D1E2F";
    let verif = f.line.file("dps-verification.pem");
    f.line.verification_cert(code, &verif);
    assert_eq!(
        common::openssl_x509(&verif, &["-subject", "-nameopt", "RFC2253"]).trim(),
        format!("subject=CN={code}")
    );

    let mut input = f.input.clone();
    input
        .cloud
        .insert("azure.ca_reference".into(), json!("certfab-issuing-1"));
    input
        .cloud
        .insert("azure.enrollment_group_id".into(), json!("line-a"));
    let files = certfab::exports::azure::render_group(&input, &opts(None)).unwrap();
    let r = check("azure", write(&files).path(), &[]);
    assert_eq!(r["group_ca_reference"], "certfab-issuing-1");
    assert_eq!(r["group_id"], "line-a");

    input
        .cloud
        .insert("azure.enrollment_group_id".into(), json!("Line A"));
    refused(
        certfab::exports::azure::render_group(&input, &opts(None)),
        &["azure.enrollment_group_id"],
    );
}

/// Issue 15 item 5: custom allocation carries its webhook (customAllocationDefinition),
/// static allocation exactly one hub, X.509 registration ids are at most 64 characters, and
/// the enrollment group's next steps say its CA must be uploaded and verified, with the
/// command that makes the verification certificate.
#[test]
fn azure_dps_allocation_x509_registration_ids_and_group_ca_verification() {
    let f = fixture();
    let render = |input: &ExportInput| certfab::exports::azure::render(input, &opts(None));
    let render_group =
        |input: &ExportInput| certfab::exports::azure::render_group(input, &opts(None));
    let mut input = f.input.clone();
    input
        .cloud
        .insert("azure.allocation_policy".into(), json!("custom"));
    let e = refused(render(&input), &["azure.custom_allocation.webhook_url"]);
    assert!(e.contains("customAllocationDefinition"), "{e}");
    refused(
        render_group(&input),
        &["azure.custom_allocation.webhook_url"],
    );
    input.cloud.insert(
        "azure".into(),
        json!({"custom_allocation": {"webhook_url": "https://alloc.azurewebsites.net/api/pick?code=k"}}),
    );
    let files = render(&input).unwrap();
    check("azure", write(&files).path(), &[]);
    let body: Value = serde_json::from_slice(&files[0].bytes).unwrap();
    assert_eq!(
        body["enrollments"][0]["customAllocationDefinition"],
        json!({"webhookUrl": "https://alloc.azurewebsites.net/api/pick?code=k", "apiVersion": "2021-10-01"})
    );
    check("azure", write(&render_group(&input).unwrap()).path(), &[]);
    input.cloud.insert(
        "azure.custom_allocation.api_version".into(),
        json!("2017-11-15"),
    );
    refused(render(&input), &["azure.custom_allocation.api_version"]);
    input.cloud.remove("azure.custom_allocation.api_version");
    // A webhook without custom allocation would be ignored by DPS: refused, not dropped.
    input
        .cloud
        .insert("azure.allocation_policy".into(), json!("hashed"));
    refused(
        render(&input),
        &["azure.custom_allocation.webhook_url", "custom"],
    );
    input.cloud.remove("azure");

    // Static: exactly one hub.
    input
        .cloud
        .insert("azure.allocation_policy".into(), json!("static"));
    refused(render(&input), &["azure.iot_hubs"]);
    input.cloud.insert(
        "azure.iot_hubs".into(),
        json!(["hub1.azure-devices.net", "hub2.azure-devices.net"]),
    );
    let e = refused(render_group(&input), &["azure.iot_hubs", "exactly one"]);
    assert!(e.contains("hub2"), "{e}");
    input
        .cloud
        .insert("azure.iot_hubs".into(), json!(["hub1.azure-devices.net"]));
    check("azure", write(&render(&input).unwrap()).path(), &[]);

    // X.509 registration ids are the CN: 64 characters at most.
    let mut long = f.input.clone();
    for (seq, n) in [(1, 64), (2, 65)] {
        let cn = format!("dev-{}", "a".repeat(n - 4));
        // OpenSSL will not write a CN over 64 characters; another CA might.
        long.devices = vec![device_of(seq, &cn, rust_self_signed(&cn))];
        let r = render(&long);
        if n == 64 {
            check("azure", write(&r.unwrap()).path(), &[]);
        } else {
            refused(r, &[&cn, "at most 64", "X.509"]);
        }
    }

    // The group's next steps: upload and verify the CA, with certfab's verification command.
    let out = tempfile::tempdir().unwrap();
    let summary = certfab::exports::export(
        certfab::exports::Format::AzureDpsGroup,
        &f.input,
        &opts(None),
        &out.path().join("g"),
        false,
    )
    .unwrap();
    let text = summary.text();
    for want in [
        "verified",
        "proof of possession",
        "certfab ca verification-cert",
        "chain",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    for file in &summary.files().unwrap()[..2] {
        assert!(
            file.consumer.contains("certfab ca verification-cert"),
            "{}",
            file.consumer
        );
    }

    // The checker bites: static with two hubs, custom without its definition, a 65-character id.
    let d = write(&render(&input).unwrap());
    let p = d.path().join("azure-dps-enrollments-0001.json");
    let mut body: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    body["enrollments"][0]["iotHubs"] = json!(["a.azure-devices.net", "b.azure-devices.net"]);
    std::fs::write(&p, body.to_string()).unwrap();
    assert!(check_fails("azure", d.path(), &[]).contains("exactly one IoT hub"));
    body["enrollments"][0]["allocationPolicy"] = json!("custom");
    std::fs::write(&p, body.to_string()).unwrap();
    assert!(check_fails("azure", d.path(), &[]).contains("customAllocationDefinition"));
}

// ------------------------------------------------------------------------------ Eclipse Hono

/// Java's X500Principal.getName(RFC2253) for each DER certificate file: Hono's auth-id.
fn java_rfc2253(ders: &[PathBuf]) -> Vec<String> {
    let o = common::java("Rfc2253")
        .args(ders)
        .output()
        .expect("run java (JDK 11+)");
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn hono_bodies_match_the_registry_api_and_auth_ids_are_what_hono_computes() {
    let f = fixture();
    refused(
        certfab::exports::hono::render(&f.input, &opts(None)),
        &["hono.tenant_id"],
    );

    let mut input = f.input.clone();
    input.tenant = Some("acme-factory".into());
    input
        .cloud
        .insert("hono.auto_provisioning".into(), json!(true));
    input.cloud.insert(
        "hono.auto_provisioning_device_id_template".into(),
        json!("{{subject-cn}}"),
    );
    input.devices[0]
        .cloud
        .insert("hono".into(), json!({"ext": {"line": "A"}}));
    let files = certfab::exports::hono::render(&input, &opts(Some(5))).unwrap();
    assert_eq!(
        names(&files),
        [
            ("hono-tenant.json".into(), 0),
            ("hono-devices-0001.jsonl".into(), 5),
            ("hono-devices-0002.jsonl".into(), 5),
            ("hono-devices-0003.jsonl".into(), 2)
        ]
    );
    let dir = write(&files);
    let r = check("hono", dir.path(), &[]);

    // auth-id of every device = Java's RFC 2253 form of its certificate subject.
    let ders: Vec<PathBuf> = input
        .devices
        .iter()
        .map(|d| {
            let p = dir.path().join(format!("{}.der", d.device_id));
            std::fs::write(&p, &d.cert_der).unwrap();
            p
        })
        .collect();
    let java = java_rfc2253(&ders);
    let devs = r["devices"].as_array().unwrap();
    assert_eq!(devs.len(), DEVICES);
    for ((d, dev), want) in input.devices.iter().zip(devs).zip(&java) {
        assert_eq!(dev["auth-id"], json!(want), "{}", d.device_id);
        assert_eq!(dev["device-id"], json!(d.device_id));
        assert_eq!(dev["tenant-id"], "acme-factory");
        assert_eq!(dev["secrets"][0]["not-before"], json!(d.not_before));
        assert_eq!(dev["secrets"][0]["not-after"], json!(d.not_after));
    }
    // DER order is CN then O, so RFC 2253 (last RDN first) starts with O.
    assert_eq!(java[0], "O=certfab development,CN=dev-0001");

    // Trusted CA: Java's subject DN of the issuing CA, its SPKI as OpenSSL prints it.
    let ca = &r["trusted_ca"];
    let ca_der = dir.path().join("issuing.der");
    let o = openssl(&[
        "x509",
        "-in",
        f.line.file("ca/issuing.pem").to_str().unwrap(),
        "-outform",
        "DER",
        "-out",
        ca_der.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        ca["subject-dn"],
        json!(java_rfc2253(std::slice::from_ref(&ca_der))[0])
    );
    let spki_pem = common::openssl_x509(&f.line.file("ca/issuing.pem"), &["-pubkey"]);
    let spki_b64: String = spki_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert_eq!(ca["public-key"], json!(spki_b64));
    assert_eq!(ca["algorithm"], "EC");
    assert_eq!(ca["auto-provisioning-enabled"], true);
    assert_eq!(ca["auto-provisioning-device-id-template"], "{{subject-cn}}");
    assert_eq!(ca["not-after"], "9999-12-31T23:59:59Z");

    // Two devices with one subject DN cannot both be Hono credentials.
    let mut twice = input.clone();
    twice.devices[1].cert_der = twice.devices[0].cert_der.clone();
    refused(
        certfab::exports::hono::render(&twice, &opts(None)),
        &["dev-0002", "also device dev-0001"],
    );

    // The schema check bites: an unknown credentials field is refused.
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::copy(
        dir.path().join("hono-tenant.json"),
        bad.join("hono-tenant.json"),
    )
    .unwrap();
    let line = std::fs::read_to_string(dir.path().join("hono-devices-0001.jsonl")).unwrap();
    let mut rec: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    rec["credentials"][0]["authId"] = json!("x");
    std::fs::write(bad.join("hono-devices-0001.jsonl"), format!("{rec}\n")).unwrap();
    assert!(check_fails("hono", &bad, &[]).contains("CredentialsSet"));
}

#[test]
fn hono_auth_id_matches_java_for_subjects_that_need_escaping() {
    let dir = tempfile::tempdir().unwrap();
    let key = common::openssl_key(dir.path(), "k", "ec:prime256v1");
    let subjects: &[(&str, &[&str])] = &[
        (
            "/C=DE/O=Acme, Inc./OU=R+D <lab>/CN=dev #1 \"q\";x\\y=z",
            &[],
        ),
        (
            "/O=Acme/CN= lead and trail /serialNumber=SN-42/emailAddress=ops@acme.example",
            &[],
        ),
        (
            "/DC=example/DC=com/UID=u1/CN=dev-7+serialNumber=7",
            &["-multivalue-rdn"],
        ),
        (
            "/C=DE/ST=Bayern/L=München/street=Hauptstraße 1/CN=Gerät",
            &["-utf8"],
        ),
        ("/CN=#hash/title=Sensor/OU=ops", &[]),
    ];
    let mut ders = Vec::new();
    let mut ours = Vec::new();
    for (i, (subj, extra)) in subjects.iter().enumerate() {
        let der = dir.path().join(format!("c{i}.der"));
        let mut args = vec![
            "req",
            "-x509",
            "-new",
            "-key",
            key.to_str().unwrap(),
            "-subj",
            subj,
            "-days",
            "1",
            "-outform",
            "DER",
            "-out",
            der.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = openssl(&args);
        assert!(o.status.success(), "{subj}: {}", text(&o));
        use der::Decode;
        let bytes = std::fs::read(&der).unwrap();
        let cert = x509_cert::Certificate::from_der(&bytes).unwrap();
        ours.push(certfab::exports::hono::rfc2253(&cert.tbs_certificate.subject).unwrap());
        ders.push(der);
    }
    let java = java_rfc2253(&ders);
    assert_eq!(ours, java);
}

/// A self-signed certificate (DER) with subject `subj` (`openssl req -subj` syntax) made by
/// OpenSSL, for subjects a profile would not issue.
fn self_signed(dir: &Path, name: &str, subj: &str, keyspec: &str, extra: &[&str]) -> Vec<u8> {
    let key = common::openssl_key(dir, name, keyspec);
    let der = dir.join(format!("{name}.der"));
    let mut args = vec![
        "req",
        "-x509",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-subj",
        subj,
        "-days",
        "1",
        "-outform",
        "DER",
        "-out",
        der.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = openssl(&args);
    assert!(o.status.success(), "{subj}: {}", text(&o));
    std::fs::read(&der).unwrap()
}

/// A self-signed P-256 certificate (DER) with subject CN=`cn`, made in Rust, for subjects
/// OpenSSL refuses to write (e.g. a CN over 64 characters).
fn rust_self_signed(cn: &str) -> Vec<u8> {
    use der::Encode;
    use std::str::FromStr;
    use x509_cert::builder::{Builder, CertificateBuilder, Profile};
    let sk = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let subject = x509_cert::name::Name::from_str(&format!("CN={cn}")).unwrap();
    let spki = spki::SubjectPublicKeyInfoOwned::from_key(*sk.verifying_key()).unwrap();
    let validity =
        x509_cert::time::Validity::from_now(std::time::Duration::from_secs(3600)).unwrap();
    let serial = x509_cert::serial_number::SerialNumber::from(7u32);
    let cert = CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, &sk)
        .unwrap()
        .build::<p256::ecdsa::DerSignature>()
        .unwrap();
    cert.to_der().unwrap()
}

/// An export device for a DER certificate, as a verified manifest would list it.
fn device_of(seq: u64, id: &str, der: Vec<u8>) -> ExportDevice {
    use der::{Decode, Encode};
    let cert = x509_cert::Certificate::from_der(&der).unwrap();
    let tbs = &cert.tbs_certificate;
    let t = |t: &x509_cert::time::Time| certfab::exports::support::x509_time_rfc3339(t);
    ExportDevice {
        seq,
        device_id: id.into(),
        serial: hex::encode(tbs.serial_number.as_bytes()),
        cert_pem: pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, &der)
            .unwrap(),
        cert_sha256: sha256_hex(&der),
        spki_sha256: sha256_hex(&tbs.subject_public_key_info.to_der().unwrap()),
        not_before: t(&tbs.validity.not_before),
        not_after: t(&tbs.validity.not_after),
        key_origin: "csr-file".into(),
        state: "signed".into(),
        cloud: serde_json::Map::new(),
        cert_der: der,
    }
}

/// What Hono does with each certificate under `template` (tests/java/HonoAuthId.java):
/// `Ok((adapter auth-id, what the registry stores for it))` or `Err(why)`.
fn java_hono_auth_ids(template: &str, ders: &[PathBuf]) -> Vec<Result<(String, String), String>> {
    let o = common::java("HonoAuthId")
        .arg(template)
        .args(ders)
        .output()
        .expect("run java (JDK 11+)");
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            match f[0] {
                "ok" => Ok((f[1].to_string(), f[2].to_string())),
                _ => Err(f[1..].join("\t")),
            }
        })
        .collect()
}

/// The written x509-cert auth-ids of a Hono export, in device order.
fn hono_auth_ids(files: &[ExportFile]) -> Vec<String> {
    files
        .iter()
        .filter(|f| f.name.starts_with("hono-devices-"))
        .flat_map(|f| {
            String::from_utf8(f.bytes.clone())
                .unwrap()
                .lines()
                .map(|l| {
                    let v: Value = serde_json::from_str(l).unwrap();
                    v["credentials"][0]["auth-id"].as_str().unwrap().to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Issue 15 item 1: with an auth-id-template the auth-id is the template applied to the DN
/// exactly as Hono's adapter computes it (Java's X500Principal, then IdentityTemplate's
/// replacement), which the registry stores unchanged; a device the adapter could not
/// authenticate is refused by name.
#[test]
fn hono_auth_id_template_is_applied_as_honos_adapter_would() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let mut input = f.input.clone();
    input.tenant = Some("acme-factory".into());

    // The line's own devices (CN=dev-000N, O=certfab development).
    let ders: Vec<PathBuf> = input
        .devices
        .iter()
        .map(|d| {
            let p = dir.path().join(format!("{}.der", d.device_id));
            std::fs::write(&p, &d.cert_der).unwrap();
            p
        })
        .collect();
    for template in [
        "{{subject-cn}}",
        "{{subject-o}}/{{subject-cn}}",
        "device-{{subject-cn}}",
        "{{subject-dn}}",
    ] {
        let mut o = opts(Some(5));
        o.settings
            .insert("hono.auth_id_template".into(), template.into());
        let files = certfab::exports::hono::render(&input, &o).unwrap();
        let written = hono_auth_ids(&files);
        let java = java_hono_auth_ids(template, &ders);
        assert_eq!(written.len(), java.len());
        for ((d, ours), theirs) in input.devices.iter().zip(&written).zip(&java) {
            let (adapter, stored) = theirs.as_ref().expect("Hono computes an auth-id");
            assert_eq!(ours, adapter, "{template}: {}", d.device_id);
            assert_eq!(stored, adapter, "{template}: the registry keeps it");
        }
        // The tenant carries the template, and the bodies still fit the registry's schema.
        let r = check("hono", write(&files).path(), &[]);
        assert_eq!(r["trusted_ca"]["auth-id-template"], template);
    }
    let mut o = opts(None);
    o.settings
        .insert("hono.auth_id_template".into(), "{{subject-cn}}".into());
    assert_eq!(
        hono_auth_ids(&certfab::exports::hono::render(&input, &o).unwrap())[0],
        "dev-0001"
    );

    // Subjects where Java's replacement rules, LdapName's RDN sorting or a missing attribute
    // decide the outcome.
    let subjects: &[(&str, &[&str])] = &[
        ("/O=Acme/OU=line-a/CN=plain-1", &[]),
        ("/C=DE/O=Acme, Inc./OU=R&D <lab>/CN=dev #1 \"q\";x", &[]),
        ("/O=Acme/CN=back\\\\slash", &[]),
        ("/O=Acme/CN=cost$5", &[]),
        ("/O=Acme/CN=$0x", &[]),
        (
            "/DC=example/UID=u1/CN=dev-7+serialNumber=7",
            &["-multivalue-rdn"],
        ),
        ("/O=Acme/OU=ops", &[]),
        ("/O=Acme/CN=k=v", &[]),
        ("/C=DE/O=Gerätebau/OU=Werk 2/CN=Gerät-1", &["-utf8"]),
    ];
    let mut devices = Vec::new();
    let mut paths = Vec::new();
    for (i, (subj, extra)) in subjects.iter().enumerate() {
        let der = self_signed(dir.path(), &format!("s{i}"), subj, "ec:prime256v1", extra);
        let p = dir.path().join(format!("s{i}.der"));
        std::fs::write(&p, &der).unwrap();
        paths.push(p);
        devices.push(device_of(i as u64 + 1, &format!("s{i}"), der));
    }
    for template in [
        "{{subject-cn}}",
        "{{subject-dn}}",
        "{{subject-ou}}.{{subject-cn}}",
    ] {
        let java = java_hono_auth_ids(template, &paths);
        let mut accepted = 0;
        for ((d, (subj, _)), theirs) in devices.iter().zip(subjects).zip(&java) {
            let mut one = input.clone();
            one.devices = vec![d.clone()];
            let mut o = opts(None);
            o.settings
                .insert("hono.auth_id_template".into(), template.into());
            let ours = certfab::exports::hono::render(&one, &o);
            match (theirs, ours) {
                (Err(why), Ok(_)) => {
                    panic!(
                        "{template} {subj}: Hono's adapter fails ({why}) but certfab exported it"
                    )
                }
                (Err(_), Err(e)) => assert!(e.to_string().contains(&d.device_id), "{e}"),
                (Ok((adapter, stored)), Ok(files)) => {
                    accepted += 1;
                    let written = &hono_auth_ids(&files)[0];
                    assert_eq!(written, adapter, "{template} {subj}");
                    assert_eq!(stored, adapter, "{template} {subj}: registry rewrites it");
                }
                (Ok((adapter, _)), Err(e)) => {
                    // Only the registry's DN normalisation may make certfab refuse what the
                    // adapter computes: an auth-id with '=' that is not the DN itself.
                    assert!(adapter.contains('='), "{template} {subj}: {e}");
                    assert!(e.to_string().contains("'='"), "{e}");
                }
            }
        }
        assert!(
            accepted >= 3,
            "{template}: only {accepted} subjects accepted"
        );
    }
}

/// Issue 15 item 2: tenant and device ids follow the registry's id patterns (Hono's defaults,
/// or the registry's own through a setting), and templates use only Hono's placeholders.
#[test]
fn hono_ids_follow_honos_patterns_and_templates_only_known_placeholders() {
    let f = fixture();
    let mut input = f.input.clone();
    let render = |input: &ExportInput, sets: &[(&str, &str)]| {
        let mut o = opts(None);
        for (k, v) in sets {
            o.settings.insert(k.to_string(), v.to_string());
        }
        certfab::exports::hono::render(input, &o)
    };
    for bad in ["acme factory", "acme:factory", "acme=1", "acme/f"] {
        let e = refused(
            render(&input, &[("hono.tenant_id", bad)]),
            &["hono.tenant_id"],
        );
        assert!(e.contains("tenantIdPattern"), "{e}");
    }
    // The registry's own pattern, when it is configured differently.
    let files = render(
        &input,
        &[
            ("hono.tenant_id", "acme:factory"),
            ("hono.tenant_id_pattern", "^[a-z:]+$"),
        ],
    )
    .unwrap();
    assert!(files[0].consumer.contains("/v1/tenants/acme:factory"));
    refused(
        render(
            &input,
            &[
                ("hono.tenant_id", "acme"),
                ("hono.tenant_id_pattern", "[a-z"),
            ],
        ),
        &["hono.tenant_id_pattern", "regular expression"],
    );

    input.tenant = Some("acme-factory".into());
    for bad in ["dev 1", "dev/1", "dev#1", "gerät"] {
        input.devices[2]
            .cloud
            .insert("hono.device_id".into(), json!(bad));
        let e = refused(render(&input, &[]), &["dev-0003", "deviceIdPattern"]);
        assert!(e.contains(bad), "{e}");
    }
    input.devices[2]
        .cloud
        .insert("hono.device_id".into(), json!("urn:dev=3"));
    let files = render(&input, &[]).unwrap();
    let r = check("hono", write(&files).path(), &[]);
    assert_eq!(r["devices"][2]["device-id"], "urn:dev=3");
    input.devices[2]
        .cloud
        .insert("hono.device_id".into(), json!("dev 3"));
    render(&input, &[("hono.device_id_pattern", "^[a-z0-9 -]+$")]).unwrap();
    input.devices[2].cloud.remove("hono.device_id");

    // Only Hono's placeholders: one unknown among known ones is still refused.
    for key in [
        "hono.auth_id_template",
        "hono.auto_provisioning_device_id_template",
    ] {
        for bad in ["{{subject-cn}}-{{serial}}", "{{Subject-CN}}", "static"] {
            let e = refused(render(&input, &[(key, bad)]), &[key]);
            assert!(e.contains("{{subject-cn}}"), "{e}");
        }
        render(&input, &[(key, "{{subject-o}}-{{subject-cn}}")]).unwrap();
    }

    // The checker bites on ids and templates the registry would refuse.
    let files = render(&input, &[]).unwrap();
    let d = write(&files);
    let p = d.path().join("hono-devices-0001.jsonl");
    let body = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        body.replacen(
            "\"device-id\":\"dev-0001\"",
            "\"device-id\":\"dev 0001\"",
            1,
        ),
    )
    .unwrap();
    assert!(check_fails("hono", d.path(), &[]).contains("device-id"));
    std::fs::write(&p, body).unwrap();
    let t = d.path().join("hono-tenant.json");
    let mut tenant: Value = serde_json::from_slice(&std::fs::read(&t).unwrap()).unwrap();
    tenant["trusted-ca"][0]["auth-id-template"] = json!("{{subject-cn}}-{{serial}}");
    std::fs::write(&t, tenant.to_string()).unwrap();
    assert!(check_fails("hono", d.path(), &[]).contains("placeholder"));
}

// ------------------------------------------------------------------------------ Peridio

#[test]
fn peridio_jitp_settings_and_device_records_fit_the_sdk_shapes() {
    let f = fixture();
    refused(
        certfab::exports::peridio::render(&f.input, &opts(None)),
        &["peridio.product_prn", "peridio.product_name"],
    );

    let mut input = f.input.clone();
    input
        .cloud
        .insert("peridio.product_name".into(), json!("gateway"));
    input.cloud.insert(
        "peridio.product_prn".into(),
        json!("prn:1:org:product:gateway"),
    );
    input.cloud.insert(
        "peridio.cohort_prn".into(),
        json!("prn:1:org:cohort:factory"),
    );
    input
        .cloud
        .insert("peridio.tags".into(), json!(["line-a", "2026"]));
    input
        .cloud
        .insert("peridio.jitp_tags".into(), json!(["line-a", "2026"]));
    input
        .cloud
        .insert("peridio.jitp_description".into(), json!("Gateway {serial}"));
    input.devices[2]
        .cloud
        .insert("peridio.tags".into(), json!(["rework"]));
    let files = certfab::exports::peridio::render(&input, &opts(None)).unwrap();
    assert_eq!(
        names(&files),
        [
            ("peridio-devices-0001.jsonl".into(), DEVICES),
            ("peridio-device-import-0001.csv".into(), DEVICES),
            ("peridio-ca.pem".into(), 0),
            ("peridio-ca-jitp-v1.json".into(), 0),
        ]
    );
    let dir = write(&files);
    let r = check("peridio", dir.path(), &[]);
    assert_eq!(
        r["jitp"],
        json!({"description": "Gateway {serial}", "tags": ["line-a", "2026"],
               "product_name": "gateway", "cohort_prn": "prn:1:org:cohort:factory"})
    );
    let devs = r["devices"].as_array().unwrap();
    assert_eq!(devs.len(), DEVICES);
    assert_eq!(devs[0]["identifier"], "dev-0001");
    assert_eq!(devs[0]["cn"], "dev-0001");
    assert_eq!(devs[0]["tags"], json!(["line-a", "2026"]));
    assert_eq!(devs[2]["tags"], json!(["rework"]));
    // The schema check bites: a device record without its identifier is refused.
    let p = dir.path().join("peridio-devices-0001.jsonl");
    let mut rec: Value =
        serde_json::from_str(std::fs::read_to_string(&p).unwrap().lines().next().unwrap()).unwrap();
    rec["device"].as_object_mut().unwrap().remove("identifier");
    std::fs::write(&p, format!("{rec}\n")).unwrap();
    assert!(check_fails("peridio", dir.path(), &[]).contains("identifier"));

    input.devices[3]
        .cloud
        .insert("peridio.tags".into(), json!(true));
    refused(
        certfab::exports::peridio::render(&input, &opts(None)),
        &["dev-0004", "list of strings"],
    );
}

/// Issue 15 item 4: no next step names a command the current Peridio CLI does not have; the
/// JITP settings are marked for the v1 API they belong to; a device's identifier is its
/// certificate's CN (a different one is refused); and Peridio's console device import CSV is
/// written as its guide describes.
#[test]
fn peridio_runs_only_existing_commands_marks_jitp_v1_and_matches_identifiers_to_cns() {
    let f = fixture();
    let mut input = f.input.clone();
    input
        .cloud
        .insert("peridio.product_name".into(), json!("gateway"));
    input.cloud.insert(
        "peridio.product_prn".into(),
        json!("prn:1:org:product:gateway"),
    );
    input
        .cloud
        .insert("peridio.jitp_tags".into(), json!(["line-a"]));
    input.devices[1]
        .cloud
        .insert("peridio.tags".into(), json!(["line-a", "rev.2"]));
    input.cloud.insert(
        "peridio.cohort_prn".into(),
        json!("prn:1:org:cohort:factory"),
    );
    let files = certfab::exports::peridio::render(&input, &opts(None)).unwrap();
    // Every consumer names only what runs: no --jitp-* flag (removed from peridio-cli in
    // "v2 ca_certificates"), and the JITP body is for the v1 API.
    for file in &files {
        assert!(
            !file.consumer.contains("--jitp"),
            "{}: {}",
            file.name,
            file.consumer
        );
    }
    let jitp = files.iter().find(|f| f.name.contains("jitp")).unwrap();
    assert_eq!(jitp.name, "peridio-ca-jitp-v1.json");
    assert!(jitp.consumer.contains("v1"), "{}", jitp.consumer);
    assert!(jitp
        .consumer
        .contains("PUT /orgs/{organization_name}/ca_certificates/{ca_certificate_serial}"));
    let pem = files.iter().find(|f| f.name == "peridio-ca.pem").unwrap();
    for cmd in [
        "peridio ca-certificates create-verification-code",
        "certfab ca verification-cert",
        "peridio ca-certificates create --certificate-path peridio-ca.pem --verification-certificate-path",
    ] {
        assert!(pem.consumer.contains(cmd), "{cmd}: {}", pem.consumer);
    }

    // The identifier defaults to the CN, on both the API lines and the import CSV.
    let dir = write(&files);
    let r = check("peridio", dir.path(), &[]);
    for (i, dev) in r["devices"].as_array().unwrap().iter().enumerate() {
        assert_eq!(dev["identifier"], dev["cn"], "{i}");
    }
    let imported = r["imported"].as_array().unwrap();
    assert_eq!(imported.len(), DEVICES);
    assert_eq!(imported[1]["identifier"], "dev-0002");
    assert_eq!(imported[1]["tags"], json!(["line-a", "rev.2"]));
    assert_eq!(imported[1]["cohort_prn"], "prn:1:org:cohort:factory");
    assert_eq!(imported[1]["product_prn"], "prn:1:org:product:gateway");
    let csv0 = String::from_utf8(files[1].bytes.clone()).unwrap();
    assert!(csv0.starts_with("\"identifier\",\"description\",\"tags\",\"product_prn\",\"cohort_prn\",\"certificates\",\"target\"\n"), "{csv0}");

    // A CN that differs from the ledger id still gives identifier = CN …
    let dir2 = tempfile::tempdir().unwrap();
    let mut other = input.clone();
    other.devices = vec![device_of(
        1,
        "SN-77",
        self_signed(dir2.path(), "cn", "/O=Acme/CN=gw-77", "ec:prime256v1", &[]),
    )];
    let files2 = certfab::exports::peridio::render(&other, &opts(None)).unwrap();
    let r2 = check("peridio", write(&files2).path(), &[]);
    assert_eq!(r2["devices"][0]["identifier"], "gw-77");
    // … and an identifier that is not the CN is refused, naming the device.
    other.devices[0]
        .cloud
        .insert("peridio.identifier".into(), json!("SN-77"));
    refused(
        certfab::exports::peridio::render(&other, &opts(None)),
        &["SN-77", "common name 'gw-77'"],
    );
    // Values the import CSV could not carry are refused too.
    let mut bad = input.clone();
    bad.devices[2]
        .cloud
        .insert("peridio.tags".into(), json!(["a,b"]));
    refused(
        certfab::exports::peridio::render(&bad, &opts(None)),
        &["dev-0003", "','"],
    );

    // The checker bites: an identifier that is not the CN.
    let p = dir.path().join("peridio-device-import-0001.csv");
    let body = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, body.replacen("\"dev-0001\"", "\"dev-x\"", 1)).unwrap();
    assert!(check_fails("peridio", dir.path(), &[]).contains("not the certificate's CN"));
}

// ------------------------------------------------------------------------------ nRF Cloud

#[test]
fn nrfcloud_csv_is_what_nrfcloud_utils_writes_and_shards_at_1000_rows() {
    let f = fixture();
    let mut input = f.input.clone();
    input
        .cloud
        .insert("nrfcloud.tags".into(), json!(["factory", "line-a"]));
    input
        .cloud
        .insert("nrfcloud.subtype".into(), json!("gateway"));
    let files = certfab::exports::nrfcloud::render(&input, &opts(None)).unwrap();
    assert_eq!(
        names(&files),
        [("nrfcloud-onboard-0001.csv".into(), DEVICES)]
    );
    let text0 = String::from_utf8(files[0].bytes.clone()).unwrap();
    assert!(
        text0.starts_with(
            "dev-0001,gateway,factory|line-a,APP|MODEM,\"-----BEGIN CERTIFICATE-----\n"
        ),
        "{text0}"
    );
    let r = check("nrfcloud", write(&files).path(), &[]);
    assert_eq!(r["ids"], DEVICES);
    assert_eq!(r["nordic_writer_identical"], true);
    assert_eq!(r["first"]["cn"], "dev-0001");

    // 1001 devices (real certificates reused under distinct nRF Cloud ids): 1000 + 1.
    let mut big = f.input.clone();
    big.devices = (0..1001)
        .map(|i| {
            let mut d = f.input.devices[i % DEVICES].clone();
            d.device_id = format!("nrf-{i:05}");
            d
        })
        .collect();
    let files = certfab::exports::nrfcloud::render(&big, &opts(None)).unwrap();
    assert_eq!(
        files.iter().map(|f| f.devices).collect::<Vec<_>>(),
        [1000, 1]
    );
    let r = check("nrfcloud", write(&files).path(), &[]);
    assert_eq!(r["ids"], 1001);
    let files = certfab::exports::nrfcloud::render(&big, &opts(Some(400))).unwrap();
    assert_eq!(
        files.iter().map(|f| f.devices).collect::<Vec<_>>(),
        [400, 400, 201]
    );

    // The checker refuses a 1001-row file.
    let d = tempfile::tempdir().unwrap();
    let all: Vec<u8> = certfab::exports::nrfcloud::render(&big, &opts(None))
        .unwrap()
        .into_iter()
        .flat_map(|f| f.bytes)
        .collect();
    std::fs::write(d.path().join("nrfcloud-onboard-0001.csv"), all).unwrap();
    assert!(check_fails("nrfcloud", d.path(), &[]).contains("at most 1000"));

    input
        .cloud
        .insert("nrfcloud.fw_types".into(), json!(["APP", "WIFI"]));
    refused(
        certfab::exports::nrfcloud::render(&input, &opts(None)),
        &["WIFI"],
    );
    input.cloud.remove("nrfcloud.fw_types");
    input.devices[0]
        .cloud
        .insert("nrfcloud.tags".into(), json!(["a|b"]));
    refused(
        certfab::exports::nrfcloud::render(&input, &opts(None)),
        &["dev-0001", "'|'"],
    );
}

/// Issue 15 item 3: every nRF Cloud row follows the OnboardDevices field patterns (checked
/// against a fixture written from them), only ES256 (P-256) device certificates are
/// onboarded, MDM_FULL is a firmware type, and a "gateway" subType is flagged.
#[test]
fn nrfcloud_rows_follow_the_onboarding_field_patterns() {
    let f = fixture();
    let render = |input: &ExportInput| certfab::exports::nrfcloud::render(input, &opts(None));
    let mut input = f.input.clone();
    input.cloud.insert(
        "nrfcloud.fw_types".into(),
        json!(["APP", "MODEM", "MDM_FULL"]),
    );
    input.cloud.insert(
        "nrfcloud.subtype".into(),
        json!("env-sensor/v2,rev.a@hall#3"),
    );
    input.devices[0].cloud.insert(
        "nrfcloud.device_id".into(),
        json!(format!("Nrf:{}", "A".repeat(96))),
    );
    input.devices[1].cloud.insert(
        "nrfcloud.tags".into(),
        json!(["rack#4@hall", "line:a", "x.y_z"]),
    );
    let files = render(&input).unwrap();
    let r = check("nrfcloud", write(&files).path(), &[]);
    assert_eq!(r["ids"], DEVICES);
    assert_eq!(r["first"]["fw"], "APP|MODEM|MDM_FULL");

    // Each field the API refuses, refused here with the device named.
    let cases: &[(usize, &str, Value, &str)] = &[
        (2, "nrfcloud.device_id", json!("dev 3"), "deviceId"),
        (2, "nrfcloud.device_id", json!("a".repeat(129)), "1 to 128"),
        (2, "nrfcloud.device_id", json!("dev.3"), "deviceId"),
        (
            3,
            "nrfcloud.tags",
            json!(["ok", "two words"]),
            "tag 'two words'",
        ),
        (3, "nrfcloud.tags", json!(["a/b"]), "tag 'a/b'"),
        (3, "nrfcloud.tags", json!(["a|b"]), "'|'"),
        (4, "nrfcloud.subtype", json!("humidity sensor"), "subType"),
        (4, "nrfcloud.subtype", json!("x".repeat(800)), "at most 799"),
    ];
    for (i, key, value, want) in cases {
        let mut bad = input.clone();
        bad.devices[*i].cloud.insert(key.to_string(), value.clone());
        let id = bad.devices[*i].device_id.clone();
        refused(render(&bad), &[&id, want]);
    }
    let mut bad = input.clone();
    bad.cloud
        .insert("nrfcloud.fw_types".into(), json!(["APP", "FULL"]));
    refused(render(&bad), &["FULL", "MDM_FULL"]);

    // RSA, P-384 and Ed25519 device certificates are not ES256.
    let dir = tempfile::tempdir().unwrap();
    for (i, (keyspec, kind)) in [
        ("rsa:2048", "RSA"),
        ("ec:secp384r1", "P-384"),
        ("ED25519", "Ed25519"),
    ]
    .iter()
    .enumerate()
    {
        let der = self_signed(
            dir.path(),
            &format!("k{i}"),
            &format!("/CN=key-{i}"),
            keyspec,
            &[],
        );
        let mut bad = input.clone();
        bad.devices.push(device_of(13, &format!("key-{i}"), der));
        let e = refused(
            render(&bad),
            &[&format!("key-{i}"), "manifest line 13", "ES256"],
        );
        assert!(e.contains(kind), "{kind}: {e}");
    }

    // "gateway" in a subType grants gateway MQTT permissions: said in the summary.
    let mut gw = input.clone();
    gw.devices[5]
        .cloud
        .insert("nrfcloud.subtype".into(), json!("BLE-Gateway"));
    let out = tempfile::tempdir().unwrap();
    let summary = certfab::exports::export(
        certfab::exports::Format::Nrfcloud,
        &gw,
        &opts(None),
        &out.path().join("x"),
        false,
    )
    .unwrap();
    assert_eq!(summary.warnings.len(), 1, "{:?}", summary.warnings);
    assert!(
        summary.warnings[0].contains("dev-0006"),
        "{:?}",
        summary.warnings
    );
    assert!(summary
        .text()
        .contains("warning: nrfcloud: 1 device(s) (dev-0006)"));
    assert!(summary
        .text()
        .contains("Gateway devices with additional MQTT permissions"));
    let written: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("x/nrfcloud.summary.json")).unwrap())
            .unwrap();
    assert_eq!(written["warnings"], json!(summary.warnings));
    assert!(
        certfab::exports::warnings(certfab::exports::Format::Nrfcloud, &input, &opts(None))
            .unwrap()
            .is_empty()
    );

    // The checker bites on the fixture's patterns.
    let d = write(&files);
    let p = d.path().join("nrfcloud-onboard-0001.csv");
    let body = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, body.replacen("rack#4@hall", "rack 4", 1)).unwrap();
    assert!(check_fails("nrfcloud", d.path(), &[]).contains("tag 'rack 4'"));
}

/// Issue 10 item 12 (nRF Cloud part): a cell a spreadsheet would run as a formula cannot be
/// written raw, and cannot be prefixed with `'` without changing what nRF Cloud stores, so
/// such rows are refused by name (the API's patterns already refuse `=`, `+`).
#[test]
fn nrfcloud_cells_a_spreadsheet_would_run_are_refused() {
    let f = fixture();
    let render = |input: &ExportInput| certfab::exports::nrfcloud::render(input, &opts(None));
    for (key, value, what) in [
        (
            "nrfcloud.device_id",
            json!("-dev-0001"),
            "deviceId '-dev-0001'",
        ),
        ("nrfcloud.device_id", json!("=1+1"), "'='"),
        ("nrfcloud.device_id", json!("+4915"), "'+'"),
        ("nrfcloud.device_id", json!("@dev"), "'@'"),
        ("nrfcloud.subtype", json!("@SUM(1)"), "subType"),
        ("nrfcloud.subtype", json!("-2"), "subType '-2'"),
        ("nrfcloud.tags", json!(["@team", "a"]), "tags '@team|a'"),
        ("nrfcloud.tags", json!(["-x"]), "tags '-x'"),
    ] {
        let mut input = f.input.clone();
        input.devices[6].cloud.insert(key.into(), value.clone());
        let e = refused(render(&input), &["dev-0007", what]);
        assert!(!e.contains("\n"), "{e}");
    }
    // Only the start of a cell matters: a later tag or a dash inside a value is fine.
    let mut input = f.input.clone();
    input.devices[6]
        .cloud
        .insert("nrfcloud.tags".into(), json!(["team", "@hall", "-x"]));
    input.devices[6]
        .cloud
        .insert("nrfcloud.device_id".into(), json!("dev--7"));
    let files = render(&input).unwrap();
    let text0 = String::from_utf8(files[0].bytes.clone()).unwrap();
    for line in text0.lines().filter(|l| l.starts_with("dev")) {
        let cells: Vec<&str> = line.splitn(5, ',').collect();
        for c in &cells[..4] {
            assert!(!c.starts_with(['=', '+', '-', '@']), "{line}");
        }
    }
    check("nrfcloud", write(&files).path(), &[]);
}

// ------------------------------------------------------------------------------ Microchip JWS

#[test]
fn microchip_manifest_entries_are_signed_in_the_hsm_and_verify_with_pytrustplatform() {
    let f = fixture();
    let _turn = hsm_turn();
    let site = certfab::Site::open(&f.line.config()).unwrap();
    site.login().unwrap();
    let signer = site.signer(time::OffsetDateTime::now_utc()).unwrap();
    let files =
        certfab::exports::microchip::render_signed(&f.input, &opts(Some(8)), &signer).unwrap();
    assert_eq!(
        names(&files),
        [
            ("microchip-manifest-0001.json".into(), 8),
            ("microchip-manifest-0002.json".into(), 4)
        ]
    );
    let dir = write(&files);
    let signer_pem = f.line.file("ca/manifest-signer.pem");
    let r = check("microchip", dir.path(), &[signer_pem.to_str().unwrap()]);
    let ids: Vec<String> = f
        .input
        .devices
        .iter()
        .map(|d| d.device_id.clone())
        .collect();
    assert_eq!(r["unique_ids"], json!(ids));
    let p = &r["first_payload"];
    assert_eq!(p["version"], 1);
    assert_eq!(p["manufacturer"]["organizationName"], "certfab development");
    assert_eq!(p["groupId"], "batch-1");
    assert!(p["provisioningTimestamp"]
        .as_str()
        .unwrap()
        .ends_with(".000Z"));

    // A changed payload no longer verifies with Microchip's verifier.
    let path = dir.path().join("microchip-manifest-0001.json");
    let mut entries: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let other = entries[1]["payload"].clone();
    entries[0]["payload"] = other;
    std::fs::write(&path, entries.to_string()).unwrap();
    check_fails("microchip", dir.path(), &[signer_pem.to_str().unwrap()]);
}

/// Issue 15 item 6: Microchip's uniqueId is the chip serial in lower-case hex; any other
/// uniqueId is exported with a warning, or refused by name under
/// `microchip.strict_unique_id`.
#[test]
fn microchip_unique_id_is_a_lowercase_hex_serial() {
    use certfab::exports::Format;
    let f = fixture();
    let warn = |input: &ExportInput, o: &ExportOptions| {
        certfab::exports::warnings(Format::MicrochipJws, input, o).unwrap()
    };
    // Device ids such as dev-0001 are not serials: one warning naming them.
    let w = warn(&f.input, &opts(None));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("12 uniqueId(s) (dev-0001, dev-0002"), "{w:?}");
    assert!(w[0].contains("lower-case hex"), "{w:?}");
    // The certificate serial (lower-case hex bytes) is one.
    let mut input = f.input.clone();
    for d in &mut input.devices {
        d.cloud
            .insert("microchip.unique_id".into(), json!(d.serial.clone()));
    }
    assert!(warn(&input, &opts(None)).is_empty());
    for odd in ["01AB23", "abc", "0x01ab", ""] {
        input.devices[4]
            .cloud
            .insert("microchip.unique_id".into(), json!(odd));
        let w = warn(&input, &opts(None));
        assert_eq!(w.len(), 1, "{odd:?}: {w:?}");
        assert!(w[0].contains(&format!("1 uniqueId(s) ({odd})")), "{w:?}");
    }

    // Strict: refused with the device named, nothing signed; serials pass and verify.
    let _turn = hsm_turn();
    let site = certfab::Site::open(&f.line.config()).unwrap();
    site.login().unwrap();
    let signer = site.signer(time::OffsetDateTime::now_utc()).unwrap();
    let mut strict = opts(None);
    strict
        .settings
        .insert("microchip.strict_unique_id".into(), "true".into());
    input.devices[4]
        .cloud
        .insert("microchip.unique_id".into(), json!("01AB23"));
    refused(
        certfab::exports::microchip::render_signed(&input, &strict, &signer),
        &[
            "dev-0005",
            "01AB23",
            "lower-case hex",
            "microchip.strict_unique_id",
        ],
    );
    assert!(warn(&input, &strict).is_empty());
    let serial = input.devices[4].serial.clone();
    input.devices[4]
        .cloud
        .insert("microchip.unique_id".into(), json!(serial));
    let files = certfab::exports::microchip::render_signed(&input, &strict, &signer).unwrap();
    let signer_pem = f.line.file("ca/manifest-signer.pem");
    let r = check(
        "microchip",
        write(&files).path(),
        &[signer_pem.to_str().unwrap()],
    );
    assert_eq!(r["unique_ids"][4], json!(serial));
}

// ------------------------------------------------------------------------------ plain CSV

#[test]
fn plain_csv_has_the_device_facts_and_neutralizes_formula_cells() {
    let f = fixture();
    let mut input = f.input.clone();
    input.devices[0]
        .cloud
        .insert("note".into(), json!("=HYPERLINK(\"http://x\",\"y\")"));
    input.devices[1].cloud.insert("note".into(), json!("-2+3"));
    input.devices[1]
        .cloud
        .insert("site".into(), json!({"hall": "B", "bay": 4}));
    input.devices[2]
        .cloud
        .insert("tags".into(), json!(["a", "b"]));
    let files = certfab::exports::csv::render(&input, &opts(Some(5))).unwrap();
    assert_eq!(
        files.iter().map(|f| f.devices).collect::<Vec<_>>(),
        [5, 5, 2]
    );
    let r = check("csv", write(&files).path(), &[]);
    assert_eq!(
        r["header"],
        json!([
            "device_id",
            "serial",
            "cert_sha256",
            "spki_sha256",
            "not_before",
            "not_after",
            "key_origin",
            "state",
            "cloud.note",
            "cloud.site.bay",
            "cloud.site.hall",
            "cloud.tags"
        ])
    );
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), DEVICES);
    assert_eq!(rows[0]["cloud.note"], "'=HYPERLINK(\"http://x\",\"y\")");
    assert_eq!(rows[1]["cloud.note"], "'-2+3");
    assert_eq!(rows[1]["cloud.site.hall"], "B");
    assert_eq!(rows[1]["cloud.site.bay"], "4");
    assert_eq!(rows[2]["cloud.tags"], "[\"a\",\"b\"]");
    // Certificate and key hashes as OpenSSL computes them.
    let pem = f.line.file("out/dev-0003/cert.pem");
    let fp = common::openssl_sha256_fingerprint(&pem);
    assert_eq!(rows[2]["cert_sha256"], json!(fp));
    assert_eq!(rows[2]["device_id"], "dev-0003");
    assert_eq!(rows[2]["state"], "signed");
    for row in rows {
        for (k, v) in row.as_object().unwrap() {
            let v = v.as_str().unwrap();
            assert!(
                !v.starts_with(['=', '+', '-', '@']),
                "{k} = {v} would run as a formula"
            );
        }
    }
}

// ------------------------------------------------------------------------------ end to end

/// The whole path: a profile with a cloud: section, `certfab batch`, `certfab manifest
/// build` (signed), then `certfab export --format F --manifest M --out DIR` for every
/// non-AWS format, each output checked by the platform's own tooling.
#[test]
fn certfab_export_cli_renders_every_format_from_a_signed_manifest() {
    let f = fixture();
    let _turn = hsm_turn();
    let line = &f.line;
    let profile = common::derived_profile(
        line.path(),
        "export-other.yaml",
        "generic-iot.yaml",
        &[
            ("name: generic-iot", "name: export-other"),
            (
                "cloud:\n",
                "cloud:\n  tenant: acme-factory\n  azure:\n    registration_id: \"{cert.CN}\"\n    iot_hubs: [hub1.azure-devices.net]\n    twin_tags:\n      batch: \"{var.batch}\"\n  hono:\n    auto_provisioning: true\n    auto_provisioning_device_id_template: \"{{{{subject-cn}}}}\"\n    ext:\n      serial: \"{cert.serial}\"\n  nrfcloud:\n    subtype: gateway\n    tags: [factory, \"{var.batch}\"]\n  peridio:\n    product_name: gateway\n    product_prn: \"prn:1:org:product:gateway\"\n    tags: [line-a]\n  microchip:\n    unique_id: \"{cert.serial}\"\n",
            ),
        ],
    );
    let out = line.file("out-e2e");
    let summary = line.host_batch(
        profile.to_str().unwrap(),
        6,
        "e2e-{seq:03}",
        &out,
        &["--plain-keys"],
    );
    let batch = summary["batch"].as_str().unwrap().to_string();
    let manifest = line.file("e2e.manifest.jsonl");
    let o = line.manifest_build(&[&batch], Some(profile.to_str().unwrap()), &manifest);
    assert!(o.status.success(), "{}", text(&o));

    let runs = std::cell::Cell::new(0);
    let export = |format: &str, extra: &[&str]| {
        runs.set(runs.get() + 1);
        let dir = line.file(&format!("x-{format}-{}", runs.get()));
        let mut args = vec![
            "--json",
            "export",
            "--format",
            format,
            "--manifest",
            manifest.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        (line.certfab(&args), dir)
    };
    let files_of = |summary: &Value| -> Vec<(String, u64)> {
        summary["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["name"].as_str().unwrap().to_string(),
                    f["devices"].as_u64().unwrap(),
                )
            })
            .collect()
    };

    // Azure DPS, sharded by --max-rows under the 10-per-call limit.
    let (o, dir) = export("azure-dps", &["--max-rows", "4"]);
    assert!(o.status.success(), "{}", text(&o));
    let s = common::stdout_json(&o);
    assert_eq!(s["format"], "azure-dps");
    assert_eq!(s["devices"], 6);
    assert_eq!(
        files_of(&s),
        [
            ("azure-dps-enrollments-0001.json".into(), 4),
            ("azure-dps-enrollments-0002.json".into(), 2)
        ]
    );
    assert!(dir.join("azure-dps.summary.json").exists());
    let r = check("azure", &dir, &[]);
    assert_eq!(r["registration_ids"][0], "e2e-001");
    let body: Value = serde_json::from_slice(
        &std::fs::read(dir.join("azure-dps-enrollments-0001.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        body["enrollments"][0]["initialTwin"]["tags"]["batch"],
        json!(batch)
    );
    assert_eq!(
        body["enrollments"][0]["iotHubs"],
        json!(["hub1.azure-devices.net"])
    );

    let (o, dir) = export("azure-dps-group", &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(check("azure", &dir, &[])["group_id"], "export-other");

    // Hono: tenant from the profile, auth-ids as Java computes them.
    let (o, dir) = export("hono", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let r = check("hono", &dir, &[]);
    assert_eq!(r["devices"][0]["tenant-id"], "acme-factory");
    assert_eq!(
        r["trusted_ca"]["auto-provisioning-device-id-template"],
        "{{subject-cn}}"
    );
    assert_eq!(
        r["devices"][0]["auth-id"],
        "O=certfab development,CN=e2e-001"
    );
    let line1 = std::fs::read_to_string(dir.join("hono-devices-0001.jsonl")).unwrap();
    let rec: Value = serde_json::from_str(line1.lines().next().unwrap()).unwrap();
    assert!(rec["device"]["ext"]["serial"].as_str().unwrap().len() >= 32);

    let (o, dir) = export("peridio", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let r = check("peridio", &dir, &[]);
    assert_eq!(r["devices"].as_array().unwrap().len(), 6);
    assert_eq!(r["jitp"]["product_name"], "gateway");

    let (o, dir) = export("nrfcloud", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let s = common::stdout_json(&o);
    assert!(
        s["warnings"][0]
            .as_str()
            .unwrap()
            .contains("Gateway devices"),
        "{s}"
    );
    let r = check("nrfcloud", &dir, &[]);
    assert_eq!(r["first"]["tags"], json!(format!("factory|{batch}")));
    assert_eq!(r["first"]["fw"], "APP|MODEM");

    let (o, dir) = export("csv", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let r = check("csv", &dir, &[]);
    assert_eq!(r["rows"][0]["device_id"], "e2e-001");
    assert_eq!(r["rows"][0]["cloud.azure.registration_id"], "e2e-001");

    // Microchip-style JWS: signed by the site's manifest signer in the HSM.
    let (o, dir) = export("microchip-jws", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let signer = line.file("ca/manifest-signer.pem");
    let r = check("microchip", &dir, &[signer.to_str().unwrap()]);
    assert_eq!(r["unique_ids"].as_array().unwrap().len(), 6);

    // --set overrides the profile; a value the platform refuses is exit 2, a device the
    // platform would refuse is exit 3, and neither writes anything.
    let (o, dir) = export("hono", &["--set", "hono.tenant_id=a/b"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("hono.tenant_id"), "{}", text(&o));
    assert!(!dir.join("hono-tenant.json").exists());
    let (o, dir) = export("azure-dps", &["--set", "azure.registration_id=Upper"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("lowercase"), "{}", text(&o));
    assert!(std::fs::read_dir(&dir)
        .map(|d| d.count() == 0)
        .unwrap_or(true));
    let (o, _) = export("nrfcloud", &["--set", "nrfcloud.tags=x|y"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    // Exporting into a directory that already holds the files is refused, not overwritten.
    let (o, dir) = export("csv", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let mut args = vec!["export", "--format", "csv", "--manifest"];
    args.push(manifest.to_str().unwrap());
    args.extend(["--out", dir.to_str().unwrap()]);
    let o = line.certfab(&args);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(text(&o).contains("already exists"), "{}", text(&o));

    // What a killed export leaves (its temporaries and scratch records, `.certfab-*.tmp`) is
    // removed by the next export into the directory; but not while another certfab command
    // writes there: that export is refused, naming the directory, and writes nothing.
    let dir = line.file("x-leftovers");
    std::fs::create_dir_all(&dir).unwrap();
    let left = dir.join(".certfab-00000000deadbeef1.tmp");
    std::fs::write(&left, b"half a record").unwrap();
    // One process holding the lock (flock(1) would leave it to its child when killed).
    let mut holder = Command::new("python3")
        .args([
            "-c",
            "import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDONLY)\nfcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nprint('held', flush=True)\ntime.sleep(60)",
        ])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut first,
    )
    .unwrap();
    assert_eq!(first.trim(), "held");
    let csv_into = |d: &Path| {
        line.certfab(&[
            "export",
            "--format",
            "csv",
            "--manifest",
            manifest.to_str().unwrap(),
            "--out",
            d.to_str().unwrap(),
        ])
    };
    let o = csv_into(&dir);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(
        text(&o).contains("another certfab command is writing into this directory")
            && text(&o).contains(dir.to_str().unwrap()),
        "{}",
        text(&o)
    );
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&dir), [".certfab-00000000deadbeef1.tmp"]);
    let o = csv_into(&dir);
    assert!(o.status.success(), "{}", text(&o));
    let after = names(&dir);
    assert!(
        !after.is_empty() && after.iter().all(|n| !n.starts_with(".certfab-")),
        "{after:?}"
    );
}
