//! Recovery from a token that went away, in one place for every use of the token
//! (certificates, CRLs, manifests, audit checkpoints, verification certificates, key
//! self-tests): which PKCS#11 return values mean the token or the connection to it was lost,
//! which mean the request itself was refused, and how long certfab keeps trying.
//!
//! A lost token is re-opened (finalize, initialize, log in again with the PIN that already
//! worked, open a session, find the key again and insist it is the same key) until it answers
//! or the recovery window, counted from the first failure of the outage and shared by every
//! worker, has passed. Then the command stops with exit 4 naming the first failure, the real
//! cause, and the last attempt; every later use in the same process fails at once with the
//! same error, so no worker waits out a second window. A refused request (wrong PIN, a key
//! that may not sign, a bad mechanism) is never retried: re-opening would not change the
//! answer, and repeating a login could count towards a PIN lockout.

use super::HsmError;
use cryptoki::context::Function;
use cryptoki::error::RvError;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long certfab keeps re-opening a lost token before it gives up, unless the site config
/// says otherwise (`pkcs11.recovery_window`). Long enough for a network HSM's client to
/// reconnect or a remote token's server to restart; short enough that a line notices.
pub const DEFAULT_RECOVERY_WINDOW: Duration = Duration::from_secs(30);

/// The longest pause between two re-open attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What a failure says about the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The token answered but could not serve the call right now (`CKR_DEVICE_ERROR`; AWS
    /// CloudHSM also returns it when it throttles): call again on the same session after a
    /// pause, once, before treating the token as lost.
    Busy,
    /// The token, the module's state or the session is gone: re-open everything.
    Lost,
    /// The request was refused for a reason a re-open does not change: report it as it is.
    Refused,
}

/// Classifies a failure by the typed PKCS#11 return value and the call that returned it.
/// `reopening` is true while certfab is re-opening a token it lost: then "no such token" or
/// "no such key" means it is not back yet, not that the configuration is wrong.
pub fn classify(e: &HsmError, reopening: bool) -> Fault {
    match e {
        HsmError::Call { function, rv } => classify_rv(*function, *rv),
        HsmError::TokenNotFound { .. } | HsmError::KeyNotFound { .. } if reopening => Fault::Lost,
        _ => Fault::Refused,
    }
}

fn classify_rv(function: Function, rv: RvError) -> Fault {
    match rv {
        RvError::DeviceError => Fault::Busy,
        RvError::DeviceRemoved
        | RvError::TokenNotPresent
        | RvError::SessionHandleInvalid
        | RvError::SessionClosed
        | RvError::CryptokiNotInitialized
        // Handles of a module state that no longer exists.
        | RvError::ObjectHandleInvalid
        | RvError::KeyHandleInvalid
        // The login went with the token (a remote token's server restarted); certfab refuses
        // keys that want a login per signature (CKA_ALWAYS_AUTHENTICATE) when it opens them,
        // so this is never a per-signature login.
        | RvError::UserNotLoggedIn => Fault::Lost,
        // A module that cannot open means nothing else, but from C_Sign it may be the key or
        // the token's own limits (a TPM out of object slots): not a lost token.
        RvError::GeneralError if opens(function) => Fault::Lost,
        _ => Fault::Refused,
    }
}

/// Calls that only open the module, the token or a session.
fn opens(function: Function) -> bool {
    matches!(
        function,
        Function::Initialize
            | Function::Finalize
            | Function::GetSlotList
            | Function::GetSlotInfo
            | Function::GetTokenInfo
            | Function::OpenSession
            | Function::Login
    )
}

/// The outage state every worker of one process shares.
pub(super) struct Recovery {
    window: Duration,
    state: Mutex<Outage>,
}

#[derive(Default)]
struct Outage {
    /// When the current outage began and the failure that began it.
    since: Option<(Instant, HsmError)>,
    /// Re-open attempts in the current outage.
    attempts: u32,
    /// Set when the window passed: the error every later use gets at once.
    gave_up: Option<HsmError>,
}

impl Recovery {
    pub(super) fn new(window: Duration) -> Self {
        Self {
            window,
            state: Mutex::new(Outage::default()),
        }
    }

