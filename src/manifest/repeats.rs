//! Repeated device ids, serials and public keys among device lines, found without holding the
//! keys (issue 14, docs/performance.md "Memory"): within one manifest ([`Repeats`], the
//! verifier's) and across several ([`Across`], for `manifest verify A B …` and `manifest
//! merge`). A fixed-size Bloom filter per kind flags a key it may have seen before; only the
//! flagged keys are then compared exactly, in a second pass over the files ([`rescan`]). At a
//! million devices a filter flags a few hundred keys that are not repeats; the second pass
//! clears them. What is held grows with the repeats (which are reported), not the devices.

use super::format::{self, DeviceLine};
use std::collections::HashSet;

/// The kinds of key: device id, serial, public key (`spki_sha256`), in this order.
pub(crate) const KINDS: usize = 3;

/// Bits of each Bloom filter (4 MiB each).
const FILTER_BITS: usize = 1 << 25;
/// Probes per key.
const PROBES: u64 = 4;

/// A device line's keys, in [`KINDS`] order.
pub(crate) fn keys(d: &DeviceLine) -> [&str; KINDS] {
    [&d.device_id, &d.serial, &d.spki_sha256]
}

/// One Bloom filter per kind; a kind left out holds nothing and contains nothing.
pub(crate) struct Filter {
    bits: [Vec<u64>; KINDS],
}

impl Filter {
    /// Filters for the kinds marked `true` (4 MiB each).
    pub(crate) fn new(kinds: [bool; KINDS]) -> Self {
        Self {
            bits: kinds.map(|k| {
                if k {
                    vec![0u64; FILTER_BITS / 64]
                } else {
                    Vec::new()
                }
            }),
        }
    }

    fn probes(key: &str) -> impl Iterator<Item = (usize, u64)> {
        let d = crate::crypto::sha256(key.as_bytes());
        let h1 = u64::from_le_bytes(d[0..8].try_into().unwrap_or_default());
        let h2 = u64::from_le_bytes(d[8..16].try_into().unwrap_or_default()) | 1;
        (0..PROBES).map(move |i| {
            let p = (h1.wrapping_add(i.wrapping_mul(h2)) as usize) % FILTER_BITS;
            (p / 64, 1u64 << (p % 64))
        })
    }

    /// Adds `key`; true when it was (perhaps) there already. Always false for a kind left out.
    fn insert(&mut self, kind: usize, key: &str) -> bool {
        let bits = &mut self.bits[kind];
        if bits.is_empty() {
            return false;
        }
        let mut all = true;
        for (w, b) in Self::probes(key) {
            all &= bits[w] & b != 0;
            bits[w] |= b;
        }
        all
    }

    /// Whether `key` is (perhaps) there.
    fn contains(&self, kind: usize, key: &str) -> bool {
        let bits = &self.bits[kind];
        !bits.is_empty() && Self::probes(key).all(|(w, b)| bits[w] & b != 0)
    }

    /// Adds every key of `other` (same sizes and probes: the union of two filters is the
    /// filter of the union), for the kinds both hold.
    fn absorb(&mut self, other: &Filter) {
        for (mine, theirs) in self.bits.iter_mut().zip(&other.bits) {
            if mine.is_empty() || theirs.is_empty() {
                continue;
            }
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a |= b;
            }
        }
    }
}

/// Repeats within one manifest: every device line is [`Repeats::see`]n once; a key the filter
/// may have seen before is flagged for the exact second pass.
pub(crate) struct Repeats {
    filter: Filter,
    flagged: [HashSet<String>; KINDS],
}

impl Repeats {
    /// All three kinds (12 MiB of filters).
    pub(crate) fn new() -> Self {
        Self {
            filter: Filter::new([true; KINDS]),
            flagged: Default::default(),
        }
    }

    pub(crate) fn see(&mut self, d: &DeviceLine) {
        for (kind, key) in keys(d).into_iter().enumerate() {
            if self.filter.insert(kind, key) {
                self.flagged[kind].insert(key.to_string());
            }
        }
    }

