//! The audit checks. Each is a small function over the [`Corpus`]: the ones over ledger rows,
//! manifest lines and certificate files are queries over its scratch database that store their
//! findings there as they go (so a million findings need no memory); the ones over the few
//! CAs, checkpoints and manifests return theirs. docs/audit.md lists every code with its
//! severity, meaning and fix.

use super::scratch::{CertRow, DeviceRec, R};
use super::{CaEntry, Corpus, Finding, LedgerData, Options, Severity};
use crate::crypto::{PublicKey, SignatureAlgorithm};
use crate::profile::Profile;
use crate::x509::CaCert;
use der::referenced::OwnedToRef;
use der::{Decode, Encode};
use std::collections::{BTreeMap, BTreeSet};
use time::OffsetDateTime;
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage};

use Severity::{Critical, High, Info, Low, Medium};

/// What the audit keeps of a device certificate after examining it once while loading (the
/// DER itself is not kept, so memory stays small on large ledgers).
#[derive(Debug, Clone)]
pub struct Leaf {
    /// SHA-256 of the SPKI, hex (the ledger's `spki_sha256`).
    pub spki_sha256: String,
    /// Serial, hex without leading zero octets.
    pub serial: String,
    /// notAfter; `None` = no expiry.
    pub not_after: Option<OffsetDateTime>,
    /// Issuer name, text.
    pub issuer_name: String,
    /// Index into `corpus.cas` of the CA whose key verifies the signature.
    pub ca: Option<usize>,
    /// How it differs from its profile; `None` when not compared (no such profile given, or
    /// no CA verifies it).
    pub profile_diffs: Option<Vec<String>>,
}

/// A parsed certificate, while it is examined.
struct Full {
    cert: x509_cert::Certificate,
    key: PublicKey,
    not_before: OffsetDateTime,
    not_after: Option<OffsetDateTime>,
}

/// Examines a device certificate: parses it, finds its CA among `cas` (issuer name equal and
/// signature verifying with the CA's key) and, when `profile` is given, compares it with it.
pub fn examine(
    der: &[u8],
    cas: &[CaEntry],
    profile: Option<&Profile>,
    device_id: &str,
) -> Result<Leaf, String> {
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| e.to_string())?;
    let tbs = &cert.tbs_certificate;
    let spki = tbs
        .subject_public_key_info
        .to_der()
        .map_err(|e| e.to_string())?;
    let key = PublicKey::from_spki_der(&spki).map_err(|e| e.to_string())?;
    let issuer_der = tbs.issuer.to_der().map_err(|e| e.to_string())?;
    let not_before = crate::x509::time_of(&tbs.validity.not_before)
        .ok_or_else(|| "notBefore is 9999-12-31".to_string())?;
    let ca = signed_by(der, &issuer_der, cas);
    let serial = normal_serial(&hex::encode(tbs.serial_number.as_bytes()));
    let issuer_name = tbs.issuer.to_string();
    let not_after = crate::x509::time_of(&tbs.validity.not_after);
    let spki_sha256 = hex::encode(crate::crypto::sha256(key.spki_der()));
    let full = Full {
        cert,
        key,
        not_before,
        not_after,
    };
    let profile_diffs = match (profile, ca) {
        (Some(p), Some(i)) => Some(profile_differences(&full, &cas[i].cert, p, device_id)),
        _ => None,
    };
    Ok(Leaf {
        spki_sha256,
        serial,
        not_after,
        issuer_name,
        ca,
        profile_diffs,
    })
}

/// The CA in `cas` that signed `der` (a certificate or CRL) and whose subject is `issuer_der`.
pub(super) fn signed_by(der: &[u8], issuer_der: &[u8], cas: &[CaEntry]) -> Option<usize> {
    let (tbs, alg, sig) = crate::x509::split_signed(der).ok()?;
    let alg = SignatureAlgorithm::from_identifier(&alg).ok()?;
    cas.iter().position(|c| {
        c.cert.subject_der == issuer_der && c.cert.public_key.verify(alg, tbs, sig).is_ok()
    })
}

/// Lower-case hex without leading `00` octets, so ledger and DER serials compare.
pub fn normal_serial(s: &str) -> String {
    let s = s.to_ascii_lowercase();
    let mut t = s.as_str();
    while t.len() > 2 && t.starts_with("00") {
        t = &t[2..];
    }
    t.to_string()
}

fn row_loc(l: &LedgerData, table: &str, rowid: i64) -> String {
    format!("{} {table} row {rowid}", l.path)
}

fn cert_finding(
    sev: Severity,
    code: &'static str,
    l: &LedgerData,
    c: &CertRow,
    msg: String,
) -> Finding {
    Finding::new(sev, code, msg)
        .at(row_loc(l, "certificates", c.rowid))
        .device(&c.device_id)
        .serial(&c.serial)
}

/// SQL over the `cert` table (as `c`) that the row is its device's live certificate: not
/// recorded as superseded or revoked, and the serial of a device whose state is live.
const IS_LIVE: &str = "NOT EXISTS (SELECT 1 FROM status s WHERE s.li = c.li AND s.ikid = c.ikid
        AND s.serial = c.serial)
    AND EXISTS (SELECT 1 FROM dev d WHERE d.li = c.li AND d.profile = c.profile
        AND d.device_id = c.device_id AND d.serial = c.serial AND d.live = 1)";

/// Runs every check; the findings are in the corpus's scratch database.
pub fn all(corpus: &Corpus, opts: &Options) -> R<()> {
    let put = |v: Vec<Finding>| v.iter().try_for_each(|f| corpus.scratch.push(f));
    put(audit_chain(corpus))?;
    put(checkpoints(corpus))?;
    cert_records(corpus)?;
    device_records(corpus)?;
    chains(corpus)?;
    put(ca_chains(corpus))?;
    profiles(corpus)?;
    duplicate_serials(corpus)?;
    duplicate_devices(corpus)?;
    duplicate_keys(corpus)?;
    tenant_mixing(corpus)?;
    put(serial_prefixes(corpus)?)?;
    unrecorded_certs(corpus)?;
    put(manifests_invalid(corpus))?;
    manifest_vs_ledger(corpus)?;
    install_states(corpus)?;
    expiry(corpus, opts)?;
    put(ca_expiry(corpus, opts)?)?;
    revocations(corpus, opts)?;
    put(pending_and_burned(corpus)?)?;
    put(rejections(corpus)?)?;
    Ok(())
}

