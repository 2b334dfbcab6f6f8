//! When two device ids are the same device: the identity key.
//!
//! A device id is kept exactly as given (it is what the certificate says), but uniqueness in
//! the ledger is decided on its key: Unicode NFKC (so fullwidth `ＳＮ1` is `SN1`), then full
//! lower-casing (so `sn1` is `SN1`, under every name policy), then the UTS #39 confusable
//! skeleton (so Cyrillic `ЅN1` is `SN1`, and `SN1` is `SNl`), then lower-casing and NFKC
//! again to settle what the skeleton produced. Two ids with the same key are one identity: the
//! second spelling is refused and told the recorded one.

use unicode_normalization::UnicodeNormalization;

/// The identity key of `id` (see the module documentation).
///
/// Memoised per thread: a batch's reservation asks for each device's key several times (the
/// identity rules' reads, its in-memory decisions, the device row), and the normalisation
/// steps cost more instructions than anything else certfab does for a device's ledger rows
/// (docs/performance.md). The key is a pure function of `id`, so a remembered key is the key.
pub fn key(id: &str) -> String {
    use std::cell::RefCell;
    use std::collections::HashMap;
    // Room for a few groups of 512: enough for one reservation's repeated asks.
    const REMEMBERED: usize = 4096;
    thread_local! {
        static KEYS: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
    }
    KEYS.with(|keys| {
        let mut keys = keys.borrow_mut();
        if let Some(k) = keys.get(id) {
            return k.clone();
        }
        let k = compute(id);
        if keys.len() >= REMEMBERED {
            keys.clear();
        }
        keys.insert(id.to_string(), k.clone());
        k
    })
}

fn compute(id: &str) -> String {
    let folded: String = id.nfkc().collect::<String>().to_lowercase();
    let skeleton: String = unicode_security::skeleton(&folded).collect();
    skeleton.to_lowercase().nfkc().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item13_fullwidth_cyrillic_and_case_fold_to_one_key() {
        let k = key("SN1");
        for same in [
            "ＳＮ1",
            "\u{405}N1",
            "sn1",
            "Sn1",
            "ＳＮ１",
            "SNl",
            "SN\u{200b}1",
        ] {
            assert_eq!(key(same), k, "{same:?}");
        }
        for other in ["SN2", "SN-1", "SN11", "S1"] {
            assert_ne!(key(other), k, "{other:?}");
        }
        assert_eq!(key("Gerät-7"), key("GERÄT-7"));
        assert_eq!(key("Gerät-7"), key("Gera\u{308}t-7"));
    }

    /// A remembered key is the computed one, also once the memo has been cleared for room.
    #[test]
    fn remembered_keys_are_the_computed_keys() {
        for round in 0..2 {
            for i in 0..5000 {
                let id = format!("ＳＮ-{i}");
                assert_eq!(key(&id), compute(&id), "round {round}, {id}");
            }
        }
    }
}
