//! One rule for showing untrusted text to a person (terminal lines, the HTML report, error
//! messages): device ids, CSV values, reasons and anything else read from an input, a ledger or
//! a device are passed through [`escape`] before they are printed, so a value can neither move
//! the cursor, recolour the screen, nor start a line of its own that looks like certfab's.
//!
//! JSON output needs none of this: serde_json escapes every control character itself.

use std::fmt::Write as _;

/// Whether `c` must not reach a terminal or a report as itself: C0 and C1 controls, DEL, and
/// the bidi/format characters that reorder or hide text (U+061C, U+200B..U+200F,
/// U+202A..U+202E, U+2060..U+2069, U+FEFF, U+FFF9..U+FFFB, tags U+E0000..U+E007F), and the
/// line and paragraph separators U+2028/U+2029.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c as u32,
            0x061C | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x2069 | 0xFEFF
            | 0xFFF9..=0xFFFB | 0xE0000..=0xE007F)
}

/// A value read from an input (a device id, a column, a station name) as it may be shown: every
/// unsafe character (see [`is_unsafe`]) written as a Rust-style escape (`\n`, `\r`, `\t`, `\0`,
/// otherwise `\u{1b}`), and backslashes doubled so an escape in the output always means an
/// escaped character, never one typed into the value. Text without either comes back
/// unchanged.
pub fn escape(s: &str) -> String {
    write_escaped(s, true)
}

/// Text certfab composed (a reason, an error message) that may quote values already escaped
/// with [`escape`]: unsafe characters are escaped the same way, backslashes are left alone so
/// those values are not escaped twice.
pub fn neutralize(s: &str) -> String {
    write_escaped(s, false)
}

fn write_escaped(s: &str, backslashes: bool) -> String {
    if !s
        .chars()
        .any(|c| (backslashes && c == '\\') || is_unsafe(c))
    {
        return s.to_string();
    }
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' if backslashes => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            '\0' => o.push_str("\\0"),
            c if is_unsafe(c) => {
                let _ = write!(o, "\\u{{{:x}}}", c as u32);
            }
            c => o.push(c),
        }
    }
    o
}

/// [`neutralize`] for text that is several lines on purpose (a summary, an error that lists
/// problems): line feeds stay, every other unsafe character is escaped. The last guard before a
/// terminal; values quoted inside such text must still go through [`escape`] where the text is
/// built, or a line feed in a value could start a forged line.
pub fn escape_keep_lines(s: &str) -> String {
    s.split('\n').map(neutralize).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(escape("SN-000123 Gerät ＳＮ1"), "SN-000123 Gerät ＳＮ1");
    }

    #[test]
    fn controls_are_visible_and_unambiguous() {
        assert_eq!(
            escape("a\x1b[2Jb\nline 3: issued\r\0\u{202e}\\"),
            "a\\u{1b}[2Jb\\nline 3: issued\\r\\0\\u{202e}\\\\"
        );
        assert_eq!(escape("\u{7f}\u{85}\u{2028}"), "\\u{7f}\\u{85}\\u{2028}");
        assert_eq!(escape_keep_lines("a\x1b\nb\\u{1b}"), "a\\u{1b}\nb\\u{1b}");
        assert_eq!(neutralize("id \"A\\u{1b}\"\n"), "id \"A\\u{1b}\"\\n");
    }
}
