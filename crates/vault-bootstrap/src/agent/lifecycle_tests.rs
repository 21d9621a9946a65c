//! The token lifecycle with a mocked Vault and paused time, where the instants matter: capped
//! renewals, failing renewals, non-renewable tokens and revocation at shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use tokio::time::Instant;

use super::*;
use crate::agent::tests::{fixture, secret};
use crate::{Login, MockAgentVault};

/// What the agent asked Vault, and when (seconds since the test started).
#[derive(Clone, Debug, PartialEq)]
enum Call {
    Login,
    Renew { token: String },
    Revoke { token: String },
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(u64, Call)>>>);

impl Log {
    fn push(&self, start: Instant, call: Call) {
        let at = start.elapsed().as_millis();
        self.0
            .lock()
            .unwrap()
            .push((u64::try_from(at).unwrap(), call));
    }

    fn calls(&self) -> Vec<(u64, Call)> {
        self.0.lock().unwrap().clone()
    }

    /// Instants (ms) and tokens of the revocations.
    fn revocations(&self) -> Vec<(u64, String)> {
        self.calls()
            .into_iter()
            .filter_map(|(at, c)| match c {
                Call::Revoke { token } => Some((at, token)),
                _ => None,
            })
            .collect()
    }

    /// Instants (ms) of the logins.
    fn logins(&self) -> Vec<u64> {
        self.calls()
            .into_iter()
            .filter(|(_, c)| *c == Call::Login)
            .map(|(at, _)| at)
            .collect()
    }
}

fn token(n: usize) -> String {
    format!("t{n}")
}

