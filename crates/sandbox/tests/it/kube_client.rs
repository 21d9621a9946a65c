//! `kube::Client` against the emulated API server, over HTTPS from a kubeconfig and in-process
//! through the tower service.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test helpers; each test walks one step of the guide end to end"
)]

use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use sandbox::kube::ApiServer;
use secrecy::ExposeSecret as _;
use serde_json::json;

async fn client(server: &ApiServer) -> kube::Client {
    sandbox::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let kc = Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn api_error(err: kube::Error) -> (u16, String, String) {
    match err {
        kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn server_side_apply_get_list_and_errors_over_https() {
    let server = ApiServer::start().unwrap();
    let client = client(&server).await;
    let pp = PatchParams::apply("meshca");

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}),
    )
    .unwrap();
    let created = namespaces
        .patch("istio-system", &pp, &Patch::Apply(&ns))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    // Applying the same configuration again is a true no-op.
    let again = namespaces
        .patch("istio-system", &pp, &Patch::Apply(&ns))
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version.unwrap(), rv);

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "istio-system");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "vault-tls-cert", "labels": {"app": "vault"}}, "data": {"cert": "PEM"}});
    // Server-side dry run stores nothing.
    let dry = cms
        .patch(
            "vault-tls-cert",
            &PatchParams::apply("meshca").dry_run(),
            &Patch::Apply(&cm),
        )
        .await
        .unwrap();
    assert_eq!(dry.data.unwrap()["cert"], "PEM");
    assert!(
        server
            .cluster()
            .get("configmaps", Some("istio-system"), "vault-tls-cert")
            .is_none()
    );
    cms.patch("vault-tls-cert", &pp, &Patch::Apply(&cm))
        .await
        .unwrap();
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "other", "labels": {"app": "x"}}}))
            .unwrap(),
    )
    .await
    .unwrap();

    let got = cms.get("vault-tls-cert").await.unwrap();
    let managers: Vec<_> = got
        .metadata
        .managed_fields
        .clone()
        .unwrap()
        .into_iter()
        .map(|m| (m.manager.unwrap(), m.operation.unwrap()))
        .collect();
    assert_eq!(managers, vec![("meshca".to_owned(), "Apply".to_owned())]);

    let by_label = cms
        .list(&ListParams::default().labels("app=vault"))
        .await
        .unwrap();
    assert_eq!(by_label.items.len(), 1);
    assert_eq!(
        by_label.items[0].metadata.name.as_deref(),
        Some("vault-tls-cert")
    );
    let by_field = cms
        .list(&ListParams::default().fields("metadata.name=other"))
        .await
        .unwrap();
    assert_eq!(by_field.items.len(), 1);
    assert_eq!(
        cms.list(&ListParams::default().labels("app notin (vault,x)"))
            .await
            .unwrap()
            .items
            .len(),
        0
    );

    let (code, reason, message) = api_error(cms.get("nosuch").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    assert_eq!(message, "configmaps \"nosuch\" not found");
    let (code, reason, _) = api_error(cms.create(&PostParams::default(), &got).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    let (code, _, message) = api_error(crbs.get("missing").await.unwrap_err());
    assert_eq!(code, 404);
    assert_eq!(
        message,
        "clusterrolebindings.rbac.authorization.k8s.io \"missing\" not found"
    );

    // A stale resourceVersion on replace is a 409 Conflict.
    let mut stale = cms.get("other").await.unwrap();
    stale.metadata.resource_version = Some("1".into());
    let (code, reason, _) = api_error(
        cms.replace("other", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    // Invalid objects are 422 with the field named.
    let bad: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "bad"}, "data": {"no/slash": "x"}}))
            .unwrap();
    let (code, reason, message) =
        api_error(cms.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(message.contains("data[no/slash]"), "{message}");

    // A denied verb is a 403 that names verb, resource and namespace.
    server.cluster().deny("patch", "configmaps");
    let (code, reason, message) = api_error(
        cms.patch("vault-tls-cert", &pp, &Patch::Apply(&cm))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert!(
        message.contains("cannot patch resource \"configmaps\""),
        "{message}"
    );
    assert!(
        message.contains("in the namespace \"istio-system\""),
        "{message}"
    );
    server.cluster().clear_denials();

    cms.delete("other", &DeleteParams::default()).await.unwrap();
    assert!(
        server
            .cluster()
            .get("configmaps", Some("istio-system"), "other")
            .is_none()
    );

    // The requests carried what the guide's tooling must send.
    let reqs = server.cluster().requests();
    assert!(reqs.iter().any(|r| r.method == "PATCH"
        && r.query.contains("fieldManager=meshca")
        && r.query.contains("dryRun=All")
        && r.content_type.as_deref() == Some("application/apply-patch+yaml")));
}

#[tokio::test]
async fn token_request_and_token_review() {
    let server = ApiServer::start().unwrap();
    let client = client(&server).await;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["vault".into()],
            expiration_seconds: Some(3600),
            bound_object_ref: None,
        },
        ..Default::default()
    };
    let answer = sas
        .create_token_request("default", &PostParams::default(), &tr)
        .await
        .unwrap();
    let status = answer.status.unwrap();
    assert_eq!(status.token.split('.').count(), 3);

    let reviews: Api<TokenReview> = Api::all(client.clone());
    let review = |token: String, audiences: Vec<String>| TokenReview {
        spec: TokenReviewSpec {
            token: Some(token),
            audiences: Some(audiences),
        },
        ..Default::default()
    };
    let ok = reviews
        .create(
            &PostParams::default(),
            &review(status.token.clone(), vec!["vault".into()]),
        )
        .await
        .unwrap();
    let s = ok.status.unwrap();
    assert_eq!(s.authenticated, Some(true));
    let user = s.user.unwrap();
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:default:default")
    );
    assert!(
        user.groups
            .unwrap()
            .contains(&"system:serviceaccounts:default".to_owned())
    );
    assert_eq!(s.audiences, Some(vec!["vault".to_owned()]));

    // Wrong audience (the API server's own), expired, and garbage are all refused.
    let s = reviews
        .create(
            &PostParams::default(),
            &review(status.token.clone(), vec![]),
        )
        .await
        .unwrap()
        .status
        .unwrap();
    assert_ne!(s.authenticated, Some(true));
    assert!(s.error.unwrap().contains("audiences"));
    let expired = server
        .cluster()
        .create_expired_token("default", "default", &["vault"])
        .unwrap();
    let s = reviews
        .create(
            &PostParams::default(),
            &review(expired.expose_secret().to_owned(), vec!["vault".into()]),
        )
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(s.error.unwrap().contains("expired"));
    let s = reviews
        .create(&PostParams::default(), &review("a.b.c".into(), vec![]))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_ne!(s.authenticated, Some(true));

    // A token of a deleted and re-created account is no longer valid.
    sas.delete("default", &DeleteParams::default())
        .await
        .unwrap();
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap(),
    )
    .await
    .unwrap();
    let s = reviews
        .create(
            &PostParams::default(),
            &review(status.token, vec!["vault".into()]),
        )
        .await
        .unwrap()
        .status
        .unwrap();
    assert_ne!(s.authenticated, Some(true));

    // TokenRequest on a missing account is a 404; a too short lifetime a 422.
    let (code, _, message) = api_error(
        sas.create_token_request("nosuch", &PostParams::default(), &tr)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 404);
    assert_eq!(message, "serviceaccounts \"nosuch\" not found");
    let short = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(60),
            ..Default::default()
        },
        ..Default::default()
    };
    let (code, _, _) = api_error(
        sas.create_token_request("default", &PostParams::default(), &short)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
}

