//! A Microchip-style secure element manifest: a JSON array with one signed entry per device,
//! each a JWS in flattened JSON serialization (RFC 7515 §7.2.2) shaped like Microchip's
//! Trust&GO / TrustFLEX manifests (`pytrustplatform/manifest/manifest.py`,
//! `SignedSecureElement.encode`), for tools that import those (AWS and Azure manifest
//! handlers from Microchip's TPDS, Thingpress):
//!
//! ```json
//! {"payload": b64url(JSON), "protected": b64url({"typ":"JWT","alg":"ES256",
//!   "kid": b64url(signer SKI), "x5t#S256": b64url(SHA-256(signer cert))}),
//!  "header": {"uniqueId": "..."}, "signature": b64url(r||s)}
//! ```
//!
//! The payload has `version` 1, `model`, `partNumber`, `manufacturer`, `provisioner`,
//! `distributor` (each `{organizationName, organizationalUnitName}`), `groupId`,
//! `provisioningTimestamp` (the certificate's notBefore, `YYYY-MM-DDTHH:MM:SS.mmmZ`),
//! `uniqueId` and `publicKeySet.keys[0]` = the device key as a JWK (`kid` "0", EC P-256 or
//! P-384) with `x5c` = [device certificate, issuing CA] in standard base64 DER.
//!
//! Entries are signed by the manifest signer key in the HSM (ES256 for a P-256 signer,
//! ES384 for P-384). Consumers that accept only Microchip's own signer certificates will not
//! accept certfab's signer; tools that take the signer certificate as input will.
//!
//! Settings: `microchip.model`, `microchip.part_number`, `microchip.group_id`,
//! `microchip.manufacturer`, `microchip.provisioner`, `microchip.distributor` (each an
//! organization name; the organizational unit comes from `*_unit`),
//! `microchip.strict_unique_id` (bool). Per device: `microchip.unique_id` (defaults to the
//! ledger's device id).
//!
//! `uniqueId` is the secure element's serial number in lower-case hex in Microchip's
//! manifests (`SecureElement`: `uniqueid.hex()`; `data_provider.get_serial_number`: "hex
//! encoded lower case letters"), and Thingpress names its things after it. A uniqueId that is
//! not lower-case hex bytes is exported with a warning, or refused when
//! `microchip.strict_unique_id` is true.

use super::sink::Rows;
use super::support::{
    b64, b64url, device_error, device_str, issuing_ca_der, pretty, CertFacts, Settings,
};
use super::{shard_name, ExportError, ExportFile, ExportInput, ExportOptions, Format, Out};
use crate::crypto::Signer;
use crate::crypto::{HashAlg, KeyKind, SignatureAlgorithm};
use crate::manifest::jws::DocumentSigner;
use serde_json::{json, Value};

const FORMAT: Format = Format::MicrochipJws;

/// The JWS `alg` and the field length of the signer's curve.
fn jose_alg<K: Signer>(signer: &DocumentSigner<K>) -> Result<(&'static str, usize), ExportError> {
    match (signer.key.public_key().kind(), signer.key.algorithm()) {
        (KeyKind::P256, SignatureAlgorithm::Ecdsa(HashAlg::Sha256)) => Ok(("ES256", 32)),
        (KeyKind::P384, SignatureAlgorithm::Ecdsa(HashAlg::Sha384)) => Ok(("ES384", 48)),
        (kind, alg) => Err(ExportError::Usage(format!(
            "the manifest signer is {kind} signing {alg}; Microchip manifests are signed ES256 (P-256) or ES384 (P-384)"
        ))),
    }
}

/// The protected header: `kid` is the base64url subjectKeyIdentifier and `x5t#S256` the
/// base64url SHA-256 of the signer certificate, as pytrustplatform writes them.
fn protected<K: Signer>(signer: &DocumentSigner<K>) -> Result<Value, ExportError> {
    let (alg, _) = jose_alg(signer)?;
    Ok(json!({
        "typ": "JWT",
        "alg": alg,
        "kid": b64url(&signer.cert.key_id),
        "x5t#S256": b64url(&crate::crypto::sha256(&signer.cert.der)),
    }))
}

