//! HSM failover: a token that cannot be found by its label while the session is re-opened is
//! waited for like a lost session, and used again once it is back. The failover is played on
//! SoftHSM2 by moving the token's directory away (the token disappears from the slot list)
//! and back (SoftHSM2 rescans its directory at `C_Initialize`, so the module is finalised and
//! initialised again); the moment it comes back is the library's own retry event, so the test
//! does not depend on timing. In its own test binary, one test at a time, because
//! re-initialising the module disturbs the whole process.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test")]

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function};
use cryptoki::error::RvError;
use hsm_core::{Error, ErrorKind, HsmToken, KekId, Mode, TokenOptions};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// The token directory SoftHSM2 keeps `hsm`'s objects in (the sandbox's `tokens/` beside
/// `softhsm2.conf`, one directory per token named by a UUID ending in the serial).
fn token_dir(hsm: &sandbox::SoftHsm) -> PathBuf {
    let (_, conf) = hsm.child_env().unwrap().remove(0);
    let tokens = conf
        .canonicalize()
        .unwrap()
        .parent()
        .unwrap()
        .join("tokens");
    let serial = hsm.serial().to_ascii_lowercase();
    std::fs::read_dir(tokens)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .replace('-', "")
                .ends_with(&serial)
        })
        .unwrap()
}

/// Calls `hook(attempt)` on each "session lost, re-opening" event of the token `label`.
struct OnReopen {
    label: String,
    hook: Box<dyn Fn(u64) + Send + Sync>,
}

#[derive(Default)]
struct Fields {
    attempt: u64,
    token: String,
    message: String,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "attempt" {
            self.attempt = value;
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "hsm.token" => self.token = format!("{value:?}"),
            _ => {}
        }
    }
}

impl Subscriber for OnReopen {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.token == self.label && fields.message.contains("re-opening") {
            (self.hook)(fields.attempt);
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn token_gone() -> Error {
    Error::Pkcs11 {
        operation: "test operation",
        source: cryptoki::error::Error::Pkcs11(RvError::TokenNotPresent, Function::Encrypt),
    }
}

#[test]
fn a_token_missing_while_reopening_is_waited_for_and_used_when_back() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let hsm = sandbox::SoftHsm::new("failover");
    let options = TokenOptions {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
    };
    let token = HsmToken::open(hsm.module(), hsm.label(), hsm.user_pin().clone(), options).unwrap();
    let kek = KekId::new("failover-kek").unwrap();
    token.ensure_kek(&kek, Mode::Apply).unwrap();

    let dir = token_dir(&hsm);
    let parked = dir.with_extension("failed-over");
    let subscriber = OnReopen {
        label: hsm.label().to_string(),
        hook: Box::new({
            let (dir, parked) = (dir.clone(), parked.clone());
            let module = hsm.module().clone();
            move |attempt| {
                // After the first re-open found no token, the standby takes over.
                if attempt == 2 {
                    std::fs::rename(&parked, &dir).unwrap();
                    module.pkcs11().clone().finalize().unwrap();
                    module
                        .pkcs11()
                        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
                        .unwrap();
                }
            }
        }),
    };
    let mut calls = 0;
    let described = tracing::subscriber::with_default(subscriber, || {
        token.with_session("failover", |_| {
            calls += 1;
            if calls == 1 {
                // The HSM goes away under the first call.
                std::fs::rename(&dir, &parked).unwrap();
                return Err(token_gone());
            }
            Ok(())
        })
    });
    described.unwrap();
    assert_eq!(calls, 2, "one failed call, one after the token came back");
    assert_eq!(token.describe_kek(&kek).unwrap().id, kek);
}

#[test]
fn a_token_that_stays_away_is_unavailable_not_not_found() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let hsm = sandbox::SoftHsm::new("failover-gone");
    let options = TokenOptions {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
    };
    let token = HsmToken::open(hsm.module(), hsm.label(), hsm.user_pin().clone(), options).unwrap();
    let dir = token_dir(&hsm);
    let parked = dir.with_extension("gone");
    let mut calls = 0;
    let err = token
        .with_session("failover", |_| {
            calls += 1;
            std::fs::rename(&dir, &parked).unwrap();
            Err::<(), _>(token_gone())
        })
        .unwrap_err();
    std::fs::rename(&parked, &dir).unwrap();
    assert_eq!(calls, 1);
    assert!(
        matches!(err, Error::TokenUnavailable { attempts: 3, .. }),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}
