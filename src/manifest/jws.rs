//! Detached JWS (RFC 7515 compact serialization, appendix F): the signature format of
//! manifests and audit checkpoints, made in the HSM by a document-signing key that is not a
//! device CA.
//!
//! The file holds `BASE64URL(protected header) . . BASE64URL(signature)`: the payload (the
//! signed file's exact bytes) is left out and supplied by the verifier. The signing input is
//! the standard one, `BASE64URL(header) "." BASE64URL(payload)` (no RFC 7797 `b64:false`), so
//! any JOSE library verifies it. The header is canonical JSON with exactly these members:
//! `alg` (ES256 or ES384), `cty` (what the payload is), `iat` (signing time, Unix seconds),
//! `kid` (the signer certificate's subjectKeyIdentifier, lower-case hex), `typ` (`JOSE`),
//! `x5c` (signer certificate then its chain, standard base64 DER, RFC 7515 §4.1.6) and
//! `x5t#S256` (BASE64URL SHA-256 of the signer certificate DER).

use crate::crypto::{der_ecdsa_to_raw, raw_ecdsa_to_der, HashAlg, SignatureAlgorithm};
use crate::crypto::{SignError, Signer};
use crate::x509::CaCert;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use der::{Decode, Tagged};
use serde_json::{json, Value};
use time::OffsetDateTime;
use x509_cert::ext::pkix::{KeyUsage, KeyUsages};

/// Why a signature could not be made or does not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwsError {
    /// The configured signer cannot be used (config problem).
    #[error("manifest signer: {0}")]
    Signer(String),
    /// The token failed to sign.
    #[error("manifest signer: {0}")]
    Sign(#[from] SignError),
    /// The signature file is not a detached compact JWS.
    #[error("signature: {0}")]
    Malformed(String),
    /// The protected header is not what certfab writes.
    #[error("signature header: {0}")]
    Header(String),
    /// The certificate chain in `x5c` is broken or does not reach a trusted root.
    #[error("signer chain: {0}")]
    Chain(String),
    /// The signature does not verify over these bytes with the signer's key.
    #[error("signature does not verify over the file's bytes with the signer certificate's key ({0}): the file or its signature was changed, or it was signed by another key")]
    BadSignature(String),
}

impl JwsError {
    /// The exit code: an unusable signer 2, a failed signature the signer's own code, and a
    /// signature or chain that does not verify 3 (input rejected).
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            Self::Signer(_) => crate::exit::ExitCode::Usage,
            Self::Sign(s) => s.exit_code(),
            Self::Malformed(_) | Self::Header(_) | Self::Chain(_) | Self::BadSignature(_) => {
                crate::exit::ExitCode::Rejected
            }
        }
    }
}

/// A document-signing identity: end-entity certificate, chain above it, and the key.
pub struct DocumentSigner<K> {
    /// The signer's certificate (CA:FALSE, keyUsage digitalSignature).
    pub cert: CaCert,
    /// Certificates above it, nearest first.
    pub chain: Vec<CaCert>,
    /// The key (on the token in production).
    pub key: K,
}

impl<K: Signer> DocumentSigner<K> {
    /// Checks that `key` is `cert`'s, that `cert` is a usable end-entity signing certificate at
    /// `now`, and that `chain` links it upwards.
    pub fn new(
        cert: CaCert,
        chain: Vec<CaCert>,
        key: K,
        now: OffsetDateTime,
    ) -> Result<Self, JwsError> {
        if *key.public_key() != cert.public_key {
            return Err(JwsError::Signer(format!(
                "the key does not belong to {}",
                cert.source
            )));
        }
        check_signer_cert(&cert, now).map_err(JwsError::Signer)?;
        jws_alg(key.algorithm()).map_err(JwsError::Signer)?;
        let mut below = &cert;
        for c in &chain {
            below
                .check_signed_by(c)
                .map_err(|e| JwsError::Signer(e.to_string()))?;
            below = c;
        }
        Ok(Self { cert, chain, key })
    }

    /// The key id written as `kid`: the certificate's subjectKeyIdentifier, hex.
    pub fn kid(&self) -> String {
        hex::encode(&self.cert.key_id)
    }
}

