//! Secret sources (PINs, passphrases): `env:NAME`, `file:PATH` or `prompt`. A secret is never
//! taken from argv, and nothing here prints one.

use secrecy::SecretString;
use std::path::{Path, PathBuf};

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file readable by its owner only; trailing newline stripped.
    File(PathBuf),
    /// Ask on the terminal.
    Prompt,
}

/// Why a secret could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The source string is not one of the forms.
    #[error("secret source is not understood; write env:NAME, file:PATH or prompt (a secret itself never goes in the config or on the command line; the value given is not shown)")]
    BadSource,
    /// The variable is unset.
    #[error("environment variable {0} named as secret source is not set")]
    EnvUnset(String),
    /// The file cannot be read.
    #[error("cannot read secret file {path}: {err}")]
    FileRead {
        path: PathBuf,
        /// The I/O error.
        err: std::io::Error,
    },
    /// The file is readable by others.
    #[error(
        "secret file {path} has mode {mode:o}: group or others can access it; run chmod 600 {path}"
    )]
    FileMode {
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Prompt requested without a terminal.
    #[error("secret source is 'prompt' but there is no terminal; use env:NAME or file:PATH for unattended runs")]
    NoTerminal,
    /// The secret is empty.
    #[error("the secret from {0} is empty")]
    Empty(String),
}

impl SecretError {
    /// A secret source that cannot be read is a usage error (exit 2).
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        crate::exit::ExitCode::Usage
    }
}

impl SecretSource {
    /// Parses `env:NAME`, `file:PATH` (relative to `base`) or `prompt`.
    pub fn parse(s: &str, base: &Path) -> Result<Self, SecretError> {
        if let Some(name) = s.strip_prefix("env:") {
            if name.is_empty() {
                return Err(SecretError::BadSource);
            }
            // Named as a secret: never handed to a child process.
            crate::process::withhold_env(name);
            Ok(Self::Env(name.into()))
        } else if let Some(p) = s.strip_prefix("file:") {
            if p.is_empty() {
                return Err(SecretError::BadSource);
            }
            Ok(Self::File(base.join(p)))
        } else if s == "prompt" {
            Ok(Self::Prompt)
        } else {
            Err(SecretError::BadSource)
        }
    }

    /// Reads the secret; `what` names it in the prompt.
    pub fn read(&self, what: &str) -> Result<SecretString, SecretError> {
        // main already did this; a library caller gets it here, before the secret is in memory.
        crate::process::protect_memory();
        let (value, origin) = match self {
            Self::Env(name) => (
                std::env::var(name).map_err(|_| SecretError::EnvUnset(name.clone()))?,
                format!("env:{name}"),
            ),
            Self::File(path) => {
                check_private(path)?;
                let text = std::fs::read_to_string(path).map_err(|err| SecretError::FileRead {
                    path: path.clone(),
                    err,
                })?;
                (
                    text.trim_end_matches(['\r', '\n']).to_string(),
                    format!("file:{}", path.display()),
                )
            }
            Self::Prompt => {
                use std::io::IsTerminal;
                if !std::io::stdin().is_terminal() {
                    return Err(SecretError::NoTerminal);
                }
                let v = rpassword::prompt_password(format!("{what}: ")).map_err(|err| {
                    SecretError::FileRead {
                        path: "/dev/tty".into(),
                        err,
                    }
                })?;
                (v, "prompt".into())
            }
        };
        if value.is_empty() {
            return Err(SecretError::Empty(origin));
        }
        Ok(SecretString::from(value))
    }
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), SecretError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|err| SecretError::FileRead {
        path: path.into(),
        err,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::FileMode {
            path: path.into(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path) -> Result<(), SecretError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pin");
        std::fs::write(&p, "1234\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let src = SecretSource::parse("file:pin", dir.path()).unwrap();
        let err = src.read("PIN").unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(!err.to_string().contains("1234"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(src.read("PIN").unwrap().expose_secret(), "1234");
    }

    #[test]
    fn bad_source_does_not_echo_secret() {
        let err = SecretSource::parse("123456789012345678", Path::new("/")).unwrap_err();
        assert!(!err.to_string().contains("1234"), "{err}");
    }
}
