//! Ledger records of the certificate lifecycle after issuance: revocations (with the keys they
//! retire), CRLs issued with their monotonic numbers, and the certificate lookups revoke and
//! renew start from.

use super::db::{p, Row, Value};
use super::{stamp, Ledger, LedgerError};

/// A signed certificate as the ledger has it, with its device's current state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertRecord {
    /// Issuing CA key identifier, hex.
    pub issuer_key_id: String,
    /// Serial, hex.
    pub serial: String,
    pub profile: String,
    pub device_id: String,
    /// Batch that issued it.
    pub batch_id: String,
    /// Tenant of that batch, if any.
    pub tenant: Option<String>,
    #[serde(skip)]
    pub der: Vec<u8>,
    /// SHA-256 of the DER, hex (AWS IoT's certificate id).
    pub cert_sha256: String,
    /// SHA-256 of the certified SPKI, hex (when recorded).
    pub spki_sha256: Option<String>,
    /// Whether this is the device's current certificate.
    pub current: bool,
    /// The device's state.
    pub device_state: super::DeviceState,
    /// Revocation, if revoked: (reason, at).
    pub revoked: Option<(String, String)>,
    /// Superseded at, if so.
    pub superseded: Option<String>,
}

const CERT_SELECT: &str = "SELECT c.issuer_key_id, c.serial, c.profile, c.device_id, c.batch_id, b.tenant, c.der,
        c.cert_sha256, c.spki_sha256, (d.serial = c.serial), d.state,
        r.reason, r.at, s.at
    FROM certificates c
    JOIN batches b ON b.id = c.batch_id
    JOIN devices d ON d.profile = c.profile AND d.device_id = c.device_id
    LEFT JOIN cert_status r ON r.issuer_key_id = c.issuer_key_id AND r.serial = c.serial AND r.status = 'revoked'
    LEFT JOIN cert_status s ON s.issuer_key_id = c.issuer_key_id AND s.serial = c.serial AND s.status = 'superseded'
    WHERE c.state = 'signed'";

fn cert_row(r: &Row) -> Result<CertRecord, LedgerError> {
    let reason: Option<String> = r.get(11)?;
    let at: Option<String> = r.get(12)?;
    Ok(CertRecord {
        issuer_key_id: r.get(0)?,
        serial: r.get(1)?,
        profile: r.get(2)?,
        device_id: r.get(3)?,
        batch_id: r.get(4)?,
        tenant: r.get(5)?,
        der: r.get(6)?,
        cert_sha256: r.get::<Option<String>>(7)?.unwrap_or_default(),
        spki_sha256: r.get(8)?,
        current: r.get::<Option<bool>>(9)?.unwrap_or(false),
        device_state: r.get(10)?,
        revoked: reason.zip(at),
        superseded: r.get(13)?,
    })
}

/// A CRL as recorded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CrlRecord {
    /// CA key identifier, hex.
    pub issuer_key_id: String,
    /// CRL number.
    pub number: i64,
    /// CA name.
    pub ca: String,
    /// thisUpdate, RFC 3339.
    pub this_update: String,
    /// nextUpdate, RFC 3339.
    pub next_update: String,
    /// Entries listed.
    pub entries: i64,
    /// SHA-256 of the DER, hex.
    pub sha256: String,
}

impl Ledger {
    /// Signed certificates matching `cond` (an SQL condition on `c.`/`d.` columns with
    /// parameters `args`), oldest first.
    fn certs_where(&self, cond: &str, args: &[Value]) -> Result<Vec<CertRecord>, LedgerError> {
        let sql = format!("{CERT_SELECT} AND {cond} ORDER BY c.created_at, c.rowid");
        self.conn.map(&sql, args, cert_row)
    }

    /// Every signed certificate of a device id (in `profile`, or in any profile).
    pub fn device_certificates(
        &self,
        device_id: &str,
        profile: Option<&str>,
    ) -> Result<Vec<CertRecord>, LedgerError> {
        match profile {
            Some(p) => self.certs_where("c.device_id = ?1 AND c.profile = ?2", p![device_id, p]),
            None => self.certs_where("c.device_id = ?1", p![device_id]),
        }
    }

