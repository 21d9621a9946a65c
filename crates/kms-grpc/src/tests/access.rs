//! Access control happens in one layer, before any service decodes the request or runs.

use std::sync::Arc;

use hsm_core::{Health, MockHsmAdmin, MockIstioKms};
use http::uri::PathAndQuery;
use hyper_util::rt::TokioIo;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{backends, start};
use crate::proto::signing;
use crate::{Backend, Backends, PeerAllowlist, Profile, Rpc};

/// A message whose field 1 is a varint: every request of ours has a length-delimited field 1,
/// so a service that decodes it fails with a decoding error.
#[derive(Clone, PartialEq, prost::Message)]
struct Garbage {
    #[prost(uint64, tag = "1")]
    n: u64,
}

async fn channel(path: &std::path::Path) -> Channel {
    let dial = path.to_path_buf();
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let dial = dial.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(dial).await?))
            }
        }))
        .await
        .unwrap()
}

async fn raw_call(path: &std::path::Path, method: &'static str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel(path).await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<Garbage, Garbage>::default();
    grpc.unary(
        tonic::Request::new(Garbage { n: 7 }),
        PathAndQuery::from_static(method),
        codec,
    )
    .await
    .unwrap_err()
}

#[tokio::test]
async fn refused_calls_never_reach_a_service_not_even_its_decoder() {
    // No expectation on the mock: a call into the port would panic the handler.
    let server = start(
        |c| c.profile = Profile::Sidecar,
        backends(MockIstioKms::new()),
    )
    .await;
    // GenerateKEK is not in the sidecar profile. A service would first fail to decode the
    // garbage (Internal); the layer refuses before that.
    let status = raw_call(
        &server.path,
        "/thalescpl.io.ekms.istio.v1.KeyManagementService/GenerateKEK",
    )
    .await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("GenerateKEK"), "{status:?}");
    assert!(status.message().contains("sidecar"), "{status:?}");
    assert_eq!(
        server
            .state
            .metrics()
            .calls(Rpc::GenerateKek, Code::PermissionDenied),
        1
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_peer_outside_the_allowlist_is_refused_before_decoding() {
    let server = start(
        |c| {
            c.profile = Profile::Admin;
            c.peers = PeerAllowlist::new([], []);
        },
        backends(MockIstioKms::new()),
    )
    .await;
    let status = raw_call(
        &server.path,
        "/thalescpl.io.ekms.istio.v1.KeyManagementService/GenerateDEK",
    )
    .await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("GenerateDEK"), "{status:?}");
    assert!(status.message().contains("uid"), "{status:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn method_paths_outside_the_catalogue_are_refused() {
    for profile in [Profile::Sidecar, Profile::Admin] {
        let server = start(|c| c.profile = profile, backends(MockIstioKms::new())).await;
        for path in [
            "/thalescpl.io.ekms.istio.v1.KeyManagementService/DestroyKEK",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/meshhsm.signing.v1.SigningService/Sign/extra",
        ] {
            let status = raw_call(&server.path, path).await;
            assert_eq!(status.code(), Code::PermissionDenied, "{path}: {status:?}");
            assert!(status.message().contains(path), "{status:?}");
            assert!(status.message().contains(profile.as_str()), "{status:?}");
        }
        server.stop().await.unwrap();
    }
}

fn signing_backend() -> Backend {
    // No expectation on sign/public_key: reaching the HSM would panic the handler.
    let mut admin = MockHsmAdmin::new();
    admin.expect_health().returning(|| Health::Ready);
    Backend::Ready(Backends {
        istio: Arc::new(MockIstioKms::new()),
        admin: Arc::new(admin),
        kube: None,
    })
}

#[tokio::test]
async fn raw_sign_is_not_open_to_the_sidecar_profile() {
    let server = start(|c| c.profile = Profile::Sidecar, signing_backend()).await;
    let status = server
        .client
        .signing()
        .sign(signing::SignRequest {
            key_id: b"ca-key".to_vec(),
            message: b"anything at all".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("Sign"), "{status:?}");
    assert!(status.message().contains("sidecar"), "{status:?}");
    server.stop().await.unwrap();

    // The admin profile lets it through to the service (which finds no signing key).
    let server = start(|c| c.profile = Profile::Admin, signing_backend()).await;
    let status = server
        .client
        .signing()
        .sign(signing::SignRequest {
            key_id: Vec::new(),
            message: b"anything at all".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    server.stop().await.unwrap();
}

fn issue(purpose: signing::Purpose, trust_domain: &str) -> signing::IssueCertificateRequest {
    signing::IssueCertificateRequest {
        issuer_certificate: b"issuer".to_vec(),
        csr: b"csr".to_vec(),
        purpose: purpose.into(),
        trust_domain: trust_domain.to_owned(),
        namespace: "default".to_owned(),
        service_account: "sleep".to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn issuing_an_intermediate_is_not_open_to_the_sidecar_profile() {
    let server = start(|c| c.profile = Profile::Sidecar, signing_backend()).await;
    let status = server
        .client
        .signing()
        .issue_certificate(issue(signing::Purpose::IstiodCa, ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("IssueCertificate"), "{status:?}");
    assert!(status.message().contains("sidecar"), "{status:?}");
    assert!(status.message().contains("ISTIOD_CA"), "{status:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_request_naming_another_trust_domain_is_invalid() {
    let server = start(|c| c.profile = Profile::Sidecar, signing_backend()).await;
    let status = server
        .client
        .signing()
        .issue_certificate(issue(signing::Purpose::Workload, "evil.example"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("evil.example"), "{status:?}");
    assert!(status.message().contains("cluster.local"), "{status:?}");
    server.stop().await.unwrap();
}
