//! Manifests through the real binary on a dev line: a batch and a station shift produce signed
//! manifests that certfab, the openssl recipe in docs/manifest.md and jwcrypto all verify;
//! devices are marked exported; manifests chain; merge and its refusals; and a mutation
//! harness over real manifests where every mutation is detected with the line named.

use crate::common;

use crate::common::{
    derived_profile, openssl_sha256_fingerprint, openssl_verify, repo, text, Line,
};
use certfab::manifests::format::{self, DeviceLine, Trailer};
use certfab::manifests::{merkle, verify_bytes, Trust};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

fn passphrase(l: &Line) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = l.file("kp");
    if !p.exists() {
        std::fs::write(&p, "correct horse battery staple").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    format!("file:{}", p.display())
}

/// Runs a host-keygen batch of `n` devices named `{prefix}{seq:03}` and returns its id.
fn batch(l: &Line, profile: &str, n: usize, prefix: &str) -> String {
    let out = l.file(&format!("keys-{prefix}"));
    l.host_batch(
        profile,
        n,
        &format!("{prefix}{{seq:03}}"),
        &out,
        &["--key-passphrase", &passphrase(l)],
    )["batch"]
        .as_str()
        .unwrap()
        .to_string()
}

fn build(l: &Line, batch: &str, out: &Path) -> Output {
    l.manifest_build(&[batch], None, out)
}

/// certfab without any site config in argv or the environment.
fn certfab_bare(args: &[&str]) -> Output {
    Command::new(common::bin())
        .args(args)
        .env_remove("CERTFAB_CONFIG")
        .output()
        .unwrap()
}

fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

fn der_of_pem_file(p: &Path) -> Vec<u8> {
    pem_rfc7468::decode_vec(&std::fs::read(p).unwrap())
        .unwrap()
        .1
}

/// The openssl recipe from docs/manifest.md, run exactly as written.
fn openssl_recipe(m: &Path, root: &Path) -> Output {
    let doc = std::fs::read_to_string(repo().join("docs/manifest.md")).unwrap();
    let start = doc
        .find("<!-- openssl-recipe:begin -->")
        .expect("recipe marker");
    let end = doc
        .find("<!-- openssl-recipe:end -->")
        .expect("recipe end marker");
    let block = &doc[start..end];
    let code = block
        .split_once("```sh\n")
        .and_then(|(_, r)| r.split_once("```"))
        .map(|(c, _)| c)
        .expect("sh block");
    Command::new("sh")
        .arg("-c")
        .arg(code)
        .env("M", m)
        .env("ROOT", root)
        .output()
        .unwrap()
}

/// An independent JOSE implementation: jwcrypto verifies the detached JWS with the x5c[0] key.
fn jwcrypto(m: &Path) -> Output {
    let script = r#"
import sys, json, base64
from jwcrypto import jws, jwk
from cryptography import x509
from cryptography.hazmat.primitives import serialization
m = sys.argv[1]
payload = open(m, 'rb').read()
tok = open(m + '.jws').read().strip()
h = json.loads(base64.urlsafe_b64decode(tok.split('.')[0] + '=' * (-len(tok.split('.')[0]) % 4)))
cert = x509.load_der_x509_certificate(base64.b64decode(h['x5c'][0]))
pem = cert.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
j = jws.JWS()
j.deserialize(tok)
j.verify(jwk.JWK.from_pem(pem), alg='ES256', detached_payload=payload)
print('ok', h['kid'])
"#;
    Command::new(common::python())
        .args(["-c", script])
        .arg(m)
        .output()
        .unwrap()
}

