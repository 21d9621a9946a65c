//! No session is left open: not after a failed login, not after a session loss. The witness is
//! the module itself: `C_InitToken` refuses (`CKR_SESSION_EXISTS`) while the application has
//! any session open on the token, and succeeds once every one is closed.

#![allow(clippy::unwrap_used, reason = "test")]

use cryptoki::context::Function;
use cryptoki::error::RvError;
use hsm_core::{Error, HsmToken, TokenOptions};
use sandbox::SoftHsm;
use secrecy::SecretString;

fn options() -> TokenOptions {
    TokenOptions {
        max_attempts: 3,
        initial_backoff: std::time::Duration::from_millis(1),
        max_backoff: std::time::Duration::from_millis(1),
    }
}

/// Re-initialises the token (same label): refused while any session of ours is open on it.
fn reinit(hsm: &SoftHsm) -> Result<(), cryptoki::error::Error> {
    let slot = hsm.info().unwrap().slot;
    hsm.module()
        .pkcs11()
        .init_token(slot, hsm.so_pin(), hsm.label().as_str())
}

#[test]
fn a_failed_login_leaves_no_session_open() {
    let hsm = SoftHsm::new("leak-login");
    let err = HsmToken::open(
        hsm.module(),
        hsm.label(),
        SecretString::from("not-the-pin"),
        options(),
    )
    .unwrap_err();
    assert!(err.is_pin_rejected(), "{err}");
    reinit(&hsm).expect("the session of the failed login is still open");
}

#[test]
fn sessions_dropped_after_a_session_loss_are_closed() {
    let hsm = SoftHsm::new("leak-loss");
    let token =
        HsmToken::open(hsm.module(), hsm.label(), hsm.user_pin().clone(), options()).unwrap();
    // Two sessions in the pool.
    token
        .with_session("outer", |_| token.with_session("inner", |_| Ok(())))
        .unwrap();

    // The module reports the token gone on one call (a failover): every pooled session is
    // dropped, and a fresh one serves the retry.
    let mut failed = false;
    token
        .with_session("failover", |_| {
            if failed {
                return Ok(());
            }
            failed = true;
            Err(Error::Pkcs11 {
                operation: "test operation",
                source: cryptoki::error::Error::Pkcs11(RvError::DeviceRemoved, Function::Encrypt),
            })
        })
        .unwrap();
    // The token closes its pool when dropped; nothing else may remain.
    drop(token);
    reinit(&hsm).expect("sessions dropped after the loss were never closed");
}
