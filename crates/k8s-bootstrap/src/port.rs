//! The `Kube` port: the few Kubernetes API calls the operations need, over dynamic JSON objects.
//!
//! Objects travel as `serde_json::Value` manifests so the port (and this library) needs no
//! k8s-openapi version feature; [`Kind`] names the resource types the guide touches.

use std::fmt;

use secrecy::SecretString;
use serde_json::Value;

use crate::{Mode, Result};

/// The resource types the guide's cluster steps touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Kind {
    /// core/v1 Namespace (cluster-scoped).
    Namespace,
    /// core/v1 `ServiceAccount`.
    ServiceAccount,
    /// core/v1 Secret.
    Secret,
    /// core/v1 `ConfigMap`.
    ConfigMap,
    /// core/v1 Service.
    Service,
    /// core/v1 Pod.
    Pod,
    /// core/v1 Node (cluster-scoped).
    Node,
    /// apps/v1 Deployment.
    Deployment,
    /// rbac.authorization.k8s.io/v1 `ClusterRoleBinding` (cluster-scoped).
    ClusterRoleBinding,
    /// install.istio.io/v1alpha1 `IstioOperator`: what `istioctl install` records as
    /// `installed-state-<revision>`.
    IstioOperator,
    /// admissionregistration.k8s.io/v1 `MutatingWebhookConfiguration` (cluster-scoped): a
    /// revision's sidecar injector.
    MutatingWebhookConfiguration,
}

impl Kind {
    /// The API group (empty for core).
    pub fn group(self) -> &'static str {
        match self {
            Self::Deployment => "apps",
            Self::ClusterRoleBinding => "rbac.authorization.k8s.io",
            Self::IstioOperator => "install.istio.io",
            Self::MutatingWebhookConfiguration => "admissionregistration.k8s.io",
            _ => "",
        }
    }

    /// The API version within the group.
    pub fn version(self) -> &'static str {
        match self {
            Self::IstioOperator => "v1alpha1",
            _ => "v1",
        }
    }

    /// The `apiVersion` written in manifests.
    pub fn api_version(self) -> &'static str {
        match self {
            Self::Deployment => "apps/v1",
            Self::ClusterRoleBinding => "rbac.authorization.k8s.io/v1",
            Self::IstioOperator => "install.istio.io/v1alpha1",
            Self::MutatingWebhookConfiguration => "admissionregistration.k8s.io/v1",
            _ => "v1",
        }
    }

    /// The `kind` written in manifests.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Namespace => "Namespace",
            Self::ServiceAccount => "ServiceAccount",
            Self::Secret => "Secret",
            Self::ConfigMap => "ConfigMap",
            Self::Service => "Service",
            Self::Pod => "Pod",
            Self::Node => "Node",
            Self::Deployment => "Deployment",
            Self::ClusterRoleBinding => "ClusterRoleBinding",
            Self::IstioOperator => "IstioOperator",
            Self::MutatingWebhookConfiguration => "MutatingWebhookConfiguration",
        }
    }

    /// The plural resource name used in URLs and RBAC rules.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Namespace => "namespaces",
            Self::ServiceAccount => "serviceaccounts",
            Self::Secret => "secrets",
            Self::ConfigMap => "configmaps",
            Self::Service => "services",
            Self::Pod => "pods",
            Self::Node => "nodes",
            Self::Deployment => "deployments",
            Self::ClusterRoleBinding => "clusterrolebindings",
            Self::IstioOperator => "istiooperators",
            Self::MutatingWebhookConfiguration => "mutatingwebhookconfigurations",
        }
    }

    /// True for namespaced resource types.
    pub fn is_namespaced(self) -> bool {
        !matches!(
            self,
            Self::Namespace
                | Self::Node
                | Self::ClusterRoleBinding
                | Self::MutatingWebhookConfiguration
        )
    }

    /// The URL path of the collection (`/api/v1/namespaces/NS/configmaps`); `namespace` is
    /// ignored for cluster-scoped kinds, and `None` lists across all namespaces.
    pub fn collection_path(self, namespace: Option<&str>) -> String {
        let prefix = match self.group() {
            "" => "/api/v1".to_owned(),
            group => format!("/apis/{group}/{}", self.version()),
        };
        match namespace {
            Some(ns) if self.is_namespaced() => {
                format!("{prefix}/namespaces/{ns}/{}", self.plural())
            }
            _ => format!("{prefix}/{}", self.plural()),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.plural())
    }
}

/// One object: kind, namespace (for namespaced kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    /// The resource type.
    pub kind: Kind,
    /// The namespace; `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    /// The object name.
    pub name: String,
}

impl ObjectRef {
    /// A namespaced object.
    pub fn namespaced(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }

    /// A cluster-scoped object.
    pub fn cluster(kind: Kind, name: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: None,
            name: name.into(),
        }
    }

    /// The collection URL path this object lives in.
    pub fn collection_path(&self) -> String {
        self.kind.collection_path(self.namespace.as_deref())
    }

    /// The skeleton of a manifest for this object: `apiVersion`, `kind` and `metadata` with
    /// name and namespace.
    pub fn manifest_skeleton(&self) -> Value {
        let mut metadata = serde_json::Map::new();
        metadata.insert("name".into(), Value::String(self.name.clone()));
        if let Some(ns) = &self.namespace {
            metadata.insert("namespace".into(), Value::String(ns.clone()));
        }
        serde_json::json!({
            "apiVersion": self.kind.api_version(),
            "kind": self.kind.kind(),
            "metadata": metadata,
        })
    }
}

