//! Recovery from a token that went away: after the module is finalized under open sessions
//! (what an HSM reboot or a dropped network HSM looks like: CKR_CRYPTOKI_NOT_INITIALIZED,
//! CKR_SESSION_HANDLE_INVALID), the next signature re-initialises, logs in again with the PIN
//! that already worked, finds the key again, checks it is the same key, and succeeds.
//! A binary of its own, outside tests/it: the module's state is per process, and this test
//! sets SOFTHSM2_CONF in the process environment and finalizes the module under open sessions.

#[path = "it/common/mod.rs"]
mod common;

use certfab::PublicKey;
use certfab::Signer;
use certfab::{Hsm, Pkcs11Uri};
use secrecy::SecretString;

#[test]
fn signing_recovers_after_module_reset() {
    let line = common::Line::new();
    std::env::set_var("SOFTHSM2_CONF", line.file("softhsm2.conf"));
    let token = Pkcs11Uri::parse("pkcs11:token=certfab-dev").unwrap();
    let hsm = Hsm::open(std::path::Path::new(&common::softhsm_module()), &token).unwrap();
    let pin = std::fs::read_to_string(line.file("pin")).unwrap();
    hsm.login(SecretString::from(pin.trim().to_string()), "test")
        .unwrap();

    let uri = Pkcs11Uri::parse("pkcs11:token=certfab-dev;object=issuing-ca").unwrap();
    let key = hsm.key(&uri, None).unwrap();
    let public: PublicKey = key.public_key().clone();
    let sig = key.sign(b"before").unwrap();
    public.verify(key.algorithm(), b"before", &sig).unwrap();
    assert_eq!(hsm.recoveries(), 0);

    for round in 1..=3 {
        hsm.inject_reset();
        let msg = format!("after reset {round}");
        let sig = key.sign(msg.as_bytes()).expect("signing recovers");
        public
            .verify(key.algorithm(), msg.as_bytes(), &sig)
            .unwrap();
        assert_eq!(hsm.recoveries(), round, "one re-initialisation per reset");
    }
}