/// `audit-chain-broken` (critical): the hash chain of a ledger's audit table does not verify.
pub fn audit_chain(corpus: &Corpus) -> Vec<Finding> {
    corpus
        .ledgers
        .iter()
        .filter_map(|l| {
            l.audit_chain.as_ref().err().map(|e| {
                Finding::new(
                    Critical,
                    "audit-chain-broken",
                    format!(
                        "ledger {}: {e}; its audit table was edited or truncated outside certfab",
                        l.path
                    ),
                )
                .at(format!("{} audit", l.path))
            })
        })
        .collect()
}

/// Signed checkpoints of the audit chain (`certfab log checkpoint`): `checkpoint-invalid`
/// (critical: a checkpoint whose signature, signer or covered head does not match the chain,
/// e.g. events removed after it was signed), `audit-not-checkpointed` (low: events after the
/// last good checkpoint), `checkpoint-unmatched` (low: an exported checkpoint of no given
/// ledger), `checkpoints-not-checked` (info: no root given).
pub fn checkpoints(corpus: &Corpus) -> Vec<Finding> {
    let mut f = Vec::new();
    if !corpus.checkpoints_checked {
        if !corpus.ledgers.is_empty() {
            f.push(Finding::new(Info, "checkpoints-not-checked", "no self-signed root among the given CA certificates: audit checkpoint signatures were not checked".into()));
        }
        return f;
    }
    for l in &corpus.ledgers {
        let Some(c) = &l.checkpoints else { continue };
        for x in c.checked.iter().filter(|x| !x.problems.is_empty()) {
            f.push(
                Finding::new(
                    Critical,
                    "checkpoint-invalid",
                    format!(
                        "ledger {}: checkpoint {} ({}) over audit event {} signed {}: {}",
                        l.path,
                        x.checkpoint,
                        x.source,
                        x.head_seq,
                        x.at,
                        x.problems.join("; ")
                    ),
                )
                .at(format!("{} checkpoint {}", l.path, x.checkpoint)),
            );
        }
        if c.not_checkpointed > 0 {
            let since = if c.checkpointed_seq > 0 {
                format!("after event {}", c.checkpointed_seq)
            } else {
                "(no good checkpoint yet)".into()
            };
            f.push(
                Finding::new(Low, "audit-not-checkpointed", format!(
                    "ledger {}: {} audit events {since} are not covered by a signed checkpoint; run certfab log checkpoint (and keep the exported copy elsewhere)",
                    l.path, c.not_checkpointed
                ))
                .at(format!("{} audit", l.path)),
            );
        }
    }
    for u in &corpus.unmatched_checkpoints {
        f.push(
            Finding::new(
                Low,
                "checkpoint-unmatched",
                format!("checkpoint {u} belongs to none of the given ledgers; pass its ledger too"),
            )
            .at(u.clone()),
        );
    }
    f
}

/// Signed rows that do not hold what they claim: `ledger-cert-missing` (high, DER gone),
/// `cert-unparseable` and `cert-record-mismatch` (critical: hash, serial or key differ), and
/// `cert-not-in-audit-log` (critical: no hash-chained `issued` event for this certificate).
pub fn cert_records(corpus: &Corpus) -> R<()> {
    let s = &corpus.scratch;
    s.certs("state = 'signed'", [], |c| {
        let l = &corpus.ledgers[c.li];
        let Some(sha) = &c.der_sha256 else {
            return s.push(&cert_finding(High, "ledger-cert-missing", l, &c, format!(
                "ledger {} records serial {} for device {} as signed, but the certificate itself is missing (der is NULL)",
                l.path, c.serial, c.device_id
            )));
        };
        match &c.leaf {
            Some(Err(e)) => s.push(&cert_finding(
                Critical,
                "cert-unparseable",
                l,
                &c,
                format!(
                    "ledger {}: the certificate of device {} (serial {}) does not parse: {e}",
                    l.path, c.device_id, c.serial
                ),
            ))?,
            Some(Ok(leaf)) => {
                let logged = s
                    .first(
                        "SELECT 1 FROM issued WHERE li = ?1 AND serial = ?2 AND sha = ?3",
                        rusqlite::params![c.li as i64, c.serial, sha],
                        |_| Ok(()),
                    )?
                    .is_some();
                if !logged {
                    s.push(&cert_finding(Critical, "cert-not-in-audit-log", l, &c, format!(
                        "ledger {}: the certificate of device {} (serial {}) has no 'issued' event in the audit log; the row was written outside certfab",
                        l.path, c.device_id, c.serial
                    )))?;
                }
                if c.cert_sha256.as_deref().is_some_and(|h| h != sha.as_str()) {
                    s.push(&cert_finding(Critical, "cert-record-mismatch", l, &c, format!(
                        "ledger {}: the certificate of device {} does not match its recorded SHA-256 (recorded {}, actual {sha})",
                        l.path, c.device_id, c.cert_sha256.as_deref().unwrap_or("")
                    )))?;
                }
                if leaf.serial != normal_serial(&c.serial) {
                    s.push(&cert_finding(Critical, "cert-record-mismatch", l, &c, format!(
                        "ledger {}: row says serial {} but the certificate of device {} has serial {}",
                        l.path, c.serial, c.device_id, leaf.serial
                    )))?;
                }
            }
            None => {}
        }
        Ok(())
    })
}

