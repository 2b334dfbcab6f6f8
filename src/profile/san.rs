//! Syntax of SubjectAltName values (RFC 5280 §4.2.1.6): what each general name type must look
//! like. Checked on every rendered value before the TBS is built, on profile literals when the
//! profile loads, and again by the lint on the certificate itself.

/// RFC 5280 §4.2.1.6 dNSName: the RFC 1034 preferred name syntax as RFC 1123 relaxed it
/// (labels of letters, digits and inner hyphens, 1..=63 octets, a leading digit allowed; at
/// most 253 octets; no trailing dot, no empty label). Wildcards are refused: a device
/// certificate names one device, and `*.example` would let any one device answer for all of
/// its siblings. Internationalised names must be given as A-labels (`xn--…`).
pub fn dns_name(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("an empty DNS name".into());
    }
    if v.len() > 253 {
        return Err(format!(
            "{} octets, over the 253 a DNS name may have",
            v.len()
        ));
    }
    for label in v.split('.') {
        if label == "*" {
            return Err("a wildcard label; a device certificate names exactly one host".into());
        }
        if label.is_empty() {
            return Err("an empty label (two dots in a row, or a leading or trailing dot)".into());
        }
        if label.len() > 63 {
            return Err(format!("label of {} octets, over 63", label.len()));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!(
                "{c:?} is not allowed in a DNS name (letters, digits and '-' only; non-ASCII names as xn-- A-labels)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    Ok(())
}

/// RFC 5280 §4.2.1.6 uniformResourceIdentifier: an absolute RFC 3986 URI (scheme, ':', a
/// non-empty rest) of URI characters only (unreserved, reserved and %-escapes), and a host when
/// it has an authority (`//`).
pub fn uri(v: &str) -> Result<(), String> {
    let (scheme, rest) = v
        .split_once(':')
        .ok_or("not an absolute URI: it has no scheme (e.g. urn:, https:)")?;
    let mut sc = scheme.chars();
    if !sc.next().is_some_and(|c| c.is_ascii_alphabetic())
        || !sc.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return Err(format!(
            "scheme '{}' is not ALPHA *( ALPHA / DIGIT / + / - / . )",
            crate::text::escape(scheme)
        ));
    }
    if rest.is_empty() {
        return Err("nothing after the scheme".into());
    }
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if c == '%' {
            if !(i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return Err("'%' not followed by two hex digits".into());
            }
            i += 3;
            continue;
        }
        if !(c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=".contains(c)) {
            return Err(format!(
                "'{}' is not a URI character (RFC 3986; escape it as %XX)",
                crate::text::escape(
                    &rest[i..]
                        .chars()
                        .next()
                        .map(String::from)
                        .unwrap_or_default()
                )
            ));
        }
        i += 1;
    }
    if let Some(auth) = rest.strip_prefix("//") {
        let auth = auth.split(['/', '?', '#']).next().unwrap_or("");
        let host = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
        let host = match host.strip_prefix('[') {
            Some(h) => h.split(']').next().unwrap_or(""),
            None => host.split(':').next().unwrap_or(""),
        };
        if host.is_empty() {
            return Err("an authority ('//') without a host".into());
        }
    }
    Ok(())
}

/// RFC 5280 §4.2.1.6 rfc822Name: an RFC 5322 addr-spec `local@domain` without display name or
/// comments. The local part must be a dot-atom (quoted local parts are refused: no device
/// needs one), at most 64 octets; the domain follows [`dns_name`].
pub fn email(v: &str) -> Result<(), String> {
    let (local, domain) = v.rsplit_once('@').ok_or("not an addr-spec: no '@'")?;
    if local.is_empty() || local.len() > 64 {
        return Err(format!(
            "the local part has {} octets; use 1..=64",
            local.len()
        ));
    }
    for atom in local.split('.') {
        if atom.is_empty() {
            return Err(
                "the local part has an empty atom (a leading, trailing or double dot)".into(),
            );
        }
        if let Some(c) = atom
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(*c)))
        {
            return Err(format!(
                "'{}' is not allowed in the local part (RFC 5322 dot-atom)",
                crate::text::escape(&c.to_string())
            ));
        }
    }
    dns_name(domain).map_err(|e| format!("domain: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item11_san_syntax() {
        for ok in [
            "dev-1.example",
            "1x.example",
            "xn--bcher-kva.example",
            "localhost",
        ] {
            dns_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let long = format!("{}.example", "a".repeat(64));
        for bad in [
            "a/../b.example",
            "x y.example",
            "*.example",
            "a..b",
            "a.",
            ".a",
            "-a.example",
            "a-.example",
            "a_b.example",
            "bücher.example",
            "",
            &long,
            "a\u{1b}.example",
        ] {
            assert!(dns_name(bad).is_err(), "{bad:?} accepted");
        }
        for ok in [
            "urn:dev:sn1",
            "https://dev.example/x?y=1#z",
            "https://[2001:db8::1]:8443/",
            "urn:x:%41",
        ] {
            uri(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "dev sn1",
            "urn:dev:a b",
            "//host/x",
            "1a:x",
            "https://",
            "https:///x",
            "urn:",
            "urn:%4",
            "urn:%zz",
            "urn:\"",
            "urn:a\nb",
        ] {
            assert!(uri(bad).is_err(), "{bad:?} accepted");
        }
        for ok in ["dev.1+x@example.com", "a@b"] {
            email(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "@x.example",
            "a@",
            "a b@x.example",
            "a..b@x.example",
            "\"a\"@x.example",
            "a@x y",
            "a@*.example",
            "a",
        ] {
            assert!(email(bad).is_err(), "{bad:?} accepted");
        }
    }
}