    /// Signed certificates with this serial (hex, any case; one per issuing CA at most).
    pub fn certificates_by_serial(&self, serial: &str) -> Result<Vec<CertRecord>, LedgerError> {
        self.certs_where("c.serial = ?1", p![serial.to_ascii_lowercase()])
    }

    /// Revoked certificates, optionally of one profile and/or one CA key, oldest revocation
    /// first.
    pub fn revoked_certificates(
        &self,
        profile: Option<&str>,
        issuer_key_id: Option<&str>,
    ) -> Result<Vec<CertRecord>, LedgerError> {
        let sql = format!(
            "{CERT_SELECT} AND r.reason IS NOT NULL AND (CAST(?1 AS TEXT) IS NULL OR c.profile = ?1)
               AND (CAST(?2 AS TEXT) IS NULL OR c.issuer_key_id = ?2) ORDER BY r.at, c.serial"
        );
        self.conn.map(&sql, p![profile, issuer_key_id], cert_row)
    }

    /// Live (signed, neither superseded nor revoked) certificates per issuing CA key id.
    pub fn live_counts_by_issuer(
        &self,
    ) -> Result<std::collections::BTreeMap<String, (u64, Option<String>)>, LedgerError> {
        Ok(self
            .conn
            .map(
                "SELECT c.issuer_key_id, COUNT(*), MAX(c.signed_at) FROM certificates c
                 WHERE c.state = 'signed' AND NOT EXISTS (SELECT 1 FROM cert_status s
                     WHERE s.issuer_key_id = c.issuer_key_id AND s.serial = c.serial)
                 GROUP BY c.issuer_key_id",
                &[],
                |r| Ok((r.get::<String>(0)?, (r.get::<i64>(1)? as u64, r.get(2)?))),
            )?
            .into_iter()
            .collect())
    }

    /// DER of the live certificates signed by `issuer_key_id` (for expiry checks).
    pub fn live_certificates_of(&self, issuer_key_id: &str) -> Result<Vec<Vec<u8>>, LedgerError> {
        self.conn.map(
            "SELECT c.der FROM certificates c WHERE c.state = 'signed' AND c.issuer_key_id = ?1
               AND NOT EXISTS (SELECT 1 FROM cert_status s
                 WHERE s.issuer_key_id = c.issuer_key_id AND s.serial = c.serial)",
            p![issuer_key_id],
            |r| r.get(0),
        )
    }

