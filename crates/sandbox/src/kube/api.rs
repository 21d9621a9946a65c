//! The public face of [`Cluster`]: reading and seeding objects, tokens, denials, and the
//! in-process tower service.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use secrecy::SecretString;
use serde_json::Value;

use super::body::ResponseBody;
use super::cluster::{
    Cluster, Ownership, RecordedRequest, Validation, WriteOpts, admin_user, now_seconds,
};
use super::handler::Req;
use super::resources::{RESOURCES, find_kind};
use crate::{Error, Result};

fn emulator(operation: &'static str, detail: impl Into<String>) -> Error {
    Error::KubeEmulator {
        operation,
        detail: detail.into(),
    }
}

fn resource_index(resource: &str) -> Result<usize> {
    RESOURCES
        .iter()
        .position(|r| r.plural == resource || r.kind.eq_ignore_ascii_case(resource))
        .ok_or_else(|| {
            emulator(
                "looking up a resource type",
                format!("{resource:?} is not served; use a plural such as \"configmaps\""),
            )
        })
}

impl Cluster {
    /// A stored object, by resource plural (`"configmaps"`), namespace (`None` for
    /// cluster-scoped types) and name.
    pub fn get(&self, resource: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let rt = resource_index(resource).ok()?;
        let st = self.shared.lock();
        st.get(
            rt,
            if RESOURCES[rt].namespaced {
                namespace.unwrap_or_default()
            } else {
                ""
            },
            name,
        )
        .cloned()
    }