    pub(super) fn window(&self) -> Duration {
        self.window
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outage> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The error every use gets after the window passed, if it did.
    pub(super) fn gave_up(&self) -> Option<HsmError> {
        self.lock().gave_up.clone()
    }

    /// Notes a failure. Returns how long to pause before the next attempt, or the error to
    /// stop with when the window has passed.
    pub(super) fn failed(&self, err: HsmError) -> Result<Duration, HsmError> {
        let mut s = self.lock();
        if let Some(e) = &s.gave_up {
            return Err(e.clone());
        }
        let (since, cause) = s.since.get_or_insert_with(|| (Instant::now(), err.clone()));
        let elapsed = since.elapsed();
        if elapsed >= self.window {
            let e = HsmError::Unavailable {
                cause: Box::new(cause.clone()),
                last: Box::new(err),
                window: self.window,
                attempts: s.attempts,
            };
            s.gave_up = Some(e.clone());
            return Err(e);
        }
        s.attempts += 1;
        let backoff = Duration::from_millis(50)
            .saturating_mul(1 << s.attempts.min(5))
            .min(MAX_BACKOFF);
        Ok(backoff.min(self.window - elapsed))
    }

    /// Stops every later use with `err`, which a re-open met and which no retry changes (a
    /// refused login with the PIN that worked before: trying it again could lock the token).
    pub(super) fn give_up_with(&self, err: HsmError) -> HsmError {
        self.lock().gave_up = Some(err.clone());
        err
    }

    /// A use succeeded: the outage, if any, is over.
    pub(super) fn healed(&self) {
        let mut s = self.lock();
        if s.since.is_some() && s.gave_up.is_none() {
            s.since = None;
            s.attempts = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(function: Function, rv: RvError) -> HsmError {
        HsmError::Call { function, rv }
    }

    #[test]
    fn recovery_classifies_by_return_value_and_call() {
        assert_eq!(
            classify(&call(Function::Sign, RvError::DeviceError), false),
            Fault::Busy
        );
        for rv in [
            RvError::DeviceRemoved,
            RvError::TokenNotPresent,
            RvError::SessionHandleInvalid,
            RvError::CryptokiNotInitialized,
        ] {
            assert_eq!(classify(&call(Function::Sign, rv), false), Fault::Lost);
        }
        assert_eq!(
            classify(&call(Function::OpenSession, RvError::GeneralError), false),
            Fault::Lost
        );
        assert_eq!(
            classify(&call(Function::Sign, RvError::GeneralError), false),
            Fault::Refused
        );
        for rv in [
            RvError::PinIncorrect,
            RvError::PinLocked,
            RvError::KeyFunctionNotPermitted,
            RvError::MechanismInvalid,
            RvError::FunctionFailed,
        ] {
            assert_eq!(classify(&call(Function::Sign, rv), false), Fault::Refused);
        }
        let gone = HsmError::TokenNotFound {
            wanted: "pkcs11:token=t".into(),
            present: "none".into(),
        };
        assert_eq!(classify(&gone, false), Fault::Refused);
        assert_eq!(classify(&gone, true), Fault::Lost);
    }

    #[test]
    fn recovery_window_bounds_an_outage_and_names_its_cause() {
        let r = Recovery::new(Duration::from_millis(200));
        let first = call(Function::Sign, RvError::DeviceRemoved);
        let pause = r.failed(first).unwrap();
        assert!(pause <= Duration::from_millis(200));
        std::thread::sleep(Duration::from_millis(210));
        let gone = HsmError::TokenNotFound {
            wanted: "pkcs11:token=t".into(),
            present: "none".into(),
        };
        let e = r.failed(gone).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("C_Sign failed with CKR_DEVICE_REMOVED"),
            "{text}"
        );
        assert!(
            text.contains(
                "the last: the module lists no token pkcs11:token=t (tokens present: none)"
            ),
            "{text}"
        );
        assert!(!text.contains("site config"), "{text}");
        assert!(text.contains("0.2 s"), "{text}");
        assert_eq!(e.rv(), Some(RvError::DeviceRemoved));
        // Every later use fails at once with the same error.
        assert_eq!(r.gave_up().map(|e| e.to_string()), Some(text));
    }

    #[test]
    fn recovery_window_restarts_after_the_token_answered() {
        let r = Recovery::new(Duration::from_millis(200));
        r.failed(call(Function::Sign, RvError::DeviceRemoved))
            .unwrap();
        std::thread::sleep(Duration::from_millis(150));
        r.healed();
        std::thread::sleep(Duration::from_millis(100));
        assert!(r
            .failed(call(Function::Sign, RvError::DeviceRemoved))
            .is_ok());
    }
}
