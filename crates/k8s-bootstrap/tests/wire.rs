//! The `KubeClient` adapter on the wire: exact requests pinned with `tower_test`, and status
//! mapping.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use http::{Method, Request, Response, StatusCode};
use k8s_bootstrap::{
    Error, Kind, Kube, KubeClient, ListQuery, Mode, ObjectRef, RetryPolicy, TokenSpec, Verb,
};
use kube::client::Body;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

/// One request as the API server saw it.
#[derive(Debug)]
struct Seen {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    content_type: String,
    body: Value,
}

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn client(retry: RetryPolicy) -> (KubeClient, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    (KubeClient::new(client).with_retry(retry), handle)
}

/// Answers each request with the next `(status, body)` and returns what was seen.
fn serve(mut handle: Handle, answers: Vec<(u16, Value)>) -> tokio::task::JoinHandle<Vec<Seen>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        for (status, body) in answers {
            let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
                .await
                .expect("the client sent a request in time")
                .expect("a request");
            let (parts, req_body) = req.into_parts();
            let bytes = req_body.collect_bytes().await.unwrap();
            seen.push(Seen {
                method: parts.method,
                path: parts.uri.path().to_owned(),
                query: parts
                    .uri
                    .query()
                    .unwrap_or_default()
                    .split('&')
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        (k.to_owned(), v.to_owned())
                    })
                    .collect(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default(),
                body: if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).unwrap()
                },
            });
            let response = Response::builder()
                .status(StatusCode::from_u16(status).unwrap())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string().into_bytes()))
                .unwrap();
            send.send_response(response);
        }
        seen
    })
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": message})
}

fn vault_cm() -> ObjectRef {
    ObjectRef::namespaced(Kind::ConfigMap, "istio-system", "vault-tls-cert")
}

#[tokio::test]
async fn apply_is_server_side_apply_with_the_meshca_field_manager_never_forced() {
    let (kube, handle) = client(RetryPolicy::none());
    let mut manifest = vault_cm().manifest_skeleton();
    manifest["data"] = json!({"cert": "pem"});
    let server = serve(handle, vec![(200, manifest.clone())]);
    let out = kube
        .apply(&vault_cm(), &manifest, Mode::Apply)
        .await
        .unwrap();
    assert_eq!(out, manifest);
    let seen = server.await.unwrap();
    let req = &seen[0];
    assert_eq!(req.method, Method::PATCH);
    assert_eq!(
        req.path,
        "/api/v1/namespaces/istio-system/configmaps/vault-tls-cert"
    );
    assert_eq!(req.content_type, "application/apply-patch+yaml");
    assert_eq!(
        req.query.get("fieldManager").map(String::as_str),
        Some("meshca")
    );
    // Never forced: fields another manager owns are a conflict, not taken over.
    assert_eq!(req.query.get("force"), None);
    assert!(!req.query.contains_key("dryRun"));
    assert_eq!(req.body, manifest);
}

#[tokio::test]
async fn dry_run_writes_carry_dry_run_all() {
    let (kube, handle) = client(RetryPolicy::none());
    let crb = ObjectRef::cluster(Kind::ClusterRoleBinding, "role-tokenreview-binding");
    let manifest = crb.manifest_skeleton();
    let ns = ObjectRef::cluster(Kind::Namespace, "app");
    let patch =
        json!({"metadata": {"labels": {"istio.io/rev": "asm-183-2", "istio-injection": null}}});
    let server = serve(
        handle,
        vec![
            (200, manifest.clone()),
            (200, json!({})),
            (200, status(200, "", "")),
        ],
    );
    kube.apply(&crb, &manifest, Mode::DryRun).await.unwrap();
    kube.merge_patch(&ns, &patch, Mode::DryRun).await.unwrap();
    assert!(kube.delete(&vault_cm(), Mode::DryRun).await.unwrap());
    let seen = server.await.unwrap();

    assert_eq!(
        seen[0].path,
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/role-tokenreview-binding"
    );
    assert_eq!(seen[0].query.get("dryRun").map(String::as_str), Some("All"));
    assert_eq!(seen[0].content_type, "application/apply-patch+yaml");

    assert_eq!(
        (&seen[1].method, seen[1].path.as_str()),
        (&Method::PATCH, "/api/v1/namespaces/app")
    );
    assert_eq!(seen[1].content_type, "application/merge-patch+json");
    assert_eq!(seen[1].query.get("dryRun").map(String::as_str), Some("All"));
    assert_eq!(
        seen[1].body, patch,
        "the label removal travels as an explicit null"
    );

    assert_eq!(seen[2].method, Method::DELETE);
    assert_eq!(
        seen[2].path,
        "/api/v1/namespaces/istio-system/configmaps/vault-tls-cert"
    );
    assert_eq!(
        seen[2].body["dryRun"],
        json!(["All"]),
        "DeleteOptions carry the dry run"
    );
}

#[tokio::test]
async fn not_found_is_absence_for_get_and_delete() {
    let (kube, handle) = client(RetryPolicy::none());
    let nf = status(404, "NotFound", "configmaps \"vault-tls-cert\" not found");
    let server = serve(handle, vec![(404, nf.clone()), (404, nf)]);
    assert_eq!(kube.get(&vault_cm()).await.unwrap(), None);
    assert!(!kube.delete(&vault_cm(), Mode::Apply).await.unwrap());
    let seen = server.await.unwrap();
    assert_eq!(seen[0].method, Method::GET);
    assert_eq!(seen[1].method, Method::DELETE);
}

