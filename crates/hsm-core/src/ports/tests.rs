//! Where the per-request operations wait: never on a tokio worker thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cryptoki::context::Function;
use cryptoki::error::RvError;

use super::quick;
use crate::{Error, HsmToken, TokenOptions};

/// What the module says when the token vanished under a call.
fn removed() -> Error {
    Error::Pkcs11 {
        operation: "test operation",
        source: cryptoki::error::Error::Pkcs11(RvError::DeviceRemoved, Function::Encrypt),
    }
}

/// A current-thread runtime has one worker: if the backoff pause of a session loss ran on it,
/// no other task (here: a 20 ms timer) could run until the pause was over.
#[tokio::test(flavor = "current_thread")]
async fn a_session_loss_on_the_calling_task_pauses_on_the_blocking_pool() {
    let hsm = sandbox::SoftHsm::new("inline-backoff");
    let pause = Duration::from_secs(2);
    // The sandbox links its own copy of this crate: load the module and name the token with
    // this copy's types (the module tolerates the second C_Initialize).
    let module = crate::Module::load(hsm.module_path()).unwrap();
    let label = crate::TokenLabel::new(hsm.label().as_str()).unwrap();
    let token = Arc::new(
        HsmToken::open(
            &module,
            &label,
            hsm.user_pin().clone(),
            TokenOptions {
                max_attempts: 2,
                initial_backoff: pause,
                max_backoff: pause,
            },
        )
        .unwrap(),
    );
    // A token that answers in a microsecond: per-request operations run on the calling task.
    token.record_call(Duration::from_micros(1));
    assert!(token.answers_fast());

    let calls = Arc::new(AtomicU32::new(0));
    let op = {
        let (token, calls) = (Arc::clone(&token), Arc::clone(&calls));
        tokio::spawn(async move {
            let t = Arc::clone(&token);
            quick(&token, "test operation", move || {
                t.with_session("test operation", |_| -> crate::Result<()> {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(removed())
                })
            })
            .await
        })
    };
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        started.elapsed() < pause / 2,
        "the worker thread was blocked for {:?} by a backoff pause",
        started.elapsed()
    );
    let err = op.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::SessionLost { .. }), "{err}");
    // One attempt on the calling task, then a full retry loop on the blocking pool.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}
