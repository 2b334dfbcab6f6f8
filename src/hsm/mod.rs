//! PKCS#11 through cryptoki: load the module, pick the token, log in once, find keys once,
//! sign, and recover from a token or session that went away.
//!
//! The CA private key never leaves the token: certfab reads only public attributes, refuses
//! keys that are extractable or not sensitive, and generates CA keys with a template that
//! forbids export (see `keygen`).

mod bench;
mod error;
mod info;
mod key;
mod keygen;
mod quirks;
mod recovery;
mod tally;

pub use crate::pkcs11_uri::Pkcs11Uri;
pub use bench::{bench, BenchResult};
pub use error::HsmError;
pub use info::{info, HsmInfo};
pub use key::HsmKey;
pub use keygen::{generate_ca_key, import_certificate, init_token, CaKeyAlgorithm, CertObject};
use recovery::Fault;
pub use recovery::DEFAULT_RECOVERY_WINDOW;
pub use tally::{KeySignatures, SignPurpose, TOKEN_SIGNATURES_EVENT};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use secrecy::SecretString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// A loaded PKCS#11 module with one selected token.
///
/// Shared by every worker (wrap it in an `Arc`); each worker opens its own session through
/// [`Hsm::key`]. Login state belongs to the application, so one login covers every session.
pub struct Hsm {
    module: PathBuf,
    token: Pkcs11Uri,
    state: Mutex<State>,
    login: Mutex<Option<Login>>,
    recovery: recovery::Recovery,
    /// Token calls made through the recovery loop hold it shared; a re-initialisation holds it
    /// alone, so the module is never finalized under a call still in flight on another worker
    /// (p11-kit's client aborts the process when that happens).
    calls: std::sync::RwLock<()>,
    /// Signatures made so far (the `token_signatures` audit event).
    tally: tally::Tally,
}

struct State {
    ctx: Pkcs11,
    slot: Slot,
    label: String,
    /// Bumped on every re-initialisation, so sessions know they are stale.
    generation: u64,
    /// Whether `ctx` is initialised: a re-open that failed half-way left it finalized, and
    /// finalizing it again upsets some modules (p11-kit's client asserts).
    live: bool,
    /// What certfab adapts to in this module.
    quirks: quirks::Quirks,
}

struct Login {
    pin: SecretString,
    /// Keeps the login alive: PKCS#11 drops it when the application's last session closes.
    _session: Session,
}

impl Hsm {
    /// Loads `module` and selects the token that `token` names (label, serial, or slot).
    pub fn open(module: &Path, token: &Pkcs11Uri) -> Result<Self, HsmError> {
        let (ctx, slot, label) = init(module, token)?;
        let quirks = quirks::Quirks::detect(&ctx);
        Ok(Self {
            module: module.to_path_buf(),
            token: token.clone(),
            state: Mutex::new(State {
                ctx,
                slot,
                label,
                generation: 0,
                live: true,
                quirks,
            }),
            login: Mutex::new(None),
            recovery: recovery::Recovery::new(DEFAULT_RECOVERY_WINDOW),
            calls: std::sync::RwLock::new(()),
            tally: tally::Tally::default(),
        })
    }

    /// How long a lost token is re-opened before the command gives up (the site config's
    /// `pkcs11.recovery_window`; [`DEFAULT_RECOVERY_WINDOW`] otherwise).
    pub fn with_recovery_window(mut self, window: Duration) -> Self {
        self.recovery = recovery::Recovery::new(window);
        self
    }

    /// The recovery window in force.
    pub fn recovery_window(&self) -> Duration {
        self.recovery.window()
    }