/// Devices whose state says they hold a certificate the ledger does not have
/// (`ledger-cert-missing`, high), or whose recorded key is not the certificate's
/// (`cert-record-mismatch`, critical).
pub fn device_records(corpus: &Corpus) -> R<()> {
    let s = &corpus.scratch;
    s.devices("live = 1 OR state = 'revoked'", [], |d| {
        let l = &corpus.ledgers[d.li];
        let serial = d.serial.as_deref().unwrap_or("");
        let loc = row_loc(l, "devices", d.rowid);
        // The signed row with the device's serial (the last, if the ledger holds several).
        let row = s.first(
            "SELECT leaf, l_spki FROM cert WHERE li = ?1 AND profile = ?2 AND device_id = ?3
               AND serial = ?4 AND state = 'signed' ORDER BY rowid DESC LIMIT 1",
            rusqlite::params![d.li as i64, d.profile, d.device_id, serial],
            |r| Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<String>>(1)?)),
        )?;
        match row {
            None => s.push(
                &Finding::new(High, "ledger-cert-missing", format!(
                    "ledger {}: device {} is {} with serial {}, but no signed certificate row holds that serial",
                    l.path, d.device_id, d.state, if serial.is_empty() { "(none)" } else { serial }
                ))
                .at(loc)
                .device(&d.device_id)
                .serial(serial),
            ),
            Some((Some(1), Some(spki))) if spki != d.spki_sha256 => s.push(
                &Finding::new(Critical, "cert-record-mismatch", format!(
                    "ledger {}: device {} is recorded with key {} but its certificate certifies key {}",
                    l.path, d.device_id, short(&d.spki_sha256), short(&spki)
                ))
                .at(loc)
                .device(&d.device_id)
                .serial(serial),
            ),
            Some(_) => Ok(()),
        }
    })
}

fn short(h: &str) -> &str {
    &h[..h.len().min(16)]
}

/// `cert-not-chaining` (critical): a signed certificate that no given CA signed.
pub fn chains(corpus: &Corpus) -> R<()> {
    let s = &corpus.scratch;
    s.certs("leaf = 1 AND l_ca IS NULL", [], |c| {
        let l = &corpus.ledgers[c.li];
        let Some(Ok(leaf)) = &c.leaf else {
            return Ok(());
        };
        s.push(&cert_finding(Critical, "cert-not-chaining", l, &c, format!(
            "ledger {}: the certificate of device {} (serial {}) names issuer '{}', and none of the {} given CA certificates signed it",
            l.path, c.device_id, c.serial, leaf.issuer_name, corpus.cas.len()
        )))
    })
}

/// `ca-chain-incomplete` (medium): a given CA that is not a self-signed root and whose issuer
/// is not among the given CAs, so the chain up to a root cannot be checked.
pub fn ca_chains(corpus: &Corpus) -> Vec<Finding> {
    let mut f = Vec::new();
    for c in &corpus.cas {
        if c.cert.is_self_signed() {
            continue;
        }
        let parent = corpus
            .cas
            .iter()
            .any(|p| p.cert.der != c.cert.der && c.cert.check_signed_by(&p.cert).is_ok());
        if !parent {
            f.push(
                Finding::new(Medium, "ca-chain-incomplete", format!(
                    "CA {} ({}) is not self-signed and no given CA certificate signed it; pass its issuer (up to the root) with --ca",
                    c.cert.source, c.subject
                ))
                .at(c.cert.source.clone()),
            );
        }
    }
    f
}

/// Whether a certificate matches its profile; returns what differs.
fn profile_differences(leaf: &Full, ca: &CaCert, p: &Profile, device_id: &str) -> Vec<String> {
    let mut d = Vec::new();
    let tbs = &leaf.cert.tbs_certificate;
    // The profile's own pre-issuance lint, re-run on what was signed.
    match tbs.to_der() {
        Ok(tbs_der) => {
            match SignatureAlgorithm::from_identifier(&leaf.cert.signature_algorithm.owned_to_ref())
            {
                Ok(alg) => {
                    let ok: Vec<_> = p
                        .extensions
                        .iter()
                        .map(|x| x.oid)
                        .chain(p.csr_allowed_extensions.iter().copied())
                        .collect();
                    for m in crate::issue::lint(&tbs_der, alg, &leaf.key, ca, Some(p), &ok) {
                        // How the certificate's validity sits in the CA's is about the CA
                        // given (ca-expires-before-devices), not about the profile.
                        if !m.starts_with("notAfter is after the CA's")
                            && !m.starts_with("notBefore is before the CA's")
                        {
                            d.push(format!("lint: {m}"));
                        }
                    }
                }
                Err(e) => d.push(format!("signature algorithm: {e}")),
            }
        }
        Err(e) => d.push(format!("TBS does not encode: {e}")),
    }
    if let Err(e) = crate::csr::check_key(&leaf.key, &p.keys, &p.name) {
        d.push(format!("key: {e}"));
    }
    let want_ku = crate::issue::usage_bits(&p.key_usage);
    match tbs.get::<KeyUsage>() {
        Ok(Some((_, ku))) if ku.0 == want_ku => {}
        Ok(Some((_, ku))) => d.push(format!(
            "keyUsage is {:?}, the profile says {:?}",
            ku.0, want_ku
        )),
        Ok(None) => d.push("keyUsage is missing".into()),
        Err(e) => d.push(format!("keyUsage does not parse: {e}")),
    }
    let want_eku: BTreeSet<String> = p.extended_key_usage.iter().map(|o| o.to_string()).collect();
    let have_eku: BTreeSet<String> = match tbs.get::<ExtendedKeyUsage>() {
        Ok(Some((_, e))) => e.0.iter().map(|o| o.to_string()).collect(),
        Ok(None) => BTreeSet::new(),
        Err(e) => {
            d.push(format!("extendedKeyUsage does not parse: {e}"));
            BTreeSet::new()
        }
    };
    if want_eku != have_eku {
        d.push(format!(
            "extendedKeyUsage is [{}], the profile says [{}]",
            eku_names(&have_eku),
            eku_names(&want_eku)
        ));
    }
    match (p.validity.duration, leaf.not_after) {
        (None, None) => {}
        (None, Some(na)) => d.push(format!(
            "notAfter is {}, the profile says no expiry (99991231235959Z)",
            crate::clock::rfc3339(na)
        )),
        (Some(_), None) => {
            d.push("the certificate never expires, the profile sets a validity".into())
        }
        (Some(dur), Some(na)) => {
            let have = na - leaf.not_before;
            let max = dur + p.validity.backdate + time::Duration::seconds(1);
            // Backdating is cut at the CA's notBefore and clamping shortens: only the upper
            // bound is exact; without clamping, the lifetime is at least the duration.
            let min = if p.validity.clamp_to_issuer {
                time::Duration::ZERO
            } else {
                dur - time::Duration::seconds(1)
            };
            if have > max || have < min {
                d.push(format!(
                    "lifetime is {} s, the profile allows {} s (validity {} s + backdate {} s)",
                    have.whole_seconds(),
                    (dur + p.validity.backdate).whole_seconds(),
                    dur.whole_seconds(),
                    p.validity.backdate.whole_seconds()
                ));
            }
        }
    }
    let have_attrs: Vec<(der::asn1::ObjectIdentifier, Option<String>)> = tbs
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .map(|a| (a.oid, crate::x509::any_text(&a.value)))
        .collect();
    let want: Vec<String> = p.subject.iter().map(|(a, _)| a.name.clone()).collect();
    let have: Vec<String> = have_attrs
        .iter()
        .map(|(o, _)| crate::x509::AttrType::name_of(*o))
        .collect();
    if want != have {
        d.push(format!(
            "subject attributes are [{}], the profile says [{}]",
            have.join(", "),
            want.join(", ")
        ));
    } else {
        let vars = crate::profile::Vars {
            device_id: Some(device_id.to_string()),
            values: BTreeMap::new(),
        };
        for ((attr, t), (_, value)) in p.subject.iter().zip(&have_attrs) {
            // Only values the audit can recompute: literals and {device_id}.
            if t.placeholders().all(|v| v == "device_id") {
                if let Ok(expect) = t.render(&vars) {
                    if value.as_deref() != Some(expect.as_str()) {
                        d.push(format!(
                            "subject {} is {:?}, the profile renders {:?}",
                            attr.name,
                            value.as_deref().unwrap_or("?"),
                            expect
                        ));
                    }
                }
            }
        }
    }
    d
}

