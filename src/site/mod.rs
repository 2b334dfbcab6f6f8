//! The session layer: a site opened (config → module environment → PKCS#11 module), its
//! CAs resolved and checked against their token keys, its ledger opened with the login and the
//! issuer recorded ([`IssuingSession`]), and one library entry per signing command (`issue`,
//! `batch`, `station`, `lifecycle`, the fleet claim, manifests at the end of a run). The CLI
//! parses arguments, calls one of those entries and prints what it returns.

pub mod audit;
pub mod batch;
pub mod ceremony;
mod claim;
pub mod export;
mod files;
pub mod issue;
pub mod ledger;
pub mod lifecycle;
pub mod manifests;
mod session;
pub mod station;
pub mod token;

pub use claim::issue_claim;
pub use files::{parse_vars, read_input};
pub use manifests::ManifestTarget;
pub use session::IssuingSession;

use crate::clock::{Clock, SystemClock};
use crate::config::{inherit_token, CaRef, SiteConfig};
use crate::error::Error;
use crate::hsm::{Hsm, HsmKey, Pkcs11Uri};
use crate::issue::IssuingCa;
use crate::ledger::Ledger;
use crate::profile::{IssuerRef, Profile};
use crate::x509::{CaCert, RandomSerials, SerialSource};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::OffsetDateTime;

/// A site with its token open.
pub struct Site {
    pub config: SiteConfig,
    pub hsm: Hsm,
    /// Where time comes from (issuance, the ledger, signatures).
    pub clock: Arc<dyn Clock>,
    /// Where serial numbers come from.
    pub serials: Arc<dyn SerialSource>,
}

/// A CA ready to sign: the CA (certificate and chain) and the token key proven to match it.
pub struct Issuer<'h> {
    pub ca: IssuingCa,
    /// The key on the token.
    pub key: HsmKey<'h>,
}

/// The site config a command names (`--config`, or `CERTFAB_CONFIG`), opened only when the
/// command gets to the step that needs it: checks that need no site (an output that exists,
/// an unreadable input) come first, as they always have.
#[derive(Clone)]
pub struct SiteRef {
    config: Option<PathBuf>,
    clock: Arc<dyn Clock>,
    serials: Arc<dyn SerialSource>,
}

impl SiteRef {
    /// The site at `config` (none given: the commands that need one say so), on the system
    /// clock with random serials.
    pub fn new(config: Option<PathBuf>) -> Self {
        Self {
            config,
            clock: Arc::new(SystemClock),
            serials: Arc::new(RandomSerials),
        }
    }

    /// The same site on another clock and serial source (tests that fix time and serials).
    pub fn with_sources(mut self, clock: Arc<dyn Clock>, serials: Arc<dyn SerialSource>) -> Self {
        self.clock = clock;
        self.serials = serials;
        self
    }

    /// The config path, or the error that says none was given.
    pub fn path(&self) -> Result<&Path, Error> {
        self.config
            .as_deref()
            .ok_or(Error::Config(crate::config::ConfigError::Missing))
    }