/// Runs the agent for `secs` seconds of paused time, then stops it.
async fn run_for(agent: Agent, secs: u64) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(agent.run(async move {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// Records revocations in `log`.
fn revocations(vault: &mut MockAgentVault, log: &Log, start: Instant) {
    let log = log.clone();
    vault.expect_revoke_self().returning(move |t| {
        log.push(
            start,
            Call::Revoke {
                token: t.expose_secret().to_owned(),
            },
        );
        Ok(())
    });
}

fn reads_ok(vault: &mut MockAgentVault) {
    vault
        .expect_read_secret_with()
        .returning(|_, _, _, _| Ok(Some(secret("1"))));
}

fn unavailable() -> Error {
    Error::Unavailable {
        addr: "http://vault".into(),
        source: "connection refused".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_capped_renewal_is_the_last_and_a_login_follows_before_the_max_ttl() {
    let fx = fixture();
    let start = Instant::now();
    let log = Log::default();
    let mut vault = MockAgentVault::new();
    let (l, logins) = (log.clone(), Arc::new(Mutex::new(0)));
    vault.expect_login_kubernetes().returning(move |_, _, _| {
        l.push(start, Call::Login);
        let mut n = logins.lock().unwrap();
        *n += 1;
        Ok(Login {
            token: SecretString::from(token(*n)),
            lease: Duration::from_secs(90),
            renewable: true,
            policies: vec![],
        })
    });
    let l = log.clone();
    vault.expect_renew_self().returning(move |t, asked| {
        assert_eq!(
            asked,
            Duration::from_secs(90),
            "renewals ask for the login's lease"
        );
        l.push(
            start,
            Call::Renew {
                token: t.expose_secret().to_owned(),
            },
        );
        // The role's max TTL is 81 s: after 60 s only 21 s are left, not the 90 asked for.
        Ok(Login {
            token: SecretString::from(""),
            lease: Duration::from_secs(21),
            renewable: true,
            policies: vec![],
        })
    });
    reads_ok(&mut vault);
    revocations(&mut vault, &log, start);
    let agent = Agent::new(fx.config, Arc::new(vault), Arc::default());
    run_for(agent, 100).await;

    let calls = log.calls();
    let renewals: Vec<_> = calls
        .iter()
        .filter(|(_, c)| matches!(c, Call::Renew { .. }))
        .collect();
    assert_eq!(
        renewals,
        [&(60_000, Call::Renew { token: token(1) })],
        "{calls:?}"
    );
    // The capped lease ends at 81 s; a third of it (7 s) is kept as margin for a failing login.
    assert_eq!(log.logins(), [0, 74_000], "{calls:?}");
    // The replaced token is revoked at once, and the token in hand when the agent stops.
    assert_eq!(
        log.revocations(),
        [(74_000, token(1)), (100_000, token(2))],
        "{calls:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_renewal_leads_to_logins_with_bounded_backoff_while_the_files_stay_current() {
    let fx = fixture();
    let start = Instant::now();
    let log = Log::default();
    let mut vault = MockAgentVault::new();
    let (l, attempts) = (log.clone(), Arc::new(Mutex::new(0)));
    vault.expect_login_kubernetes().returning(move |_, _, _| {
        l.push(start, Call::Login);
        let mut n = attempts.lock().unwrap();
        *n += 1;
        // The first login works; the next nine fail (say, the TokenReview API is down).
        if (2..=10).contains(&*n) {
            return Err(unavailable());
        }
        Ok(Login {
            token: SecretString::from(token(*n)),
            lease: Duration::from_secs(900),
            renewable: true,
            policies: vec![],
        })
    });
    let l = log.clone();
    vault.expect_renew_self().returning(move |t, _| {
        l.push(
            start,
            Call::Renew {
                token: t.expose_secret().to_owned(),
            },
        );
        Err(unavailable())
    });
    reads_ok(&mut vault);
    revocations(&mut vault, &log, start);
    let metrics = Arc::new(Metrics::default());
    let agent = Agent::new(fx.config.clone(), Arc::new(vault), Arc::clone(&metrics));
    run_for(agent, 900).await;

    let logins = log.logins();
    let gaps: Vec<u64> = logins.windows(2).map(|w| (w[1] - w[0]) / 1000).collect();
    // Renewal is due at 600 s; after each failed renewal and login the wait doubles from the
    // 1 s retry interval up to the 60 s refresh interval.
    assert_eq!(logins[1], 600_000, "{logins:?}");
    assert_eq!(gaps[1..], [1, 2, 4, 8, 16, 32, 60, 60, 60], "{logins:?}");
    let snap = metrics.snapshot();
    assert_eq!((snap.logins, snap.login_failures), (2, 9), "{snap:?}");
    // The first token stayed valid until 900 s: the secret was read with it all along, so no
    // fetch failed, the files were never removed and readiness held throughout.
    assert_eq!(snap.fetch_failures, 0, "{snap:?}");
    assert!(fx.config.files.dir.join("pin").is_file());
    assert!(fx.dir.path().join("ready").is_file());
    assert_eq!(log.revocations()[0], (843_000, token(1)));
}

#[tokio::test(start_paused = true)]
async fn a_non_renewable_token_is_never_renewed_and_replaced_before_each_expiry() {
    let fx = fixture();
    let start = Instant::now();
    let log = Log::default();
    let mut vault = MockAgentVault::new();
    let (l, logins) = (log.clone(), Arc::new(Mutex::new(0)));
    vault.expect_login_kubernetes().returning(move |_, _, _| {
        l.push(start, Call::Login);
        let mut n = logins.lock().unwrap();
        *n += 1;
        // The second and third logins fail: the token in hand stays in use meanwhile.
        if (2..=3).contains(&*n) {
            return Err(unavailable());
        }
        Ok(Login {
            token: SecretString::from(token(*n)),
            lease: Duration::from_secs(90),
            renewable: false,
            policies: vec![],
        })
    });
    // No renew_self expectation: a call would fail the test.
    reads_ok(&mut vault);
    revocations(&mut vault, &log, start);
    let metrics = Arc::new(Metrics::default());
    let agent = Agent::new(fx.config, Arc::new(vault), Arc::clone(&metrics));
    run_for(agent, 200).await;
    // Each 90 s token is replaced after 60 s, a third of its life before it expires; failed
    // attempts are retried after 1 s, then 2 s.
    assert_eq!(log.logins(), [0, 60_000, 61_000, 63_000, 123_000, 183_000]);
    assert_eq!(metrics.snapshot().fetch_failures, 0);
    // Each replaced token is revoked, the last one when the agent stops.
    assert_eq!(
        log.revocations(),
        [
            (63_000, token(1)),
            (123_000, token(4)),
            (183_000, token(5)),
            (200_000, token(6))
        ]
    );
}