#[tokio::test]
async fn forbidden_and_unauthorized_name_the_verb_resource_and_namespace() {
    let (kube, handle) = client(RetryPolicy::default());
    let server = serve(
        handle,
        vec![
            (
                403,
                status(
                    403,
                    "Forbidden",
                    "configmaps \"vault-tls-cert\" is forbidden: user \"dev\" cannot patch",
                ),
            ),
            (401, status(401, "Unauthorized", "Unauthorized")),
            (403, status(403, "Forbidden", "cannot list pods")),
        ],
    );
    let err = kube
        .apply(&vault_cm(), &vault_cm().manifest_skeleton(), Mode::Apply)
        .await
        .unwrap_err();
    match &err {
        Error::Forbidden {
            verb,
            resource,
            namespace,
            ..
        } => {
            assert_eq!(
                (*verb, resource.as_str(), namespace.as_deref()),
                (
                    Verb::Apply,
                    "configmaps/vault-tls-cert",
                    Some("istio-system")
                )
            );
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    assert!(err.to_string().starts_with(
        "forbidden (403) to patch (server-side apply) configmaps/vault-tls-cert in namespace istio-system"
    ));
    let err = kube
        .get(&ObjectRef::cluster(Kind::Namespace, "vault"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("unauthorized (401) to get namespaces/vault:"),
        "{err}"
    );
    let err = kube
        .list(&ListQuery::in_namespace(Kind::Pod, "app"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("forbidden (403) to list pods in namespace app"),
        "{err}"
    );
    assert_eq!(server.await.unwrap().len(), 3, "denials are not retried");
}

#[tokio::test]
async fn lists_send_the_label_selector_and_return_the_items() {
    let (kube, handle) = client(RetryPolicy::none());
    let items = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [{"metadata": {"name": "a"}}]});
    let server = serve(
        handle,
        vec![
            (200, items),
            (200, json!({"kind": "NodeList", "items": null})),
        ],
    );
    let pods = kube
        .list(&ListQuery::in_namespace(Kind::Pod, "app").with_labels("istio.io/rev=asm-183-2"))
        .await
        .unwrap();
    assert_eq!(pods, [json!({"metadata": {"name": "a"}})]);
    assert!(
        kube.list(&ListQuery::all(Kind::Node))
            .await
            .unwrap()
            .is_empty()
    );
    let seen = server.await.unwrap();
    assert_eq!(seen[0].path, "/api/v1/namespaces/app/pods");
    assert_eq!(
        seen[0].query.get("labelSelector").map(String::as_str),
        Some("istio.io%2Frev%3Dasm-183-2")
    );
    assert_eq!(seen[1].path, "/api/v1/nodes");
}

#[tokio::test]
async fn token_requests_post_to_the_token_subresource() {
    let (kube, handle) = client(RetryPolicy::none());
    let answer = json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                        "status": {"token": "eyJ.payload.sig", "expirationTimestamp": "2030-01-01T00:00:00Z"}});
    let server = serve(handle, vec![(201, answer), (201, json!({"status": {}}))]);
    let spec = TokenSpec {
        audiences: vec!["vault".into()],
        expiration_seconds: 3600,
    };
    let token = kube.request_token("vault", "default", &spec).await.unwrap();
    assert_eq!(token.expose_secret(), "eyJ.payload.sig");
    let err = kube
        .request_token("vault", "default", &spec)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("has no status.token"), "{err}");
    let seen = server.await.unwrap();
    assert_eq!(
        (&seen[0].method, seen[0].path.as_str()),
        (
            &Method::POST,
            "/api/v1/namespaces/vault/serviceaccounts/default/token"
        )
    );
    assert_eq!(seen[0].body["kind"], "TokenRequest");
    assert_eq!(
        seen[0].body["spec"],
        json!({"audiences": ["vault"], "expirationSeconds": 3600})
    );
}

#[tokio::test]
async fn transient_statuses_are_retried_then_succeed() {
    let fast = RetryPolicy {
        attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    };
    let (kube, handle) = client(fast);
    let server = serve(
        handle,
        vec![
            (
                503,
                status(503, "ServiceUnavailable", "etcd leader changed"),
            ),
            (500, status(500, "InternalError", "try again")),
            (200, json!({"metadata": {"name": "vault"}})),
        ],
    );
    let ns = kube
        .get(&ObjectRef::cluster(Kind::Namespace, "vault"))
        .await
        .unwrap();
    assert_eq!(ns.unwrap()["metadata"]["name"], "vault");
    assert_eq!(server.await.unwrap().len(), 3);
}

#[tokio::test]
async fn other_statuses_keep_code_reason_and_message() {
    let (kube, handle) = client(RetryPolicy::none());
    let server = serve(
        handle,
        vec![(
            422,
            status(422, "Invalid", "spec.ports[0].port: Invalid value"),
        )],
    );
    let err = kube
        .apply(&vault_cm(), &json!({}), Mode::Apply)
        .await
        .unwrap_err();
    assert_eq!(err.status_code(), Some(422));
    assert!(
        err.to_string()
            .contains("HTTP 422 Invalid: spec.ports[0].port: Invalid value"),
        "{err}"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn an_unreachable_api_server_is_dependency_unavailable() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca.pem());
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n\
         clusters:\n- name: x\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority-data: {ca_data}\n\
         contexts:\n- name: x\n  context:\n    cluster: x\n    user: x\n\
         users:\n- name: x\n  user:\n    token: not-a-real-token\n"
    ))
    .unwrap();
    let fast = RetryPolicy {
        attempts: 2,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
    };
    let kube = KubeClient::from_kubeconfig(kubeconfig, None)
        .await
        .unwrap()
        .with_retry(fast);
    let err = kube
        .get(&ObjectRef::cluster(Kind::Namespace, "vault"))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("kubernetes API server unavailable: could not get namespaces/vault"),
        "{err}"
    );
    assert!(!format!("{err:?}").contains("not-a-real-token"));
}