/// The checks a signer certificate must pass at `at`: not a CA, keyUsage with
/// digitalSignature, within its validity.
fn check_signer_cert(cert: &CaCert, at: OffsetDateTime) -> Result<(), String> {
    if cert.is_ca {
        return Err(format!(
            "{} is a CA certificate; the manifest signer must be an end-entity certificate (CA:FALSE), made with `certfab ca sign --end-entity`",
            cert.source
        ));
    }
    let parsed = x509_cert::Certificate::from_der(&cert.der).map_err(|e| e.to_string())?;
    let ku = parsed
        .tbs_certificate
        .get::<KeyUsage>()
        .map_err(|e| e.to_string())?
        .map(|(_, k)| k);
    if !ku.is_some_and(|k| k.0.contains(KeyUsages::DigitalSignature)) {
        return Err(format!("{} has no keyUsage digitalSignature", cert.source));
    }
    if !has_signer_eku(&parsed) {
        return Err(format!(
            "{} lacks the certfab document-signer extendedKeyUsage ({}): it is not a manifest signer (a device certificate, or one not made with `certfab ca sign --end-entity`)",
            cert.source,
            crate::ca::SIGNER_EKU
        ));
    }
    if at < cert.not_before {
        return Err(format!(
            "{} is not valid before {}",
            cert.source,
            crate::clock::rfc3339(cert.not_before)
        ));
    }
    if let Some(na) = cert.not_after {
        if at >= na {
            return Err(format!(
                "{} expired at {}",
                cert.source,
                crate::clock::rfc3339(na)
            ));
        }
    }
    Ok(())
}

fn has_signer_eku(cert: &x509_cert::Certificate) -> bool {
    let want = crate::ca::signer_eku_der();
    cert.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_EXT_KEY_USAGE)
        .any(|e| {
            Vec::<der::Any>::from_der(e.extn_value.as_bytes()).is_ok_and(|purposes| {
                purposes
                    .iter()
                    .any(|p| p.tag() == der::Tag::ObjectIdentifier && p.value() == want.as_slice())
            })
        })
}

fn jws_alg(alg: SignatureAlgorithm) -> Result<(&'static str, usize), String> {
    match alg {
        SignatureAlgorithm::Ecdsa(HashAlg::Sha256) => Ok(("ES256", 32)),
        SignatureAlgorithm::Ecdsa(HashAlg::Sha384) => Ok(("ES384", 48)),
        other => Err(format!(
            "signature algorithm {other:?} is not supported for manifests; use a P-256 (ES256) or P-384 (ES384) key"
        )),
    }
}

/// Signs `payload` and returns the detached compact JWS (`header..signature`, no newline).
/// `cty` names what the payload is (e.g. `certfab-manifest/1`); `iat` is the signing time.
pub fn sign_detached<K: Signer>(
    signer: &DocumentSigner<K>,
    payload: &[u8],
    cty: &str,
    iat: OffsetDateTime,
) -> Result<String, JwsError> {
    let mut s = start_signing(signer, cty, iat)?;
    s.update(payload);
    s.finish()
}

/// Starts a detached JWS over a payload fed in pieces ([`Signing::update`]): the signing input
/// is hashed as it streams by and the token signs that hash, so a manifest of a million
/// devices is signed without holding it. The result is the JWS [`sign_detached`] makes.
pub fn start_signing<'s, K: Signer>(
    signer: &'s DocumentSigner<K>,
    cty: &str,
    iat: OffsetDateTime,
) -> Result<Signing<'s, K>, JwsError> {
    let (alg, field) = jws_alg(signer.key.algorithm()).map_err(JwsError::Signer)?;
    let mut x5c = vec![Value::String(STANDARD.encode(&signer.cert.der))];
    x5c.extend(
        signer
            .chain
            .iter()
            .map(|c| Value::String(STANDARD.encode(&c.der))),
    );
    let header = json!({
        "alg": alg,
        "cty": cty,
        "iat": iat.unix_timestamp(),
        "kid": signer.kid(),
        "typ": "JOSE",
        "x5c": x5c,
        "x5t#S256": URL_SAFE_NO_PAD.encode(crate::crypto::sha256(&signer.cert.der)),
    });
    let header = super::canon::to_string(&header).map_err(|e| JwsError::Header(e.0))?;
    let h64 = URL_SAFE_NO_PAD.encode(header.as_bytes());
    let hash = match signer.key.algorithm() {
        SignatureAlgorithm::Ecdsa(h) => h,
        other => {
            return Err(JwsError::Signer(format!(
                "{other:?} is not an ECDSA algorithm"
            )))
        }
    };
    let input = InputHash::new(hash, &h64);
    Ok(Signing {
        signer,
        h64,
        field,
        input,
    })
}