    /// The selected token's label.
    pub fn token_label(&self) -> String {
        self.lock().label.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn context(&self) -> (Pkcs11, Slot, u64) {
        let s = self.lock();
        (s.ctx.clone(), s.slot, s.generation)
    }

    /// Logs the user in, once. Refuses when the token reports the PIN locked or on its final
    /// try, and makes exactly one attempt: a wrong PIN is reported, never retried.
    pub fn login(&self, pin: SecretString, source_name: &str) -> Result<(), HsmError> {
        let (ctx, slot, _) = self.context();
        let label = self.token_label();
        let info = token_info(&ctx, slot)?;
        if info.user_pin_locked() {
            return Err(HsmError::PinLocked(label));
        }
        if info.user_pin_final_try() {
            return Err(HsmError::PinFinalTry(label));
        }
        // A read-write session: AWS CloudHSM's SDK 5 supports no read-only sessions
        // (docs/hsm-compat.md), and every token allows logging in on either.
        let session = ctx.open_rw_session(slot).map_err(HsmError::call)?;
        match login_once_more_if_unread(&ctx, slot, &session, &pin) {
            Ok(()) => {}
            Err(e) => {
                if e.rv() != Some(RvError::UserAlreadyLoggedIn) {
                    return Err(match e.rv() {
                        Some(
                            rv @ (RvError::PinIncorrect
                            | RvError::PinLocked
                            | RvError::PinInvalid
                            | RvError::PinLenRange),
                        ) => HsmError::LoginRefused {
                            token: label,
                            rv,
                            source_name: source_name.into(),
                            // Read again: the refusal may have changed the token's flags.
                            lockout: quirks::Quirks::detect(&ctx).lockout_state(
                                ctx.get_token_info(slot).ok().as_ref(),
                                rv == RvError::PinLocked,
                            ),
                        },
                        _ => e,
                    });
                }
            }
        }
        *self.login.lock().unwrap_or_else(|p| p.into_inner()) = Some(Login {
            pin,
            _session: session,
        });
        Ok(())
    }

    /// How many more sessions the token says this application may open (the smaller of its
    /// session and read-write session room), when it states a limit.
    pub fn session_room(&self) -> Option<u64> {
        let (ctx, slot, _) = self.context();
        let info = ctx.get_token_info(slot).ok()?;
        let room = |max: cryptoki::slot::Limit, open: Option<u64>| match max {
            cryptoki::slot::Limit::Max(m) => Some(m.saturating_sub(open.unwrap_or(0))),
            _ => None,
        };
        let all = room(info.max_session_count(), info.session_count());
        let rw = room(info.max_rw_session_count(), info.rw_session_count());
        match (all, rw) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether a login succeeded in this run.
    pub fn logged_in(&self) -> bool {
        self.login.lock().map(|l| l.is_some()).unwrap_or(false)
    }

    /// Opens a read-write session for one worker.
    pub(crate) fn open_session(&self) -> Result<(Session, u64), HsmError> {
        let (ctx, slot, generation) = self.context();
        let s = ctx.open_rw_session(slot).map_err(HsmError::call)?;
        Ok((s, generation))
    }

    /// Runs `op` until it succeeds, re-opening a lost token in between: the one recovery
    /// loop behind every use of the token (see `recovery` for what counts as lost and how
    /// long certfab tries). `op` gets `true` when it must open its session and find its key
    /// again; it must be safe to repeat (it reads, or signs bytes already committed).
    pub(crate) fn recovering<T>(
        &self,
        mut op: impl FnMut(bool) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let mut reopen = false;
        let mut reinit = false;
        let mut busy_retried = false;
        let mut seen = self.generation();
        loop {
            if let Some(e) = self.recovery.gave_up() {
                return Err(e);
            }
            if reinit {
                match self.recover(seen) {
                    Ok(()) => {
                        reinit = false;
                        reopen = true;
                    }
                    Err(e) => {
                        if recovery::classify(&e, true) == Fault::Refused {
                            return Err(self.recovery.give_up_with(e));
                        }
                        std::thread::sleep(self.recovery.failed(e)?);
                        continue;
                    }
                }
            }
            seen = self.generation();
            let result = {
                let _in_call = self.in_call();
                op(reopen)
            };
            let err = match result {
                Ok(v) => {
                    self.recovery.healed();
                    return Ok(v);
                }
                Err(e) => e,
            };
            match recovery::classify(&err, reopen) {
                // A re-open that found something else than before (another key, a refused
                // login): stop every worker, not only this one.
                Fault::Refused if reopen => return Err(self.recovery.give_up_with(err)),
                Fault::Refused => return Err(err),
                Fault::Busy if !busy_retried => {
                    busy_retried = true;
                    std::thread::sleep(self.recovery.failed(err)?);
                }
                Fault::Busy | Fault::Lost => {
                    std::thread::sleep(self.recovery.failed(err)?);
                    reinit = true;
                }
            }
        }
    }

    /// Holds the read/write gate shared for a token call made outside the recovery loop
    /// (`hsm info`, `ca keygen`), so a re-initialisation by another worker never finalizes the
    /// module under it. Re-entrant on one thread (a `ca keygen` holding it opens its new key
    /// through the recovery loop, which takes it again): a nested read of a `RwLock` can
    /// deadlock behind a waiting writer, so only the outermost call locks. The caller drops it
    /// before anything that may re-initialise the module on this thread ([`Hsm::recover`],
    /// the recovery loop), which refuses to wait for this thread's own call.
    pub(crate) fn in_call(&self) -> InCall<'_> {
        let nested = IN_CALL.with(|depth| {
            let d = depth.get();
            depth.set(d + 1);
            d > 0
        });
        InCall {
            _shared: (!nested).then(|| self.calls.read().unwrap_or_else(|p| p.into_inner())),
        }
    }

    /// What certfab adapts to in the loaded module.
    pub(crate) fn quirks(&self) -> quirks::Quirks {
        self.lock().quirks
    }

    /// Whether the token lists `mechanism` for signing.
    pub(crate) fn signs_with(&self, mechanism: cryptoki::mechanism::MechanismType) -> bool {
        // Workers open their keys (and ask this) while another may be recovering.
        let _in_call = self.in_call();
        let (ctx, slot, _) = self.context();
        ctx.get_mechanism_info(slot, mechanism)
            .is_ok_and(|i| i.sign())
    }

    /// The module's generation: bumped by every re-initialisation.
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Finalizes and re-initializes the module, then logs in again with the PIN that already
    /// succeeded this run. Does nothing if another worker already recovered past `seen`.
    pub(crate) fn recover(&self, seen: u64) -> Result<(), HsmError> {
        if IN_CALL.with(std::cell::Cell::get) > 0 {
            // Waiting for the calls in flight would wait for this thread's own.
            return Err(HsmError::Other(
                "the token was lost inside another token call of this command, where it cannot be re-opened; run the command again".into(),
            ));
        }
        let _alone = self.calls.write().unwrap_or_else(|p| p.into_inner());
        let mut st = self.lock();
        if st.generation != seen && st.live {
            return Ok(());
        }
        if st.live {
            // Finalize errors are expected when the module already lost its state.
            let _ = st.ctx.clone().finalize();
            st.live = false;
        }
        let (ctx, slot, label) = init(&self.module, &self.token)?;
        st.ctx = ctx;
        st.slot = slot;
        st.label = label;
        st.generation += 1;
        st.live = true;
        st.quirks = quirks::Quirks::detect(&st.ctx);
        drop(st);
        let mut login = self.login.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = login.as_mut() {
            let (ctx, slot, _) = self.context();
            let session = ctx.open_rw_session(slot).map_err(HsmError::call)?;
            match session.login(UserType::User, Some(&l.pin)) {
                Ok(()) => {}
                Err(e) => {
                    let e = HsmError::call(e);
                    if e.rv() != Some(RvError::UserAlreadyLoggedIn) {
                        // The session belongs to the new context: closing it is right.
                        return Err(e);
                    }
                }
            }
            // The old session died with the old context; never close it again.
            std::mem::forget(std::mem::replace(&mut l._session, session));
        }
        Ok(())
    }

    /// Finalizes the module behind every open session, as an HSM reboot or a lost connection
    /// would. Fault-injection hook for recovery tests; signing afterwards must recover.
    #[doc(hidden)]
    pub fn inject_reset(&self) {
        let (ctx, _, _) = self.context();
        let _ = ctx.finalize();
    }

    /// The signatures the token made for this process since the last call, by key and
    /// purpose (only those that returned a signature), and resets the count.
    pub fn take_signatures(&self) -> Vec<KeySignatures> {
        self.tally.take()
    }

    pub(crate) fn count_signature(&self, key: &Pkcs11Uri, purpose: SignPurpose) {
        self.tally.add(&key.to_string(), purpose);
    }

    /// How many times the module was re-initialised after a failure.
    pub fn recoveries(&self) -> u64 {
        self.lock().generation
    }

    /// Resolves `uri` to a signing key in a session of its own. Pass the CA certificate's public
    /// key as `expected` to refuse a token key that does not belong to it.
    pub fn key(
        &self,
        uri: &Pkcs11Uri,
        expected: Option<(&crate::crypto::PublicKey, &str)>,
    ) -> Result<HsmKey<'_>, HsmError> {
        HsmKey::open(self, uri, expected)
    }
}