fn eku_names(s: &BTreeSet<String>) -> String {
    s.iter()
        .map(|o| match o.as_str() {
            "1.3.6.1.5.5.7.3.1" => "serverAuth".to_string(),
            "1.3.6.1.5.5.7.3.2" => "clientAuth".to_string(),
            "1.3.6.1.5.5.7.3.3" => "codeSigning".to_string(),
            "1.3.6.1.5.5.7.3.4" => "emailProtection".to_string(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Certificates against their profiles: `profile-mismatch` (high), `profile-unknown` and
/// `profile-changed` (low), `profile-unloadable` (low); `profiles-not-checked` (info) when no
/// profiles were given.
pub fn profiles(corpus: &Corpus) -> R<()> {
    let s = &corpus.scratch;
    for e in &corpus.profile_errors {
        s.push(&Finding::new(
            Low,
            "profile-unloadable",
            format!("profile does not load, its certificates are not checked: {e}"),
        ))?;
    }
    if corpus.profiles.is_empty() {
        if s.first("SELECT 1 FROM cert LIMIT 1", [], |_| Ok(()))?
            .is_some()
        {
            s.push(&Finding::new(
                Info,
                "profiles-not-checked",
                "no profiles given (--profiles DIR or a site config's profiles_dir): certificates were not compared with their profiles".into(),
            ))?;
        }
        return Ok(());
    }
    for (li, l) in corpus.ledgers.iter().enumerate() {
        let mut unknown = BTreeSet::new();
        for (id, b) in &l.batches {
            match corpus.profiles.get(&b.profile) {
                None => {
                    unknown.insert(b.profile.clone());
                }
                Some(p) if hex::encode(p.sha256) != b.profile_sha256 => s.push(
                    &Finding::new(Low, "profile-changed", format!(
                        "ledger {}: batch {id} was issued with a profile '{}' whose file hash was {}, the given profile file ({}) is {}; certificates are checked against the given one",
                        l.path, b.profile, short(&b.profile_sha256), p.path.display(), short(&hex::encode(p.sha256))
                    ))
                    .at(format!("{} batches {id}", l.path)),
                )?,
                Some(_) => {}
            }
        }
        for name in unknown {
            s.push(&Finding::new(Low, "profile-unknown", format!(
                "ledger {}: profile '{name}' is not among the given profiles, so its certificates are not compared with it",
                l.path
            )).at(l.path.clone()))?;
        }
        s.certs("li = ?1 AND leaf = 1 AND ndiffs > 0", [li as i64], |c| {
            let Some(Ok(Leaf {
                profile_diffs: Some(diffs),
                ..
            })) = &c.leaf
            else {
                return Ok(());
            };
            s.push(&cert_finding(High, "profile-mismatch", l, &c, format!(
                "ledger {}: the certificate of device {} (serial {}) does not match profile '{}': {}",
                l.path, c.device_id, c.serial, c.profile, diffs.join("; ")
            )))
        })?;
    }
    Ok(())
}

/// `duplicate-serial` (critical): one (issuer, serial) recorded by more than one ledger.
pub fn duplicate_serials(corpus: &Corpus) -> R<()> {
    let s = &corpus.scratch;
    s.each(
        "SELECT ikid, nserial FROM cert GROUP BY ikid, nserial HAVING COUNT(*) > 1
         ORDER BY ikid, nserial",
        [],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        |(ikid, serial)| {
            let mut v = Vec::new();
            s.certs("ikid = ?1 AND nserial = ?2", [&ikid, &serial], |c| {
                v.push(c);
                Ok(())
            })?;
            let who: Vec<String> = v
                .iter()
                .map(|c| {
                    let l = &corpus.ledgers[c.li];
                    format!("{} ({}, device {}, station {})", l.path, c.state, c.device_id, l.station_of(&c.batch_id))
                })
                .collect();
            let mut fi = Finding::new(Critical, "duplicate-serial", format!(
                "serial {serial} of CA key {} is recorded {} times: {}; two stations share a serial prefix or a ledger was copied",
                short(&ikid), v.len(), who.join("; ")
            ))
            .serial(serial.clone())
            .device(v[0].device_id.clone());
            for c in &v {
                fi = fi.at(row_loc(&corpus.ledgers[c.li], "certificates", c.rowid));
            }
            s.push(&fi)
        },
    )
}

/// `duplicate-device-id` (critical): one (profile, device id) live in more than one ledger.
pub fn duplicate_devices(corpus: &Corpus) -> R<()> {
    let s = &corpus.scratch;
    s.each(
        "SELECT profile, device_id FROM dev WHERE live = 1 GROUP BY profile, device_id
         HAVING COUNT(*) > 1 ORDER BY profile, device_id",
        [],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        |(profile, id)| {
            let v = members(s, "live = 1 AND profile = ?1 AND device_id = ?2", [&profile, &id])?;
            let who: Vec<String> = v
                .iter()
                .map(|d| {
                    let l = &corpus.ledgers[d.li];
                    format!("{} (serial {}, station {})", l.path, d.serial.as_deref().unwrap_or("?"), l.station_of(&d.batch_id))
                })
                .collect();
            let mut fi = Finding::new(Critical, "duplicate-device-id", format!(
                "device {id} (profile {profile}) has a live certificate in {} ledgers: {}; revoke all but one",
                v.len(), who.join("; ")
            ))
            .device(id.clone());
            for d in &v {
                fi = fi.at(row_loc(&corpus.ledgers[d.li], "devices", d.rowid));
            }
            s.push(&fi)
        },
    )
}

/// The device rows of one group (a duplicate is a handful of rows).
fn members(s: &super::Scratch, filter: &str, params: impl rusqlite::Params) -> R<Vec<DeviceRec>> {
    let mut v = Vec::new();
    s.devices(filter, params, |d| {
        v.push(d);
        Ok(())
    })?;
    Ok(v)
}

/// `duplicate-public-key` (critical): one public key live for more than one device id.
pub fn duplicate_keys(corpus: &Corpus) -> R<()> {
    let s = &corpus.scratch;
    s.each(
        "SELECT spki FROM dev WHERE live = 1 GROUP BY spki HAVING COUNT(DISTINCT device_id) > 1
         ORDER BY spki",
        [],
        |r| r.get::<_, String>(0),
        |spki| {
            let v = members(s, "live = 1 AND spki = ?1", [&spki])?;
            let who: Vec<String> = v
                .iter()
                .map(|d| format!("device {} in {}", d.device_id, corpus.ledgers[d.li].path))
                .collect();
            let mut fi = Finding::new(Critical, "duplicate-public-key", format!(
                "public key {} is certified for {} device ids: {}; one key must belong to one device",
                short(&spki), v.len(), who.join("; ")
            ))
            .device(v[0].device_id.clone());
            for d in &v {
                fi = fi.at(row_loc(&corpus.ledgers[d.li], "devices", d.rowid));
            }
            s.push(&fi)
        },
    )
}

fn tenant_name(t: Option<&str>) -> &str {
    t.unwrap_or("(no tenant)")
}

/// `tenant-mixing` (critical): one public key live under more than one tenant, or a
/// certificate signed by a CA the site config gives to another tenant than the batch's.
pub fn tenant_mixing(corpus: &Corpus) -> R<()> {
    let s = &corpus.scratch;
    // Only a key live more than once can be live under two tenants.
    s.each(
        "SELECT spki FROM dev WHERE live = 1 GROUP BY spki HAVING COUNT(*) > 1 ORDER BY spki",
        [],
        |r| r.get::<_, String>(0),
        |spki| {
            let v = members(s, "live = 1 AND spki = ?1", [&spki])?;
            let tenants: BTreeSet<&str> = v
                .iter()
                .map(|d| tenant_name(corpus.ledgers[d.li].tenant_of(&d.batch_id)))
                .collect();
            if tenants.len() < 2 {
                return Ok(());
            }
            let who: Vec<String> = v
                .iter()
                .map(|d| {
                    let l = &corpus.ledgers[d.li];
                    format!(
                        "device {} profile {} tenant {} in {}",
                        d.device_id,
                        d.profile,
                        tenant_name(l.tenant_of(&d.batch_id)),
                        l.path
                    )
                })
                .collect();
            let mut fi = Finding::new(Critical, "tenant-mixing", format!(
                "public key {} is certified for {} tenants ({}): {}; a device key belongs to one tenant",
                short(&spki),
                tenants.len(),
                tenants.into_iter().collect::<Vec<_>>().join(", "),
                who.join("; ")
            ))
            .device(v[0].device_id.clone());
            for d in &v {
                fi = fi.at(row_loc(&corpus.ledgers[d.li], "devices", d.rowid));
            }
            s.push(&fi)
        },
    )?;
    // Only a CA the site config gives a tenant can be given to another one.
    if corpus.cas.iter().all(|c| c.tenant.is_none()) {
        return Ok(());
    }
    s.certs("leaf = 1 AND l_ca IS NOT NULL", [], |c| {
        let l = &corpus.ledgers[c.li];
        let Some(ca) = c
            .leaf
            .as_ref()
            .and_then(|x| x.as_ref().ok())
            .and_then(|x| x.ca)
            .and_then(|i| corpus.cas.get(i))
        else {
            return Ok(());
        };
        let batch_tenant = l.tenant_of(&c.batch_id);
        if ca.tenant.is_some() && ca.tenant.as_deref() != batch_tenant {
            s.push(&cert_finding(Critical, "tenant-mixing", l, &c, format!(
                "ledger {}: device {} (serial {}) was issued for tenant {} by CA {}, which the site config gives to tenant {}",
                l.path, c.device_id, c.serial, tenant_name(batch_tenant), ca.cert.source,
                tenant_name(ca.tenant.as_deref())
            )))?;
        }
        Ok(())
    })
}

/// `serial-prefix-shared` (medium): stations issuing under one CA key with the same first
/// serial byte; random bytes make a collision unlikely, but the prefix is what keeps stations
/// apart by construction.
pub fn serial_prefixes(corpus: &Corpus) -> R<Vec<Finding>> {
    let mut seen: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    // One row per (CA key, prefix, ledger, batch): as many as batches, not devices.
    corpus.scratch.each(
        "SELECT ikid, prefix, li, batch_id FROM cert GROUP BY ikid, prefix, li, batch_id",
        [],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)? as usize,
                r.get::<_, String>(3)?,
            ))
        },
        |(ikid, prefix, li, batch_id)| {
            let l = &corpus.ledgers[li];
            seen.entry((ikid, prefix)).or_default().insert(format!(
                "{} ({})",
                l.station_of(&batch_id),
                l.path
            ));
            Ok(())
        },
    )?;
    Ok(seen.into_iter()
        .filter(|(_, s)| s.len() > 1)
        .map(|((ikid, prefix), s)| {
            Finding::new(Medium, "serial-prefix-shared", format!(
                "serial prefix 0x{prefix} under CA key {} is used by {} stations: {}; give each station its own station.serial_prefix",
                short(&ikid), s.len(), s.into_iter().collect::<Vec<_>>().join(", ")
            ))
        })
        .collect())
}

