//! Canonical JSON: the one serialization manifests, their lines and JWS headers are written
//! in, so that a line's bytes are a function of its content and verification can compare bytes.
//!
//! It is RFC 8785 (JCS) restricted to integers: object members sorted by their names' UTF-16
//! code units, no insignificant whitespace, strings escaped only where JSON requires it
//! (`\"`, `\\`, `\b \f \n \r \t`, other controls as `\u00xx` lower-case), everything else as
//! literal UTF-8. Numbers must be integers in ±(2^53 − 1), written in plain decimal, so every
//! JSON implementation reads them exactly.

use serde_json::Value;

/// Largest integer every JSON implementation represents exactly (IEEE 754 double).
pub const MAX_SAFE_INT: u64 = (1 << 53) - 1;

/// A value that has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CanonError(pub String);

/// Serializes `v` canonically.
pub fn to_string(v: &Value) -> Result<String, CanonError> {
    let mut out = String::new();
    write(v, &mut out)?;
    Ok(out)
}

fn write(v: &Value, out: &mut String) -> Result<(), CanonError> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                if u > MAX_SAFE_INT {
                    return Err(CanonError(format!("integer {u} is above 2^53-1")));
                }
                out.push_str(&u.to_string());
            } else if let Some(i) = n.as_i64() {
                if i.unsigned_abs() > MAX_SAFE_INT {
                    return Err(CanonError(format!("integer {i} is below -(2^53-1)")));
                }
                out.push_str(&i.to_string());
            } else {
                return Err(CanonError(format!(
                    "number {n} is not an integer; manifests use integers only"
                )));
            }
        }
        Value::String(s) => string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(x, out)?;
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(k, out);
                out.push(':');
                write(&m[k], out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Parses one line and insists it is already canonical (re-serialized, byte for byte equal):
/// duplicate member names, whitespace, escapes that were not needed, floats and exponents are
/// all refused.
pub fn parse_canonical(line: &[u8]) -> Result<Value, CanonError> {
    let text = std::str::from_utf8(line)
        .map_err(|e| CanonError(format!("not UTF-8 (byte {})", e.valid_up_to())))?;
    let v: Value = serde_json::from_str(text).map_err(|e| CanonError(format!("not JSON: {e}")))?;
    let again = to_string(&v)?;
    if again.as_bytes() != line {
        let at = again
            .bytes()
            .zip(line.iter())
            .position(|(a, b)| a != *b)
            .unwrap_or(again.len().min(line.len()));
        return Err(CanonError(format!(
            "not canonical JSON (sorted keys, no whitespace, minimal escapes): differs from its canonical form at byte {}",
            at + 1
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_and_escapes() {
        let v = json!({"b": 1, "a": [true, null, "x\"\\\n\u{1}é/"], "A": -3});
        assert_eq!(
            to_string(&v).unwrap(),
            r#"{"A":-3,"a":[true,null,"x\"\\\n\u0001é/"],"b":1}"#
        );
    }

    #[test]
    fn utf16_order_as_jcs() {
        // RFC 8785 §3.2.3: U+1F600 (surrogates D83D..) sorts before U+FB33.
        let v = json!({"\u{fb33}": 1, "\u{1f600}": 2});
        assert_eq!(to_string(&v).unwrap(), "{\"\u{1f600}\":2,\"\u{fb33}\":1}");
    }

    #[test]
    fn refuses_floats_and_non_canonical() {
        assert!(to_string(&json!(1.5)).is_err());
        assert!(to_string(&json!(1u64 << 60)).is_err());
        assert!(parse_canonical(br#"{"a":1}"#).is_ok());
        for bad in [
            &br#"{"a": 1}"#[..],
            br#"{"b":1,"a":2}"#,
            br#"{"a":1,"a":1}"#,
            br#"{"a":"\u0041"}"#,
            br#"{"a":1.0}"#,
            br#"{"a":1e2}"#,
            b"{\"a\":\"\xff\"}",
        ] {
            assert!(
                parse_canonical(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