    /// The config path, if one was given.
    pub fn path_opt(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    /// Loads the site config only (no module): for commands that only read the ledger.
    pub fn config(&self) -> Result<SiteConfig, Error> {
        Ok(SiteConfig::load(self.path()?)?)
    }

    /// The site config and its ledger opened read-only (no module, no token): for commands
    /// that only look.
    pub fn read_ledger(&self) -> Result<(SiteConfig, Ledger), Error> {
        let config = self.config()?;
        let ledger = Ledger::open_read(&config.ledger, &config.station_id)?;
        Ok((config, ledger))
    }

    /// The site config and its ledger opened for writing on this site's clock (no module):
    /// for ledger-only changes such as closing a batch.
    pub fn write_ledger(&self) -> Result<(SiteConfig, Ledger), Error> {
        let config = self.config()?;
        let ledger = Ledger::open_with_clock(&config.ledger, &config.station_id, self.clock())?;
        Ok((config, ledger))
    }

    /// Opens the site: config, module environment, module (no login yet).
    pub fn open(&self) -> Result<Site, Error> {
        let mut site = Site::open(self.path()?)?;
        site.clock = self.clock.clone();
        site.serials = self.serials.clone();
        Ok(site)
    }

    /// Now on this site's clock, whole seconds.
    pub fn now(&self) -> OffsetDateTime {
        crate::clock::whole_seconds(self.clock.now())
    }

    /// This site's clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// `certfab profile show`: a profile (a file, or with a site config a name in its
    /// profiles_dir) and, with a site config, the CA that signs for it now. No token.
    pub fn profile_view(&self, arg: &str) -> Result<(Profile, Option<CaRef>), Error> {
        let Some(path) = self.path_opt() else {
            return Ok((Profile::load(Path::new(arg))?, None));
        };
        let config = SiteConfig::load(path)?;
        let profile = Profile::load(&config.profile_path(arg))?;
        let ca = ca_ref_at(&config, &profile, self.now())?;
        Ok((profile, Some(ca)))
    }
}

impl Site {
    /// Loads the config and the module (no login yet), on the system clock with random
    /// serials.
    pub fn open(config: &Path) -> Result<Self, Error> {
        let config = SiteConfig::load(config)?;
        config.apply_module_env();
        let hsm =
            Hsm::open(&config.module, &config.token)?.with_recovery_window(config.recovery_window);
        Ok(Self {
            config,
            hsm,
            clock: Arc::new(SystemClock),
            serials: Arc::new(RandomSerials),
        })
    }

    /// Now on the site's clock, whole seconds (what certificates and records carry).
    pub fn now(&self) -> OffsetDateTime {
        crate::clock::whole_seconds(self.clock.now())
    }

    /// Loads a profile given as a path or a name in the site's `profiles_dir`.
    pub fn profile(&self, arg: &str) -> Result<Profile, Error> {
        Ok(Profile::load(&self.config.profile_path(arg))?)
    }

    /// Logs in with the configured PIN source (one attempt).
    pub fn login(&self) -> Result<(), Error> {
        let src = self.config.pin.as_ref().ok_or_else(|| {
            Error::Usage(format!(
                "{}: pkcs11.pin is not set; add 'pin: file:PATH' (mode 0600), 'pin: env:NAME' or 'pin: prompt'",
                self.config.path.display()
            ))
        })?;
        let pin = src.read(&format!("User PIN for token '{}'", self.hsm.token_label()))?;
        let name = match src {
            crate::secret::SecretSource::Env(n) => format!("env:{n}"),
            crate::secret::SecretSource::File(p) => format!("file:{}", p.display()),
            crate::secret::SecretSource::Prompt => "prompt".into(),
        };
        self.hsm.login(pin, &name)?;
        Ok(())
    }

    /// Opens the ledger for writing and records the hashes of the site config and `profile`
    /// (an audit event when either changed since last seen).
    pub fn open_ledger(&self, profile: Option<&Profile>) -> Result<Ledger, Error> {
        open_ledger_as(&self.config, profile, None, self.clock.clone())
    }

    /// [`Site::open_ledger`] with the events recorded as done by `operator`.
    pub fn open_ledger_as(
        &self,
        profile: Option<&Profile>,
        operator: Option<&str>,
    ) -> Result<Ledger, Error> {
        open_ledger_as(&self.config, profile, operator, self.clock.clone())
    }

    /// [`Site::login`], with the outcome recorded in the audit log (`login` or
    /// `login_failed`; the error text never contains the PIN).
    pub fn login_recorded(&self, ledger: &mut Ledger) -> Result<(), Error> {
        let r = self.login();
        let detail = |err: Option<String>| serde_json::json!({"token": self.hsm.token_label(), "pin_source": self.config.pin.as_ref().map(pin_kind), "error": err});
        match &r {
            Ok(()) => ledger.record_event("login", None, None, &detail(None))?,
            // Best effort: the login error is what the user must see.
            Err(e) => {
                let _ =
                    ledger.record_event("login_failed", None, None, &detail(Some(e.to_string())));
            }
        }
        r
    }