/// `cert-without-record` (critical): a certificate in a manifest or a file that no given
/// ledger recorded.
pub fn unrecorded_certs(corpus: &Corpus) -> R<()> {
    let s = &corpus.scratch;
    s.cert_files(
        "NOT EXISTS (SELECT 1 FROM cert WHERE der_sha = c.sha)",
        |cf| {
            s.push(
                &Finding::new(Critical, "cert-without-record", format!(
                    "{} (certificate {}) holds a certificate for '{}' (serial {}) that none of the given ledgers recorded",
                    cf.path, cf.index, cf.subject, cf.serial
                ))
                .at(format!("{} #{}", cf.path, cf.index))
                .serial(cf.serial),
            )
        },
    )?;
    s.manifest_devices(
        "NOT EXISTS (SELECT 1 FROM cert WHERE der_sha = m.sha)",
        |d| {
            let m = &corpus.manifests[d.mi];
            s.push(
                &Finding::new(Critical, "cert-without-record", format!(
                    "manifest {} line {}: the certificate of device {} (serial {}) is in none of the given ledgers",
                    m.path, d.line, d.device_id, d.serial
                ))
                .at(format!("{} line {}", m.path, d.line))
                .device(&d.device_id)
                .serial(&d.serial),
            )
        },
    )
}

