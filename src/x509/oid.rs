//! Dotted OID text, parsed exactly.

use const_oid::ObjectIdentifier;

/// The largest OID arc certfab accepts: const-oid 0.9 (the OID type of the `der` and
/// `x509-cert` crates) decodes at most four base-128 bytes per arc reliably.
pub const MAX_OID_ARC: u32 = (1 << 28) - 1;

/// Parses a dotted OID exactly, or says why not. const-oid's own parser wraps arcs over u32
/// silently (a different OID in release builds, a panic in debug builds), recurses once per
/// character, mis-encodes some arcs (128, 16384, …) and cannot print arcs of five bytes; so
/// the text is checked first, and the encoding it produced is compared with an independent
/// one. Anything it cannot hold exactly is refused with the limit named.
pub fn parse_oid(s: &str) -> Result<ObjectIdentifier, String> {
    /// Longer than any OID const-oid can hold (39 bytes of at most 9 digits per arc).
    const MAX_TEXT: usize = 400;
    let shown: String = s.chars().take(60).collect();
    let shown = crate::text::escape(&shown);
    let bad =
        |why: String| format!("'{shown}' is not a dotted OID (e.g. 1.3.6.1.5.5.7.3.2): {why}");
    if s.len() > MAX_TEXT {
        return Err(bad(format!("over {MAX_TEXT} characters")));
    }
    let mut arcs = Vec::new();
    for (i, arc) in s.split('.').enumerate() {
        if arc.is_empty() {
            return Err(bad(format!("arc {} is empty", i + 1)));
        }
        if let Some(c) = arc.chars().find(|c| !c.is_ascii_digit()) {
            return Err(bad(format!("{c:?} is not a digit")));
        }
        if arc.len() > 1 && arc.starts_with('0') {
            return Err(bad(format!("arc {arc} has a leading zero")));
        }
        match arc.parse::<u32>() {
            Ok(v) if v <= MAX_OID_ARC => arcs.push(v),
            _ => {
                return Err(bad(format!(
                    "arc {arc} is over {MAX_OID_ARC}, the largest arc certfab's X.509 library encodes exactly"
                )))
            }
        }
    }
    match arcs.as_slice() {
        [] | [_] => return Err(bad("an OID has at least two arcs".into())),
        [first, ..] if *first > 2 => return Err(bad("the first arc is 0, 1 or 2".into())),
        [_, second, ..] if *second > 39 => {
            return Err(bad(
                "the second arc is at most 39 (a larger one, allowed under 2, cannot be encoded by certfab's X.509 library)".into(),
            ))
        }
        _ => {}
    }
    let mut want = vec![(arcs[0] * 40 + arcs[1]) as u8];
    for &a in &arcs[2..] {
        let mut groups = vec![(a & 0x7f) as u8];
        let mut rest = a >> 7;
        while rest > 0 {
            groups.push((rest & 0x7f) as u8 | 0x80);
            rest >>= 7;
        }
        want.extend(groups.iter().rev());
    }
    if want.len() > ObjectIdentifier::MAX_SIZE {
        return Err(bad(format!(
            "{} encoded bytes, over the {} certfab's X.509 library holds",
            want.len(),
            ObjectIdentifier::MAX_SIZE
        )));
    }
    match ObjectIdentifier::new(s) {
        Ok(o) if o.as_bytes() == want.as_slice() => Ok(o),
        _ => Err(bad(
            "certfab's X.509 library (const-oid 0.9) cannot encode this OID exactly; use another arc".into(),
        )),
    }
}
