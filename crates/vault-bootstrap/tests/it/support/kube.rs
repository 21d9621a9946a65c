//! The sandbox's emulated Kubernetes API server, set up as the guide's step 4 leaves a cluster
//! for OpenBao's Kubernetes auth: namespace `vault`, the `role-tokenreview-binding` of
//! `system:auth-delegator` to `vault/default`, and a TokenRequest JWT of that account as the
//! reviewer JWT. OpenBao calls the emulator's TokenReview over HTTPS, trusting its CA.
//!
//! Also compiled into `vault-client`'s tests (`#[path]`), so it uses only `sandbox`,
//! `secrecy` and `serde_json`.

use std::time::Duration;

use sandbox::kube::{ApiServer, RecordedRequest};
use secrecy::SecretString;
use serde_json::json;

/// Path of the TokenReview API.
pub(crate) const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// Who OpenBao reviews tokens as.
pub(crate) const REVIEWER: &str = "system:serviceaccount:vault:default";

/// Lifetime of issued tokens (TokenRequest's minimum is 10 minutes).
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

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

/// An emulated cluster ready for OpenBao's Kubernetes auth; stops serving on drop.
pub(crate) struct Kubernetes {
    server: ApiServer,
    endpoint: TokenReviewEndpoint,
}

impl Kubernetes {
    /// Starts the API server (on a thread of its own) with the reviewer's RBAC in place and
    /// `istio-system/istiod-service-account` created.
    pub(crate) fn start() -> Self {
        let server = ApiServer::start().unwrap();
        let cluster = server.cluster();
        cluster
            .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vault"}}))
            .unwrap();
        cluster
            .create(json!({
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
            .unwrap();
        let reviewer_jwt = cluster
            .create_token("vault", "default", &[], TOKEN_LIFETIME)
            .unwrap();
        let endpoint = TokenReviewEndpoint {
            url: server.url().to_owned(),
            ca_pem: server.ca_pem().to_owned(),
            reviewer_jwt,
        };
        let kube = Self { server, endpoint };
        kube.ensure_service_account("istio-system", "istiod-service-account");
        kube
    }

    /// URL, CA and reviewer JWT.
    pub(crate) fn endpoint(&self) -> &TokenReviewEndpoint {
        &self.endpoint
    }

    /// The PEM public key that verifies the cluster's service-account tokens (for `pem_keys`).
    pub(crate) fn public_key_pem(&self) -> String {
        self.server.cluster().service_account_public_key_pem()
    }

    /// A TokenRequest JWT for `namespace/name` with the API server's audience; the namespace
    /// and the service account are created first when missing.
    pub(crate) fn issue(&self, namespace: &str, name: &str) -> SecretString {
        self.ensure_service_account(namespace, name);
        self.server
            .cluster()
            .create_token(namespace, name, &[], TOKEN_LIFETIME)
            .unwrap()
    }

    /// Every TokenReview the API server answered, oldest first.
    pub(crate) fn token_reviews(&self) -> Vec<RecordedRequest> {
        self.server
            .cluster()
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == TOKEN_REVIEWS)
            .collect()
    }

    /// Asserts that OpenBao reviewed tokens exactly `count` times, as `vault/default`, and
    /// that the API server allowed each review.
    pub(crate) fn assert_reviews(&self, count: usize) {
        let reviews = self.token_reviews();
        assert_eq!(reviews.len(), count, "TokenReview calls: {reviews:?}");
        for r in &reviews {
            assert_eq!(r.user, REVIEWER, "{r:?}");
            assert_eq!(r.status, 201, "{r:?}");
        }
    }

    fn ensure_service_account(&self, namespace: &str, name: &str) {
        let cluster = self.server.cluster();
        if cluster.get("namespaces", None, namespace).is_none() {
            cluster
                .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}))
                .unwrap();
        }
        if cluster
            .get("serviceaccounts", Some(namespace), name)
            .is_none()
        {
            cluster
                .create(json!({
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": name, "namespace": namespace},
                }))
                .unwrap();
        }
    }
}