/// `manifest-invalid` (critical): a manifest whose signature, signer chain, Merkle root,
/// count or certificates do not verify (its devices are not used by the other checks).
pub fn manifests_invalid(corpus: &Corpus) -> Vec<Finding> {
    corpus
        .manifests
        .iter()
        .filter_map(|m| {
            m.invalid.as_ref().map(|why| {
                Finding::new(
                    Critical,
                    "manifest-invalid",
                    format!(
                        "manifest {} does not verify, so none of its devices can be trusted: {why}",
                        m.path
                    ),
                )
                .at(m.path.clone())
            })
        })
        .collect()
}

/// `manifest-ledger-mismatch` (high): a manifest device whose certificate the ledgers know,
/// but under another device id, or whose device the ledgers hold with a different current
/// serial without recording the manifest's as superseded or revoked.
pub fn manifest_vs_ledger(corpus: &Corpus) -> R<()> {
    let s = &corpus.scratch;
    s.manifest_devices("1", |d| {
        let m = &corpus.manifests[d.mi];
        // The row holding this certificate (the last read, if several do).
        let mut found = None;
        s.certs("der_sha = ?1", [&d.cert_sha256], |c| {
            found = Some(c);
            Ok(())
        })?;
        let Some(c) = found else { return Ok(()) };
        let l = &corpus.ledgers[c.li];
        let mut why = Vec::new();
        if c.device_id != d.device_id {
            why.push(format!(
                "the ledger records this certificate for device {}",
                c.device_id
            ));
        }
        if normal_serial(&c.serial) != normal_serial(&d.serial) {
            why.push(format!(
                "the manifest says serial {}, the ledger {}",
                d.serial, c.serial
            ));
        }
        let batch_tenant = l.tenant_of(&c.batch_id);
        if batch_tenant != m.tenant.as_deref() {
            why.push(format!(
                "the manifest is for tenant {}, the ledger issued it for tenant {}",
                tenant_name(m.tenant.as_deref()),
                tenant_name(batch_tenant)
            ));
        }
        let li = c.li as i64;
        let has_status = s
            .first(
                "SELECT 1 FROM status WHERE li = ?1 AND ikid = ?2 AND serial = ?3",
                rusqlite::params![li, c.issuer_key_id, c.serial],
                |_| Ok(()),
            )?
            .is_some();
        // The device's first row in the ledger, and its current serial.
        let current = s.first(
            "SELECT serial FROM dev WHERE li = ?1 AND profile = ?2 AND device_id = ?3
             ORDER BY rowid LIMIT 1",
            rusqlite::params![li, c.profile, c.device_id],
            |r| r.get::<_, Option<String>>(0),
        )?;
        if let Some(cur) = current {
            if cur.as_deref() != Some(c.serial.as_str()) && !has_status {
                why.push(format!(
                    "the ledger's current certificate for the device is serial {} and this one is not recorded as superseded or revoked",
                    cur.as_deref().unwrap_or("(none)")
                ));
            }
        }
        if why.is_empty() {
            return Ok(());
        }
        s.push(
            &Finding::new(
                High,
                "manifest-ledger-mismatch",
                format!(
                    "manifest {} line {} (device {}): {}",
                    m.path,
                    d.line,
                    d.device_id,
                    why.join("; ")
                ),
            )
            .at(format!("{} line {}", m.path, d.line))
            .at(row_loc(l, "certificates", c.rowid))
            .device(&d.device_id)
            .serial(&d.serial),
        )
    })
}