#[tokio::test]
async fn service_account_tokens_authenticate_and_rbac_applies() {
    let server = ApiServer::start().unwrap();
    let c = server.cluster();
    c.create(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader", "namespace": "default"}})).unwrap();
    c.create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader-view", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader"}]}))
        .unwrap();
    let token = c
        .create_token("default", "reader", &[], Duration::from_secs(3600))
        .unwrap();
    sandbox::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    server
        .write_kubeconfig_with_token(&dir.path().join("kc"), &token)
        .unwrap();
    let kc = Kubeconfig::read_from(dir.path().join("kc")).unwrap();
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap(),
    )
    .unwrap();

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    assert!(
        cms.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let (code, _, message) = api_error(
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, 403);
    assert!(
        message.contains(
            "User \"system:serviceaccount:default:reader\" cannot create resource \"configmaps\""
        ),
        "{message}"
    );
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    assert_eq!(
        api_error(secrets.list(&ListParams::default()).await.unwrap_err()).0,
        403
    );
}

#[tokio::test]
async fn in_process_service_watches_and_stops() {
    let server = ApiServer::start().unwrap();
    let cluster = server.cluster().clone();
    let client = kube::Client::new(cluster.service(), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let list = pods.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut stream = pods
        .watch(&WatchParams::default().labels("app=web").timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    cluster
        .create(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}))
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let WatchEvent::Added(pod) = event else {
        panic!("expected ADDED, got {event:?}")
    };
    assert!(pod.metadata.name.unwrap().starts_with("web-"));
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Running"));

    // Over HTTPS, a stopped server is a connection failure, not an API answer.
    let https = client_for(&server).await;
    let mut server = server;
    server.stop();
    assert!(!server.is_running());
    let err = Api::<Pod>::namespaced(https, "default")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(!matches!(err, kube::Error::Api(_)), "{err:?}");
}

