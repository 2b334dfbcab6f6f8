//! The steps every signing command takes in the same order: open the ledger (recording the
//! config and profile hashes and who acts), log in once with the outcome recorded, then open
//! the CA's token key, checked against its certificate, with a failure recorded.

use super::Site;
use crate::config::CaRef;
use crate::error::Error;
use crate::hsm::HsmKey;
use crate::issue::IssuingCa;
use crate::ledger::Ledger;
use crate::profile::Profile;
use time::OffsetDateTime;

/// A ledger open for writing, a logged-in token and the CA ready to sign: what `issue`,
/// `batch`, `station`, `renew` and `crl` work with.
pub struct IssuingSession<'s> {
    /// The site it belongs to.
    pub site: &'s Site,
    /// The ledger, open for writing.
    pub ledger: Ledger,
    /// The CA (name, certificate, chain) the key was checked against.
    pub ca: IssuingCa,
    /// The CA's key on the token.
    pub key: HsmKey<'s>,
    /// When the session opened (the CA was checked usable at this time), whole seconds.
    pub now: OffsetDateTime,
    key_ref: CaRef,
}

impl Site {
    /// Opens an issuing session for `ca` (usually [`Site::ca_ref`] of `profile`): the ledger
    /// with the config and profile hashes noted and events recorded as done by `operator`,
    /// the recorded login, and the recorded issuer at the site clock's now.
    pub fn issuing_session(
        &self,
        profile: Option<&Profile>,
        ca: &CaRef,
        operator: Option<&str>,
    ) -> Result<IssuingSession<'_>, Error> {
        let mut ledger = self.open_ledger_as(profile, operator)?;
        self.login_recorded(&mut ledger)?;
        let now = self.now();
        let issuer = self.issuer_recorded(ca, now, &mut ledger)?;
        Ok(IssuingSession {
            site: self,
            ledger,
            ca: issuer.ca,
            key: issuer.key,
            now,
            key_ref: ca.clone(),
        })
    }
}

impl<'s> IssuingSession<'s> {
    /// The CA key once per batch worker, each in a session of its own: the session's key
    /// first, then up to `jobs - 1` more, all checked against the CA certificate. Fewer when
    /// the token or `pkcs11.max_sessions` allows fewer sessions (one stays free for the
    /// document signer when the site has one): the note says how many and why.
    pub fn worker_keys(self, jobs: usize) -> Result<WorkerKeys<'s>, Error> {
        let mut keys = vec![self.key];
        let reserve = usize::from(self.site.config.signer.is_some());
        let mut want = jobs;
        let mut why = String::new();
        if let Some(max) = self.site.config.max_sessions {
            // The login session, the workers, and the signer's.
            let fit = max.saturating_sub(1 + reserve).max(1);
            if fit < want {
                want = fit;
                why = format!(
                    "pkcs11.max_sessions is {max} (the login session, one per worker{})",
                    if reserve == 1 {
                        ", the document signer's"
                    } else {
                        ""
                    }
                );
            }
        }
        if let Some(room) = self.site.hsm.session_room() {
            let fit = 1 + usize::try_from(room)
                .unwrap_or(usize::MAX)
                .saturating_sub(reserve);
            if fit < want {
                want = fit;
                why = format!(
                    "token '{}' allows {room} more sessions (ulMaxSessionCount)",
                    self.site.hsm.token_label()
                );
            }
        }
        for _ in 1..want {
            match self.site.hsm.key(
                &self.key_ref.key,
                Some((&self.ca.cert.public_key, &self.ca.cert.source)),
            ) {
                Ok(k) => keys.push(k),
                Err(e) if e.is_session_limit() => {
                    why = format!(
                        "C_OpenSession returned CKR_SESSION_COUNT after {} signing sessions",
                        keys.len()
                    );
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if self.key_ref.rsa_pss {
            for k in &mut keys {
                k.use_pss()?;
            }
        }
        let note = (keys.len() < jobs).then(|| {
            format!(
                "signing with {} session(s) instead of --jobs {jobs}: {why}",
                keys.len()
            )
        });
        Ok(WorkerKeys {
            ledger: self.ledger,
            ca: self.ca,
            keys,
            note,
        })
    }
}

/// What [`IssuingSession::worker_keys`] opened.
pub struct WorkerKeys<'s> {
    /// The ledger, open for writing.
    pub ledger: Ledger,
    /// The CA the keys were checked against.
    pub ca: IssuingCa,
    /// One key per worker.
    pub keys: Vec<HsmKey<'s>>,
    /// Why there are fewer keys than jobs asked for, if there are.
    pub note: Option<String>,
}
