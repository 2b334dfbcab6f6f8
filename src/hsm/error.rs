use std::path::PathBuf;

/// A PKCS#11 failure, keeping the CKR code and the failing call so operators can look it up.
#[derive(Debug, thiserror::Error)]
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
    /// A PKCS#11 call returned an error.
    #[error("{call} failed with {ckr}{hint}")]
    Call {
        /// The C_ function.
        call: String,
        /// The CKR_ name.
        ckr: String,
        /// What to do about it, if known.
        hint: String,
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
    #[error("login to token '{token}' refused: {ckr}. certfab makes one attempt per run; check the PIN source ({source_name})")]
    LoginRefused {
        /// Token label.
        token: String,
        /// CKR name.
        ckr: String,
        /// Where the PIN came from (never the PIN).
        source_name: String,
    },
    /// The named key is not on the token.
    #[error("no private key matches {uri} on token '{token}'; keys present: {present}")]
    KeyNotFound {
        /// The URI.
        uri: String,
        /// Token label.
        token: String,
        /// Labels present.
        present: String,
    },
    /// The URI matches more than one key.
    #[error("{uri} matches {count} private keys; add id= or a unique object= to the URI")]
    AmbiguousKey {
        /// The URI.
        uri: String,
        /// How many matched.
        count: usize,
    },
    /// A CA key that could leave the token.
    #[error("private key {uri} is {why}; certfab signs only with keys that cannot leave the token. Generate a new CA key with `certfab ca keygen`")]
    KeyNotProtected {
        /// The URI.
        uri: String,
        /// Which attribute is wrong.
        why: String,
    },
    /// A key type certfab does not sign with.
    #[error("key {uri} is of a type certfab cannot sign with ({what}); use an EC P-256/P-384 or RSA key")]
    UnsupportedKey {
        /// The URI.
        uri: String,
        /// What was found.
        what: String,
    },
    /// The token key does not belong to the CA certificate.
    #[error("the public key of {uri} does not match CA certificate {cert}; refusing to sign. Point the profile at the right certificate, or import it with `certfab ca import`")]
    KeyMismatch {
        /// The URI.
        uri: String,
        /// The certificate.
        cert: String,
    },
    /// Recovery failed after bounded retries.
    #[error("token still failing after {attempts} recovery attempts; last error: {last}. Check the HSM connection and restart")]
    RecoveryExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: Box<HsmError>,
    },
    /// The key demands a context-specific login (CKA_ALWAYS_AUTHENTICATE) before every
    /// signature, which certfab does not do: refused before the first C_Sign instead of
    /// failing every signature with CKR_USER_NOT_LOGGED_IN.
    #[error("key {uri} has CKA_ALWAYS_AUTHENTICATE set (the token wants the PIN again before every signature); certfab does not log in per signature. Use a CA key without it, e.g. one made by `certfab ca keygen` (docs/hsm-compat.md)")]
    AlwaysAuthenticate {
        /// The URI.
        uri: String,
    },
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
            cryptoki::error::Error::Pkcs11(rv, func) => {
                let ckr = ckr_name(&rv);
                let hint = match ckr.as_str() {
                    "CKR_PIN_INCORRECT" => "; the PIN is wrong",
                    "CKR_PIN_LOCKED" => "; the PIN is locked, ask the security officer",
                    "CKR_TOKEN_NOT_PRESENT" | "CKR_DEVICE_REMOVED" => "; is the HSM connected?",
                    "CKR_USER_NOT_LOGGED_IN" => "; no PIN configured or login failed",
                    _ => "",
                };
                Self::Call {
                    call: format!("C_{func:?}"),
                    ckr,
                    hint: hint.into(),
                }
            }
            other => Self::Other(other.to_string()),
        }
    }

    /// The CKR name, when this is a PKCS#11 error.
    pub fn ckr(&self) -> Option<&str> {
        match self {
            Self::Call { ckr, .. } => Some(ckr),
            _ => None,
        }
    }

    /// Errors after which finalize → initialize → login → re-find key may help.
    pub fn is_recoverable(&self) -> bool {
        matches!(
            self.ckr(),
            Some(
                "CKR_DEVICE_ERROR"
                    | "CKR_DEVICE_REMOVED"
                    | "CKR_SESSION_HANDLE_INVALID"
                    | "CKR_SESSION_CLOSED"
                    | "CKR_OBJECT_HANDLE_INVALID"
                    | "CKR_KEY_HANDLE_INVALID"
                    | "CKR_CRYPTOKI_NOT_INITIALIZED"
                    | "CKR_USER_NOT_LOGGED_IN"
            )
        )
    }
}

/// `PinIncorrect` → `CKR_PIN_INCORRECT`.
pub(crate) fn ckr_name(rv: &cryptoki::error::RvError) -> String {
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
    fn ckr_names() {
        use cryptoki::error::RvError;
        assert_eq!(super::ckr_name(&RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(super::ckr_name(&RvError::DeviceError), "CKR_DEVICE_ERROR");
    }
}
