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
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong and what to do.
    pub msg: String,
}

impl YamlError {
    /// A YAML file certfab cannot use is a usage error (exit 2).
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        crate::exit::ExitCode::Usage
    }
}

/// The largest profile or site config certfab reads: real ones are a few KiB. Checked while
/// reading, so a huge file (or a device node) is never read whole.
pub const MAX_FILE: u64 = 1024 * 1024;

/// The deepest nesting of mappings and sequences certfab parses: real files nest under 10
/// levels. Checked by a scan before the YAML parser sees the text, because the parser's time
/// grows with the square of the depth (100 000 levels took 25 s of CPU before failing).
pub const MAX_DEPTH: usize = 64;

/// Reads `path` whole, refusing anything over [`MAX_FILE`].
pub fn read_bounded(path: &Path) -> Result<Vec<u8>, YamlError> {
    use std::io::Read;
    let fail = |msg: String| YamlError {
        path: path.into(),
        line: None,
        msg,
    };
    let mut data = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE + 1).read_to_end(&mut data))
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if data.len() as u64 > MAX_FILE {
        return Err(fail(format!(
            "over the {} KiB limit for a profile or site config; real ones are a few KiB",
            MAX_FILE / 1024
        )));
    }
    Ok(data)
}

/// Reads and deserializes `path`; returns the value and the file text (for later checks that
/// need to point at a line).
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<(T, String), YamlError> {
    let bytes = read_bounded(path)?;
    let text = String::from_utf8(bytes).map_err(|e| YamlError {
        path: path.into(),
        line: None,
        msg: format!(
            "not UTF-8 text (byte {} is not); save it as UTF-8",
            e.utf8_error().valid_up_to()
        ),
    })?;
    let value = parse(path, &text)?;
    Ok((value, text))
}

/// Deserializes `text` (the contents of `path`, which names it in errors), after the nesting
/// depth scan.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, YamlError> {
    if let Some(line) = too_deep(text, MAX_DEPTH) {
        return Err(YamlError {
            path: path.into(),
            line: Some(line),
            msg: format!(
                "nested deeper than {MAX_DEPTH} levels; real profiles and configs nest under 10"
            ),
        });
    }
    serde_yaml_ng::from_str(text).map_err(|e| {
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
    })
}

/// The 1-based line where the nesting of `text` first exceeds `max`, if it does. An upper
/// estimate, never lower than what the parser builds: block levels are counted from the
/// indentation (a stack of indent columns, plus compact `- - x` entries), flow levels from `[`
/// and `{` where a value may start (not inside quotes, comments, plain scalars or block
/// scalars), and the two added.
pub fn too_deep(text: &str, max: usize) -> Option<usize> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut quote: Option<char> = None;
    // Indentation of the line that opened a block scalar (`|` or `>`): deeper lines are text.
    let mut block_scalar: Option<usize> = None;
    for (n, raw) in text.lines().enumerate() {
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        let body = &raw[indent..];
        if let Some(bi) = block_scalar {
            if body.trim().is_empty() || indent > bi {
                continue;
            }
            block_scalar = None;
        }
        if quote.is_none() && flow == 0 {
            if body.trim().is_empty() || body.starts_with('#') {
                continue;
            }
            while indents.last().is_some_and(|&i| i > indent) {
                indents.pop();
            }
            if indents.last().is_none_or(|&i| i < indent) {
                indents.push(indent);
            }
        }
        let chars: Vec<char> = body.chars().collect();
        let mut dashes = 0;
        let mut value_start = true;
        let mut deepest_flow = flow;
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            match quote {
                Some('"') => {
                    if c == '\\' {
                        i += 1;
                    } else if c == '"' {
                        quote = None;
                        value_start = false;
                    }
                    i += 1;
                    continue;
                }
                Some(_) => {
                    if c == '\'' {
                        if next == Some('\'') {
                            i += 1;
                        } else {
                            quote = None;
                            value_start = false;
                        }
                    }
                    i += 1;
                    continue;
                }
                None => {}
            }
            let prev_blank = i == 0 || chars[i - 1] == ' ' || chars[i - 1] == '\t';
            match c {
                '#' if prev_blank => break,
                ' ' | '\t' => {}
                '-' if value_start && flow == 0 && next.is_none_or(|n| n == ' ') => dashes += 1,
                '?' if value_start && next.is_none_or(|n| n == ' ') => {}
                ':' if next.is_none_or(|n| n == ' ' || n == ',' || n == ']' || n == '}') => {
                    value_start = true;
                }
                '"' | '\'' if value_start => quote = Some(c),
                '[' | '{' if value_start => {
                    flow += 1;
                    deepest_flow = deepest_flow.max(flow);
                }
                ']' | '}' if flow > 0 => {
                    flow -= 1;
                    value_start = false;
                }
                ',' if flow > 0 => value_start = true,
                '|' | '>' if value_start && flow == 0 => {
                    block_scalar = Some(indent);
                    break;
                }
                '&' | '!' if value_start => {
                    // An anchor or tag: the value follows it.
                    while i + 1 < chars.len() && chars[i + 1] != ' ' {
                        i += 1;
                    }
                }
                _ => value_start = false,
            }
            i += 1;
        }
        if indents.len() + dashes + deepest_flow > max {
            return Some(n + 1);
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item15_depth_scan() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        for e in std::fs::read_dir(shipped).unwrap() {
            let t = std::fs::read_to_string(e.unwrap().path()).unwrap();
            assert_eq!(too_deep(&t, 8), None);
        }
        let deep_flow = format!("a: {}{}\n", "[".repeat(65), "]".repeat(65));
        assert_eq!(too_deep(&deep_flow, 64), Some(1));
        assert_eq!(
            too_deep(&format!("a: {}1{}", "[".repeat(60), "]".repeat(60)), 64),
            None
        );
        let deep_map: String = (0..70)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert_eq!(too_deep(&deep_map, 64), Some(65));
        let compact = format!("{}x\n", "- ".repeat(80));
        assert_eq!(too_deep(&compact, 64), Some(1));
        // Brackets that are text are not nesting.
        for text in [
            "a: x[[[[[[[[[[[[[[\n",
            "a: \"[[[[[[[[[[[[[[\"\n",
            "a: '[[[[[[[[[''[[[['\n",
            "a: |\n  [[[[[[[[[[[[[[\nb: 1\n",
            "a: 1 # [[[[[[[[[[[[[[\n",
        ] {
            assert_eq!(too_deep(text, 3), None, "{text}");
        }
    }
}