/// A detached signature in the making ([`start_signing`]).
pub struct Signing<'s, K> {
    signer: &'s DocumentSigner<K>,
    h64: String,
    field: usize,
    input: InputHash,
}

impl<K: Signer> Signing<'_, K> {
    /// Feeds the next bytes of the payload.
    pub fn update(&mut self, payload: &[u8]) {
        self.input.update(payload);
    }

    /// Signs the hash of the signing input and returns the compact JWS.
    pub fn finish(self) -> Result<String, JwsError> {
        let digest = self.input.finish();
        let der = self.signer.key.sign_digest(&digest)?;
        // Prove the token's signature before it leaves the process (DESIGN.md invariant 4).
        self.signer
            .key
            .public_key()
            .verify_digest(self.signer.key.algorithm(), &digest, &der)
            .map_err(|_| {
                JwsError::Signer(
                    "the token's signature does not verify with the signer certificate".into(),
                )
            })?;
        let raw =
            der_ecdsa_to_raw(&der, self.field).map_err(|e| JwsError::Signer(e.to_string()))?;
        Ok(format!("{}..{}", self.h64, URL_SAFE_NO_PAD.encode(raw)))
    }
}

/// The hash of a JWS signing input, `BASE64URL(header) "." BASE64URL(payload)`, with the
/// payload fed in pieces: base64url is encoded three bytes at a time, so pieces of any length
/// hash exactly as the whole payload encoded at once.
struct InputHash {
    hash: Hashing,
    carry: Vec<u8>,
    text: String,
}

