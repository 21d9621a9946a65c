//! A real Kubernetes control plane (`sandbox::LocalCluster`), set up as the guide's step 4 leaves
//! a cluster for OpenBao's Kubernetes auth: namespace `vault`, the `role-tokenreview-binding` of
//! `system:auth-delegator` to `vault/default`, and a TokenRequest JWT of that account as the
//! reviewer JWT. OpenBao calls the real API server's TokenReview over HTTPS, trusting its CA;
//! the API server's audit log shows each review.
//!
//! Also compiled into `vault-client`'s tests (`#[path]`), so it uses only `sandbox`,
//! `secrecy` and `serde_json`.

use sandbox::LocalCluster;
use sandbox::cluster::{AuditEvent, ClusterApi};
use secrecy::SecretString;
use serde_json::json;

/// Path of the TokenReview API.
pub(crate) const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// Who OpenBao reviews tokens as.
pub(crate) const REVIEWER: &str = "system:serviceaccount:vault:default";

/// Lifetime of issued tokens, in seconds.
const TOKEN_LIFETIME: u32 = 3600;

/// Where OpenBao reaches the TokenReview API and how it authenticates.
#[derive(Clone, Debug)]
pub(crate) struct TokenReviewEndpoint {
    /// API server URL (`https://127.0.0.1:PORT`).
    pub(crate) url: String,
    /// PEM CA of the API server's serving certificate.
    pub(crate) ca_pem: String,
    /// The JWT of `vault/default`, sent by OpenBao as a bearer token.
    pub(crate) reviewer_jwt: SecretString,
}

/// A cluster ready for OpenBao's Kubernetes auth; stopped on drop.
pub(crate) struct Kubernetes {
    cluster: LocalCluster,
    api: ClusterApi,
    endpoint: TokenReviewEndpoint,
}

impl Kubernetes {
    /// Starts the control plane with the reviewer's RBAC in place and
    /// `istio-system/istiod-service-account` created.
    pub(crate) async fn start() -> Self {
        sandbox::init_crypto();
        let cluster = LocalCluster::builder().start().await.unwrap();
        let api = cluster.api().await.unwrap();
        api.ensure_service_account("vault", "default")
            .await
            .unwrap();
        api.create_object(&json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "role-tokenreview-binding"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:auth-delegator",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "vault"}],
        }))
        .await
        .unwrap();
        let reviewer_jwt = api
            .create_token("vault", "default", &[], TOKEN_LIFETIME)
            .await
            .unwrap();
        let endpoint = TokenReviewEndpoint {
            url: cluster.server().to_owned(),
            ca_pem: cluster.ca_pem().to_owned(),
            reviewer_jwt,
        };
        api.ensure_service_account("istio-system", "istiod-service-account")
            .await
            .unwrap();
        Self {
            cluster,
            api,
            endpoint,
        }
    }

    /// URL, CA and reviewer JWT.
    pub(crate) fn endpoint(&self) -> &TokenReviewEndpoint {
        &self.endpoint
    }

    /// The PEM public key that verifies the cluster's service-account tokens (for `pem_keys`).
    pub(crate) fn public_key_pem(&self) -> String {
        self.cluster.service_account_public_key_pem().unwrap()
    }

    /// A TokenRequest JWT for `namespace/name` with the API server's audience; the namespace
    /// and the service account are created first when missing.
    pub(crate) async fn issue(&self, namespace: &str, name: &str) -> SecretString {
        self.api
            .ensure_service_account(namespace, name)
            .await
            .unwrap();
        self.api
            .create_token(namespace, name, &[], TOKEN_LIFETIME)
            .await
            .unwrap()
    }

    /// Every TokenReview the API server answered, oldest first.
    pub(crate) async fn token_reviews(&self) -> Vec<AuditEvent> {
        self.cluster
            .audit_events()
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.verb == "create" && e.uri == TOKEN_REVIEWS)
            .collect()
    }

    /// Asserts that OpenBao reviewed tokens exactly `count` times, as `vault/default`, and
    /// that the API server allowed each review.
    pub(crate) async fn assert_reviews(&self, count: usize) {
        let reviews = self.token_reviews().await;
        assert_eq!(reviews.len(), count, "TokenReview calls: {reviews:?}");
        for r in &reviews {
            assert_eq!(r.user, REVIEWER, "{r:?}");
            assert_eq!(r.code, 201, "{r:?}");
        }
    }
}