thread_local! {
    /// How many [`Hsm::in_call`] guards this thread holds.
    static IN_CALL: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// A token call in flight on this thread (see [`Hsm::in_call`]).
pub(crate) struct InCall<'a> {
    _shared: Option<std::sync::RwLockReadGuard<'a, ()>>,
}

impl Drop for InCall<'_> {
    fn drop(&mut self) {
        IN_CALL.with(|depth| depth.set(depth.get().saturating_sub(1)));
    }
}

/// How often opening the token is tried when it fails the way a shared on-disk token store
/// fails while another process writes it.
const OPEN_ATTEMPTS: u32 = 8;

/// Opens the module and finds the token, retrying a bounded number of times (about 1.5 s in
/// all) when the failure is one SoftHSM gives while another process is rewriting its token
/// files: SoftHSM keeps each token as files that every process reads at `C_Initialize` and
/// `C_GetTokenInfo`, so a process starting while another logs in or writes an object can read a
/// half-written file and report `CKR_GENERAL_ERROR`, or not see the token at all. Each retry
/// finalizes and initializes afresh, after a growing, jittered pause so processes that started
/// together spread out. Any other failure is returned at once.
fn init(module: &Path, token: &Pkcs11Uri) -> Result<(Pkcs11, Slot, String), HsmError> {
    retry_unread(|| init_once(module, token), |e| Ok(open_is_transient(e)))
}