    pub(crate) fn suspected(&self) -> bool {
        self.flagged.iter().any(|f| !f.is_empty())
    }

    pub(crate) fn flagged(&self, kind: usize, key: &str) -> bool {
        self.flagged[kind].contains(key)
    }

    /// Whether `d` has a flagged key.
    pub(crate) fn flags(&self, d: &DeviceLine) -> bool {
        flags(&self.flagged, d)
    }

    /// The filter of every key seen, for [`Across::accept`].
    pub(crate) fn take_filter(&mut self) -> Filter {
        std::mem::replace(&mut self.filter, Filter::new([false; KINDS]))
    }
}

/// Repeats across manifests read one after another, without holding any of their keys: the
/// keys of the manifests that count so far (the union of their verifiers' own filters,
/// [`Repeats::take_filter`]), and the keys flagged for the exact second pass. While a manifest
/// is read, each of its verified devices is [`Across::observe`]d: a key the earlier manifests
/// may hold is set aside, and flagged only if the caller then [`Across::accept`]s that manifest
/// (a file that does not verify, or one given twice, adds nothing).
pub(crate) struct Across {
    seen: Filter,
    flagged: [HashSet<String>; KINDS],
    pending: [HashSet<String>; KINDS],
    /// Size and SHA-256 (hex) of each accepted file.
    files: Vec<(u64, String)>,
}

impl Across {
    /// Tracks the kinds marked `true` (4 MiB each).
    pub(crate) fn new(kinds: [bool; KINDS]) -> Self {
        Self {
            seen: Filter::new(kinds),
            flagged: Default::default(),
            pending: Default::default(),
            files: Vec::new(),
        }
    }

    /// Whether the devices of `path` are worth [`Across::observe`]ing: not when it holds the
    /// same bytes as a file already accepted, which can add nothing but would set aside every
    /// one of its keys (the same manifest given twice). It is hashed first only when its size
    /// is an accepted file's. A file that cannot be read is worth it (its verifier says why).
    pub(crate) fn worth_observing(&self, path: &std::path::Path) -> bool {
        let Ok(size) = std::fs::metadata(path).map(|m| m.len()) else {
            return true;
        };
        if !self.files.iter().any(|(s, _)| *s == size) {
            return true;
        }
        match super::build::file_sha256(path) {
            Some(sha) => !self.files.iter().any(|(s, h)| *s == size && *h == sha),
            None => true,
        }
    }

    /// A verified device of the manifest being read.
    pub(crate) fn observe(&mut self, d: &DeviceLine) {
        for (kind, key) in keys(d).into_iter().enumerate() {
            if self.seen.contains(kind, key) {
                self.pending[kind].insert(key.to_string());
            }
        }
    }

    /// The manifest just read counts: its keys (`filter`, its verifier's) join the earlier
    /// manifests', and its keys they may hold are flagged.
    pub(crate) fn accept(&mut self, path: &std::path::Path, sha256: &str, filter: &Filter) {
        let size = std::fs::metadata(path).map_or(u64::MAX, |m| m.len());
        self.files.push((size, sha256.to_string()));
        self.seen.absorb(filter);
        for (flagged, pending) in self.flagged.iter_mut().zip(&mut self.pending) {
            flagged.extend(pending.drain());
        }
    }

    /// The manifest just read does not count.
    pub(crate) fn reject(&mut self) {
        for p in &mut self.pending {
            p.clear();
        }
    }

    /// Whether any key is flagged (if not, there is no repeat and no second pass).
    pub(crate) fn suspected(&self) -> bool {
        self.flagged.iter().any(|f| !f.is_empty())
    }

    /// Whether `d` has a flagged key.
    pub(crate) fn flags(&self, d: &DeviceLine) -> bool {
        flags(&self.flagged, d)
    }

    pub(crate) fn flagged(&self, kind: usize, key: &str) -> bool {
        self.flagged[kind].contains(key)
    }
}

