//! Server behaviour with hsm-core's mocks, over a real Unix socket.

mod access;
mod socket_dir;

use std::sync::Arc;
use std::time::Duration;

use hsm_core::{Health, MockHsmAdmin, MockIstioKms};
use tonic::Code;

use crate::proto::health::HealthCheckRequest;
use crate::proto::istio;
use crate::{Backend, Backends, CaKeyMode, KmsClient, KmsServer, ServerConfig};

pub(crate) struct Running {
    _dir: tempfile::TempDir,
    pub(crate) client: KmsClient,
    pub(crate) state: crate::PluginState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<crate::Result<()>>,
    pub(crate) path: std::path::PathBuf,
}

impl Running {
    pub(crate) async fn stop(mut self) -> crate::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap()
    }
}

pub(crate) async fn start(config: impl FnOnce(&mut ServerConfig), backend: Backend) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.sock");
    let mut cfg = ServerConfig::new(&path);
    config(&mut cfg);
    let bound = KmsServer::new(cfg, backend).bind().unwrap();
    let state = bound.state();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bound.serve(async {
        let _ = rx.await;
    }));
    let client = KmsClient::connect(&path).await.unwrap();
    Running {
        _dir: dir,
        client,
        state,
        stop: Some(tx),
        task,
        path,
    }
}

pub(crate) fn backends(istio: MockIstioKms) -> Backend {
    let mut admin = MockHsmAdmin::new();
    admin.expect_health().returning(|| Health::Ready);
    Backend::Ready(Backends {
        istio: Arc::new(istio),
        admin: Arc::new(admin),
        kube: None,
    })
}

#[tokio::test]
async fn hsm_errors_reach_the_client_with_their_code_and_the_input() {
    let mut istio = MockIstioKms::new();
    istio.expect_generate_dek().returning(|req| {
        Err(hsm_core::Error::ObjectNotFound {
            what: "KEK",
            id: req.kek_id.to_text(),
            token: "mock".into(),
        })
    });
    let server = start(|_| {}, backends(istio)).await;
    let err = server
        .client
        .generate_dek(b"no-such-kek")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound));
    assert!(err.to_string().contains("no-such-kek"), "{err}");
    assert!(err.to_string().contains("GenerateDEK"), "{err}");

    let err = server.client.generate_dek(b"").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert!(err.to_string().contains("kek_kid"), "{err}");
    assert_eq!(
        server
            .state
            .metrics()
            .calls(crate::Rpc::GenerateDek, Code::NotFound),
        1
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn load_skey_is_refused_in_hsm_key_mode_without_touching_the_hsm() {
    // No expectation on load_skey: a call into the mock would fail the test.
    let istio = MockIstioKms::new();
    let server = start(|c| c.ca_key_mode = CaKeyMode::HsmKey, backends(istio)).await;
    let err = server
        .client
        .istio()
        .load_s_key(istio::LoadSKeyRequest {
            kek_kid: b"kek".to_vec(),
            encrypted_dek_blob: b"dek".to_vec(),
            encrypted_skey_blob: b"skey".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("hsm-key mode"), "{}", err.message());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unavailable_backend_answers_with_its_reason_and_reports_not_serving() {
    let reason = "the HSM rejected the PIN for token \"asm\"; not retrying".to_owned();
    let server = start(
        |_| {},
        Backend::Unavailable {
            reason: reason.clone(),
            code: Code::Unauthenticated,
        },
    )
    .await;
    let err = server.client.generate_dek(b"kek").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unauthenticated));
    assert!(err.to_string().contains("rejected the PIN"), "{err}");
    assert!(!server.client.is_serving().await.unwrap());
    assert_eq!(
        server.state.readiness().await,
        crate::Readiness::NotReady(reason)
    );
    let err = server
        .client
        .health()
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_is_prompt_with_a_connected_client_and_removes_the_socket() {
    let mut istio = MockIstioKms::new();
    istio
        .expect_generate_dek()
        .returning(|_| Ok(b"blob".to_vec()));
    let server = start(|_| {}, backends(istio)).await;
    assert_eq!(server.client.generate_dek(b"k").await.unwrap(), b"blob");
    let path = server.path.clone();
    let client = server.client.clone();
    let started = std::time::Instant::now();
    server.stop().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(!path.exists(), "the socket is removed on shutdown");
    drop(client);
}
