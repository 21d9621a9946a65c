//! Session loss: every session closed behind the library's back (by finalising and
//! re-initialising the module, which invalidates all session handles and the login) is
//! recovered transparently. In its own test binary because it disturbs the whole process.

#![allow(clippy::unwrap_used, reason = "test")]

use cryptoki::context::{CInitializeArgs, CInitializeFlags};
use hsm_core::{HsmToken, KekId, Mode, TokenOptions};
use sandbox::SoftHsm;

#[test]
fn all_sessions_closed_behind_the_librarys_back_are_recovered() {
    let hsm = SoftHsm::new("session-loss");
    let token = HsmToken::open(
        hsm.module(),
        hsm.label(),
        hsm.user_pin().clone(),
        TokenOptions::default(),
    )
    .unwrap();
    let kek = KekId::new("loss-kek").unwrap();
    token.ensure_kek(&kek, Mode::Apply).unwrap();
    let blob = token
        .wrap_dek(
            &kek,
            &token.random_dek().unwrap(),
            &hsm_core::Iv::Random(hsm_core::IvLength::default()),
        )
        .unwrap();
    assert_eq!(token.login_calls(), 1);

    for round in 1..=2 {
        // C_Finalize closes every session of the process; then initialise again.
        hsm.module().pkcs11().clone().finalize().unwrap();
        hsm.module()
            .pkcs11()
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .unwrap();

        let (dek, _) = token.unwrap_dek(&kek, &blob).unwrap();
        assert_eq!(dek.as_bytes().len(), 32);
        assert_eq!(token.login_calls(), 1 + round, "one re-login per loss");
    }
    assert_eq!(token.describe_kek(&kek).unwrap().id, kek);
}