fn flags(flagged: &[HashSet<String>; KINDS], d: &DeviceLine) -> bool {
    keys(d)
        .into_iter()
        .enumerate()
        .any(|(kind, key)| flagged[kind].contains(key))
}

/// The second pass over one manifest: reads `reader` to its end, hashing every byte, and hands
/// each device line (lines after the first that decode as one) for which `wanted` holds to
/// `found` with its line number. Returns the SHA-256 of what was read, hex, for the caller to
/// compare with the first pass's (a file that changed in between must not be trusted).
pub(crate) fn rescan(
    mut reader: impl std::io::BufRead,
    mut wanted: impl FnMut(&DeviceLine) -> bool,
    mut found: impl FnMut(usize, DeviceLine),
) -> std::io::Result<String> {
    use sha2::Digest;
    let mut hash = sha2::Sha256::default();
    let mut raw = Vec::new();
    let mut n = 0;
    loop {
        raw.clear();
        if reader.read_until(b'\n', &mut raw)? == 0 {
            return Ok(hex::encode(hash.finalize()));
        }
        hash.update(&raw);
        n += 1;
        if n == 1 {
            continue;
        }
        let body = raw.strip_suffix(b"\n").unwrap_or(&raw);
        let Some(d) = device_line(body) else { continue };
        if wanted(&d) {
            found(n, d);
        }
    }
}

/// The line as a device line, if it decodes as one.
pub(crate) fn device_line(raw: &[u8]) -> Option<DeviceLine> {
    let v = format::decode_value(raw).ok()?;
    if format::kind_of(&v) != Some("device") {
        return None;
    }
    format::typed(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn line(id: &str, serial: &str, spki: &str) -> DeviceLine {
        DeviceLine {
            kind: "device".into(),
            seq: 1,
            device_id: id.into(),
            serial: serial.into(),
            cert_sha256: String::new(),
            spki_sha256: spki.into(),
            not_before: String::new(),
            not_after: String::new(),
            key_origin: "host".into(),
            state: "signed".into(),
            batch: "b".into(),
            station: "s".into(),
            cert: String::new(),
            cloud: Default::default(),
            line_sha256: String::new(),
        }
    }

    #[test]
    fn across_flags_keys_of_earlier_accepted_files_only() {
        let mut across = Across::new([true; KINDS]);
        // File 1: two devices, accepted.
        let mut one = Repeats::new();
        for d in [line("a", "01", "k1"), line("b", "02", "k2")] {
            across.observe(&d);
            one.see(&d);
        }
        assert!(!across.suspected(), "nothing before the first file");
        across.accept(Path::new("/nonexistent/1"), "1", &one.take_filter());
        // File 2 repeats a's serial and is rejected: nothing is flagged.
        let mut two = Repeats::new();
        let d = line("c", "01", "k3");
        across.observe(&d);
        two.see(&d);
        across.reject();
        assert!(!across.suspected());
        // File 3 repeats b's device id and key and is accepted.
        let mut three = Repeats::new();
        let d = line("b", "03", "k2");
        across.observe(&d);
        three.see(&d);
        across.accept(Path::new("/nonexistent/3"), "3", &three.take_filter());
        assert!(across.flagged(0, "b") && across.flagged(2, "k2"));
        assert!(!across.flagged(1, "03") && !across.flagged(1, "01"));
        assert!(across.flags(&line("x", "y", "k2")));
        assert!(!across.flags(&line("x", "y", "z")));
    }

    #[test]
    fn a_kind_left_out_is_never_flagged() {
        let mut across = Across::new([false, true, false]);
        let mut one = Repeats::new();
        let d = line("a", "01", "k1");
        across.observe(&d);
        one.see(&d);
        across.accept(Path::new("/nonexistent/1"), "1", &one.take_filter());
        across.observe(&d);
        across.accept(
            Path::new("/nonexistent/2"),
            "2",
            &Filter::new([false; KINDS]),
        );
        assert!(across.flagged(1, "01"));
        assert!(!across.flagged(0, "a") && !across.flagged(2, "k1"));
    }
}
