//! Every signature accounted for (issue 13, fault harness): the core scenario run through
//! OpenSC's pkcs11-spy, whose call log shows every signature the token made, reconciled with
//! the ledger by `certfab audit --spy-log` (docs/audit.md).

use crate::common::*;
use std::path::Path;

/// Signatures in a pkcs11-spy log, counted here with grep's rule: the spy prints a signing
/// call's output label only when the call returned CKR_OK, and a NULL buffer of non-zero
/// length is the length query that precedes each signature (a NULL of length zero is an
/// absent mechanism parameter). Label and buffer are two writes that parallel workers can cut
/// apart, so the two are counted apart (this scenario asks no other output's length).
fn spy_signatures(log: &Path) -> u64 {
    let text = std::fs::read_to_string(log).unwrap();
    let labels = text.matches("[out] pSignature[*pulSignatureLen] ").count();
    let nulls = text.matches("NULL [size : 0x").count();
    let empty = text.matches("NULL [size : 0x0 (0)]").count();
    (labels - (nulls - empty)) as u64
}

fn spy_audit(line: &Line, log: &Path) -> (std::process::Output, serde_json::Value) {
    let o = line.certfab(&["--json", "audit", "--spy-log", log.to_str().unwrap()]);
    let v = stdout_json(&o);
    (o, v)
}

fn codes(r: &serde_json::Value, code: &str) -> Vec<serde_json::Value> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == code)
        .cloned()
        .collect()
}

/// The core scenario through pkcs11-spy: an issue, a batch of 50 on two workers (with its
/// checkpoint), a revocation and a CRL, a manifest, a checkpoint and a verification
/// certificate. Every signature in the spy log is accounted for by the ledger, and the audit
/// passes; one more signature made with the CA key outside certfab (pkcs11-tool through the
/// same spy) fails the audit, naming the surplus and the process that made it.
#[test]
fn every_signature_accounted_for() {
    let line = Line::new();
    let log = line.file("spy.log");
    spy_on(&line, &log);
    let work = tempfile::tempdir().unwrap();
    let csr = openssl_csr(work.path(), "dev", "ec:prime256v1", "/CN=spy-0001", &[]);
    let out = work.path().join("one");
    ok(&line.certfab(&issue_args("generic-iot", &csr, "spy-0001", &out)));
    let b = line.host_batch(
        "generic-iot",
        50,
        "SPY{seq:03}",
        &line.file("keys"),
        &["--plain-keys", "--jobs", "2"],
    );
    let batch = b["batch"].as_str().unwrap().to_string();
    ok(&line.certfab(&[
        "revoke",
        "--device",
        "spy-0001",
        "--reason",
        "keyCompromise",
    ]));
    let crl = line.file("crl.pem");
    ok(&line.certfab(&[
        "crl",
        "--profile",
        "generic-iot",
        "--out",
        crl.to_str().unwrap(),
    ]));
    let m = line.file("m.jsonl");
    let o = line.manifest_build(&[&batch], None, &m);
    assert!(o.status.success(), "{}", text(&o));
    ok(&line.certfab(&["log", "checkpoint"]));
    line.verification_cert("REGCODE123", &line.file("verification.pem"));

    let made = spy_signatures(&log);
    // Counted another way, which no interleaving can cut (a call's header is one write): each
    // certfab signature is two C_Sign calls, the length query and the signature.
    let calls = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| {
            l.split_once(": ")
                .is_some_and(|(n, f)| f == "C_Sign" && n.parse::<u64>().is_ok())
        })
        .count() as u64;
    assert_eq!(calls, 2 * made, "C_Sign calls against signatures");
    // 51 certificates, a CRL, a manifest, two checkpoints, a verification certificate, and a
    // self-test each time a key was opened.
    assert!(made > 51 + 5, "only {made} signatures in the spy log");
    let (o, r) = spy_audit(&line, &log);
    assert!(o.status.success(), "{}\n{r:#}", text(&o));
    let t = &r["token_signatures"];
    assert_eq!(t["token_signatures"], made, "{t:#}");
    assert_eq!(t["accounted"], made, "{t:#}");
    assert!(t["documents"].as_u64().unwrap() >= 51 + 5, "{t:#}");
    assert!(t["self_tests"].as_u64().unwrap() >= 7, "{t:#}");
    assert!(
        codes(&r, "token-signatures-unaccounted").is_empty(),
        "{r:#}"
    );
    assert!(
        codes(&r, "token-signatures-not-in-spy-log").is_empty(),
        "{r:#}"
    );
    // The ledger's own events say the same, read without certfab.
    let db = ledger(&line);
    let mut stmt = db
        .prepare("SELECT detail FROM audit WHERE kind = 'token_signatures'")
        .unwrap();
    let recorded: u64 = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .unwrap()
        .map(|d| {
            let d: serde_json::Value = serde_json::from_str(&d.unwrap()).unwrap();
            d["signatures"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(recorded, made);

    // One signature with the CA key outside certfab, through the same spy log.
    let data = line.file("data.bin");
    std::fs::write(&data, [7u8; 32]).unwrap();
    let sig = line.file("data.sig");
    let o = line.pkcs11_tool_any(&[
        "--sign",
        "--mechanism",
        "ECDSA",
        "--label",
        "issuing-ca",
        "--input-file",
        data.to_str().unwrap(),
        "--output-file",
        sig.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(spy_signatures(&log), made + 1);
    let (o, r) = spy_audit(&line, &log);
    assert_eq!(o.status.code(), Some(3), "{}\n{r:#}", text(&o));
    let f = codes(&r, "token-signatures-unaccounted");
    assert_eq!(f.len(), 1, "{r:#}");
    assert_eq!(f[0]["severity"], "critical");
    let msg = f[0]["message"].as_str().unwrap();
    assert!(msg.contains("1 signatures are not accounted for"), "{msg}");
    let at = f[0]["locations"].to_string();
    assert!(
        at.contains("made 1 signatures") && at.contains("no token_signatures event"),
        "{at}"
    );
}

/// A file that is not a pkcs11-spy log is refused as bad input (exit 2), naming it.
#[test]
fn spy_log_not_a_spy_log() {
    let line = Line::new();
    let bogus = line.file("bogus.log");
    std::fs::write(&bogus, "hello\n").unwrap();
    let o = line.certfab(&["audit", "--spy-log", bogus.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("not a pkcs11-spy log"), "{}", text(&o));
}