enum Hashing {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl InputHash {
    fn new(alg: HashAlg, h64: &str) -> Self {
        use sha2::Digest;
        let mut hash = match alg {
            HashAlg::Sha256 => Hashing::Sha256(sha2::Sha256::new()),
            HashAlg::Sha384 => Hashing::Sha384(sha2::Sha384::new()),
            HashAlg::Sha512 => Hashing::Sha512(sha2::Sha512::new()),
        };
        hash.update(h64.as_bytes());
        hash.update(b".");
        Self {
            hash,
            carry: Vec::with_capacity(3),
            text: String::new(),
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        if !self.carry.is_empty() {
            let take = (3 - self.carry.len()).min(data.len());
            self.carry.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.carry.len() < 3 {
                return;
            }
            let carry = std::mem::take(&mut self.carry);
            self.encode(&carry);
        }
        let whole = data.len() / 3 * 3;
        for piece in data[..whole].chunks(48 * 1024) {
            self.encode(piece);
        }
        self.carry.extend_from_slice(&data[whole..]);
    }

    fn encode(&mut self, piece: &[u8]) {
        self.text.clear();
        URL_SAFE_NO_PAD.encode_string(piece, &mut self.text);
        self.hash.update(self.text.as_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        use sha2::Digest;
        let carry = std::mem::take(&mut self.carry);
        self.encode(&carry);
        match self.hash {
            Hashing::Sha256(h) => h.finalize().to_vec(),
            Hashing::Sha384(h) => h.finalize().to_vec(),
            Hashing::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

impl Hashing {
    fn update(&mut self, data: &[u8]) {
        use sha2::Digest;
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Sha384(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }
}

/// The protected header of a verified signature.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JwsHeader {
    /// `ES256` or `ES384`.
    pub alg: String,
    /// Content type (e.g. `certfab-manifest/1`).
    pub cty: String,
    /// Signing time, Unix seconds.
    pub iat: i64,
    /// Signer key id (subjectKeyIdentifier hex).
    pub kid: String,
    pub x5t_s256: String,
}

/// A signature that verified, and who made it.
#[derive(Debug, Clone)]
pub struct VerifiedSignature {
    pub header: JwsHeader,
    /// The signer's certificate.
    pub signer: CaCert,
    /// The rest of `x5c`, nearest first.
    pub chain: Vec<CaCert>,
    /// The trusted root the chain ends at.
    pub root: CaCert,
}

/// Verifies a detached compact JWS over `payload`: header members and values, `alg` against
/// the key, `kid` and `x5t#S256` against the signer certificate, the `x5c` chain up to one of
/// `trust` (never the chain's own root unless it is in `trust`), the signer certificate's
/// usage and validity at `iat`, and the signature itself. `cty` must match.
pub fn verify_detached(
    jws: &str,
    payload: &[u8],
    trust: &[CaCert],
    cty: &str,
) -> Result<VerifiedSignature, JwsError> {
    let mut check = start_verifying(jws, trust, cty)?;
    check.update(payload);
    check.finish()
}

/// Checks everything [`verify_detached`] checks that does not depend on the payload (header,
/// `x5c` chain to `trust`, signer certificate, `alg`), then takes the payload in pieces
/// ([`Verifying::update`]) and checks the signature over its streamed hash
/// ([`Verifying::finish`]): the same verdicts and messages without holding the payload.
pub fn start_verifying(jws: &str, trust: &[CaCert], cty: &str) -> Result<Verifying, JwsError> {
    let jws = jws.strip_suffix('\n').unwrap_or(jws);
    let parts: Vec<&str> = jws.split('.').collect();
    let [h64, body, s64] = parts[..] else {
        return Err(JwsError::Malformed(format!(
            "expected 3 dot-separated parts (header..signature), found {}",
            parts.len()
        )));
    };
    if !body.is_empty() {
        return Err(JwsError::Malformed(
            "the payload part is not empty: this is not a detached signature".into(),
        ));
    }
    let hbytes = URL_SAFE_NO_PAD
        .decode(h64)
        .map_err(|e| JwsError::Malformed(format!("header is not base64url: {e}")))?;
    let sig = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|e| JwsError::Malformed(format!("signature is not base64url: {e}")))?;
    let header = super::canon::parse_canonical(&hbytes).map_err(|e| JwsError::Header(e.0))?;
    let obj = header
        .as_object()
        .ok_or_else(|| JwsError::Header("not a JSON object".into()))?;
    let expected = ["alg", "cty", "iat", "kid", "typ", "x5c", "x5t#S256"];
    if let Some(k) = obj.keys().find(|k| !expected.contains(&k.as_str())) {
        return Err(JwsError::Header(format!(
            "unexpected member '{k}' (certfab signatures carry exactly {})",
            expected.join(", ")
        )));
    }
    let text = |k: &str| -> Result<String, JwsError> {
        obj.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| JwsError::Header(format!("'{k}' is missing or not a string")))
    };
    let alg = text("alg")?;
    let got_cty = text("cty")?;
    if got_cty != cty {
        return Err(JwsError::Header(format!(
            "cty is '{got_cty}', expected '{cty}'"
        )));
    }
    if text("typ")? != "JOSE" {
        return Err(JwsError::Header("typ is not 'JOSE'".into()));
    }
    let iat = obj
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or_else(|| JwsError::Header("'iat' is missing or not an integer".into()))?;
    let kid = text("kid")?;
    let x5t = text("x5t#S256")?;
    let x5c = obj
        .get("x5c")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| JwsError::Header("'x5c' is missing or empty".into()))?;
    let mut certs = Vec::with_capacity(x5c.len());
    for (i, c) in x5c.iter().enumerate() {
        let der = c
            .as_str()
            .and_then(|s| STANDARD.decode(s).ok())
            .ok_or_else(|| JwsError::Header(format!("x5c[{i}] is not base64 DER")))?;
        certs.push(
            CaCert::from_der(der, format!("x5c[{i}]"))
                .map_err(|e| JwsError::Header(e.to_string()))?,
        );
    }
    let signer = certs.remove(0);
    let chain = certs;
    if kid != hex::encode(&signer.key_id) {
        return Err(JwsError::Header(format!(
            "kid {kid} is not the signer certificate's key id {}",
            hex::encode(&signer.key_id)
        )));
    }
    if x5t != URL_SAFE_NO_PAD.encode(crate::crypto::sha256(&signer.der)) {
        return Err(JwsError::Header(
            "x5t#S256 is not the SHA-256 of x5c[0]".into(),
        ));
    }
    let at = OffsetDateTime::from_unix_timestamp(iat)
        .map_err(|_| JwsError::Header(format!("iat {iat} is out of range")))?;
    check_signer_cert(&signer, at).map_err(JwsError::Chain)?;
    let root = chain_to_trust(&signer, &chain, trust).map_err(JwsError::Chain)?;

    let key_alg = signer.public_key.default_signature();
    let (want_alg, field) = jws_alg(key_alg).map_err(JwsError::Chain)?;
    if alg != want_alg {
        return Err(JwsError::Header(format!(
            "alg {alg} does not fit the signer key ({want_alg})"
        )));
    }
    let der = raw_ecdsa_to_der(&sig, field)
        .map_err(|_| JwsError::BadSignature(format!("{} is not a {} signature", s64.len(), alg)))?;
    let SignatureAlgorithm::Ecdsa(hash) = key_alg else {
        return Err(JwsError::Header(format!(
            "alg {alg} does not fit the signer key"
        )));
    };
    let input = InputHash::new(hash, h64);
    Ok(Verifying {
        input,
        key_alg,
        der,
        signature: VerifiedSignature {
            header: JwsHeader {
                alg,
                cty: got_cty,
                iat,
                kid,
                x5t_s256: x5t,
            },
            signer,
            chain,
            root,
        },
    })
}

/// A detached signature whose header and chain checked out, waiting for its payload
/// ([`start_verifying`]).
pub struct Verifying {
    input: InputHash,
    key_alg: SignatureAlgorithm,
    der: Vec<u8>,
    signature: VerifiedSignature,
}

impl Verifying {
    /// Feeds the next bytes of the payload.
    pub fn update(&mut self, payload: &[u8]) {
        self.input.update(payload);
    }

    /// Checks the signature over the payload fed so far.
    pub fn finish(self) -> Result<VerifiedSignature, JwsError> {
        let digest = self.input.finish();
        self.signature
            .signer
            .public_key
            .verify_digest(self.key_alg, &digest, &self.der)
            .map_err(|_| JwsError::BadSignature(format!("kid {}", self.signature.header.kid)))?;
        Ok(self.signature)
    }
}

/// Links `leaf` through `chain` (each signed by the next, each issuer a CA) to a certificate
/// in `trust`: either the chain's last certificate is a trust anchor (byte-equal), or a trust
/// anchor signed it. Returns that anchor, or what breaks the chain.
pub fn chain_to_trust(leaf: &CaCert, chain: &[CaCert], trust: &[CaCert]) -> Result<CaCert, String> {
    let mut below = leaf;
    for c in chain {
        if trust.iter().any(|t| t.der == below.der) {
            break;
        }
        if !c.is_ca || !c.can_sign_certs {
            return Err(format!(
                "{} (issuer of {}) is not a CA certificate",
                c.source, below.source
            ));
        }
        below.check_signed_by(c).map_err(|e| e.to_string())?;
        below = c;
    }
    if let Some(t) = trust.iter().find(|t| t.der == below.der) {
        return Ok(t.clone());
    }
    for t in trust {
        if below.check_signed_by(t).is_ok() {
            return Ok(t.clone());
        }
    }
    Err(format!(
        "{} does not chain to a trusted root (trusted: {}); pass --trust ROOT.pem with the root the signer and CA were issued under",
        below.source,
        trust
            .iter()
            .map(|t| format!("SHA-256 {}", hex::encode(crate::crypto::sha256(&t.der))))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SoftSigner;

    fn pki() -> (SoftSigner, CaCert, DocumentSigner<SoftSigner>) {
        pki_with(SoftSigner::generate_p256())
    }

    fn pki_with(key: SoftSigner) -> (SoftSigner, CaCert, DocumentSigner<SoftSigner>) {
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let root_key = SoftSigner::generate_p256();
        let params = crate::ca::CaParams {
            subject: Some("CN=Test Root".parse().unwrap()),
            not_before: now - time::Duration::hours(1),
            not_after: Some(now + time::Duration::days(1)),
            path_len: None,
            serial_prefix: 1,
        };
        let root = CaCert::from_der(
            crate::ca::self_sign(&root_key, &params).unwrap(),
            "root".into(),
        )
        .unwrap();
        let csr = crate::ca::make_csr(&key, "CN=Signer".parse().unwrap()).unwrap();
        let ee = crate::ca::sign_end_entity(
            &root_key,
            &root,
            &csr,
            &crate::ca::CaParams {
                subject: None,
                ..params
            },
        )
        .unwrap();
        let cert = CaCert::from_der(ee, "signer".into()).unwrap();
        let signer = DocumentSigner::new(cert, vec![root.clone()], key, now).unwrap();
        (root_key, root, signer)
    }

    #[test]
    fn round_trip_and_tamper() {
        let (_, root, signer) = pki();
        let now = OffsetDateTime::now_utc();
        let jws = sign_detached(&signer, b"hello\n", "t/1", now).unwrap();
        assert!(jws.contains(".."));
        let v = verify_detached(&jws, b"hello\n", std::slice::from_ref(&root), "t/1").unwrap();
        assert_eq!(v.header.kid, signer.kid());
        assert!(matches!(
            verify_detached(&jws, b"hellO\n", std::slice::from_ref(&root), "t/1"),
            Err(JwsError::BadSignature(_))
        ));
        assert!(matches!(
            verify_detached(&jws, b"hello\n", std::slice::from_ref(&root), "other/1"),
            Err(JwsError::Header(_))
        ));
        // Another root is not trusted even though x5c carries the real one.
        let (_, other_root, _) = pki();
        assert!(matches!(
            verify_detached(&jws, b"hello\n", &[other_root], "t/1"),
            Err(JwsError::Chain(_))
        ));
    }

    #[test]
    fn payload_fed_in_pieces_signs_and_verifies_as_a_whole() {
        let (_, root, signer) = pki();
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for piece in [1, 2, 3, 4, 5, 64, 1000, 9_999] {
            let mut s = start_signing(&signer, "t/1", OffsetDateTime::now_utc()).unwrap();
            for p in payload.chunks(piece) {
                s.update(p);
            }
            let jws = s.finish().unwrap();
            // The whole payload at once verifies what was signed in pieces, and the other way.
            verify_detached(&jws, &payload, std::slice::from_ref(&root), "t/1").unwrap();
            let whole = sign_detached(&signer, &payload, "t/1", OffsetDateTime::now_utc()).unwrap();
            let mut v = start_verifying(&whole, std::slice::from_ref(&root), "t/1").unwrap();
            for p in payload.chunks(piece) {
                v.update(p);
            }
            v.finish().unwrap();
            let mut v = start_verifying(&whole, std::slice::from_ref(&root), "t/1").unwrap();
            v.update(&payload[1..]);
            assert!(matches!(v.finish(), Err(JwsError::BadSignature(_))));
        }
    }

    #[test]
    fn es384_signer() {
        let (_, root, signer) = pki_with(SoftSigner::generate_p384());
        let jws = sign_detached(&signer, b"x", "t/1", OffsetDateTime::now_utc()).unwrap();
        let v = verify_detached(&jws, b"x", std::slice::from_ref(&root), "t/1").unwrap();
        assert_eq!(v.header.alg, "ES384");
        // r||s is 96 bytes: 128 base64url characters.
        assert_eq!(jws.rsplit('.').next().unwrap().len(), 128);
    }

    #[test]
    fn refuses_extra_header_members() {
        let (_, root, signer) = pki();
        let jws = sign_detached(&signer, b"x", "t/1", OffsetDateTime::now_utc()).unwrap();
        let h = String::from_utf8(
            URL_SAFE_NO_PAD
                .decode(jws.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        let mut v: Value = serde_json::from_str(&h).unwrap();
        v["crit"] = json!(["b64"]);
        let h2 = super::super::canon::to_string(&v).unwrap();
        let forged = format!(
            "{}..{}",
            URL_SAFE_NO_PAD.encode(h2),
            jws.rsplit('.').next().unwrap()
        );
        let e = verify_detached(&forged, b"x", std::slice::from_ref(&root), "t/1").unwrap_err();
        assert!(e.to_string().contains("unexpected member 'crit'"), "{e}");
    }

    #[test]
    fn refuses_a_ca_as_signer() {
        let (root_key, root, _) = pki();
        let r = DocumentSigner::new(root.clone(), vec![], root_key, OffsetDateTime::now_utc());
        assert!(matches!(r, Err(JwsError::Signer(_))));
    }
}