async fn client_for(server: &ApiServer) -> kube::Client {
    client(server).await
}

#[tokio::test]
async fn legacy_service_account_token_secret_is_filled_and_reviewable() {
    let server = ApiServer::start().unwrap();
    let client = client(&server).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "vault-token", "annotations": {"kubernetes.io/service-account.name": "default"}},
        "type": "kubernetes.io/service-account-token"}))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let stored = secrets.get("vault-token").await.unwrap();
    let data = stored.data.unwrap();
    let token = String::from_utf8(data["token"].0.clone()).unwrap();
    assert_eq!(
        String::from_utf8(data["ca.crt"].0.clone()).unwrap(),
        server.ca_pem()
    );
    assert_eq!(data["namespace"].0, b"default");

    let reviews: Api<TokenReview> = Api::all(client);
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.clone()),
            audiences: None,
        },
        ..Default::default()
    };
    let s = reviews
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(s.authenticated, Some(true), "{:?}", s.error);
    assert_eq!(
        s.user.unwrap().username.as_deref(),
        Some("system:serviceaccount:default:default")
    );

    // Deleting the Secret revokes the token.
    secrets
        .delete("vault-token", &DeleteParams::default())
        .await
        .unwrap();
    let s = reviews
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_ne!(s.authenticated, Some(true));

    // Without the annotation naming the account, the Secret is invalid.
    let bad: Secret = serde_json::from_value(
        json!({"metadata": {"name": "x"}, "type": "kubernetes.io/service-account-token"}),
    )
    .unwrap();
    let (code, _, message) = api_error(
        secrets
            .create(&PostParams::default(), &bad)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert!(
        message.contains("kubernetes.io/service-account.name"),
        "{message}"
    );
}

#[tokio::test]
async fn injected_failures_answer_status_and_then_recover() {
    let server = ApiServer::start().unwrap();
    let client = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    server.cluster().inject_failures(1, 500);
    let (code, reason, _) = api_error(cms.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (500, "InternalError"));
    // kube retries 503 by itself; two of them are absorbed.
    server.cluster().inject_failures(2, 503);
    assert!(
        cms.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let codes: Vec<u16> = server
        .cluster()
        .requests()
        .iter()
        .map(|r| r.status)
        .collect();
    assert!(codes.ends_with(&[503, 503, 200]), "{codes:?}");
}

#[tokio::test]
async fn apply_removes_fields_the_manager_stopped_applying_but_keeps_others() {
    let server = ApiServer::start().unwrap();
    let client = kube::Client::new(server.cluster().service(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let apply = |manager: &str, data: serde_json::Value| {
        let cms = cms.clone();
        let manager = manager.to_owned();
        async move {
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mesh"}, "data": data});
            cms.patch("mesh", &PatchParams::apply(&manager), &Patch::Apply(&cm))
                .await
        }
    };
    apply("meshca", json!({"a": "1", "b": "2"})).await.unwrap();
    apply("other", json!({"c": "3"})).await.unwrap();
    // Same value from a second manager: shared, no conflict.
    apply("other", json!({"a": "1", "c": "3"})).await.unwrap();
    let cm = apply("meshca", json!({"a": "1"})).await.unwrap();
    let data = cm.data.unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["a", "c"]);
    // "a" is still owned by "other", so dropping it from meshca's apply keeps it.
    let cm = apply("meshca", json!({})).await.unwrap();
    assert_eq!(cm.data.unwrap().keys().collect::<Vec<_>>(), ["a", "c"]);
    let (code, _, message) = api_error(apply("meshca", json!({"c": "changed"})).await.unwrap_err());
    assert_eq!(code, 409);
    assert!(message.contains("conflict with \"other\""), "{message}");
}

#[tokio::test]
async fn pod_status_is_written_through_its_subresource_and_kept_by_spec_updates() {
    let server = ApiServer::start().unwrap();
    let client = client(&server).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "probe"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();

    let status = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "False", "reason": "WaitingForCa"}
    ]}});
    pods.patch_status("probe", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let read = pods.get("probe").await.unwrap();
    let conditions = read.status.as_ref().unwrap().conditions.as_ref().unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason.as_deref() == Some("WaitingForCa")),
        "{conditions:?}"
    );

    // A label change through the main resource leaves the status alone.
    let labels = json!({"metadata": {"labels": {"touched": "yes"}}});
    pods.patch("probe", &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .unwrap();
    let read = pods.get("probe").await.unwrap();
    assert_eq!(read.status.unwrap().phase.as_deref(), Some("Running"));
}
