//! OpenBao's Kubernetes auth against the emulated API server: OpenBao really calls the
//! emulator's TokenReview with the reviewer JWT the guide's step 4 produces.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers")]

use std::time::Duration;

use sandbox::OpenBao;
use sandbox::kube::ApiServer;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};

struct Bao {
    http: reqwest::Client,
    base: String,
    token: SecretString,
}

impl Bao {
    fn new(bao: &OpenBao) -> Self {
        sandbox::init_crypto();
        Self {
            http: reqwest::Client::new(),
            base: bao.addr().as_str().trim_end_matches('/').to_owned(),
            token: bao.root_token().clone(),
        }
    }

    async fn post(&self, path: &str, body: &Value, auth: bool) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/{path}", self.base))
            .json(body);
        if auth {
            req = req.header("X-Vault-Token", self.token.expose_secret());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn login(&self, jwt: &SecretString) -> (u16, Value) {
        self.post(
            "auth/kubernetes/login",
            &json!({"role": "istiod", "jwt": jwt.expose_secret()}),
            false,
        )
        .await
    }
}

/// Step 4 on the cluster side, then step 5's auth mount configured through the HTTP API.
async fn configured(server: &ApiServer, bao: &Bao) {
    let c = server.cluster();
    c.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vault"}}))
        .unwrap();
    c.create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "role-tokenreview-binding"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "vault"}]}))
        .unwrap();
    c.create(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}),
    )
    .unwrap();
    c.create(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "istiod-service-account", "namespace": "istio-system"}}))
        .unwrap();
    let reviewer = c
        .create_token("vault", "default", &[], Duration::from_secs(3600))
        .unwrap();

    let (code, body) = bao
        .post("sys/auth/kubernetes", &json!({"type": "kubernetes"}), true)
        .await;
    assert_eq!(code, 204, "{body}");
    let (code, body) = bao
        .post(
            "auth/kubernetes/config",
            &json!({
                "kubernetes_host": server.url(),
                "kubernetes_ca_cert": server.ca_pem(),
                "token_reviewer_jwt": reviewer.expose_secret(),
                "disable_local_ca_jwt": true,
            }),
            true,
        )
        .await;
    assert_eq!(code, 204, "{body}");
    let (code, body) = bao
        .post(
            "auth/kubernetes/role/istiod",
            &json!({
                "bound_service_account_names": ["istiod-service-account"],
                "bound_service_account_namespaces": ["istio-system"],
                "token_policies": ["default"],
                "ttl": "1h",
            }),
            true,
        )
        .await;
    assert_eq!(code, 204, "{body}");
}

fn token_reviews(server: &ApiServer) -> Vec<sandbox::kube::RecordedRequest> {
    server
        .cluster()
        .requests()
        .into_iter()
        .filter(|r| r.path == "/apis/authentication.k8s.io/v1/tokenreviews")
        .collect()
}

#[tokio::test]
async fn openbao_logs_in_with_a_token_request_jwt_through_token_review() {
    let server = ApiServer::start().unwrap();
    let openbao = OpenBao::dev().await;
    let bao = Bao::new(&openbao);
    configured(&server, &bao).await;

    let jwt = server
        .cluster()
        .create_token(
            "istio-system",
            "istiod-service-account",
            &[],
            Duration::from_secs(3600),
        )
        .unwrap();
    let (code, body) = bao.login(&jwt).await;
    assert_eq!(code, 200, "{body}");
    let auth = &body["auth"];
    assert!(
        auth["client_token"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert_eq!(
        auth["metadata"]["service_account_name"],
        "istiod-service-account"
    );
    assert_eq!(
        auth["metadata"]["service_account_namespace"],
        "istio-system"
    );
    let sa = server
        .cluster()
        .get(
            "serviceaccounts",
            Some("istio-system"),
            "istiod-service-account",
        )
        .unwrap();
    assert_eq!(
        auth["metadata"]["service_account_uid"],
        sa["metadata"]["uid"]
    );

    let reviews = token_reviews(&server);
    assert_eq!(reviews.len(), 1, "{reviews:?}");
    assert_eq!(reviews[0].method, "POST");
    assert_eq!(reviews[0].user, "system:serviceaccount:vault:default");
    assert_eq!(reviews[0].status, 201);
}

#[tokio::test]
async fn expired_foreign_and_unbound_tokens_are_refused() {
    let server = ApiServer::start().unwrap();
    let openbao = OpenBao::dev().await;
    let bao = Bao::new(&openbao);
    configured(&server, &bao).await;

    let expired = server
        .cluster()
        .create_expired_token("istio-system", "istiod-service-account", &[])
        .unwrap();
    let (code, body) = bao.login(&expired).await;
    assert_eq!(code, 403, "{body}");

    // Same names, signed by another cluster's key.
    let other = ApiServer::start().unwrap();
    other
        .cluster()
        .create(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}),
        )
        .unwrap();
    other
        .cluster()
        .create(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "istiod-service-account", "namespace": "istio-system"}}))
        .unwrap();
    let foreign = other
        .cluster()
        .create_token(
            "istio-system",
            "istiod-service-account",
            &[],
            Duration::from_secs(3600),
        )
        .unwrap();
    let before = token_reviews(&server).len();
    let (code, body) = bao.login(&foreign).await;
    assert_eq!(code, 403, "{body}");
    // OpenBao cannot tell locally; the emulator's TokenReview refused it, answering as a real
    // API server does (201, not authenticated).
    let reviews = token_reviews(&server);
    assert_eq!(reviews.len(), before + 1);
    assert_eq!(reviews[before].status, 201);

    // Without the auth-delegator binding the reviewer itself is forbidden to review.
    assert!(
        server
            .cluster()
            .delete("clusterrolebindings", None, "role-tokenreview-binding")
    );
    let good = server
        .cluster()
        .create_token(
            "istio-system",
            "istiod-service-account",
            &[],
            Duration::from_secs(3600),
        )
        .unwrap();
    let (code, body) = bao.login(&good).await;
    assert_ne!(code, 200, "{body} {:?}", token_reviews(&server));
    assert_eq!(token_reviews(&server).last().unwrap().status, 403);
}