    /// Whether `spki_sha256` was ever certified for a device other than (`profile`,
    /// `device_id`), or belongs to a revoked certificate. Returns who holds it.
    pub fn key_used_elsewhere(
        &self,
        spki_sha256: &str,
        profile: &str,
        device_id: &str,
    ) -> Result<Option<String>, LedgerError> {
        if let Some(serial) = self.conn.opt(
            "SELECT serial FROM revoked_keys WHERE spki_sha256 = ?1",
            p![spki_sha256],
            |r| r.get::<String>(0),
        )? {
            return Ok(Some(format!("the revoked certificate serial {serial}")));
        }
        let other: Option<(String, String)> = self.conn.opt(
            "SELECT profile, device_id FROM certificates WHERE spki_sha256 = ?1
                   AND state = 'signed' AND NOT (profile = ?2 AND device_id = ?3)
                 UNION ALL
                 SELECT profile, device_id FROM devices WHERE spki_sha256 = ?1
                   AND NOT (profile = ?2 AND device_id = ?3)
                 LIMIT 1",
            p![spki_sha256, profile, device_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(other.map(|(p, d)| format!("device {d} (profile {p})")))
    }

    /// Revokes one certificate: status row, its key retired, the device moved to `revoked`
    /// when it is the device's current certificate, and an audit event, in one transaction.
    /// Returns the earlier (reason, at) when it was already revoked (nothing is changed).
    pub fn revoke(
        &mut self,
        cert: &CertRecord,
        spki_sha256: &str,
        reason: &str,
        comment: Option<&str>,
    ) -> Result<Option<(String, String)>, LedgerError> {
        let tx = self.conn.begin()?;
        let earlier: Option<(String, String)> = tx.opt(
            "SELECT reason, at FROM cert_status WHERE issuer_key_id = ?1 AND serial = ?2 AND status = 'revoked'",
            p![cert.issuer_key_id, cert.serial],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if earlier.is_some() {
            return Ok(earlier);
        }
        let at = stamp(&*self.clock);
        tx.exec("INSERT INTO cert_status (issuer_key_id, serial, status, reason, at) VALUES (?1, ?2, 'revoked', ?3, ?4)",
            p![cert.issuer_key_id, cert.serial, reason, at],
        )?;
        tx.exec("INSERT INTO revoked_keys (spki_sha256, issuer_key_id, serial, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
            p![spki_sha256, cert.issuer_key_id, cert.serial, at],
        )?;
        let moved = tx.exec(
            "UPDATE devices SET state = 'revoked', updated_at = ?4
             WHERE profile = ?1 AND device_id = ?2 AND serial = ?3",
            p![cert.profile, cert.device_id, cert.serial, at],
        )?;
        super::audit::append(
            &tx,
            &mut self.head,
            &self.station,
            "revoked",
            Some(&cert.batch_id),
            Some(&cert.device_id),
            &serde_json::json!({"serial": cert.serial, "issuer_key_id": cert.issuer_key_id,
                "profile": cert.profile, "reason": reason, "comment": comment,
                "cert_sha256": cert.cert_sha256, "device_revoked": moved == 1}),
        )?;
        tx.commit()?;
        Ok(None)
    }

    /// The number the next CRL of `issuer_key_id` gets (1 for the first).
    pub fn next_crl_number(&self, issuer_key_id: &str) -> Result<i64, LedgerError> {
        self.conn.one(
            "SELECT COALESCE(MAX(number), 0) + 1 FROM crls WHERE issuer_key_id = ?1",
            p![issuer_key_id],
            |r| r.get(0),
        )
    }

    /// Records a signed CRL (before it is written anywhere) and its audit event. Fails if the
    /// number was taken meanwhile, so a number is never issued twice.
    pub fn record_crl(&mut self, crl: &CrlRecord, der: &[u8]) -> Result<(), LedgerError> {
        let tx = self.conn.begin()?;
        tx.exec("INSERT INTO crls (issuer_key_id, number, ca, this_update, next_update, entries, der, sha256)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            p![crl.issuer_key_id, crl.number, crl.ca, crl.this_update, crl.next_update, crl.entries, der, crl.sha256],
        )?;
        super::audit::append(
            &tx,
            &mut self.head,
            &self.station,
            "crl_issued",
            None,
            None,
            &serde_json::json!(crl),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// CRLs issued, newest first.
    pub fn crls(&self) -> Result<Vec<CrlRecord>, LedgerError> {
        self.conn.map(
            "SELECT issuer_key_id, number, ca, this_update, next_update, entries, sha256 FROM crls
             ORDER BY this_update DESC, number DESC",
            &[],
            |r| {
                Ok(CrlRecord {
                    issuer_key_id: r.get(0)?,
                    number: r.get(1)?,
                    ca: r.get(2)?,
                    this_update: r.get(3)?,
                    next_update: r.get(4)?,
                    entries: r.get(5)?,
                    sha256: r.get(6)?,
                })
            },
        )
    }

    /// The tenant recorded for a batch.
    pub fn batch_tenant(&self, batch_id: &str) -> Result<Option<String>, LedgerError> {
        Ok(self
            .conn
            .opt(
                "SELECT tenant FROM batches WHERE id = ?1",
                p![batch_id],
                |r| r.get::<Option<String>>(0),
            )?
            .flatten())
    }
}
