//! The vault-client agent against a real OpenBao whose Kubernetes auth calls the TokenReview
//! API of the sandbox's emulated Kubernetes API server, which also issues the JWTs.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sandbox::OpenBao;
use secrecy::ExposeSecret as _;
use vault_bootstrap::Mode;
use vault_bootstrap::agent::{Agent, Metrics};

use crate::support::{self, Credentials, Kubernetes, agent_config, agent_vault, bootstrap};

fn assert_files(dir: &Path, creds: &Credentials) {
    for (name, want) in [
        ("client-cert.pem", creds.client_cert.clone()),
        ("client-key.pem", creds.client_key.clone()),
        ("server-cert.pem", creds.server_cert.clone()),
        ("pin", format!("{}\n", creds.pin)),
    ] {
        let path = dir.join(name);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), want, "{name}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
}

#[tokio::test]
async fn istiod_logs_in_through_tokenreview_and_gets_its_four_files() {
    let bao = OpenBao::dev().await;
    let setup = bootstrap(&bao).await;
    let config = agent_config(&setup, "istio-system", "istiod-service-account");
    let metrics = Arc::new(Metrics::default());
    let mut agent = Agent::new(config.clone(), agent_vault(&bao), Arc::clone(&metrics));

    let report = agent.run_once().await.unwrap();
    assert_eq!(report.written.len(), 4);
    assert_files(&config.files.dir, &setup.creds);
    // OpenBao asked the API server, as the reviewer, whether the JWT is valid.
    setup.kube.assert_reviews(1);
    assert!(config.ready_file.as_ref().unwrap().is_file());
    let snap = metrics.snapshot();
    assert_eq!((snap.logins, snap.fetches, snap.file_writes), (1, 1, 4));

    // A second run leaves the files alone.
    let again = agent.run_once().await.unwrap();
    assert!(again.written.is_empty());
}

#[tokio::test]
async fn another_service_account_or_namespace_is_refused_clearly() {
    let bao = OpenBao::dev().await;
    let setup = bootstrap(&bao).await;
    for (namespace, account, expected) in [
        (
            "istio-system",
            "default",
            "service account name not authorized",
        ),
        (
            "default",
            "istiod-service-account",
            "namespace not authorized",
        ),
    ] {
        let config = agent_config(&setup, namespace, account);
        let metrics = Arc::new(Metrics::default());
        let mut agent = Agent::new(config.clone(), agent_vault(&bao), Arc::clone(&metrics));
        let err = agent.run_once().await.unwrap_err();
        assert!(err.is_permission_denied(), "{namespace}/{account}: {err}");
        let text = err.to_string();
        assert!(text.contains(expected), "{namespace}/{account}: {text}");
        assert!(text.contains("auth/asm-c1/hsm/login"), "{text}");
        let jwt = std::fs::read_to_string(&config.jwt_path).unwrap();
        assert!(!text.contains(jwt.trim()), "the JWT is in the error");
        assert!(
            !format!("{err:?}").contains(jwt.trim()),
            "the JWT is in Debug"
        );
        assert!(!config.files.dir.join("pin").exists());
        assert_eq!(metrics.snapshot().login_failures, 1);
    }
}

#[tokio::test]
async fn a_token_signed_by_another_key_is_refused() {
    let bao = OpenBao::dev().await;
    let setup = bootstrap(&bao).await;
    // Same names, issued by another cluster.
    let stranger = Kubernetes::start();
    let config = agent_config(&setup, "istio-system", "istiod-service-account");
    let foreign = stranger.issue("istio-system", "istiod-service-account");
    sandbox::write_secret_file(&config.jwt_path, foreign.expose_secret().as_bytes()).unwrap();
    let mut agent = Agent::new(config, agent_vault(&bao), Arc::default());
    let err = agent.run_once().await.unwrap_err();
    assert!(err.is_permission_denied(), "{err}");
}

#[tokio::test]
async fn the_agent_survives_a_server_restart_and_logs_in_again() {
    let mut bao = OpenBao::builder()
        .storage(sandbox::Storage::Raft)
        .start()
        .await
        .unwrap();
    let setup = bootstrap(&bao).await;
    let config = agent_config(&setup, "istio-system", "istiod-service-account");
    let metrics = Arc::new(Metrics::default());
    let agent = Agent::new(config.clone(), agent_vault(&bao), Arc::clone(&metrics));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(agent.run(async move {
        let _ = stopped.await;
    }));

    wait_for(|| metrics.is_ready()).await;
    // Down long enough for the agent to notice, then back on the same port and storage.
    bao.stop();
    wait_for(|| metrics.snapshot().fetch_failures >= 1).await;
    assert!(
        metrics.is_ready(),
        "the files are still in place while Vault is down"
    );
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
    stop.send(()).unwrap();
    task.await.unwrap();

    let snap = metrics.snapshot();
    assert!(snap.fetch_failures >= 1, "{snap:?}");
    assert!(snap.logins >= 2, "{snap:?}");
    assert!(snap.ready);
    // Each login went through the API server's TokenReview again.
    let reviews = setup.kube.token_reviews();
    assert!(reviews.len() >= 2, "{reviews:?}");
    assert!(reviews.iter().all(|r| r.status == 201), "{reviews:?}");
}

async fn wait_for(mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
