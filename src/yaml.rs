//! YAML loading with errors that name the file, the line and the fix.
//!
//! certfab uses `serde_yaml_ng`: a maintained fork of the deprecated `serde_yaml` with the same
//! data model and, what matters here, error locations for every type or value error, so a bad
//! profile is reported as `profiles/x.yaml:12:5: …`.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// A YAML file that could not be read or does not fit its schema.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {msg}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct YamlError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong and what to do.
    pub msg: String,
}

/// Reads and deserializes `path`; returns the value and the file text (for later checks that
/// need to point at a line).
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<(T, String), YamlError> {
    let text = std::fs::read_to_string(path).map_err(|e| YamlError {
        path: path.into(),
        line: None,
        msg: format!("cannot read: {e}"),
    })?;
    let value = serde_yaml_ng::from_str(&text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        // serde_yaml_ng appends " at line X column Y"; the prefix already says it.
        let msg = e.to_string();
        let msg = match msg.find(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        YamlError {
            path: path.into(),
            line,
            msg,
        }
    })?;
    Ok((value, text))
}

/// The 1-based line where `key:` first appears (block or flow style), for semantic errors.
pub fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.match_indices(key).any(|(i, _)| {
                let before = l[..i].chars().next_back();
                let boundary = before.is_none_or(|c| {
                    !(c.is_alphanumeric()
                        || c == '_'
                        || c == '-' && i > 1 && l.as_bytes()[i - 2] != b' ')
                });
                boundary && l[i + key.len()..].trim_start().starts_with(':')
            })
        })
        .map(|i| i + 1)
}