/// JWS signature over the signing input, as raw `r||s` (RFC 7518 §3.4).
fn sign<K: Signer>(
    signer: &DocumentSigner<K>,
    signing_input: &[u8],
) -> Result<Vec<u8>, ExportError> {
    let (_, field) = jose_alg(signer)?;
    let der = signer
        .key
        .sign(signing_input)
        .map_err(|source| ExportError::Sign {
            format: FORMAT.name(),
            source,
        })?;
    crate::crypto::der_ecdsa_to_raw(&der, field).map_err(|e| ExportError::Sign {
        format: FORMAT.name(),
        source: e.into(),
    })
}

/// The device public key as a JWK with its certificate chain.
fn jwk(d: &super::ExportDevice, facts: &CertFacts, ca_der: &[u8]) -> Result<Value, ExportError> {
    let bad = |msg: String| device_error(FORMAT.name(), d, msg);
    let key =
        crate::crypto::PublicKey::from_spki_der(&facts.spki_der).map_err(|e| bad(e.to_string()))?;
    let (crv, n) = match key.kind() {
        KeyKind::P256 => ("P-256", 32),
        KeyKind::P384 => ("P-384", 48),
        other => {
            return Err(bad(format!(
                "the device key is {other}; Microchip manifests carry EC (P-256/P-384) keys"
            )))
        }
    };
    let point = key.subject_public_key();
    if point.len() != 1 + 2 * n || point[0] != 4 {
        return Err(bad("the device EC point is not uncompressed".into()));
    }
    Ok(json!({
        "kid": "0",
        "kty": "EC",
        "crv": crv,
        "x": b64url(&point[1..1 + n]),
        "y": b64url(&point[1 + n..]),
        "x5c": [b64(&d.cert_der), b64(ca_der)],
    }))
}

fn organization(
    s: &Settings<'_>,
    who: &str,
    default: &(String, String),
) -> Result<Value, ExportError> {
    Ok(json!({
        "organizationName": s.str(&format!("microchip.{who}"))?.unwrap_or(default.0.clone()),
        "organizationalUnitName": s.str(&format!("microchip.{who}_unit"))?.unwrap_or(default.1.clone()),
    }))
}

/// `microchip-manifest-NNNN.json`, `--max-rows` entries a file, each entry signed by `signer`.
pub fn render_signed<K: Signer>(
    input: &ExportInput,
    opts: &ExportOptions,
    signer: &DocumentSigner<K>,
) -> Result<Vec<ExportFile>, ExportError> {
    let mut out = Out::memory();
    render_signed_into(input, opts, signer, &mut out)?;
    out.into_files()
}

