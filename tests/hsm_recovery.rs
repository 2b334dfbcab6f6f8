//! Recovery from a token that went away: after the module is finalized under open sessions
//! (what an HSM reboot or a dropped network HSM looks like: CKR_CRYPTOKI_NOT_INITIALIZED,
//! CKR_SESSION_HANDLE_INVALID), the next signature re-initialises, logs in again with the PIN
//! that already worked, finds the key again, checks it is the same key, and succeeds.
//! A binary of its own, outside tests/it: the module's state is per process, and these tests
//! set the module's environment in the process (SOFTHSM2_CONF, the site's module env) and
//! finalize the module under open sessions, or kill the remote token under an open session.

#[path = "it/common/mod.rs"]
mod common;

use certfab::PublicKey;
use certfab::Signer;
use certfab::{Hsm, Pkcs11Uri};
use secrecy::SecretString;

/// The tests here load PKCS#11 modules into this process and change its environment: one at
/// a time.
static ONE_MODULE_USER: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn signing_recovers_after_module_reset() {
    let _one_at_a_time = ONE_MODULE_USER.lock().unwrap_or_else(|e| e.into_inner());
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

/// Item 1: recovery covers every use of the token, not only certificate signing: a process
/// whose token connection was killed (and came back) signs the audit checkpoint, which
/// opens the document signer's key after the kill; before, C_OpenSession failed with
/// CKR_DEVICE_ERROR and the checkpoint was not signed. Also a CA key opened before the kill
/// signs again after it. In process, as a batch or a shift ends.
#[test]
fn checkpoint_and_signing_after_a_kill_recover() {
    let _one_at_a_time = ONE_MODULE_USER.lock().unwrap_or_else(|e| e.into_inner());
    let line = common::Line::on(common::Token::P11Kit);
    let site = certfab::Site::open(&line.config()).unwrap();
    site.login().unwrap();
    let mut ledger = site.open_ledger(None).unwrap();
    let uri = certfab::Pkcs11Uri::parse("pkcs11:token=certfab-dev;object=issuing-ca").unwrap();
    let key = site.hsm.key(&uri, None).unwrap();
    use certfab::Signer;
    key.sign(b"before the kill").unwrap();

    line.kill_remote_token();
    line.restart_remote_token();
    let note = site
        .auto_checkpoint(&mut ledger)
        .expect("the site has a signer");
    assert!(note.starts_with("audit checkpoint 1 signed"), "{note}");
    let sig = key.sign(b"after the kill").unwrap();
    key.public_key()
        .verify(key.algorithm(), b"after the kill", &sig)
        .unwrap();
    assert!(site.hsm.recoveries() >= 1);
    drop(key);
    drop(ledger);
    let v = common::ok(&line.certfab(&["log", "verify"]));
    assert!(v.contains("checkpoint"), "{v}");
}
