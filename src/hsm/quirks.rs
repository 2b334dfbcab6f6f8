//! What certfab adapts to in a token, in one place (docs/hsm-compat.md, "Quirks"): each
//! adaptation names the token it was seen on and has a test.

use cryptoki::context::Pkcs11;
use cryptoki::slot::TokenInfo;

/// What certfab knows about the module it loaded, read once per initialisation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Quirks {
    /// tpm2-pkcs11 (C_GetInfo manufacturer `tpm2-software.github.io`): it never reports a PIN
    /// counter in the token flags, and a wrong PIN counts towards the whole TPM's
    /// dictionary-attack lockout (verified with swtpm: `tests/hsm_faults.rs`).
    pub tpm2_pkcs11: bool,
}

impl Quirks {
    /// Reads the module's own description.
    pub(crate) fn detect(ctx: &Pkcs11) -> Self {
        let tpm2_pkcs11 = ctx
            .get_library_info()
            .is_ok_and(|i| token_text(i.manufacturer_id()) == "tpm2-software.github.io");
        Self { tpm2_pkcs11 }
    }

    /// The PIN lockout state after a refused login, as far as the token tells: its flags, or
    /// for a TPM what a wrong PIN does there and how to read the counter.
    pub(crate) fn lockout_state(self, info: Option<&TokenInfo>, pin_locked: bool) -> String {
        let Some(info) = info else {
            return "the token's PIN state could not be read after the refusal".into();
        };
        if info.user_pin_locked() {
            return "the token now reports the user PIN locked".into();
        }
        if info.user_pin_final_try() {
            return "the token now reports that one more wrong PIN locks it".into();
        }
        if self.tpm2_pkcs11 {
            return if pin_locked {
                "the TPM is in dictionary-attack lockout: every login on it fails, even with the right PIN, until its lockout recovery time has passed or the lockout is cleared (tpm2_dictionarylockout --clear-lockout)".into()
            } else {
                "tpm2-pkcs11 reports no PIN counter; each wrong PIN counts towards the whole TPM's dictionary-attack lockout (tpm2_getcap properties-variable: TPM2_PT_LOCKOUT_COUNTER of TPM2_PT_MAX_AUTH_FAIL)".into()
            };
        }
        if info.user_pin_count_low() {
            return "the token now reports wrong PINs counted (count low)".into();
        }
        "the token reports no PIN lockout state (no count-low, final-try or locked flag)".into()
    }
}

/// A `CK_TOKEN_INFO`/`CK_INFO` text field without its padding: PKCS#11 pads with spaces,
/// tpm2-pkcs11 pads the model with NUL bytes ("SW   TPM" then NULs).
pub(crate) fn token_text(s: &str) -> &str {
    s.trim_matches(|c: char| c == ' ' || c == '\0')
}

#[cfg(test)]
mod tests {
    #[test]
    fn quirk_nul_padded_token_text_is_trimmed() {
        assert_eq!(super::token_text("SW   TPM\0\0\0\0\0\0\0\0"), "SW   TPM");
        assert_eq!(super::token_text("SoftHSM v2      "), "SoftHSM v2");
        assert_eq!(super::token_text("\0"), "");
    }
}