    /// The stored objects of a resource type, in one namespace or (`None`) all.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        let Ok(rt) = resource_index(resource) else {
            return Vec::new();
        };
        let st = self.shared.lock();
        st.list(rt, namespace).into_iter().cloned().collect()
    }

    /// Creates an object (by its `apiVersion` and `kind`) as the admin, with the same
    /// defaulting, validation and controllers as a POST. Returns the stored object.
    pub fn create(&self, object: Value) -> Result<Value> {
        let kind = object["kind"].as_str().unwrap_or_default();
        let group = object["apiVersion"]
            .as_str()
            .and_then(|av| av.split_once('/').map(|(g, _)| g))
            .unwrap_or_default();
        let rt_idx = find_kind(group, kind).ok_or_else(|| {
            emulator(
                "seeding an object",
                format!("kind {kind:?} in group {group:?} is not served"),
            )
        })?;
        let rt = &RESOURCES[rt_idx];
        let ns = if rt.namespaced {
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned()
        } else {
            String::new()
        };
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let user = admin_user();
        let opts = WriteOpts {
            dry_run: false,
            manager: "sandbox".into(),
            validation: Validation::Strict,
            user: &user,
            subresource: None,
        };
        let mut st = self.shared.lock();
        if rt.namespaced && st.get(0, "", &ns).is_none() {
            return Err(emulator(
                "seeding an object",
                format!("namespaces \"{ns}\" not found"),
            ));
        }
        if st.get(rt_idx, &ns, &name).is_some() {
            return Err(emulator(
                "seeding an object",
                format!("{} \"{name}\" already exists", rt.qualified()),
            ));
        }
        self.shared
            .commit(&mut st, rt_idx, &ns, None, object, &opts, Ownership::Update)
            .map(|w| w.object)
            .map_err(|e| emulator("seeding an object", e.message))
    }

    /// Deletes an object (and what it owns) as a controller would; returns whether it existed.
    pub fn delete(&self, resource: &str, namespace: Option<&str>, name: &str) -> bool {
        let Ok(rt) = resource_index(resource) else {
            return false;
        };
        let mut st = self.shared.lock();
        self.shared
            .remove(&mut st, rt, namespace.unwrap_or_default(), name)
            .is_some()
    }

    /// Makes every request for `verb` (`create`, `get`, `patch`, `*`, …) on `resource`
    /// (`configmaps`, `serviceaccounts/token`, `*`) answer 403 Forbidden, whoever asks.
    pub fn deny(&self, verb: &str, resource: &str) {
        self.shared
            .lock()
            .denials
            .push((verb.to_owned(), resource.to_owned()));
    }

    /// Makes the next `count` requests (other than `/version` and health checks) answer
    /// `code` with a `Status` (429 adds `Retry-After: 1`), as an overloaded or restarting API
    /// server would; for retry tests.
    pub fn inject_failures(&self, count: usize, code: u16) {
        let mut st = self.shared.lock();
        st.faults.extend(std::iter::repeat_n(code, count));
    }

    /// Removes every rule added with [`Cluster::deny`].
    pub fn clear_denials(&self) {
        self.shared.lock().denials.clear();
    }

    /// Issues a projected service-account token as `TokenRequest` does (the account must
    /// exist; `audiences` empty means the API server's audiences).
    pub fn create_token(
        &self,
        namespace: &str,
        service_account: &str,
        audiences: &[&str],
        lifetime: Duration,
    ) -> Result<SecretString> {
        let body = serde_json::json!({"spec": {
            "audiences": audiences,
            "expirationSeconds": i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX),
        }});
        let st = self.shared.lock();
        let tr = self
            .shared
            .token_request(&st, namespace, service_account, &body)
            .map_err(|e| emulator("issuing a service account token", e.message))?;
        tr["status"]["token"]
            .as_str()
            .map(|t| SecretString::from(t.to_owned()))
            .ok_or_else(|| emulator("issuing a service account token", "no token in the answer"))
    }

    /// A token for an existing service account, signed by the cluster's key, that expired an
    /// hour ago (for refusal tests).
    pub fn create_expired_token(
        &self,
        namespace: &str,
        service_account: &str,
        audiences: &[&str],
    ) -> Result<SecretString> {
        let st = self.shared.lock();
        let sa = st
            .get(
                RESOURCES
                    .iter()
                    .position(|r| r.plural == "serviceaccounts")
                    .unwrap_or_default(),
                namespace,
                service_account,
            )
            .ok_or_else(|| {
                emulator(
                    "issuing an expired token",
                    format!("serviceaccounts \"{service_account}\" not found"),
                )
            })?;
        let auds: Vec<String> = if audiences.is_empty() {
            self.shared.api_audiences.clone()
        } else {
            audiences.iter().map(|a| (*a).to_owned()).collect()
        };
        let now = now_seconds();
        self.shared
            .sign_token(namespace, sa, &auds, now - 7200, now - 3600, None)
            .map(SecretString::from)
            .map_err(|e| emulator("issuing an expired token", e.message))
    }

    /// The `iss` of the tokens this cluster issues.
    pub fn service_account_issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// The public key (PEM) that verifies this cluster's service-account tokens.
    pub fn service_account_public_key_pem(&self) -> String {
        self.shared.signer.public_key_pem()
    }

    /// The bearer token of the cluster admin.
    pub fn admin_token(&self) -> &SecretString {
        &self.shared.admin_token
    }

    /// Every request answered so far (oldest first, the last 4096).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.iter().cloned().collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// The current (latest) resource version.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// A tower `Service` answering requests in-process, as the API server would over HTTPS.
    /// Requests without an `Authorization` header act as the admin; hand it to
    /// `kube::Client::new(service, "default")`.
    pub fn service(&self) -> ClusterService {
        ClusterService {
            cluster: self.clone(),
        }
    }
}

/// The in-process tower `Service` of a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterService {
    cluster: Cluster,
}

impl<B> tower::Service<http::Request<B>> for ClusterService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    type Response = http::Response<ResponseBody>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let cluster = self.cluster.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) => {
                    tracing::warn!("reading an in-process request body failed: {e}");
                    Bytes::new()
                }
            };
            let req = Req {
                method: parts.method,
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                headers: parts.headers,
                body,
            };
            Ok(cluster.handle(&req, true))
        })
    }
}
