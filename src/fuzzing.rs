//! Entry points for coverage-guided fuzzing (`fuzz/`, docs/fuzzing.md): one function per
//! target, each taking arbitrary bytes and driving the same library code certfab runs on that
//! input. None of them may panic, whatever the bytes; `tests/it/fuzz_corpus.rs` replays every
//! committed corpus input and past crash through them on stable Rust, so CI guards them
//! without nightly.

use std::path::Path;
use std::sync::OnceLock;

/// A fuzz target: arbitrary bytes in, nothing out, never a panic.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name (the `fuzz/fuzz_targets/<name>.rs` files and the
/// `fuzz/corpus/<name>/` directories).
pub const TARGETS: &[(&str, Target)] = &[
    ("csr", csr),
    ("station_frames", station_frames),
    ("manifest_verify", manifest_verify),
    ("profile", profile),
    ("batch_csv", batch_csv),
    ("id_template", id_template),
    ("san_template", san_template),
];

/// A CSR or a public key (PEM or DER) through parsing, proof of possession and key policy
/// (ROCA and Fermat included), then the CSR's requested extensions and subject text.
pub fn csr(data: &[u8]) {
    let rules = crate::profile::KeyRules {
        p256: true,
        p384: true,
        ed25519: true,
        rsa: Some((2048, 8192)),
    };
    if let Ok(c) = crate::csr::parse_csr(data) {
        let _ = crate::csr::check_key(&c.public_key, &rules, "fuzz");
        let allowed = [const_oid::db::rfc5280::ID_CE_CERTIFICATE_POLICIES];
        let _ = crate::csr::requested_extensions(&c, &allowed);
        for rdn in c.subject.0.iter() {
            for atv in rdn.0.iter() {
                let _ = crate::x509::any_text(&atv.value);
                let _ = crate::x509::AttrType::name_of(atv.oid);
            }
        }
    }
    if let Ok(k) = crate::csr::parse_public_key(data) {
        let _ = crate::csr::check_key(&k, &rules, "fuzz");
    }
}

