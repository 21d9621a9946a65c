use hsm_core::{Error, Health, HsmToken, KekId, Mode, Outcome, TokenOptions};
use sandbox::SoftHsm;
use secrecy::SecretString;

#[test]
fn wrong_pin_is_reported_after_exactly_one_login_attempt() {
    let hsm = SoftHsm::new("wrong-pin");
    let wrong = SecretString::from("not-the-pin");
    let err =
        HsmToken::open(hsm.module(), hsm.label(), wrong, TokenOptions::default()).unwrap_err();
    assert!(err.is_pin_rejected(), "{err}");
    assert!(!err.to_string().contains("not-the-pin"));
    // Nothing was locked by retries, and the right PIN still works.
    assert!(!hsm.info().unwrap().user_pin_locked);
    let ok = HsmToken::open(
        hsm.module(),
        hsm.label(),
        hsm.user_pin().clone(),
        TokenOptions::default(),
    );
    assert!(ok.is_ok());
}

#[test]
fn pin_rejected_after_session_loss_is_latched_and_never_retried() {
    let hsm = SoftHsm::new("pin-latch");
    let token = HsmToken::open(
        hsm.module(),
        hsm.label(),
        hsm.user_pin().clone(),
        TokenOptions::default(),
    )
    .unwrap();
    let kek = KekId::new("latch-kek").unwrap();
    assert_eq!(
        token.ensure_kek(&kek, Mode::Apply).unwrap(),
        Outcome::Created
    );
    assert_eq!(token.login_calls(), 1);

    // Behind the library's back: change the user PIN and log the application out.
    let raw = hsm
        .module()
        .login_user(hsm.label(), hsm.user_pin())
        .unwrap();
    raw.set_pin(hsm.user_pin(), &SecretString::from("changed-pin"))
        .unwrap();
    raw.logout().unwrap();
    drop(raw);

    for _ in 0..3 {
        let err = token.describe_kek(&kek).unwrap_err();
        assert!(err.is_pin_rejected(), "{err}");
    }
    // One initial login plus exactly one failed re-login, however many calls followed.
    assert_eq!(token.login_calls(), 2);
    assert!(matches!(token.health(), Health::PinRejected(_)));

    // The operator's explicit reset brings it back.
    token.reset_pin(SecretString::from("changed-pin"));
    assert_eq!(token.health(), Health::Ready);
    assert_eq!(token.describe_kek(&kek).unwrap().id, kek);
    assert_eq!(token.login_calls(), 3);
}

#[test]
fn logout_behind_the_librarys_back_is_recovered_transparently() {
    let (hsm, token) = crate::token("relogin");
    let kek = token.generate_kek(None).unwrap();
    let raw = hsm
        .module()
        .login_user(hsm.label(), hsm.user_pin())
        .unwrap();
    raw.logout().unwrap();
    drop(raw);
    // Without the re-login the private KEK would be invisible (find returns nothing).
    assert_eq!(token.describe_kek(&kek).unwrap().id, kek);
    assert_eq!(token.login_calls(), 2);
}

#[test]
fn unknown_token_is_not_found() {
    let hsm = SoftHsm::new("exists");
    let other = hsm_core::TokenLabel::new("no-such-token-hsm-core").unwrap();
    let err = HsmToken::open(
        hsm.module(),
        &other,
        hsm.user_pin().clone(),
        TokenOptions::default(),
    )
    .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(matches!(err, Error::TokenNotFound { .. }));
}
