//! Name policy: every value that goes into a subject or SAN (device ids included) is checked
//! against an allowlist, a length limit, and a refusal of control, bidi and format characters.

use super::PolicyError;
use crate::profile::{NamePolicy, SEPARATORS};

/// Checks one value for attribute `attr`. `printable` values must fit PrintableString.
pub fn check_name(
    attr: &str,
    value: &str,
    policy: &NamePolicy,
    printable: bool,
) -> Result<(), PolicyError> {
    let fail = |why: String| PolicyError::Name {
        attr: attr.into(),
        value: crate::text::escape(&value.chars().take(80).collect::<String>()),
        why,
    };
    if value.is_empty() {
        return Err(fail("empty".into()));
    }
    let n = value.chars().count();
    if n > policy.max_length {
        return Err(fail(format!(
            "{n} characters, over the limit of {}",
            policy.max_length
        )));
    }
    if value.trim() != value {
        return Err(fail("leading or trailing space".into()));
    }
    for c in value.chars() {
        if c.is_control() || is_bidi_or_format(c) {
            return Err(fail(format!(
                "contains control/bidi/format character U+{:04X}",
                c as u32
            )));
        }
        if SEPARATORS.contains(c) {
            return Err(fail(format!(
                "contains {c:?}, which separates or quotes names downstream"
            )));
        }
        let ok = c.is_ascii_alphanumeric()
            || policy.extra_chars.contains(c)
            || (policy.allow_unicode && !c.is_ascii() && c.is_alphanumeric());
        if !ok {
            return Err(fail(format!(
                "character {c:?} is not allowed; allowed are letters, digits and {:?} (profile names.extra_chars)",
                policy.extra_chars
            )));
        }
        if printable && !(c.is_ascii_alphanumeric() || " '()+,-./:=?".contains(c)) {
            return Err(fail(format!(
                "character {c:?} cannot be encoded as PrintableString"
            )));
        }
    }
    Ok(())
}

fn is_bidi_or_format(c: char) -> bool {
    matches!(c as u32,
        0x061C | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2069 | 0xFEFF | 0xFFF9..=0xFFFB | 0xE0000..=0xE007F)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> NamePolicy {
        NamePolicy {
            max_length: 64,
            extra_chars: " -_.:@/".into(),
            allow_unicode: false,
        }
    }

    #[test]
    fn accepts_plain_ids() {
        check_name("CN", "SN-000123.line1", &policy(), false).unwrap();
    }

    #[test]
    fn refuses_hostile_values() {
        let p = policy();
        for bad in [
            "a,O=Evil",
            "a+CN=x",
            "x\u{202E}gpj.exe",
            "nul\0byte",
            "tab\there",
            "é",
            " lead",
            &"x".repeat(65),
            "",
        ] {
            assert!(
                check_name("CN", bad, &p, false).is_err(),
                "{bad:?} accepted"
            );
        }
        let mut u = policy();
        u.allow_unicode = true;
        check_name("CN", "Gerät-1", &u, false).unwrap();
        assert!(check_name("CN", "a\u{200B}b", &u, false).is_err());
    }
}
