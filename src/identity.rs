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
pub fn key(id: &str) -> String {
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
}