    /// [`Site::issuer`], with a failure recorded as an `hsm_error` audit event.
    pub fn issuer_recorded(
        &self,
        ca: &CaRef,
        now: OffsetDateTime,
        ledger: &mut Ledger,
    ) -> Result<Issuer<'_>, Error> {
        self.issuer(ca, now).inspect_err(|e| {
            let _ = ledger.record_event(
                "hsm_error",
                None,
                None,
                &serde_json::json!({"ca": ca.name, "key": ca.key.to_string(), "error": e.to_string()}),
            );
        })
    }

    /// Signs an audit checkpoint at the end of a batch or shift when the site has a `signer:`
    /// (else does nothing) and says what happened. The work is already recorded, so a failure
    /// is a notice for the operator rather than a failed command; `certfab log checkpoint` can
    /// be run later.
    pub fn auto_checkpoint(&self, ledger: &mut Ledger) -> Option<String> {
        self.config.signer.as_ref()?;
        let now = self.clock.now();
        let r = self
            .signer(now)
            .and_then(|s| Ok(crate::auditlog::checkpoint(ledger, &s, now)?));
        Some(match r {
            Ok(doc) => format!(
                "audit checkpoint {} signed (head event {})",
                doc.statement.checkpoint, doc.statement.head_seq
            ),
            Err(e) => format!(
                "warning: the audit checkpoint was not signed: {e}; run certfab log checkpoint"
            ),
        })
    }

    /// A key URI from the command line: a `pkcs11:` URI, or a bare label on the site token.
    pub fn key_uri(&self, arg: &str) -> Result<Pkcs11Uri, Error> {
        let uri = if arg.starts_with("pkcs11:") {
            Pkcs11Uri::parse(arg)?
        } else {
            Pkcs11Uri {
                object: Some(arg.to_string()),
                ..Default::default()
            }
        };
        Ok(inherit_token(uri, &self.config.token))
    }

    /// Resolves the CA that signs for a profile now: its `issuer`, or during a rollover its
    /// `next_issuer` once `switch_at` has passed. Refuses a CA of another tenant.
    pub fn ca_ref(&self, profile: &Profile) -> Result<CaRef, Error> {
        self.ca_ref_at(profile, self.clock.now())
    }

    /// [`Site::ca_ref`] at time `now`.
    pub fn ca_ref_at(&self, profile: &Profile, now: OffsetDateTime) -> Result<CaRef, Error> {
        ca_ref_at(&self.config, profile, now)
    }

    /// The profile's `issuer:` CA (before any rollover switch).
    pub fn issuer_ca(&self, profile: &Profile) -> Result<CaRef, Error> {
        issuer_ca(&self.config, profile)
    }