/// Bytes from a station adapter: split into lines (in uneven chunks, as a link delivers them),
/// classified before and after `hello`, and every reply decoded into each typed result.
pub fn station_frames(data: &[u8]) {
    use crate::station::protocol::{self as p, Frame};
    let mut buf = p::LineBuffer::default();
    let chunk = (data.first().copied().unwrap_or(1) as usize % 13) + 1;
    let mut greeted = false;
    for piece in data.chunks(chunk) {
        buf.push(piece);
        loop {
            match buf.next_line() {
                Ok(Some(line)) => match p::parse_line(&line, greeted) {
                    Ok(Frame::Reply { result: Ok(()), .. }) => {
                        let r = &line[..];
                        greeted = true;
                        let _ = p::decode::<p::Hello>("hello", r);
                        let _ = p::decode::<p::Presence>("wait_device", r);
                        if let Ok(id) = p::decode::<p::Identity>("identify", r) {
                            let _ = id.field("device_id");
                            let _ = id.template_values();
                            let _ = id.spki();
                            let _ = id.security_violations(&Default::default());
                        }
                        if let Ok(c) = p::decode::<p::CsrReply>("generate_csr", r) {
                            let _ = c.bytes();
                        }
                        let _ = p::decode::<p::ReadBack>("read_back", r);
                        let _ = p::decode::<p::Proof>("prove", r);
                        let _ = p::decode::<p::Locked>("lock", r);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = crate::text::escape(&e);
                    }
                },
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// A manifest, its detached JWS and the trust anchors, separated by NUL bytes, through offline
/// verification.
pub fn manifest_verify(data: &[u8]) {
    let mut parts = data.splitn(3, |b| *b == 0);
    let manifest = parts.next().unwrap_or_default();
    let jws = parts.next().map(String::from_utf8_lossy);
    let trust: Vec<crate::x509::CaCert> = parts
        .next()
        .map(|t| {
            String::from_utf8_lossy(t)
                .split("-----END CERTIFICATE-----")
                .filter_map(|b| {
                    let pem = format!("{b}-----END CERTIFICATE-----");
                    let (_, der) = pem_rfc7468::decode_vec(pem.trim_start().as_bytes()).ok()?;
                    crate::x509::CaCert::from_der(der, "fuzz".into()).ok()
                })
                .collect()
        })
        .unwrap_or_default();
    let _ = crate::manifest::verify_bytes(
        Path::new("fuzz.jsonl"),
        "fuzz.jsonl.jws",
        manifest,
        jws.as_deref(),
        &trust,
    );
    let _ = crate::manifest::read_unverified(manifest);
}

/// A profile file through the bounded YAML loader, the depth scan and every validation.
pub fn profile(data: &[u8]) {
    if let Ok(p) = crate::profile::Profile::from_bytes(Path::new("fuzz.yaml"), data.to_vec()) {
        let _ = p.keys.describe();
    }
}

/// A batch CSV through the bounded reader, row by row (key paths resolve under a directory
/// that does not exist, so nothing outside the input is read).
pub fn batch_csv(data: &[u8]) {
    let Ok(rows) = crate::batch::csv_rows_from(
        std::io::Cursor::new(data.to_vec()),
        Path::new("/nonexistent-certfab-fuzz/in.csv"),
        None,
    ) else {
        return;
    };
    for r in rows.take(10_000) {
        match r {
            Ok(row) => {
                let _ = row.device_id.as_deref().map(crate::text::escape);
            }
            Err(e) => {
                let _ = crate::text::neutralize(&e.reason);
            }
        }
    }
}

/// An `--id-template`: parsed, then rendered at both ends of the sequence.
pub fn id_template(data: &[u8]) {
    let Ok(t) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = crate::batch::IdTemplate::parse(t) {
        for n in [0, 1, 999_999, u64::MAX] {
            let _ = crate::identity::key(&t.render(n));
        }
    }
}

/// SAN templates and the values they render, through the whole preparation of a certificate:
/// lines 1-3 are the dns, uri and email templates, line 4 the device id, line 5 the CSV column
/// `site`; the profile is built from them, and [`crate::issue::prepare`] runs (name policy, SAN
/// syntax, TBS, lint) for a fixed key under a fixed CA.
pub fn san_template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let mut next = || lines.next().unwrap_or_default();
    let (dns, uri, email, id, site) = (next(), next(), next(), next(), next());
    for t in [dns, uri, email] {
        if let Ok(t) = crate::profile::Template::try_from(t.to_string()) {
            let mut v = crate::profile::Vars {
                device_id: Some(id.to_string()),
                ..Default::default()
            };
            v.values.insert("csv.site".into(), site.into());
            if let Ok(s) = t.render(&v) {
                let _ = crate::profile::san::dns_name(&s);
                let _ = crate::profile::san::uri(&s);
                let _ = crate::profile::san::email(&s);
            }
        }
    }
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let yaml = format!(
        "name: fuzz\nissuer: fuzz\nkeys: [p256]\nsubject:\n  - CN: \"{{device_id}}\"\nsan:\n  - dns: {}\n  - uri: {}\n  - email: {}\nvalidity: {{duration: 1y}}\nkey_usage: [digitalSignature]\nnames: {{allow_unicode: true}}\n",
        q(dns),
        q(uri),
        q(email)
    );
    let Ok(profile) = crate::profile::Profile::from_bytes(Path::new("fuzz.yaml"), yaml.into())
    else {
        return;
    };
    let Some((ca, key, alg)) = fixture() else {
        return;
    };
    let ctx = crate::issue::IssueContext {
        profile: &profile,
        ca,
        signature: *alg,
        serial_prefix: 1,
        now: ca.not_before + time::Duration::days(1),
        serials: &crate::x509::RandomSerials,
    };
    let mut vars = std::collections::BTreeMap::new();
    vars.insert("csv.site".to_string(), site.to_string());
    let req = crate::issue::Request {
        device_id: Some(id.to_string()),
        key: crate::issue::KeySource::PublicKey(key.clone()),
        vars,
    };
    let _ = crate::issue::prepare(&ctx, &req);
}

/// A software CA, a device public key (SPKI DER) and the CA's algorithm, made once per
/// process.
type Fixture = (
    crate::x509::CaCert,
    Vec<u8>,
    crate::crypto::SignatureAlgorithm,
);

fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        use crate::crypto::Signer;
        let signer = crate::crypto::SoftSigner::generate_p256();
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).ok()?;
        let der = crate::ca::self_sign(
            &signer,
            &crate::ca::CaParams {
                subject: "CN=Fuzz CA".parse().ok(),
                not_before: now,
                not_after: Some(now + time::Duration::days(3650)),
                path_len: Some(0),
                serial_prefix: 1,
            },
        )
        .ok()?;
        let ca = crate::x509::CaCert::from_der(der, "fuzz".into()).ok()?;
        let key = crate::crypto::SoftSigner::generate_p256()
            .public_key()
            .spki_der()
            .to_vec();
        Some((ca, key, signer.algorithm()))
    })
    .as_ref()
}