/// [`render_signed`] into `out`, an entry at a time.
pub fn render_signed_into<K: Signer>(
    input: &ExportInput,
    opts: &ExportOptions,
    signer: &DocumentSigner<K>,
    out: &mut Out,
) -> Result<(), ExportError> {
    super::require_devices(FORMAT, input)?;
    let s = Settings::new(FORMAT, input, opts);
    let ca_der = issuing_ca_der(FORMAT, input)?;
    let ca = crate::x509::CaCert::from_der(ca_der.clone(), "issuing CA".into())
        .map_err(|e| ExportError::Input(format!("{}: issuing CA: {e}", FORMAT.name())))?;
    let org = (
        crate::x509::attr_text(&ca.subject, const_oid::db::rfc4519::O).unwrap_or_default(),
        crate::x509::attr_text(&ca.subject, const_oid::db::rfc4519::OU).unwrap_or_default(),
    );
    let model = s.str("microchip.model")?.unwrap_or(input.profile.clone());
    let part = s
        .str("microchip.part_number")?
        .unwrap_or(input.profile.clone());
    let group = s
        .str("microchip.group_id")?
        .unwrap_or_else(|| input.batch_ids.join("+"));
    let manufacturer = organization(&s, "manufacturer", &org)?;
    let provisioner = organization(&s, "provisioner", &org)?;
    let distributor = organization(&s, "distributor", &org)?;
    let protected = b64url(protected(signer)?.to_string().as_bytes());
    let strict = s.bool("microchip.strict_unique_id")?.unwrap_or(false);

    let mut ids = super::support::Unique::default();
    // One JSON array per shard, pretty-printed as serde_json prints it: "[", each entry
    // indented by two spaces and separated by ",", then "]".
    let mut shards = Rows::new(opts.max_rows);
    let mut first_in: Option<super::sink::FileId> = None;
    input.each_device(|d| {
        let facts = CertFacts::of(FORMAT, d)?;
        let unique_id = device_str(FORMAT, input, opts, d, "microchip.unique_id")?
            .unwrap_or(d.device_id.clone());
        if strict && !is_hex_serial(&unique_id) {
            return Err(device_error(
                FORMAT.name(),
                d,
                format!("uniqueId '{unique_id}' is not a serial number in lower-case hex (microchip.strict_unique_id is set); set microchip.unique_id, e.g. to \"{{cert.serial}}\" or the chip serial"),
            ));
        }
        ids.check(FORMAT, d, "uniqueId", &unique_id)?;
        let nb = &facts.cert.tbs_certificate.validity.not_before;
        let ts = super::support::x509_time_rfc3339(nb).replace('Z', ".000Z");
        let payload = json!({
            "version": 1,
            "model": model,
            "partNumber": part,
            "manufacturer": manufacturer,
            "provisioner": provisioner,
            "distributor": distributor,
            "groupId": group,
            "provisioningTimestamp": ts,
            "uniqueId": unique_id,
            "publicKeySet": { "keys": [jwk(d, &facts, &ca_der)?] },
        });
        let payload = b64url(payload.to_string().as_bytes());
        let signature = sign(signer, format!("{protected}.{payload}").as_bytes())?;
        let entry = json!({
            "payload": payload,
            "protected": protected,
            "header": { "uniqueId": unique_id },
            "signature": b64url(&signature),
        });
        let mut text = String::new();
        for (n, l) in String::from_utf8_lossy(&pretty(&entry)).trim_end().lines().enumerate() {
            if n > 0 {
                text.push('\n');
            }
            text.push_str("  ");
            text.push_str(l);
        }
        let before = first_in;
        if let Some(full) = shards.full() {
            out.write(full, b"\n]\n")?;
        }
        let id = shards.next(out, |out, i| {
            let id = out.open(
                &shard_name("microchip-manifest", i, "json"),
                "tools that import Microchip secure element manifests (pytrustplatform Manifest, TPDS manifest handlers, Thingpress) with the certfab manifest signer certificate as the verification certificate".into(),
            )?;
            out.write(id, b"[\n")?;
            Ok(id)
        })?;
        if before == Some(id) {
            out.write(id, b",\n")?;
        }
        first_in = Some(id);
        out.write(id, text.as_bytes())
    })?;
    // The last shard's closing bracket (the others were closed as the next one opened).
    if let Some(id) = first_in {
        out.write(id, b"\n]\n")?;
    }
    shards.finish(out)?;
    ids.confirm(FORMAT, input, |d| {
        Ok(device_str(FORMAT, input, opts, d, "microchip.unique_id")?
            .unwrap_or(d.device_id.clone()))
    })
}

/// Whether `id` is bytes in lower-case hex, as Microchip writes a chip serial (`bytes.hex()`).
pub fn is_hex_serial(id: &str) -> bool {
    !id.is_empty()
        && id.len() % 2 == 0
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// uniqueIds that are not a lower-case hex serial (see the module doc); none when
/// `microchip.strict_unique_id` refuses them instead.
pub fn warnings(input: &ExportInput, opts: &ExportOptions) -> Result<Vec<String>, ExportError> {
    let s = Settings::new(FORMAT, input, opts);
    if s.bool("microchip.strict_unique_id")?.unwrap_or(false) {
        return Ok(Vec::new());
    }
    // A count and the first few: bounded whatever the batch.
    let mut count = 0usize;
    let mut odd = Vec::new();
    input.each_device(|d| {
        let id = device_str(FORMAT, input, opts, d, "microchip.unique_id")?
            .unwrap_or(d.device_id.clone());
        if !is_hex_serial(&id) {
            count += 1;
            if odd.len() < 5 {
                odd.push(id);
            }
        }
        Ok(())
    })?;
    if count == 0 {
        return Ok(Vec::new());
    }
    let shown: Vec<&str> = odd.iter().map(String::as_str).collect();
    let more = if count > 5 { ", …" } else { "" };
    Ok(vec![format!(
        "microchip-jws: {} uniqueId(s) ({}{more}) are not a serial number in lower-case hex, which Microchip's manifests carry and Thingpress names things after; set microchip.unique_id (e.g. \"{{cert.serial}}\"), or microchip.strict_unique_id: true to refuse them",
        count,
        shown.join(", ")
    )])
}
