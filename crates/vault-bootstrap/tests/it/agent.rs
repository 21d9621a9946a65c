//! The vault-client agent against a real OpenBao whose Kubernetes auth calls the TokenReview
//! API of a real Kubernetes API server (`sandbox::LocalCluster`), which also issues the JWTs.

use std::sync::Arc;

use sandbox::OpenBao;
use secrecy::ExposeSecret as _;
use vault_bootstrap::agent::{Agent, Metrics};

use crate::support::{Kubernetes, agent_config, agent_vault, assert_files, bootstrap};

#[tokio::test]
async fn istiod_logs_in_through_tokenreview_and_gets_its_four_files() {
    let bao = OpenBao::dev().await;
    let setup = bootstrap(&bao).await;
    let config = agent_config(&setup, "istio-system", "istiod-service-account").await;
    let metrics = Arc::new(Metrics::default());
    let mut agent = Agent::new(config.clone(), agent_vault(&bao), Arc::clone(&metrics));

    let report = agent.run_once().await.unwrap();
    assert_eq!(report.written.len(), 4);
    assert_files(&config.files.dir, &setup.creds);
    // OpenBao asked the API server, as the reviewer, whether the JWT is valid.
    setup.kube.assert_reviews(1).await;
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
        let config = agent_config(&setup, namespace, account).await;
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
    let stranger = Kubernetes::start().await;
    let config = agent_config(&setup, "istio-system", "istiod-service-account").await;
    let foreign = stranger
        .issue("istio-system", "istiod-service-account")
        .await;
    sandbox::write_secret_file(&config.jwt_path, foreign.expose_secret().as_bytes()).unwrap();
    let mut agent = Agent::new(config, agent_vault(&bao), Arc::default());
    let err = agent.run_once().await.unwrap_err();
    assert!(err.is_permission_denied(), "{err}");
}
