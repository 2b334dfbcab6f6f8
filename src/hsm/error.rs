use crate::exit::ExitCode;
use cryptoki::context::Function;
use cryptoki::error::RvError;
use std::path::PathBuf;
use std::time::Duration;

/// A PKCS#11 failure, keeping the CKR code and the failing call so operators can look it up.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// The module could not be loaded.
    #[error("cannot load PKCS#11 module {path}: {detail}; check pkcs11.module in the site config (SoftHSM: /usr/lib/softhsm/libsofthsm2.so)")]
    Module {
        /// Module path.
        path: PathBuf,
        /// Loader message.
        detail: String,
    },
    /// A PKCS#11 call returned an error. Shown as `C_Sign failed with CKR_DEVICE_ERROR`, with
    /// what to do about it when certfab knows.
    #[error("C_{function:?} failed with {}{}", ckr_name(rv), hint(*rv))]
    Call {
        /// The call that failed.
        function: Function,
        /// What the token returned.
        rv: RvError,
    },
    /// No token matched.
    #[error("no token matches {wanted}; tokens present: {present}. Check pkcs11.token in the site config, or SOFTHSM2_CONF")]
    TokenNotFound {
        /// What was asked for.
        wanted: String,
        /// Labels present.
        present: String,
    },
    /// The token PIN is locked.
    #[error("token '{0}' reports its user PIN locked; certfab will not try to log in. Ask the security officer to unlock it")]
    PinLocked(String),
    /// One more wrong PIN would lock the token.
    #[error("token '{0}' reports the next wrong PIN locks it (final try); certfab will not risk it. Verify the PIN source, then log in once by hand (pkcs11-tool --login --test) to reset the counter")]
    PinFinalTry(String),
    /// The PIN was refused.
    #[error("login to token '{token}' refused: {}. certfab makes one attempt per run; check the PIN source ({source_name}). PIN lockout: {lockout}", ckr_name(rv))]
    LoginRefused {
        /// Token label.
        token: String,
        /// What C_Login returned.
        rv: RvError,
        /// Where the PIN came from (never the PIN).
        source_name: String,
        /// The lockout state the token reports after the refusal (docs/hsm-compat.md).
        lockout: String,
    },
    /// The named key is not on the token.
    #[error("no private key matches {uri} on token '{token}'; keys present: {present}")]
    KeyNotFound {
        uri: String,
        /// Token label.
        token: String,
        /// Labels present.
        present: String,
    },
    /// The URI matches more than one key.
    #[error("{uri} matches {count} private keys; add id= or a unique object= to the URI")]
    AmbiguousKey {
        uri: String,
        /// How many matched.
        count: usize,
    },
    /// A CA key that could leave the token.
    #[error("private key {uri} is {why}; certfab signs only with keys that cannot leave the token. Generate a new CA key with `certfab ca keygen`")]
    KeyNotProtected {
        uri: String,
        /// Which attribute is wrong.
        why: String,
    },
    /// A key type certfab does not sign with.
    #[error("key {uri} is of a type certfab cannot sign with ({what}); use an EC P-256/P-384 or RSA key")]
    UnsupportedKey {
        uri: String,
        /// What was found.
        what: String,
    },
    /// The token lists no mechanism certfab can make the key's signatures with.
    #[error("key {uri}: {why}; certfab cannot sign with it on this token (docs/hsm-compat.md)")]
    NoMechanism {
        uri: String,
        /// What was looked for and found.
        why: String,
    },
    /// The token key does not belong to the CA certificate.
    #[error("the public key of {uri} does not match CA certificate {cert}; refusing to sign. Point the profile at the right certificate, or import it with `certfab ca import`")]
    KeyMismatch { uri: String, cert: String },
    /// The token was lost and did not answer again within the recovery window
    /// (`pkcs11.recovery_window`). Names the failure that began the outage, which is the real
    /// cause; the last attempt's error only says how far the re-open got.
    #[error("the token stopped answering ({cause}) and did not come back within the recovery window of {} ({attempts} re-open attempts; the last: {}). Check the HSM and the connection to it (a network HSM's client, a remote token's server), then run the same command again: what was done is kept", secs(*window), reopen_detail(last))]
    Unavailable {
        /// The failure that began the outage.
        cause: Box<HsmError>,
        /// The last re-open attempt's failure.
        last: Box<HsmError>,
        /// The recovery window that passed.
        window: Duration,
        /// Re-open attempts made.
        attempts: u32,
    },
    /// The key demands a context-specific login (CKA_ALWAYS_AUTHENTICATE) before every
    /// signature, which certfab does not do: refused before the first C_Sign instead of
    /// failing every signature with CKR_USER_NOT_LOGGED_IN.
    #[error("key {uri} has CKA_ALWAYS_AUTHENTICATE set (the token wants the PIN again before every signature); certfab does not log in per signature. Use a CA key without it, e.g. one made by `certfab ca keygen` (docs/hsm-compat.md)")]
    AlwaysAuthenticate { uri: String },
    /// A key pair came out of C_GenerateKeyPair without the protection its template asked for
    /// (or could not be checked); certfab deleted it again.
    #[error("token '{token}' made key '{label}' {what}; the key pair was deleted again. This token cannot hold a certfab CA key as generated (docs/hsm-compat.md)")]
    KeygenUnsafe {
        /// Token label.
        token: String,
        /// The new key's label.
        label: String,
        /// What the read-back found.
        what: String,
    },
    /// An object already exists.
    #[error("an object labelled '{0}' already exists on the token; choose another label or delete it first")]
    Exists(String),
    /// Anything else (bad attribute, invalid value).
    #[error("{0}")]
    Other(String),
}

