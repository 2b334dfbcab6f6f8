//! What certfab adapts to in a token, in one place (docs/hsm-compat.md, "Quirks"): each
//! adaptation names the token it was seen on and has a test.

use crate::crypto::{HashAlg, SignatureAlgorithm};
use cryptoki::context::Pkcs11;
use cryptoki::mechanism::MechanismType;
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

/// Where the hash of an RSA signature is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RsaVia {
    /// certfab hashes; the token signs the DigestInfo (`CKM_RSA_PKCS`) or the hash
    /// (`CKM_RSA_PKCS_PSS`): the least data sent to the token.
    HostHash,
    /// The token hashes and signs the message (`CKM_SHA256_RSA_PKCS`, …`_PSS`).
    TokenHash,
}

impl Quirks {
    /// How to make `alg` signatures (RSA only; anything else is hashed on the host), given
    /// which mechanisms the token lists for signing. The raw mechanism is preferred, except
    /// on tpm2-pkcs11: it implements `CKM_RSA_PKCS` signing as `TPM2_RSA_Decrypt`, which a
    /// sign-only key (as `ca keygen` makes it) may not do, so there the hash-and-sign
    /// mechanism is used. `Err` names what was looked for.
    pub(crate) fn rsa_via(
        self,
        alg: SignatureAlgorithm,
        signs: impl Fn(MechanismType) -> bool,
    ) -> Result<RsaVia, String> {
        let (raw, hashing, name) = match alg {
            SignatureAlgorithm::RsaPkcs1(h) => (
                MechanismType::RSA_PKCS,
                match h {
                    HashAlg::Sha256 => MechanismType::SHA256_RSA_PKCS,
                    HashAlg::Sha384 => MechanismType::SHA384_RSA_PKCS,
                    HashAlg::Sha512 => MechanismType::SHA512_RSA_PKCS,
                },
                "PKCS#1 v1.5",
            ),
            SignatureAlgorithm::RsaPss(h) => (
                MechanismType::RSA_PKCS_PSS,
                match h {
                    HashAlg::Sha256 => MechanismType::SHA256_RSA_PKCS_PSS,
                    HashAlg::Sha384 => MechanismType::SHA384_RSA_PKCS_PSS,
                    HashAlg::Sha512 => MechanismType::SHA512_RSA_PKCS_PSS,
                },
                "RSA-PSS",
            ),
            _ => return Ok(RsaVia::HostHash),
        };
        let raw_ok = signs(raw) && !(self.tpm2_pkcs11 && raw == MechanismType::RSA_PKCS);
        if raw_ok {
            Ok(RsaVia::HostHash)
        } else if signs(hashing) {
            Ok(RsaVia::TokenHash)
        } else {
            Err(format!(
                "{name} signatures need {raw} or {hashing} with CKF_SIGN, and the token lists {}",
                if signs(raw) {
                    format!("only {raw}, which tpm2-pkcs11 cannot use with a sign-only key")
                } else {
                    "neither".into()
                }
            ))
        }
    }
}

/// A `CK_TOKEN_INFO`/`CK_INFO` text field without its padding: PKCS#11 pads with spaces,
/// tpm2-pkcs11 pads the model with NUL bytes ("SW   TPM" then NULs).
pub(crate) fn token_text(s: &str) -> &str {
    s.trim_matches(|c: char| c == ' ' || c == '\0')
}

#[cfg(test)]
mod tests {
    use super::{Quirks, RsaVia};
    use crate::crypto::{HashAlg, SignatureAlgorithm};
    use cryptoki::mechanism::MechanismType as M;

    #[test]
    fn quirk_rsa_mechanism_choice() {
        let pkcs1 = SignatureAlgorithm::RsaPkcs1(HashAlg::Sha256);
        let pss = SignatureAlgorithm::RsaPss(HashAlg::Sha256);
        let soft = Quirks::default();
        let tpm = Quirks { tpm2_pkcs11: true };
        // SoftHSM-like: everything listed, host hash.
        let all = |_: M| true;
        assert_eq!(soft.rsa_via(pkcs1, all), Ok(RsaVia::HostHash));
        assert_eq!(soft.rsa_via(pss, all), Ok(RsaVia::HostHash));
        // tpm2-pkcs11: CKM_RSA_PKCS and CKM_SHA*_RSA_PKCS listed, no PSS.
        let tpm_list = |m: M| m == M::RSA_PKCS || m == M::SHA256_RSA_PKCS;
        assert_eq!(tpm.rsa_via(pkcs1, tpm_list), Ok(RsaVia::TokenHash));
        let e = tpm.rsa_via(pss, tpm_list).unwrap_err();
        assert!(e.contains("RSA-PSS") && e.contains("neither"), "{e}");
        // No raw mechanism: hash-and-sign on any token.
        assert_eq!(
            soft.rsa_via(pkcs1, |m: M| m == M::SHA256_RSA_PKCS),
            Ok(RsaVia::TokenHash)
        );
        let e = tpm.rsa_via(pkcs1, |m: M| m == M::RSA_PKCS).unwrap_err();
        assert!(e.contains("sign-only"), "{e}");
        // EC keys are always hashed on the host.
        assert_eq!(
            tpm.rsa_via(SignatureAlgorithm::Ecdsa(HashAlg::Sha256), |_: M| false),
            Ok(RsaVia::HostHash)
        );
    }

    #[test]
    fn quirk_nul_padded_token_text_is_trimmed() {
        assert_eq!(super::token_text("SW   TPM\0\0\0\0\0\0\0\0"), "SW   TPM");
        assert_eq!(super::token_text("SoftHSM v2      "), "SoftHSM v2");
        assert_eq!(super::token_text("\0"), "");
    }
}
