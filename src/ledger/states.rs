//! The ledger's vocabularies as types (DESIGN.md "Per-device states"). Text appears only where
//! rows are read and written (`ToValue`/`FromValue` here, the SQL of this module's siblings) and
//! where the manifest and JSON outputs print them; everything else matches on the enums.

/// Names ↔ variants for a closed vocabulary, with the ledger's column conversions.
macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in the order the schema lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The ledger's (and the JSON outputs') name for it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "'{}' is not a {} ({})",
                        crate::text::escape(other),
                        stringify!($name),
                        Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
                    )),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl super::db::ToValue for $name {
            fn to_value(&self) -> super::db::Value {
                super::db::Value::Text(self.as_str().to_string())
            }
        }

        impl super::db::FromValue for $name {
            fn from_value(v: &super::db::Value) -> Result<Self, String> {
                match v {
                    super::db::Value::Text(s) => s.parse(),
                    _ => Err(format!("expected a {} name", stringify!($name))),
                }
            }
        }
    };
}

vocabulary! {
    /// Where a device stands (the `devices.state` column).
    DeviceState {
        /// The intent: serial and TBS committed, the HSM not yet done.
        Signing = "signing",
        /// Signed and recorded; not (yet) on the device.
        Signed = "signed",
        /// The signature failed: the serial is burned, the device is issued afresh later.
        SignFailed = "sign_failed",
        /// A station is about to send the install.
        Installing = "installing",
        /// Installed, read back, proven and locked.
        Installed = "installed",
        /// The install was sent but not confirmed (reply lost, read-back, proof or lock
        /// failed): the device gets the same certificate again.
        InstallUnconfirmed = "install_unconfirmed",
        /// In a manifest.
        Exported = "exported",
        /// Replaced on purpose (`--supersede`, `renew`).
        Superseded = "superseded",
        Revoked = "revoked",
    }
}

impl DeviceState {
    /// The states a manifest's device line may report: a live certificate not yet exported.
    pub const IN_MANIFEST: &'static [DeviceState] = &[
        DeviceState::Signed,
        DeviceState::Installing,
        DeviceState::Installed,
        DeviceState::InstallUnconfirmed,
    ];

    /// A proven install. A station never moves a device out of it: a later failure (a lock
    /// refused, a lost file, a device claiming this identity without its key) does not undo
    /// a proof that already happened. Only `--supersede` and revocation end such an identity.
    pub fn is_proven(self) -> bool {
        matches!(self, Self::Installed | Self::Exported)
    }

    /// The device holds a live certificate (signed and neither replaced nor revoked).
    pub fn is_live(self) -> bool {
        Self::IN_MANIFEST.contains(&self) || self == Self::Exported
    }

    /// The identity may be issued again: its signature failed, or it was replaced or
    /// revoked on purpose (a revoked key itself is still refused).
    pub fn is_reissuable(self) -> bool {
        matches!(self, Self::SignFailed | Self::Superseded | Self::Revoked)
    }
}

vocabulary! {
    /// A reserved serial's fate (the `certificates.state` column).
    CertState {
        /// Committed before signing.
        Intent = "intent",
        /// Signed, verified and recorded.
        Signed = "signed",
        /// Never signed (failed or interrupted); never reused.
        Burned = "burned",
    }
}

vocabulary! {
    /// Where a device's key was made (the `devices.key_origin` column, and `certfab issue
    /// --json`'s `key_origin`).
    KeyOrigin {
        /// A CSR given to `certfab issue`, `batch` or `renew` (proof of possession checked).
        Csr = "csr",
        /// A bare public key given in a file.
        Pubkey = "pubkey",
        /// Generated on this host by certfab (batch `--keygen host`, station `keygen: host`).
        Host = "host",
        /// Generated on the device at a station (its CSR).
        Device = "device",
    }
}

/// SQL text for `state IN (…)` over `states` (the ledger edge, built from the enum so the
/// lists cannot drift from it).
pub(super) fn sql_list(states: &[DeviceState]) -> String {
    states
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CHECK constraints of the first migration list exactly the enums' names, so a
    /// state added to one and not the other fails here, not in a ledger.
    #[test]
    fn item4_states_are_the_schema_check_lists() {
        let step = &super::super::schema::MIGRATIONS[0];
        let names = |all: &[&str]| all.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>();
        let device: Vec<&str> = DeviceState::ALL.iter().map(|s| s.as_str()).collect();
        // Both dialects.
        for schema in [step.sqlite, step.pg] {
            let squashed: String = schema.split_whitespace().collect();
            assert!(
                squashed
                    .contains(&format!("state IN({})", names(&device).join(",")).replace(' ', "")),
                "devices.state CHECK differs from DeviceState::ALL"
            );
            let cert: Vec<&str> = CertState::ALL.iter().map(|s| s.as_str()).collect();
            assert!(
                squashed.contains(&format!("CHECK(stateIN({}))", names(&cert).join(","))),
                "certificates.state CHECK differs from CertState::ALL"
            );
        }
        for s in DeviceState::ALL {
            assert_eq!(s.as_str().parse::<DeviceState>(), Ok(*s));
        }
        assert!("bogus".parse::<DeviceState>().is_err());
    }
}