/// `install-unconfirmed` and `install-interrupted` (medium), `signed-not-installed` (low).
pub fn install_states(corpus: &Corpus) -> R<()> {
    let s = &corpus.scratch;
    s.devices(
        "state IN ('install_unconfirmed', 'installing', 'signed')",
        [],
        |d| {
            let l = &corpus.ledgers[d.li];
            let (sev, code, what) = match d.state.as_str() {
                "install_unconfirmed" => (Medium, "install-unconfirmed", "the install was sent but the device never confirmed it; present the device again (it gets the same certificate) or check what it holds"),
                "installing" => (Medium, "install-interrupted", "the station stopped while installing; present the device again"),
                _ => (Low, "signed-not-installed", "signed but never installed on a device; install it, or revoke it if the device is gone"),
            };
            s.push(
                &Finding::new(
                    sev,
                    code,
                    format!(
                        "ledger {}: device {} (profile {}, serial {}, since {}): {what}",
                        l.path,
                        d.device_id,
                        d.profile,
                        d.serial.as_deref().unwrap_or("?"),
                        d.updated_at
                    ),
                )
                .at(row_loc(l, "devices", d.rowid))
                .device(&d.device_id)
                .serial(d.serial.clone().unwrap_or_default()),
            )
        },
    )
}

/// `cert-expired` (medium) and `cert-expiring` (low, within `--expiring-days`) for live
/// certificates.
pub fn expiry(corpus: &Corpus, opts: &Options) -> R<()> {
    let s = &corpus.scratch;
    let horizon = opts.now + time::Duration::days(opts.expiring_days);
    // notAfter is whole seconds: `na <= floor(horizon)` is `na <= horizon`.
    s.certs(
        &format!("leaf = 1 AND l_na IS NOT NULL AND l_na <= ?1 AND {IS_LIVE}"),
        [horizon.unix_timestamp()],
        |c| {
            let l = &corpus.ledgers[c.li];
            let Some(Ok(Leaf {
                not_after: Some(na),
                ..
            })) = c.leaf
            else {
                return Ok(());
            };
            if na > horizon {
                return Ok(());
            }
            let (sev, code, verb) = if na <= opts.now {
                (Medium, "cert-expired", "expired")
            } else {
                (Low, "cert-expiring", "expires")
            };
            s.push(&cert_finding(
                sev,
                code,
                l,
                &c,
                format!(
                    "ledger {}: the certificate of device {} (serial {}) {verb} at {}; renew it",
                    l.path,
                    c.device_id,
                    c.serial,
                    crate::clock::rfc3339(na)
                ),
            ))
        },
    )
}

/// `ca-expires-before-devices` (medium): a CA whose certificate ends before certificates it
/// signed; `ca-expired` (high) and `ca-expiring` (low) for the CA itself.
pub fn ca_expiry(corpus: &Corpus, opts: &Options) -> R<Vec<Finding>> {
    let s = &corpus.scratch;
    let horizon = opts.now + time::Duration::days(opts.expiring_days);
    // No expiry (99991231235959Z) outlives any dated CA.
    const NO_EXPIRY: i64 = 253_402_300_799;
    let mut f = Vec::new();
    for (ci, ca) in corpus.cas.iter().enumerate() {
        let Some(ca_na) = ca.cert.not_after else {
            continue;
        };
        if ca_na <= opts.now {
            f.push(
                Finding::new(
                    High,
                    "ca-expired",
                    format!(
                        "CA {} ({}) expired at {}; devices chaining to it fail validation",
                        ca.cert.source,
                        ca.subject,
                        crate::clock::rfc3339(ca_na)
                    ),
                )
                .at(ca.cert.source.clone()),
            );
        } else if ca_na <= horizon {
            f.push(
                Finding::new(
                    Low,
                    "ca-expiring",
                    format!(
                        "CA {} ({}) expires at {}, within {} days",
                        ca.cert.source,
                        ca.subject,
                        crate::clock::rfc3339(ca_na),
                        opts.expiring_days
                    ),
                )
                .at(ca.cert.source.clone()),
            );
        }
        // The live certificates it signed that end after it: how many, and the first (in
        // ledger order) of those that end last.
        let outliving_sql = format!(
            "FROM cert c WHERE leaf = 1 AND l_ca = ?1 AND COALESCE(l_na, {NO_EXPIRY}) > ?2
               AND {IS_LIVE}"
        );
        let (outliving, last) = s
            .first(
                &format!("SELECT COUNT(*), MAX(COALESCE(l_na, {NO_EXPIRY})) {outliving_sql}"),
                [ci as i64, ca_na.unix_timestamp()],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?)),
            )?
            .unwrap_or((0, None));
        let Some(last) = last.filter(|_| outliving > 0) else {
            continue;
        };
        let dev = s
            .first(
                &format!(
                    "SELECT device_id {outliving_sql} AND COALESCE(l_na, {NO_EXPIRY}) = ?3
                     ORDER BY rowid LIMIT 1"
                ),
                [ci as i64, ca_na.unix_timestamp(), last],
                |r| r.get::<_, String>(0),
            )?
            .unwrap_or_default();
        let t = OffsetDateTime::from_unix_timestamp(last).unwrap_or(ca_na);
        f.push(Finding::new(Medium, "ca-expires-before-devices", format!(
            "CA {} ({}) expires at {}, before {outliving} live device certificates it signed (the last, device {dev}, runs to {}); those devices stop validating when the CA does. Re-sign the CA for longer or plan a rollover",
            ca.cert.source, ca.subject, crate::clock::rfc3339(ca_na), crate::clock::rfc3339(t)
        )).at(ca.cert.source.clone()).device(dev));
    }
    Ok(f)
}