impl fmt::Display for ObjectRef {
    /// `configmap istio-system/vault-tls-cert` or `namespace vault`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind.kind().to_ascii_lowercase();
        match &self.namespace {
            Some(ns) => write!(f, "{kind} {ns}/{}", self.name),
            None => write!(f, "{kind} {}", self.name),
        }
    }
}

/// A list request: a kind, optionally one namespace, optionally a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListQuery {
    /// The resource type.
    pub kind: Kind,
    /// The namespace (ignored for cluster-scoped kinds); `None` lists all namespaces.
    pub namespace: Option<String>,
    /// A label selector in the API's syntax (`app=istiod,istio.io/rev`).
    pub label_selector: Option<String>,
}

impl ListQuery {
    /// Every object of `kind` (in every namespace for namespaced kinds).
    pub fn all(kind: Kind) -> Self {
        Self {
            kind,
            namespace: None,
            label_selector: None,
        }
    }

    /// Every object of `kind` in `namespace`.
    pub fn in_namespace(kind: Kind, namespace: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: Some(namespace.into()),
            label_selector: None,
        }
    }

    /// Restricts the list to objects matching `selector`.
    #[must_use]
    pub fn with_labels(mut self, selector: impl Into<String>) -> Self {
        self.label_selector = Some(selector.into());
        self
    }
}

impl fmt::Display for ListQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.plural())?;
        if let Some(ns) = self
            .namespace
            .as_deref()
            .filter(|_| self.kind.is_namespaced())
        {
            write!(f, " in {ns}")?;
        }
        if let Some(sel) = &self.label_selector {
            write!(f, " with labels {sel}")?;
        }
        Ok(())
    }
}

/// The parameters of a TokenRequest for a service account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSpec {
    /// Audiences the token is for; empty means the API server's own audiences.
    pub audiences: Vec<String>,
    /// Requested lifetime; the API server may shorten it.
    pub expiration_seconds: i64,
}

/// A narrow view of the Kubernetes API, shaped by what the operations need.
///
/// Writes use server-side apply with the field manager [`FIELD_MANAGER`](crate::names::FIELD_MANAGER)
/// and `force`; under [`Mode::DryRun`] every write carries `dryRun=All`, so the API server
/// validates it (admission included) and stores nothing. Waiting for a condition is built on
/// [`Kube::list`] by [`wait`](crate::wait).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait::async_trait]
pub trait Kube: Send + Sync {
    /// Reads one object; `Ok(None)` when it does not exist.
    async fn get(&self, object: &ObjectRef) -> Result<Option<Value>>;

    /// Lists objects.
    async fn list(&self, query: &ListQuery) -> Result<Vec<Value>>;

    /// Server-side apply of `manifest` (a complete or partial object with `apiVersion`,
    /// `kind` and `metadata.name`); returns the object as the server stored it (or would).
    async fn apply(&self, object: &ObjectRef, manifest: &Value, mode: Mode) -> Result<Value>;

    /// JSON merge patch (RFC 7386): `null` removes a key, as for a label another field manager
    /// owns; returns the patched object.
    async fn merge_patch(&self, object: &ObjectRef, patch: &Value, mode: Mode) -> Result<Value>;

    /// Deletes an object; `Ok(false)` when it did not exist.
    async fn delete(&self, object: &ObjectRef, mode: Mode) -> Result<bool>;

    /// Asks for a token for service account `name` in `namespace` (the TokenRequest API).
    async fn request_token(
        &self,
        namespace: &str,
        name: &str,
        spec: &TokenSpec,
    ) -> Result<SecretString>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_api_layout() {
        assert_eq!(
            Kind::ConfigMap.collection_path(Some("istio-system")),
            "/api/v1/namespaces/istio-system/configmaps"
        );
        assert_eq!(
            Kind::ClusterRoleBinding.collection_path(Some("ignored")),
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
        );
        assert_eq!(
            Kind::Deployment.collection_path(None),
            "/apis/apps/v1/deployments"
        );
        assert_eq!(
            Kind::IstioOperator.collection_path(Some("istio-system")),
            "/apis/install.istio.io/v1alpha1/namespaces/istio-system/istiooperators"
        );
        assert_eq!(
            Kind::Namespace.collection_path(Some("x")),
            "/api/v1/namespaces"
        );
    }

    #[test]
    fn object_refs_render_like_kubectl_names() {
        let cm = ObjectRef::namespaced(Kind::ConfigMap, "istio-system", "vault-tls-cert");
        assert_eq!(cm.to_string(), "configmap istio-system/vault-tls-cert");
        assert_eq!(
            ObjectRef::cluster(Kind::Namespace, "vault").to_string(),
            "namespace vault"
        );
        let sk = cm.manifest_skeleton();
        assert_eq!(sk["apiVersion"], "v1");
        assert_eq!(sk["kind"], "ConfigMap");
        assert_eq!(sk["metadata"]["namespace"], "istio-system");
    }
}