fn lines_of(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn device_lines(p: &Path) -> Vec<DeviceLine> {
    let l = lines_of(p);
    l[1..l.len() - 1]
        .iter()
        .map(|s| format::typed(&format::decode_value(s.as_bytes()).unwrap()).unwrap())
        .collect()
}

fn sim() -> String {
    repo()
        .join("station-scripts/sim-device.py")
        .display()
        .to_string()
}

/// A station shift of `n` simulated devices; returns the shift id.
fn shift(l: &Line, n: usize) -> String {
    let line = l.file("sim-line");
    let o = Command::new(sim())
        .arg("make-line")
        .arg(&line)
        .args(["--count", &n.to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let adapter = format!("exec:{} serve {}", sim(), line.display());
    let o = l.certfab(&[
        "--json",
        "station",
        "--profile",
        "generic-iot",
        "--adapter",
        &adapter,
        "--operator",
        "alice",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let summary = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["event"] == "summary")
        .expect("summary");
    assert_eq!(summary["summary"]["passed"], n as u64);
    summary["summary"]["batch"].as_str().unwrap().to_string()
}

#[test]
fn batch_and_shift_manifests_verify_chain_and_merge() {
    let l = Line::new();
    let root = l.file("ca/root.pem");
    let b1 = batch(&l, "generic-iot", 4, "KG");
    let m1 = l.file("m1.jsonl");
    let o = build(&l, &b1, &m1);
    assert!(o.status.success(), "{}", text(&o));
    let r = json(&o);
    assert_eq!(r["count"], 4);
    assert_eq!(r["sequence"], 1);
    assert_eq!(r["prev_sha256"], Value::Null);
    assert_eq!(r["exported"], 4);
    assert!(l.file("m1.jsonl.jws").exists());

    // certfab verifies, anchored at the site's roots; the result names the trusted root.
    let o = l.certfab(&["--json", "manifest", "verify", m1.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let v = json(&o);
    assert_eq!(v["ok"], true);
    let root_fp = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(der_of_pem_file(&root)))
    };
    assert_eq!(v["trusted_root_sha256"], root_fp);
    assert_eq!(v["ca_root_sha256"], root_fp);
    assert_eq!(v["states"]["signed"], 4);

    // Offline with certfab alone: --trust; without any anchor it refuses (exit 2).
    let o = certfab_bare(&[
        "manifest",
        "verify",
        m1.to_str().unwrap(),
        "--trust",
        root.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = certfab_bare(&["manifest", "verify", m1.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--trust ROOT.pem"), "{}", text(&o));
    // Another root is not trusted even though x5c carries the real one.
    let o = certfab_bare(&[
        "manifest",
        "verify",
        m1.to_str().unwrap(),
        "--trust",
        l.file("ca/matter-paa.pem").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("does not chain to a trusted root"),
        "{}",
        text(&o)
    );

    // Standard tools: the documented openssl recipe, and jwcrypto.
    let o = openssl_recipe(&m1, &root);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Verified OK"));
    let o = jwcrypto(&m1);
    assert!(o.status.success(), "{}", text(&o));
    let tampered = l.file("tampered.jsonl");
    std::fs::write(
        &tampered,
        std::fs::read_to_string(&m1)
            .unwrap()
            .replace("KG002", "KG00X"),
    )
    .unwrap();
    std::fs::copy(l.file("m1.jsonl.jws"), l.file("tampered.jsonl.jws")).unwrap();
    assert!(!openssl_recipe(&tampered, &root).status.success());
    assert!(!jwcrypto(&tampered).status.success());

    // Each device line: its certificate verifies with openssl and matches the line's hashes;
    // cloud attributes rendered from the profile.
    let devs = device_lines(&m1);
    assert_eq!(devs.len(), 4);
    for (i, d) in devs.iter().enumerate() {
        assert_eq!(d.seq, i as u64 + 1);
        assert_eq!(d.device_id, format!("KG{:03}", i + 1));
        assert_eq!(d.key_origin, "host");
        assert_eq!(d.state, "signed");
        assert_eq!(d.batch, b1);
        let pem = l.file(&format!("dev{i}.pem"));
        std::fs::write(&pem, &d.cert).unwrap();
        let o = openssl_verify(&root, &[&l.file("ca/issuing.pem")], &[], &pem);
        assert!(o.status.success(), "{}", text(&o));
        let fp = openssl_sha256_fingerprint(&pem);
        assert_eq!(fp, d.cert_sha256);
        assert_eq!(d.cloud["thing_name"], d.device_id);
        assert_eq!(d.cloud["attributes"]["batch"], b1);
        assert_eq!(d.cloud["attributes"]["model"], "certfab-demo");
    }

    // The ledger marked them exported and chained a manifest_built audit event.
    let exported = l.ledger_count(&format!(
        "SELECT COUNT(*) FROM devices WHERE batch_id = '{b1}' AND state = 'exported'"
    ));
    assert_eq!(exported, 4);
    let detail = l.ledger_value("SELECT detail FROM audit WHERE kind = 'manifest_built'");
    let detail: Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["sha256"], sha256_file(&m1));

    // Re-running the same build is a no-op; a new file for the same batch has nothing to add.
    let o = build(&l, &b1, &m1);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(json(&o)["already_built"], true);
    let o = build(&l, &b1, &l.file("again.jsonl"));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("nothing to build"), "{}", text(&o));
    assert!(!l.file("again.jsonl").exists());

    // A station shift: its manifest chains to the first.
    let s1 = shift(&l, 3);
    let m2 = l.file("m2.jsonl");
    let o = build(&l, &s1, &m2);
    assert!(o.status.success(), "{}", text(&o));
    let r = json(&o);
    assert_eq!(r["sequence"], 2);
    assert_eq!(r["prev_sha256"], sha256_file(&m1));
    assert_eq!(r["range"]["first"], 5);
    assert_eq!(r["range"]["last"], 7);
    let o = l.certfab(&["--json", "manifest", "verify", m2.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let v = json(&o);
    assert_eq!(v["states"]["installed"], 3);
    assert_eq!(v["stations"], serde_json::json!(["dev-line"]));
    for d in device_lines(&m2) {
        assert_eq!(d.key_origin, "device");
        assert!(d.device_id.starts_with("SIM-"));
    }
    assert!(openssl_recipe(&m2, &root).status.success());

    // Show summarises (and verifies).
    let o = l.certfab(&[
        "--json",
        "manifest",
        "show",
        m2.to_str().unwrap(),
        "--devices",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let s = json(&o);
    assert_eq!(s["verification"], "verified");
    assert_eq!(s["devices"].as_array().unwrap().len(), 3);

    // Merge both; merging a manifest with itself is refused.
    let merged = l.file("merged.jsonl");
    let o = l.certfab(&[
        "--json",
        "manifest",
        "merge",
        m1.to_str().unwrap(),
        m2.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(json(&o)["count"], 7);
    let o = l.certfab(&["--json", "manifest", "verify", merged.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let v = json(&o);
    assert_eq!(v["merged_from"].as_array().unwrap().len(), 2);
    assert_eq!(v["merged_from"][1]["sha256"], sha256_file(&m2));
    assert!(openssl_recipe(&merged, &root).status.success());
    let copy = l.file("m1-copy.jsonl");
    std::fs::copy(&m1, &copy).unwrap();
    std::fs::copy(l.file("m1.jsonl.jws"), l.file("m1-copy.jsonl.jws")).unwrap();
    let o = l.certfab(&[
        "manifest",
        "merge",
        m1.to_str().unwrap(),
        copy.to_str().unwrap(),
        "--out",
        l.file("self.jsonl").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("are the same manifest"), "{}", text(&o));
}

#[test]
fn merge_refuses_duplicate_devices_across_stations_and_mixed_profiles() {
    let l = Line::new();
    let b1 = batch(&l, "generic-iot", 2, "DUP");
    let m1 = l.file("a.jsonl");
    assert!(build(&l, &b1, &m1).status.success());

    // A second station (own ledger, own serial prefix) issues the same device ids.
    let cfg = std::fs::read_to_string(l.config()).unwrap();
    let cfg_b = cfg
        .replace("ledger: ledger.sqlite", "ledger: ledger-b.sqlite")
        .replace("id: dev-line", "id: line-b")
        .replace("serial_prefix: 1", "serial_prefix: 2");
    assert_ne!(cfg, cfg_b);
    let config_b = l.file("certfab-b.yaml");
    std::fs::write(&config_b, cfg_b).unwrap();
    let run_b = |args: &[&str]| {
        Command::new(common::bin())
            .arg("--config")
            .arg(&config_b)
            .args(args)
            .env_remove("CERTFAB_CONFIG")
            .output()
            .unwrap()
    };
    let o = run_b(&[
        "--json",
        "batch",
        "--profile",
        "generic-iot",
        "--count",
        "2",
        "--keygen",
        "host",
        "--id-template",
        "DUP{seq:03}",
        "--key-passphrase",
        &passphrase(&l),
        "--out",
        l.file("keys-b").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let b2 = json(&o)["batch"].as_str().unwrap().to_string();
    let m2 = l.file("b.jsonl");
    let o = run_b(&[
        "manifest",
        "build",
        "--batch",
        &b2,
        "--out",
        m2.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = l.certfab(&["manifest", "verify", m2.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    let out = l.file("ab.jsonl");
    let o = l.certfab(&[
        "manifest",
        "merge",
        m1.to_str().unwrap(),
        m2.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains(&format!(
            "device id DUP001 is in {}:2 and {}:2",
            m1.display(),
            m2.display()
        )),
        "{t}"
    );
    assert!(t.contains("DUP002"), "{t}");
    assert!(!out.exists());

    // Another profile (same CA) cannot be merged in.
    let other = derived_profile(
        l.path(),
        "other-iot.yaml",
        "generic-iot.yaml",
        &[("name: generic-iot", "name: other-iot")],
    );
    let b3 = batch(&l, other.to_str().unwrap(), 1, "OTH");
    let m3 = l.file("c.jsonl");
    let o = l.manifest_build(&[&b3], Some(other.to_str().unwrap()), &m3);
    assert!(o.status.success(), "{}", text(&o));
    let o = l.certfab(&[
        "manifest",
        "merge",
        m1.to_str().unwrap(),
        m3.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("profile generic-iot"), "{}", text(&o));
    // The third manifest chains to the first of this ledger.
    let h: Value = serde_json::from_str(&lines_of(&m3)[0]).unwrap();
    assert_eq!(h["prev_sha256"], sha256_file(&m1));
    assert_eq!(h["sequence"], 2);

    // Verifying several: the chain of this ledger must be complete; another ledger's
    // manifest is checked on its own chain.
    let b4 = batch(&l, "generic-iot", 1, "FOURTH");
    let m4 = l.file("d.jsonl");
    assert!(build(&l, &b4, &m4).status.success());
    let many = |files: &[&Path]| {
        let mut a = vec!["--json", "manifest", "verify"];
        a.extend(files.iter().map(|p| p.to_str().unwrap()));
        l.certfab(&a)
    };
    let o = many(&[&m4, &m1, &m3, &m2]);
    assert!(o.status.success(), "{}", text(&o));
    let v = json(&o);
    assert_eq!(v["ok"], true);
    let seqs: Vec<Value> = v["chain"]["ledgers"]
        .as_object()
        .unwrap()
        .values()
        .cloned()
        .collect();
    assert!(seqs.contains(&serde_json::json!([1, 2, 3])), "{v}");
    let o = many(&[&m1, &m4]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        json(&o)["chain"]["problems"][0]
            .as_str()
            .unwrap()
            .contains("#2..#2 of ledger"),
        "{}",
        text(&o)
    );
}

/// Deterministic xorshift, so a failing mutation can be replayed from the printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn join(lines: &[String]) -> Vec<u8> {
    let mut s = lines.join("\n");
    s.push('\n');
    s.into_bytes()
}

/// Re-encodes the trailer for the device lines as they now are (so only the intended fault
/// remains for the verifier to find).
fn refresh_trailer(lines: &mut [String]) {
    let n = lines.len();
    let devs: Vec<&[u8]> = lines[1..n - 1].iter().map(|s| s.as_bytes()).collect();
    let t = Trailer {
        kind: "trailer".into(),
        count: devs.len() as u64,
        merkle_root: hex::encode(merkle::root(&devs)),
        line_sha256: String::new(),
    };
    lines[n - 1] = format::encode(&t).unwrap();
}

#[test]
fn mutation_harness_every_change_is_detected_and_located() {
    let l = Line::new();
    let b = batch(&l, "generic-iot", 6, "MUT");
    let m = l.file("m.jsonl");
    assert!(build(&l, &b, &m).status.success());
    let other_b = batch(&l, "generic-iot", 2, "OTHER");
    let other = l.file("other.jsonl");
    assert!(build(&l, &other_b, &other).status.success());

    let trust = Trust::from_file(&l.file("ca/root.pem")).unwrap();
    let bytes = std::fs::read(&m).unwrap();
    let jws = std::fs::read_to_string(l.file("m.jsonl.jws")).unwrap();
    let lines = lines_of(&m);
    let n = lines.len();
    assert_eq!(n, 8);
    let verify = |b: &[u8], j: &str| verify_bytes(&m, "m.jsonl.jws", b, Some(j), &trust.roots);
    assert!(verify(&bytes, &jws).is_ok());

    let mut checked = 0;
    let mut expect = |what: &str, b: &[u8], j: &str, lines_ok: &[usize]| {
        let r = match verify(b, j) {
            Ok(_) => panic!("undetected mutation: {what}"),
            Err(r) => r,
        };
        if !lines_ok.is_empty() {
            assert!(
                r.problems
                    .iter()
                    .any(|p| p.line.is_some_and(|x| lines_ok.contains(&x))),
                "{what}: no problem names line(s) {lines_ok:?}: {r}"
            );
        } else {
            assert!(
                r.problems
                    .iter()
                    .any(|p| p.line.is_none() && p.msg.contains("jws")),
                "{what}: no signature problem: {r}"
            );
        }
        checked += 1;
    };

    let seed = 0x5eed_c0de_2026_u64;
    eprintln!("mutation seed {seed:#x}");
    let mut rng = Rng(seed);
    // 1. Random byte edits anywhere in the file, each named by its line.
    let line_of = |pos: usize| bytes[..pos].iter().filter(|b| **b == b'\n').count() + 1;
    for _ in 0..400 {
        let pos = rng.below(bytes.len());
        let mut b = bytes.clone();
        let new = loop {
            let c = match rng.below(4) {
                0 => b'\n',
                1 => (rng.below(95) + 32) as u8,
                2 => bytes[pos] ^ (1 << rng.below(8)),
                _ => rng.below(256) as u8,
            };
            if c != bytes[pos] {
                break c;
            }
        };
        b[pos] = new;
        let ln = line_of(pos);
        expect(
            &format!("byte {pos} {:#04x}->{new:#04x}", bytes[pos]),
            &b,
            &jws,
            &[ln, ln + 1],
        );
    }
    // 2. Each line removed, duplicated; adjacent lines swapped.
    for i in 0..n {
        let mut v = lines.clone();
        v.remove(i);
        expect(
            &format!("remove line {}", i + 1),
            &join(&v),
            &jws,
            &[i, i + 1],
        );
        let mut v = lines.clone();
        v.insert(i, lines[i].clone());
        expect(
            &format!("duplicate line {}", i + 1),
            &join(&v),
            &jws,
            &[i + 1, i + 2],
        );
        if i + 1 < n {
            let mut v = lines.clone();
            v.swap(i, i + 1);
            expect(
                &format!("swap lines {} and {}", i + 1, i + 2),
                &join(&v),
                &jws,
                &[i + 1, i + 2],
            );
        }
    }
    // 3. A device line from another manifest added at each position, with and without a
    //    trailer recomputed to match.
    let foreign = lines_of(&other)[1].clone();
    for i in 1..n {
        let mut v = lines.clone();
        v.insert(i, foreign.clone());
        expect(
            &format!("add foreign line at {}", i + 1),
            &join(&v),
            &jws,
            &[i + 1],
        );
        refresh_trailer(&mut v);
        expect(
            &format!("add foreign line at {} + trailer", i + 1),
            &join(&v),
            &jws,
            &[i + 1],
        );
    }
    // 4. Truncation at random bytes and at every line boundary.
    for _ in 0..80 {
        let cut = rng.below(bytes.len());
        let ln = line_of(cut);
        expect(
            &format!("truncate at {cut}"),
            &bytes[..cut],
            &jws,
            &[ln.max(1) - 1, ln],
        );
    }
    for k in 1..n {
        expect(&format!("keep {k} lines"), &join(&lines[..k]), &jws, &[k]);
    }
    // 5. Count and Merkle root edited with the trailer's own digest fixed up.
    let t: Trailer =
        format::typed(&format::decode_value(lines[n - 1].as_bytes()).unwrap()).unwrap();
    for (what, t2) in [
        (
            "count",
            Trailer {
                count: t.count - 1,
                ..t.clone()
            },
        ),
        (
            "count up",
            Trailer {
                count: t.count + 1,
                ..t.clone()
            },
        ),
        (
            "merkle",
            Trailer {
                merkle_root: "00".repeat(32),
                ..t.clone()
            },
        ),
    ] {
        let mut v = lines.clone();
        v[n - 1] = format::encode(&t2).unwrap();
        expect(what, &join(&v), &jws, &[n]);
    }
    // 6. Signature file edits.
    for _ in 0..60 {
        let mut j = jws.clone().into_bytes();
        let pos = rng.below(j.len());
        let c = loop {
            let c = (rng.below(95) + 32) as u8;
            if c != j[pos] {
                break c;
            }
        };
        j[pos] = c;
        expect(
            &format!("jws byte {pos}"),
            &bytes,
            &String::from_utf8_lossy(&j),
            &[],
        );
    }
    expect(
        "jws missing payload separator",
        &bytes,
        &jws.replacen("..", ".", 1),
        &[],
    );
    eprintln!("{checked} mutations, all detected and located");
    assert!(checked > 550, "{checked}");
}

/// Signatures by the wrong key, and certificates from the wrong CA, each re-signed so that
/// only that fault remains.
#[test]
fn wrong_signers_and_foreign_certificates_are_refused() {
    use certfab::manifests::jws::{sign_detached, DocumentSigner};
    let l = Line::new();
    let b = batch(&l, "generic-iot", 3, "SIG");
    let m = l.file("m.jsonl");
    assert!(build(&l, &b, &m).status.success());
    let trust = Trust::from_file(&l.file("ca/root.pem")).unwrap();
    let bytes = std::fs::read(&m).unwrap();
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let verify = |b: &[u8], j: &str| verify_bytes(&m, "m.jsonl.jws", b, Some(j), &trust.roots);

    let site = certfab::Site::open(&l.config()).unwrap();
    site.login().unwrap();
    let good = site.signer(now).unwrap();
    let ca = |p: &str| certfab::CaCert::load(&l.file(p)).unwrap();

    // Another key in the token (the device CA's), claiming the real signer certificate.
    let issuing_key = site
        .hsm
        .key(&site.key_uri("issuing-ca").unwrap(), None)
        .unwrap();
    let imposter = DocumentSigner {
        cert: good.cert.clone(),
        chain: good.chain.clone(),
        key: issuing_key,
    };
    let j = sign_detached(&imposter, &bytes, "certfab-manifest/1", now).unwrap();
    let r = verify(&bytes, &j).unwrap_err();
    assert!(r.to_string().contains("signature does not verify"), "{r}");
    // The device CA itself as signer (key and certificate match): refused, a CA cannot sign.
    let issuing_key = site
        .hsm
        .key(&site.key_uri("issuing-ca").unwrap(), None)
        .unwrap();
    let as_ca = DocumentSigner {
        cert: ca("ca/issuing.pem"),
        chain: vec![ca("ca/root.pem")],
        key: issuing_key,
    };
    let j = sign_detached(&as_ca, &bytes, "certfab-manifest/1", now).unwrap();
    let r = verify(&bytes, &j).unwrap_err();
    assert!(r.to_string().contains("CA certificate"), "{r}");

    // A device's own certificate and key (valid chain to the same root, digitalSignature):
    // refused for lacking the document-signer EKU.
    let sk = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let pubpem = |sk: &p256::ecdsa::SigningKey| {
        use p256::pkcs8::EncodePublicKey;
        sk.verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap()
    };
    std::fs::write(l.file("forger.pub.pem"), pubpem(&sk)).unwrap();
    let sk2 = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    std::fs::write(l.file("rooted.pub.pem"), pubpem(&sk2)).unwrap();
    let o = l.certfab(&[
        "issue",
        "--profile",
        "generic-iot",
        "--pubkey",
        l.file("forger.pub.pem").to_str().unwrap(),
        "--device-id",
        "FORGER",
        "--out",
        l.file("forger").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let forger = DocumentSigner {
        cert: ca("forger/cert.pem"),
        chain: vec![ca("ca/issuing.pem"), ca("ca/root.pem")],
        key: certfab::SoftSigner::from_p256(sk),
    };
    let j = sign_detached(&forger, &bytes, "certfab-manifest/1", now).unwrap();
    let r = verify(&bytes, &j).unwrap_err();
    assert!(r.to_string().contains("extendedKeyUsage"), "{r}");

    // A device line whose certificate comes from another CA (the root, via a profile that
    // names it), every hash, the trailer and the signature made consistent: the line is named.
    let rootp = derived_profile(
        l.path(),
        "root-issued.yaml",
        "generic-iot.yaml",
        &[("issuer: issuing", "issuer: root")],
    );
    let o = l.certfab(&[
        "issue",
        "--profile",
        rootp.to_str().unwrap(),
        "--pubkey",
        l.file("rooted.pub.pem").to_str().unwrap(),
        "--device-id",
        "ROOTED",
        "--out",
        l.file("rooted").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let foreign_pem = std::fs::read_to_string(l.file("rooted/cert.pem")).unwrap();
    let foreign_der = pem_rfc7468::decode_vec(foreign_pem.as_bytes()).unwrap().1;
    let cert = <x509_cert::Certificate as der::Decode>::from_der(&foreign_der).unwrap();
    let spki = der::Encode::to_der(&cert.tbs_certificate.subject_public_key_info).unwrap();
    let mut lines = lines_of(&m);
    let mut d: DeviceLine =
        format::typed(&format::decode_value(lines[2].as_bytes()).unwrap()).unwrap();
    d.cert = foreign_pem.clone();
    d.cert_sha256 = sha_hex(&foreign_der);
    d.spki_sha256 = sha_hex(&spki);
    d.serial = hex::encode(cert.tbs_certificate.serial_number.as_bytes());
    let facts_nb = time::OffsetDateTime::from_unix_timestamp(
        cert.tbs_certificate
            .validity
            .not_before
            .to_unix_duration()
            .as_secs() as i64,
    )
    .unwrap();
    let facts_na = time::OffsetDateTime::from_unix_timestamp(
        cert.tbs_certificate
            .validity
            .not_after
            .to_unix_duration()
            .as_secs() as i64,
    )
    .unwrap();
    d.not_before = certfab::rfc3339(facts_nb);
    d.not_after = certfab::rfc3339(facts_na);
    lines[2] = format::encode(&d).unwrap();
    refresh_trailer(&mut lines);
    let b2 = join(&lines);
    let j = sign_detached(&good, &b2, "certfab-manifest/1", now).unwrap();
    let r = verify(&b2, &j).unwrap_err();
    assert_eq!(r.problems.len(), 1, "{r}");
    assert_eq!(r.problems[0].line, Some(3), "{r}");
    assert!(r.problems[0].msg.contains("not the declared CA"), "{r}");

    // Through the binary too: exit 3 and the line in the message.
    let bad = l.file("bad.jsonl");
    std::fs::write(&bad, &b2).unwrap();
    std::fs::write(l.file("bad.jsonl.jws"), &j).unwrap();
    let o = l.certfab(&["manifest", "verify", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("bad.jsonl:3: certificate's issuer is not the declared CA"),
        "{}",
        text(&o)
    );
    // A missing signature file.
    std::fs::remove_file(l.file("bad.jsonl.jws")).unwrap();
    let o = l.certfab(&["manifest", "verify", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("is missing"), "{}", text(&o));
}

fn sha_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// The two crash windows of `manifest build` (see src/manifest/build.rs): recorded pending but
/// no file (abandoned, devices go into the next manifest), and file written but devices not
/// yet marked (completed, the missing signature re-made). Each window is recreated in the
/// ledger the way a kill would leave it.
#[test]
fn interrupted_builds_are_recovered_without_losing_or_doubling_devices() {
    let l = Line::new();
    let a = batch(&l, "generic-iot", 2, "CRA");
    let b = batch(&l, "generic-iot", 2, "CRB");

    // Window 1: pending row for batch A whose file never landed.
    {
        let cfg = certfab::SiteConfig::load(&l.config()).unwrap();
        let mut led = certfab::Ledger::open(&cfg.ledger, &cfg.station_id).unwrap();
        let devices = led
            .exportable_devices(std::slice::from_ref(&a))
            .unwrap()
            .into_iter()
            .map(|d| (d.profile, d.device_id, d.serial, d.state))
            .collect();
        led.begin_manifest(&certfab::PendingManifest {
            row: certfab::ManifestRow {
                id: 0,
                sequence: 1,
                batches: vec![a.clone()],
                path: l.file("lost.jsonl").display().to_string(),
                sha256: "00".repeat(32),
                merkle_root: "00".repeat(32),
                count: 2,
                range_first: 1,
                range_last: 2,
                prev_sha256: None,
                signer_kid: "00".into(),
                state: "pending".into(),
                created_at: "2026-01-01T00:00:00Z".into(),
            },
            devices,
        })
        .unwrap();
    }
    let ma = l.file("a.jsonl");
    let o = build(&l, &a, &ma);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("abandoned"), "{}", text(&o));
    let r = json(&o);
    assert_eq!(r["count"], 2);
    assert_eq!(r["sequence"], 1);
    assert!(l
        .certfab(&["manifest", "verify", ma.to_str().unwrap()])
        .status
        .success());

    // Window 2: batch B's manifest written, then killed before the devices were marked and
    // before the signature was written.
    let mb = l.file("b.jsonl");
    let o = build(&l, &b, &mb);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::remove_file(l.file("b.jsonl.jws")).unwrap();
    l.ledger_exec(
        "UPDATE devices SET state = (SELECT state_before FROM manifest_devices md
             WHERE md.profile = devices.profile AND md.device_id = devices.device_id
               AND md.manifest_id = (SELECT MAX(id) FROM manifests))
         WHERE device_id LIKE 'CRB%';
         UPDATE manifests SET state = 'pending', completed_at = NULL WHERE id = (SELECT MAX(id) FROM manifests);
         DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit) AND kind = 'manifest_built';",
    );
    let o = build(&l, &b, &mb);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("completed"), "{}", text(&o));
    assert_eq!(json(&o)["already_built"], true);
    assert!(l.file("b.jsonl.jws").exists());
    let o = l.certfab(&["--json", "manifest", "verify", mb.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(json(&o)["prev_sha256"], sha256_file(&ma));

    // Every device exported exactly once; the audit chain is intact.
    let states = l.ledger_query("SELECT device_id, state FROM devices ORDER BY device_id");
    assert_eq!(states.len(), 4);
    assert!(states.iter().all(|r| r[1] == "exported"), "{states:?}");
    let per_state =
        l.ledger_query("SELECT state, COUNT(*) FROM manifests GROUP BY state ORDER BY state");
    assert_eq!(per_state, [["abandoned", "1"], ["complete", "2"]]);
    let cfg = certfab::SiteConfig::load(&l.config()).unwrap();
    let led = certfab::Ledger::open_read(&cfg.ledger, &cfg.station_id).unwrap();
    led.verify_audit_chain().unwrap();
}

/// A line made before the manifest signer existed is upgraded in place by dev-line.sh: its CAs
/// and ledger are kept, the signer is added. Without a signer: section, build says what to add.
#[test]
fn old_lines_gain_a_signer_and_build_without_one_explains() {
    let l = Line::new();
    let b = batch(&l, "generic-iot", 1, "OLD");
    let root_before = std::fs::read(l.file("ca/root.pem")).unwrap();
    let cfg = std::fs::read_to_string(l.config()).unwrap();
    let (without, _) = cfg.split_once("signer:").unwrap();
    std::fs::write(l.config(), without).unwrap();
    std::fs::remove_file(l.file("ca/manifest-signer.pem")).unwrap();

    let o = build(&l, &b, &l.file("x.jsonl"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("has no signer: section"), "{}", text(&o));
    assert!(!l.file("x.jsonl").exists());

    let o = Command::new(repo().join("hsm-fixtures/dev-line.sh"))
        .arg(l.path())
        .env("CERTFAB", common::bin())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("predates the manifest signer"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(l.file("ca/root.pem")).unwrap(), root_before);
    let o = build(&l, &b, &l.file("m.jsonl"));
    assert!(o.status.success(), "{}", text(&o));
    assert!(l
        .certfab(&["manifest", "verify", l.file("m.jsonl").to_str().unwrap()])
        .status
        .success());
}

/// One manifest over two batches of one profile; `{var.NAME}` cloud values come from --var,
/// and a missing one stops the build naming the device and key.
#[test]
fn several_batches_and_build_time_vars() {
    let l = Line::new();
    let p = l.file("lot-iot.yaml");
    let mut y = std::fs::read_to_string(repo().join("profiles/generic-iot.yaml"))
        .unwrap()
        .replace("name: generic-iot", "name: lot-iot");
    y.push_str("  lot: \"{var.lot}\"\n  cn: \"{cert.CN}\"\n  serial: \"{cert.serial}\"\n");
    std::fs::write(&p, y).unwrap();
    let a = batch(&l, p.to_str().unwrap(), 2, "LA");
    let b = batch(&l, p.to_str().unwrap(), 1, "LB");
    let m = l.file("ab.jsonl");
    let args = |extra: &[&str]| {
        let mut v = vec![
            "--json", "manifest", "build", "--batch", &a, "--batch", &b, "--out",
        ];
        // No --profile: the path the batches recorded is found and its SHA-256 checked.
        v.push(m.to_str().unwrap());
        v.extend_from_slice(extra);
        l.certfab(&v)
    };
    let o = args(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("device LA001: cloud.lot") && text(&o).contains("{var.lot}"),
        "{}",
        text(&o)
    );
    assert!(!m.exists());
    // A profile file edited since issuance is not the one the devices were issued under.
    let original = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        original.replace("model: certfab-demo", "model: changed"),
    )
    .unwrap();
    let o = args(&["--var", "lot=L-42"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("pass --profile with that exact file"),
        "{}",
        text(&o)
    );
    std::fs::write(&p, original).unwrap();
    let o = args(&["--var", "lot=L-42"]);
    assert!(o.status.success(), "{}", text(&o));
    let r = json(&o);
    assert_eq!(r["count"], 3);
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(r["batches"], serde_json::json!(want));
    let devs = device_lines(&m);
    assert_eq!(
        devs.iter()
            .map(|d| d.device_id.as_str())
            .collect::<Vec<_>>(),
        ["LA001", "LA002", "LB001"]
    );
    for d in &devs {
        assert_eq!(d.cloud["lot"], "L-42");
        assert_eq!(d.cloud["cn"], d.device_id);
        assert_eq!(d.cloud["serial"], d.serial);
        assert_eq!(d.cloud["attributes"]["batch"], d.batch);
    }
    let o = l.certfab(&["manifest", "verify", m.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
}

/// Devices issued by another CA key than the one the site now names for the batch's CA (a
/// rolled-over issuing CA) are refused before anything is signed: a manifest declares one CA.
#[test]
fn devices_of_a_replaced_ca_are_refused() {
    let l = Line::new();
    let b = batch(&l, "generic-iot", 2, "ROLL");
    for args in [
        &["ca", "keygen", "--key", "issuing-3", "--algorithm", "p256"][..],
        &[
            "ca",
            "csr",
            "--key",
            "issuing-3",
            "--subject",
            "CN=certfab Dev Issuing CA 3",
            "--out",
        ],
    ] {
        let mut a = args.to_vec();
        let csr = l.file("i3.csr");
        if a[1] == "csr" {
            a.push(csr.to_str().unwrap());
        }
        let o = l.certfab(&a);
        assert!(o.status.success(), "{}", text(&o));
    }
    l.root_signs_ca(&l.file("i3.csr"), "none", &l.file("ca/issuing-3.pem"));
    let cfg = std::fs::read_to_string(l.config()).unwrap().replace(
        "    key: \"pkcs11:object=issuing-ca;type=private\"\n    cert: ca/issuing.pem",
        "    key: \"pkcs11:object=issuing-3;type=private\"\n    cert: ca/issuing-3.pem",
    );
    assert!(cfg.contains("issuing-3.pem"));
    std::fs::write(l.config(), cfg).unwrap();
    let m = l.file("m.jsonl");
    let o = build(&l, &b, &m);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("issued by another CA"), "{}", text(&o));
    assert!(!m.exists());
}

#[test]
fn a_batch_keeps_its_ca_across_a_later_rollover() {
    let l = Line::new();
    // The profile switches to issuing-2 in 10 s: the batch is issued before that by the
    // current CA, its manifest built after it.
    let switch = time::OffsetDateTime::now_utc() + time::Duration::seconds(10);
    let switch_at = switch
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let p = derived_profile(
        l.path(),
        "rolling.yaml",
        "generic-iot.yaml",
        &[
            ("name: generic-iot", "name: rolling"),
            ("duration: 10y", "duration: 4y"),
            (
                "issuer: issuing ",
                &format!("rollover: {{next_issuer: issuing-2, switch_at: \"{switch_at}\"}}\nissuer: issuing "),
            ),
        ],
    );
    let b = batch(&l, p.to_str().unwrap(), 2, "PRE");
    assert!(
        time::OffsetDateTime::now_utc() < switch,
        "the batch took longer than 10 s; the test needs it issued before the switch"
    );
    while time::OffsetDateTime::now_utc() <= switch + time::Duration::seconds(1) {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let m = l.file("pre.jsonl");
    let o = build(&l, &b, &m);
    assert!(o.status.success(), "{}", text(&o));
    let o = l.certfab(&["--json", "manifest", "verify", m.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let header = &lines_of(&m)[0];
    let fp = sha256_of_pem(&std::fs::read_to_string(l.file("ca/issuing.pem")).unwrap());
    assert!(
        header.contains(&fp),
        "header does not declare CA 1 {fp}: {header}"
    );
    // New issuance under the same profile now comes from issuing-2.
    let b2 = batch(&l, p.to_str().unwrap(), 1, "POST");
    let m2 = l.file("post.jsonl");
    let o = build(&l, &b2, &m2);
    assert!(o.status.success(), "{}", text(&o));
    let fp2 = sha256_of_pem(&std::fs::read_to_string(l.file("ca/issuing-2.pem")).unwrap());
    assert!(lines_of(&m2)[0].contains(&fp2), "{}", lines_of(&m2)[0]);
}

fn sha256_of_pem(pem: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    hex::encode(sha2::Sha256::digest(der))
}

/// `batch --count N --keygen host … EXTRA…` (the args of [`batch`] plus more).
fn batch_with(l: &Line, n: usize, prefix: &str, extra: &[&str]) -> Output {
    let out = l.file(&format!("keys-{prefix}"));
    let id_template = format!("{prefix}{{seq:03}}");
    let pass = passphrase(l);
    let mut args = vec!["--json", "batch", "--profile", "generic-iot", "--count"];
    let n = n.to_string();
    args.push(&n);
    args.extend([
        "--keygen",
        "host",
        "--id-template",
        &id_template,
        "--key-passphrase",
        &pass,
        "--out",
        out.to_str().unwrap(),
    ]);
    args.extend_from_slice(extra);
    l.certfab(&args)
}

fn signed_certificates(l: &Line) -> i64 {
    l.ledger_count("SELECT COUNT(*) FROM certificates WHERE state = 'signed'")
}

#[test]
fn batch_and_station_end_in_a_manifest_with_dash_dash_manifest() {
    let l = Line::new();
    // A batch that ends in its manifest: written, verified, devices exported, in the summary.
    let m = l.file("batch-end.jsonl");
    let o = batch_with(&l, 3, "END", &["--manifest", m.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let s = json(&o);
    assert_eq!(s["manifest"]["count"], 3, "{s}");
    assert_eq!(s["manifest"]["batches"][0], s["batch"]);
    let v = l.certfab(&["manifest", "verify", m.to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v));
    let exported = l.ledger_count(
        "SELECT COUNT(*) FROM devices WHERE state = 'exported' AND device_id LIKE 'END%'",
    );
    assert_eq!(exported, 3);

    // An existing manifest file is refused before anything is signed.
    let before = signed_certificates(&l);
    let o = batch_with(&l, 2, "TAKEN", &["--manifest", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert_eq!(signed_certificates(&l), before);

    // A shift that ends in its manifest: a JSON event after the summary, and it verifies.
    let line = l.file("sim-end");
    let mk = Command::new(sim())
        .arg("make-line")
        .arg(&line)
        .args(["--count", "2"])
        .output()
        .unwrap();
    assert!(mk.status.success(), "{}", text(&mk));
    let sm = l.file("shift-end.jsonl");
    let adapter = format!("exec:{} serve {}", sim(), line.display());
    let o = l.certfab(&[
        "--json",
        "station",
        "--profile",
        "generic-iot",
        "--adapter",
        &adapter,
        "--manifest",
        sm.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let events: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let last = events.last().unwrap();
    assert_eq!(last["event"], "manifest", "{last}");
    assert_eq!(last["manifest"]["count"], 2);
    let v = l.certfab(&["manifest", "verify", sm.to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v));

    // Without a signer in the site config, --manifest is refused before anything is signed.
    let cfg = std::fs::read_to_string(l.config()).unwrap();
    let start = cfg.find("signer:").unwrap();
    let end = cfg[start..].find("chain: [ca/root.pem]\n").unwrap() + start + 21;
    std::fs::write(l.config(), format!("{}{}", &cfg[..start], &cfg[end..])).unwrap();
    let before = signed_certificates(&l);
    let o = batch_with(
        &l,
        2,
        "NOSIG",
        &["--manifest", l.file("nosig.jsonl").to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("signer"), "{}", text(&o));
    assert_eq!(signed_certificates(&l), before);
}

// The manifest flows again on a PostgreSQL ledger. Not twinned:
// merge_refuses_duplicate_devices_across_stations_and_mixed_profiles gives a second station a
// SQLite ledger of its own (on one central ledger the duplicate is refused at issue time:
// central_ledger.rs), and the mutation harness, foreign signers and old lines
// check manifest files, not the ledger behind them.
crate::postgres_twins!(
    batch_and_shift_manifests_verify_chain_and_merge,
    interrupted_builds_are_recovered_without_losing_or_doubling_devices,
    several_batches_and_build_time_vars,
    devices_of_a_replaced_ca_are_refused,
    a_batch_keeps_its_ca_across_a_later_rollover,
    batch_and_station_end_in_a_manifest_with_dash_dash_manifest,
);
