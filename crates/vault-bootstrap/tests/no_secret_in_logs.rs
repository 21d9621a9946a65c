//! Secrets never reach logs, errors or `Debug` output. A test binary of its own, so that its
//! global log capture sees every event of the process and nothing races its subscriber.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test on error"
)]

#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the `it` test binary"
)]
#[path = "it/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};

use sandbox::OpenBao;
use secrecy::ExposeSecret as _;
use vault_bootstrap::Mode;
use vault_bootstrap::agent::Agent;

use support::{agent_config, agent_vault, bootstrap};

#[tokio::test]
async fn no_secret_reaches_the_logs_or_errors() {
    let logs = capture_logs_globally();
    let bao = OpenBao::dev().await;
    let setup = bootstrap(&bao).await;
    // Once more with a changed PIN, so the diff path is logged too.
    let mut spec = setup.spec.clone();
    sandbox::write_secret_file(&setup.creds.files.pin, b"second-pin-0000\n").unwrap();
    spec.secret.as_mut().unwrap().fields = setup.creds.files.read().unwrap();
    let report = vault_bootstrap::apply(&support::admin(&bao), &spec, Mode::Apply)
        .await
        .unwrap();
    let config = agent_config(&setup, "istio-system", "istiod-service-account").await;
    let jwt = std::fs::read_to_string(&config.jwt_path).unwrap();
    let mut agent = Agent::new(config.clone(), agent_vault(&bao), Arc::default());
    agent.run_once().await.unwrap();
    // A refused login and a missing secret produce errors; they must not carry secrets either.
    let refused = {
        let c = agent_config(&setup, "istio-system", "default").await;
        let mut a = Agent::new(c, agent_vault(&bao), Arc::default());
        a.run_once().await.unwrap_err()
    };

    let text = logs.text();
    assert!(
        text.contains("logged in to Vault"),
        "logs were not captured: {text}"
    );
    let key_body = setup.creds.client_key.lines().nth(1).unwrap().to_owned();
    let reviewer_jwt = setup
        .kube
        .endpoint()
        .reviewer_jwt
        .expose_secret()
        .to_owned();
    let root = bao.root_token().expose_secret().to_owned();
    let secrets = [
        ("PIN", setup.creds.pin.as_str()),
        ("second PIN", "second-pin-0000"),
        ("client key", key_body.as_str()),
        ("service-account JWT", jwt.trim()),
        ("reviewer JWT", reviewer_jwt.as_str()),
        ("root token", root.as_str()),
    ];
    let surfaces = [
        ("logs", text),
        ("report", format!("{report} {report:?}")),
        ("error", format!("{refused} {refused:?}")),
        ("spec", format!("{:?}", setup.spec)),
        ("agent", format!("{agent:?}")),
    ];
    for (what, secret) in secrets {
        for (surface, content) in &surfaces {
            assert!(
                !content.contains(secret),
                "the {what} appears in the {surface}"
            );
        }
    }
}

/// A `tracing` writer that keeps everything for later inspection.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = Self;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Routes every event and span of the process (all levels) into the returned buffer. For a
/// test binary with a single test: the subscriber is global.
fn capture_logs_globally() -> CapturedLogs {
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    logs
}
