//! The agent's token lifecycle against a real OpenBao: renewals capped by the role's max TTL,
//! non-renewable (batch) tokens, revocation when it stops, and a server restart with
//! persistent storage. TTLs are a few seconds, so each test takes about ten.

use std::sync::Arc;
use std::time::Duration;

use sandbox::OpenBao;
use serde_json::json;
use tokio::time::Instant;
use vault_bootstrap::agent::{Agent, AgentConfig, Metrics};
use vault_bootstrap::{HttpVault, Mode, RetryPolicy};

use crate::support::tokens::{live_tokens, set_role_tokens};
use crate::support::{self, Setup, agent_config, agent_vault, assert_files, bootstrap, wait_for};

const LOGIN_PATH: &str = "auth/asm-c1/hsm/login";

/// A running agent; `stop` ends it the way the sidecar's signal handler does.
struct Running {
    metrics: Arc<Metrics>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn start(bao: &OpenBao, config: &AgentConfig) -> Running {
    start_with(agent_vault(bao), config)
}

fn start_with(vault: Arc<HttpVault>, config: &AgentConfig) -> Running {
    let metrics = Arc::new(Metrics::default());
    let agent = Agent::new(config.clone(), vault, Arc::clone(&metrics));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(agent.run(async move {
        let _ = stopped.await;
    }));
    Running {
        metrics,
        stop,
        task,
    }
}

impl Running {
    async fn stop(self) -> Arc<Metrics> {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the agent stops within 30 s")
            .unwrap();
        self.metrics
    }
}

async fn istiod(bao: &OpenBao, role: serde_json::Value) -> (Setup, AgentConfig) {
    let setup = bootstrap(bao).await;
    set_role_tokens(bao, "asm-c1/hsm", "istiod", role).await;
    let config = agent_config(&setup, "istio-system", "istiod-service-account").await;
    (setup, config)
}

#[tokio::test]
async fn a_renewal_capped_by_the_max_ttl_is_the_last_and_a_login_follows_well_before_expiry() {
    let bao = OpenBao::dev().await;
    // Renewed after 4 s of 6; asked for 6 s more, the renewal is capped at the 9 s max TTL.
    let (_setup, config) = istiod(&bao, json!({ "token_ttl": 6, "token_max_ttl": 9 })).await;
    let agent = start(&bao, &config);
    wait_for(|| agent.metrics.snapshot().logins == 1).await;
    // The first token was issued before this instant, so it dies before `issued + 9 s`.
    let issued = Instant::now();
    wait_for(|| agent.metrics.snapshot().logins == 2).await;
    let relogin = Instant::now();
    let snap = agent.metrics.snapshot();
    // A capped renewal cannot be extended: renewing it again only wastes the time left.
    assert_eq!(snap.renewals, 1, "{snap:?}");
    // A third of the capped lease (more than a second) was still ahead.
    let before_expiry = (issued + Duration::from_secs(9)).saturating_duration_since(relogin);
    assert!(
        before_expiry >= Duration::from_secs(1),
        "logged in again only {before_expiry:?} before the max TTL"
    );
    assert_eq!(snap.fetch_failures, 0, "{snap:?}");
    // The replaced token was revoked rather than left alive for its last seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    while live_tokens(&bao, LOGIN_PATH).await != 1 {
        assert!(
            Instant::now() < deadline,
            "the replaced token is still alive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.stop().await;
}

#[tokio::test]
async fn a_non_renewable_token_is_never_renewed_replaced_before_it_expires_and_serves_meanwhile() {
    let bao = OpenBao::dev().await;
    // Batch tokens cannot be renewed (nor revoked); OpenBao says `renewable: false`.
    let (setup, config) = istiod(&bao, json!({ "token_ttl": 6, "token_type": "batch" })).await;
    let agent = start(&bao, &config);
    // Replaced after 4 s of its 6.
    wait_for(|| agent.metrics.snapshot().logins >= 2).await;
    let snap = agent.metrics.snapshot();
    assert_eq!((snap.renewals, snap.renewal_failures), (0, 0), "{snap:?}");
    assert_eq!(
        (snap.fetch_failures, snap.login_failures),
        (0, 0),
        "{snap:?}"
    );
    assert_files(&config.files.dir, &setup.creds);

    // The API server goes away: OpenBao can no longer review JWTs, so logins fail. Until the
    // token in hand expires, it keeps serving reads while the login is retried.
    drop(setup.kube);
    wait_for(|| agent.metrics.snapshot().login_failures >= 2).await;
    let snap = agent.stop().await.snapshot();
    assert_eq!(snap.fetch_failures, 0, "{snap:?}");
    assert!(snap.ready);
    assert_eq!((snap.renewals, snap.renewal_failures), (0, 0), "{snap:?}");
}

#[tokio::test]
async fn stopping_the_agent_revokes_its_token() {
    let bao = OpenBao::dev().await;
    let (_setup, config) = istiod(&bao, json!({ "token_ttl": 3600 })).await;
    let agent = start(&bao, &config);
    wait_for(|| agent.metrics.is_ready()).await;
    assert_eq!(live_tokens(&bao, LOGIN_PATH).await, 1);
    agent.stop().await;
    assert_eq!(
        live_tokens(&bao, LOGIN_PATH).await,
        0,
        "the stopped agent left its token alive"
    );
}

#[tokio::test]
async fn across_a_restart_with_persistent_storage_the_agent_keeps_its_token_and_the_files_current()
{
    let mut bao = OpenBao::builder()
        .storage(sandbox::Storage::Raft)
        .start()
        .await
        .unwrap();
    let (setup, mut config) = istiod(&bao, json!({ "token_ttl": 3600 })).await;
    config.refresh_interval = Duration::from_secs(1);
    config.retry_interval = Duration::from_millis(100);
    // One attempt per request, so that the agent's own pacing is what the test sees.
    let conn = bao.connection().unwrap().with_retry(RetryPolicy {
        attempts: 1,
        ..RetryPolicy::default()
    });
    let agent = start_with(Arc::new(HttpVault::new(conn, None).unwrap()), &config);
    let metrics = Arc::clone(&agent.metrics);
    wait_for(|| metrics.is_ready()).await;

    let down = Instant::now();
    bao.stop();
    wait_for(|| metrics.snapshot().fetch_failures >= 1).await;
    // Down for three seconds: retries back off (0.1, 0.2, 0.4, 0.8 s, then the 1 s refresh
    // interval) instead of hammering the server every retry interval (30 times).
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(down.elapsed())).await;
    let failures = metrics.snapshot().fetch_failures;
    assert!(failures <= 8, "{failures} failed fetches in 3 s");
    assert!(
        metrics.is_ready(),
        "the files stay in place while Vault is down"
    );
    assert_files(&config.files.dir, &setup.creds);

    bao.restart().await.unwrap();
    // The secret changes while the agent is running: it must show up in the file.
    let mut spec = setup.spec.clone();
    sandbox::write_secret_file(&setup.creds.files.pin, b"rotated-pin\n").unwrap();
    spec.secret.as_mut().unwrap().fields = setup.creds.files.read().unwrap();
    vault_bootstrap::apply(&support::admin(&bao), &spec, Mode::Apply)
        .await
        .unwrap();
    let pin = config.files.dir.join("pin");
    wait_for(|| std::fs::read_to_string(&pin).is_ok_and(|p| p == "rotated-pin\n")).await;
    let snap = agent.stop().await.snapshot();
    // The token outlived the restart (raft storage), so no new login was needed...
    assert_eq!(snap.logins, 1, "{snap:?}");
    setup.kube.assert_reviews(1).await;
    assert!(snap.ready);
    // ...and it was revoked when the agent stopped.
    assert_eq!(live_tokens(&bao, LOGIN_PATH).await, 0);
}