/// Runs `op` again (up to `OPEN_ATTEMPTS` in all) while `unread` says its failure is one a
/// token store being rewritten by another process causes, after a growing, jittered pause so
/// processes that started together spread out. `unread` may itself fail (it can ask the
/// token); that error is returned.
fn retry_unread<T>(
    mut op: impl FnMut() -> Result<T, HsmError>,
    mut unread: impl FnMut(&HsmError) -> Result<bool, HsmError>,
) -> Result<T, HsmError> {
    let mut pause_ms = 20u64;
    let mut attempt = 1;
    loop {
        match op() {
            Err(e) if attempt < OPEN_ATTEMPTS && unread(&e)? => {
                let mut jitter = [0u8; 1];
                let _ = getrandom::getrandom(&mut jitter);
                std::thread::sleep(std::time::Duration::from_millis(
                    pause_ms + u64::from(jitter[0]) % pause_ms.max(1),
                ));
                pause_ms = (pause_ms * 2).min(300);
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// `C_GetTokenInfo`, retried like opening the token (see [`init`]) when it fails with
/// `CKR_GENERAL_ERROR`: the login reads the token's PIN flags from the same shared files.
fn token_info(ctx: &Pkcs11, slot: Slot) -> Result<cryptoki::slot::TokenInfo, HsmError> {
    retry_unread(
        || ctx.get_token_info(slot).map_err(HsmError::call),
        |e| Ok(e.rv() == Some(RvError::GeneralError)),
    )
}

/// `C_Login`; when it fails with `CKR_GENERAL_ERROR` (SoftHSM could not read its token files
/// while another process rewrote them, see [`init`]) and the token's flags show that attempt
/// did not count against the PIN (no "count low", "final try" or "locked"), it is made again,
/// a bounded number of times. A wrong PIN is never retried: only the one login attempt the
/// token did not read is repeated.
fn login_once_more_if_unread(
    ctx: &Pkcs11,
    slot: Slot,
    session: &Session,
    pin: &SecretString,
) -> Result<(), HsmError> {
    retry_unread(
        || {
            session
                .login(UserType::User, Some(pin))
                .map_err(HsmError::call)
        },
        |e| {
            if e.rv() != Some(RvError::GeneralError) {
                return Ok(false);
            }
            let info = token_info(ctx, slot)?;
            Ok(!(info.user_pin_count_low() || info.user_pin_final_try() || info.user_pin_locked()))
        },
    )
}

/// The failures a token store being rewritten by another process produces at open.
fn open_is_transient(e: &HsmError) -> bool {
    matches!(e.rv(), Some(RvError::GeneralError)) || matches!(e, HsmError::TokenNotFound { .. })
}

fn init_once(module: &Path, token: &Pkcs11Uri) -> Result<(Pkcs11, Slot, String), HsmError> {
    let ctx = Pkcs11::new(module).map_err(|e| HsmError::Module {
        path: module.to_path_buf(),
        detail: e.to_string(),
    })?;
    let ours = match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => true,
        Err(e) => {
            let e = HsmError::call(e);
            if e.rv() != Some(RvError::CryptokiAlreadyInitialized) {
                return Err(e);
            }
            false
        }
    };
    let found = select(&ctx, token);
    if found.is_err() && ours {
        // Leave the module as found, so the next attempt starts clean.
        let _ = ctx.clone().finalize();
    }
    found.map(|(slot, label)| (ctx, slot, label))
}

/// The slot of the token `token` names.
fn select(ctx: &Pkcs11, token: &Pkcs11Uri) -> Result<(Slot, String), HsmError> {
    let slots = ctx.get_slots_with_token().map_err(HsmError::call)?;
    let mut present = Vec::new();
    for slot in slots {
        let info = ctx.get_token_info(slot).map_err(HsmError::call)?;
        let label = quirks::token_text(info.label()).to_string();
        present.push(label.clone());
        let ok = token.token.as_deref().is_none_or(|t| t == label)
            && token
                .serial
                .as_deref()
                .is_none_or(|s| s == quirks::token_text(info.serial_number()))
            && token.slot_id.is_none_or(|id| id == slot.id())
            && token
                .manufacturer
                .as_deref()
                .is_none_or(|m| m == quirks::token_text(info.manufacturer_id()))
            && token
                .model
                .as_deref()
                .is_none_or(|m| m == quirks::token_text(info.model()));
        if ok && info.token_initialized() {
            return Ok((slot, label));
        }
    }
    Err(HsmError::TokenNotFound {
        wanted: token.to_string(),
        present: if present.is_empty() {
            "none".into()
        } else {
            present.join(", ")
        },
    })
}

/// Finds objects of `class` matching the URI's label and id.
pub(crate) fn find(
    session: &Session,
    class: ObjectClass,
    uri: &Pkcs11Uri,
) -> Result<Vec<ObjectHandle>, HsmError> {
    let mut tmpl = vec![Attribute::Class(class)];
    if let Some(l) = &uri.object {
        tmpl.push(Attribute::Label(l.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        tmpl.push(Attribute::Id(id.clone()));
    }
    session.find_objects(&tmpl).map_err(HsmError::call)
}

/// Labels of the objects of `class` on the token, for error messages.
pub(crate) fn labels(session: &Session, class: ObjectClass) -> String {
    let handles = session
        .find_objects(&[Attribute::Class(class)])
        .unwrap_or_default();
    let mut out: Vec<String> = handles
        .into_iter()
        .filter_map(|h| {
            session
                .get_attributes(h, &[AttributeType::Label])
                .ok()
                .and_then(|a| match a.first() {
                    Some(Attribute::Label(l)) => Some(String::from_utf8_lossy(l).into_owned()),
                    _ => None,
                })
        })
        .collect();
    out.sort();
    if out.is_empty() {
        "none (not logged in, or no keys yet)".into()
    } else {
        out.join(", ")
    }
}