    /// The CA that issued a batch, by the name the ledger recorded for it: the profile's
    /// `issuer:` or `rollover.next_issuer`, whichever was in force then (an inline CA is
    /// recorded under the profile's path). A batch keeps its CA across a later rollover.
    pub fn batch_ca(&self, profile: &Profile, recorded: &str) -> Result<CaRef, Error> {
        if self.config.cas.contains_key(recorded) {
            return named_ca(&self.config, profile, recorded, "the batch's recorded CA");
        }
        let ca = self.issuer_ca(profile)?;
        if ca.name != recorded {
            return Err(Error::Usage(format!(
                "the batch was issued by CA '{recorded}', which {} no longer defines under cas: (defined: {})",
                self.config.path.display(),
                self.config.cas.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(ca)
    }

    /// Opens the manifest/audit signer (`signer:` in the site config) for signing at `now`:
    /// loads its end-entity certificate and chain, checks them, and opens its token key,
    /// refusing a key whose public half is not the certificate's.
    pub fn signer(
        &self,
        now: OffsetDateTime,
    ) -> Result<crate::manifest::jws::DocumentSigner<HsmKey<'_>>, Error> {
        let sref = self.config.signer.as_ref().ok_or_else(|| {
            Error::Usage(format!(
                "{} has no signer: section; manifests are signed by a key of their own (not a device CA): add signer: {{key: \"pkcs11:object=manifest-signer;type=private\", cert: ca/manifest-signer.pem, chain: [ca/root.pem]}} (hsm-fixtures/dev-line.sh sets one up; docs/ca-ceremony.md)",
                self.config.path.display()
            ))
        })?;
        let (cert, chain) = CaCert::load_with_chain(&sref.cert, &sref.chain)?;
        let key = self
            .hsm
            .key(&sref.key, Some((&cert.public_key, &cert.source)))?;
        Ok(crate::manifest::jws::DocumentSigner::new(
            cert, chain, key, now,
        )?)
    }

    /// Loads a CA's certificate and chain, checks them at `now`, and opens its token key,
    /// refusing a key whose public half is not the certificate's.
    pub fn issuer(&self, ca: &CaRef, now: OffsetDateTime) -> Result<Issuer<'_>, Error> {
        let crate::ca::CaCerts { cert, chain, .. } = crate::ca::ca_certs(ca, now)?;
        let mut key = self
            .hsm
            .key(&ca.key, Some((&cert.public_key, &cert.source)))?;
        if ca.rsa_pss {
            key.use_pss()?;
        }
        Ok(Issuer {
            ca: IssuingCa {
                name: ca.name.clone(),
                cert,
                chain,
            },
            key,
        })
    }
}

/// Every signature the token made for a command is accounted for in the ledger: when the site
/// closes (the command's end, an error exit included), one `token_signatures` audit event
/// records the counts by key and purpose with this process's id, which is what
/// `certfab audit --spy-log` reconciles a pkcs11-spy call log with. The command's own ledger
/// connection is closed by then (it is opened after the site, so dropped first). A process
/// that is killed writes no event: the audit reports its signatures as unaccounted for, by
/// process id. A SQLite ledger that does not exist yet (`hsm bench` on a new line) is not
/// created for this: there is nothing to audit.
impl Drop for Site {
    fn drop(&mut self) {
        let keys = self.hsm.take_signatures();
        if keys.is_empty() {
            return;
        }
        if let Err(e) = self.record_signatures(&keys) {
            let total: u64 = keys.iter().map(|k| k.total()).sum();
            eprintln!(
                "warning: the token made {total} signatures for this command (process {}) that could not be recorded in the audit log: {e}; certfab audit --spy-log will report them as unaccounted for",
                std::process::id()
            );
        }
    }
}

impl Site {
    fn record_signatures(&self, keys: &[crate::hsm::KeySignatures]) -> Result<(), Error> {
        if let crate::config::LedgerLocation::Sqlite(p) = &self.config.ledger {
            if !p.exists() {
                return Ok(());
            }
        }
        let mut ledger = Ledger::open_to_record(
            &self.config.ledger,
            &self.config.station_id,
            self.clock.clone(),
        )?;
        let total: u64 = keys.iter().map(|k| k.total()).sum();
        ledger.record_event(
            crate::hsm::TOKEN_SIGNATURES_EVENT,
            None,
            None,
            &serde_json::json!({
                "pid": std::process::id(),
                "token": self.hsm.token_label(),
                "signatures": total,
                "keys": keys,
            }),
        )?;
        Ok(())
    }
}

fn pin_kind(src: &crate::secret::SecretSource) -> &'static str {
    match src {
        crate::secret::SecretSource::Env(_) => "env",
        crate::secret::SecretSource::File(_) => "file",
        crate::secret::SecretSource::Prompt => "prompt",
    }
}

/// Opens the site's ledger for writing (no token needed) and records the hashes of the site
/// config and `profile` (an audit event `config_changed` when either differs from last seen),
/// with the events recorded as done by `operator` (default: the OS user) at the times `clock`
/// gives.
pub fn open_ledger_as(
    config: &SiteConfig,
    profile: Option<&Profile>,
    operator: Option<&str>,
    clock: Arc<dyn Clock>,
) -> Result<Ledger, Error> {
    let mut ledger = Ledger::open_with_clock(&config.ledger, &config.station_id, clock)?;
    ledger.set_operator(operator);
    let bytes = crate::yaml::read_bounded(&config.path)?;
    ledger.note_config(
        "site-config",
        "site",
        &config.path.display().to_string(),
        &hex::encode(crate::crypto::sha256(&bytes)),
    )?;
    if let Some(p) = profile {
        ledger.note_config(
            "profile",
            &p.name,
            &p.path.display().to_string(),
            &hex::encode(p.sha256),
        )?;
    }
    Ok(ledger)
}

/// Resolves the CA that signs for `profile` at `now` from the site config alone (no token):
/// its `issuer`, or during a rollover its `next_issuer` once `switch_at` has passed. Refuses
/// a CA of another tenant.
pub fn ca_ref_at(
    config: &SiteConfig,
    profile: &Profile,
    now: OffsetDateTime,
) -> Result<CaRef, Error> {
    if let Some(r) = &profile.rollover {
        let next = named_ca(config, profile, &r.next_issuer, "rollover.next_issuer")?;
        if r.switch_at.is_some_and(|t| now >= t) {
            return Ok(next);
        }
    }
    issuer_ca(config, profile)
}

/// The profile's `issuer:` CA (before any rollover switch), from the site config alone.
pub fn issuer_ca(config: &SiteConfig, profile: &Profile) -> Result<CaRef, Error> {
    match &profile.issuer {
        IssuerRef::Named(name) => named_ca(config, profile, name, "issuer"),
        IssuerRef::Inline(raw) => {
            let base = profile.path.parent().unwrap_or(Path::new("."));
            Ok(CaRef {
                name: profile.path.display().to_string(),
                key: inherit_token(Pkcs11Uri::parse(&raw.key)?, &config.token),
                cert: base.join(&raw.cert),
                chain: raw.chain.iter().map(|p| base.join(p)).collect(),
                rsa_pss: raw.rsa_pss,
                tenant: profile.tenant.clone(),
            })
        }
    }
}

/// A CA from the site config's `cas:`, checked against the profile's tenant.
fn named_ca(
    config: &SiteConfig,
    profile: &Profile,
    name: &str,
    field: &str,
) -> Result<CaRef, Error> {
    let ca = config
        .ca(name)
        .map_err(|e| Error::Usage(format!("profile {} ({field}): {e}", profile.path.display())))?;
    if ca.tenant != profile.tenant {
        let show = |t: &Option<String>| t.clone().unwrap_or_else(|| "no tenant".into());
        return Err(Error::Usage(format!(
            "profile {} belongs to {} but its CA '{name}' ({field}) belongs to {}; a profile may only use CAs of its own tenant (set tenant: on both)",
            profile.path.display(),
            show(&profile.tenant),
            show(&ca.tenant)
        )));
    }
    Ok(ca)
}

/// Opens a site for a dry run of `profile` (a path, or a name in the site's profiles_dir):
/// the same config, profile, CA and ledger checks as a run, without the token.
pub fn open_offline(site: &SiteRef, profile: &str) -> Result<crate::batch::Offline, Error> {
    let config = site.config()?;
    let profile = Profile::load(&config.profile_path(profile))?;
    let now = site.clock.now();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let ca_ref = ca_ref_at(&config, &profile, now)?;
    let ca = crate::ca::ca_certs(&ca_ref, now)?;
    let ledger = Ledger::open_preview(&config.ledger, &config.station_id)?;
    Ok(crate::batch::Offline {
        config,
        profile,
        ca_ref,
        ca,
        ledger,
        now,
    })
}