/// Revocations and CRLs (`certfab revoke`, `certfab crl`): `revocation-not-published`
/// (medium: a revoked certificate its CA's latest recorded CRL does not list), `crl-stale`
/// (medium: the latest CRL of a CA key is past its nextUpdate), `crl-not-chaining` (high: the
/// latest CRL is signed by none of the given CAs, or does not parse).
pub fn revocations(corpus: &Corpus, opts: &Options) -> R<()> {
    let s = &corpus.scratch;
    for (li, l) in corpus.ledgers.iter().enumerate() {
        let mut latest: BTreeMap<&str, &super::CrlRec> = BTreeMap::new();
        for c in &l.crls {
            latest
                .entry(c.issuer_key_id.as_str())
                .and_modify(|x| {
                    if c.number > x.number {
                        *x = c;
                    }
                })
                .or_insert(c);
        }
        for (ikid, crl) in &latest {
            let loc = format!("{} crls {} #{}", l.path, short(ikid), crl.number);
            match &crl.serials {
                Err(e) => s.push(&Finding::new(High, "crl-not-chaining", format!(
                    "ledger {}: CRL #{} of CA key {} does not parse: {e}", l.path, crl.number, short(ikid)
                )).at(loc.clone()))?,
                Ok(_) if crl.ca.is_none() => s.push(&Finding::new(High, "crl-not-chaining", format!(
                    "ledger {}: CRL #{} of CA key {} is signed by none of the given CA certificates",
                    l.path, crl.number, short(ikid)
                )).at(loc.clone()))?,
                Ok(_) => {}
            }
            if let Some(nu) = crl.next_update {
                if nu <= opts.now {
                    s.push(&Finding::new(Medium, "crl-stale", format!(
                        "ledger {}: the latest CRL of CA key {} (#{}, issued {}) was due for renewal at {}; relying parties that require a current CRL refuse every device of this CA. Run certfab crl",
                        l.path, short(ikid), crl.number, crl.this_update, crate::clock::rfc3339(nu)
                    )).at(loc))?;
                }
            }
        }
        s.certs(
            "c.li = ?1 AND EXISTS (SELECT 1 FROM status s WHERE s.li = c.li
               AND s.ikid = c.ikid AND s.serial = c.serial AND s.status = 'revoked')",
            [li as i64],
            |c| {
                let listed = latest.get(c.issuer_key_id.as_str()).map(|crl| {
                    (
                        crl.number,
                        crl.serials
                            .as_ref()
                            .is_ok_and(|s| s.contains(&normal_serial(&c.serial))),
                    )
                });
                let why = match listed {
                    Some((_, true)) => return Ok(()),
                    Some((n, false)) => format!("the latest CRL (#{n}) of its CA does not list it"),
                    None => "no CRL of its CA is recorded".to_string(),
                };
                s.push(&cert_finding(Medium, "revocation-not-published", l, &c, format!(
                    "ledger {}: the certificate of device {} (serial {}) is revoked but {why}; relying parties still accept it. Run certfab crl and publish it",
                    l.path, c.device_id, c.serial
                )))
            },
        )?;
    }
    Ok(())
}

/// `intent-pending` (low): serials reserved but neither signed nor burned (a run that is in
/// progress or died; the next open of the ledger burns them). `serials-burned` (info).
pub fn pending_and_burned(corpus: &Corpus) -> R<Vec<Finding>> {
    let mut f = Vec::new();
    for (li, l) in corpus.ledgers.iter().enumerate() {
        let count = |state: &str| {
            corpus.scratch.count(
                "SELECT COUNT(*) FROM cert WHERE li = ?1 AND state = ?2",
                rusqlite::params![li as i64, state],
            )
        };
        let intents = count("intent")?;
        let burned = count("burned")?;
        if intents > 0 {
            f.push(Finding::new(Low, "intent-pending", format!(
                "ledger {}: {intents} serials are reserved but not signed; a run is in progress or died (the next run burns them)",
                l.path
            )).at(l.path.clone()));
        }
        if burned > 0 {
            f.push(Finding::new(Info, "serials-burned", format!(
                "ledger {}: {burned} serials burned (signing failed or was interrupted; never signed, never reused)",
                l.path
            )).at(l.path.clone()));
        }
    }
    Ok(f)
}

/// `rejections` (info): rejected requests per ledger, by reason category.
pub fn rejections(corpus: &Corpus) -> R<Vec<Finding>> {
    let s = &corpus.scratch;
    let mut f = Vec::new();
    for (li, l) in corpus.ledgers.iter().enumerate() {
        let mut by: BTreeMap<&'static str, u64> = BTreeMap::new();
        s.each(
            "SELECT kind, reason FROM rej WHERE li = ?1",
            [li as i64],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            |(kind, reason)| {
                *by.entry(super::counts::reason_category(&kind, &reason))
                    .or_default() += 1;
                Ok(())
            },
        )?;
        s.each(
            "SELECT reason FROM att WHERE li = ?1 AND outcome = 'refused'",
            [li as i64],
            |r| r.get::<_, String>(0),
            |reason| {
                *by.entry(super::counts::reason_category("refused", &reason))
                    .or_default() += 1;
                Ok(())
            },
        )?;
        if !by.is_empty() {
            let total: u64 = by.values().sum();
            let parts: Vec<String> = by.iter().map(|(k, v)| format!("{k} {v}")).collect();
            f.push(
                Finding::new(
                    Info,
                    "rejections",
                    format!(
                        "ledger {}: {total} requests rejected: {}",
                        l.path,
                        parts.join(", ")
                    ),
                )
                .at(l.path.clone()),
            );
        }
    }
    Ok(f)
}