impl HsmError {
    /// Wraps a cryptoki error with the call that failed.
    pub(crate) fn call(err: cryptoki::error::Error) -> Self {
        match err {
            cryptoki::error::Error::Pkcs11(rv, function) => Self::Call { function, rv },
            other => Self::Other(other.to_string()),
        }
    }

    /// What the token returned, when this is a PKCS#11 error (for a token that stayed lost:
    /// what began the outage).
    pub fn rv(&self) -> Option<RvError> {
        match self {
            Self::Call { rv, .. } | Self::LoginRefused { rv, .. } => Some(*rv),
            Self::Unavailable { cause, .. } => cause.rv(),
            _ => None,
        }
    }

    /// The token refused another session (`CKR_SESSION_COUNT`): its session limit, not a
    /// fault.
    pub fn is_session_limit(&self) -> bool {
        self.rv() == Some(RvError::SessionCount)
    }

    /// A key that exists but does not belong to the configured certificate is a configuration
    /// error (exit 2); everything else about the token is exit 4.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::KeyMismatch { .. } => ExitCode::Usage,
            _ => ExitCode::Hsm,
        }
    }
}

impl crate::crypto::BackendError for HsmError {
    fn exit_code(&self) -> ExitCode {
        HsmError::exit_code(self)
    }
}

impl From<HsmError> for crate::crypto::SignError {
    fn from(e: HsmError) -> Self {
        Self::Backend(Box::new(e))
    }
}

/// How far a re-open got, without the configuration advice that the same error carries when
/// a command starts (during an outage, "no such token" means it is not back yet).
fn reopen_detail(e: &HsmError) -> String {
    match e {
        HsmError::TokenNotFound { wanted, present } => {
            format!("the module lists no token {wanted} (tokens present: {present})")
        }
        HsmError::KeyNotFound { uri, token, .. } => {
            format!("key {uri} not found on token '{token}' again")
        }
        other => other.to_string(),
    }
}

/// `30 s`, `0.2 s`: a window as the site config would state it.
fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// What to do about a return value, when certfab knows.
fn hint(rv: RvError) -> &'static str {
    match rv {
        RvError::PinIncorrect => "; the PIN is wrong",
        RvError::PinLocked => "; the PIN is locked, ask the security officer",
        RvError::TokenNotPresent | RvError::DeviceRemoved => "; is the HSM connected?",
        RvError::UserNotLoggedIn => "; no PIN configured or login failed",
        _ => "",
    }
}

/// `PinIncorrect` → `CKR_PIN_INCORRECT`.
pub(crate) fn ckr_name(rv: &RvError) -> String {
    let dbg = format!("{rv:?}");
    let mut out = String::from("CKR");
    for (i, c) in dbg.chars().enumerate() {
        if c.is_ascii_uppercase()
            || (i > 0 && c.is_ascii_digit() && !out.ends_with(|d: char| d.is_ascii_digit()))
        {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn item4_hsm_errors_keep_the_return_value_typed_and_print_the_ckr_name() {
        use super::HsmError;
        use cryptoki::context::Function;
        use cryptoki::error::RvError;
        let e = HsmError::call(cryptoki::error::Error::Pkcs11(
            RvError::DeviceRemoved,
            Function::Sign,
        ));
        assert_eq!(e.rv(), Some(RvError::DeviceRemoved));
        assert_eq!(
            e.to_string(),
            "C_Sign failed with CKR_DEVICE_REMOVED; is the HSM connected?"
        );
        let pin = HsmError::call(cryptoki::error::Error::Pkcs11(
            RvError::PinIncorrect,
            Function::Login,
        ));
        assert_eq!(
            pin.to_string(),
            "C_Login failed with CKR_PIN_INCORRECT; the PIN is wrong"
        );
        assert_eq!(pin.exit_code(), crate::exit::ExitCode::Hsm);
    }

    #[test]
    fn ckr_names() {
        use cryptoki::error::RvError;
        assert_eq!(super::ckr_name(&RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(super::ckr_name(&RvError::DeviceError), "CKR_DEVICE_ERROR");
    }
}
