//! The few admin calls the cluster fixture makes itself: readiness, nodes, the operator's RBAC.
//! Plain JSON over `kube::Client`, so the sandbox needs no typed API of its own.

use std::path::Path;

use http::Request;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

use super::{NodeCapacity, OPERATOR_CLUSTER_ROLE, OPERATOR_USER};
use crate::{Error, Result};

fn api_error(operation: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |e| Error::ClusterApi {
        operation,
        detail: e.to_string(),
    }
}

/// A client for `kubeconfig`, bound to the calling runtime.
pub(crate) async fn client(kubeconfig: &Path) -> Result<kube::Client> {
    crate::init_crypto();
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| Error::ClusterApi {
        operation: "reading a kubeconfig",
        detail: e.to_string(),
    })?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::ClusterApi {
            operation: "loading a kubeconfig",
            detail: e.to_string(),
        })?;
    kube::Client::try_from(config).map_err(api_error("building a client"))
}

/// Admin calls on a [`super::LocalCluster`].
#[derive(Clone)]
pub struct ClusterApi {
    client: kube::Client,
}

impl std::fmt::Debug for ClusterApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterApi").finish_non_exhaustive()
    }
}

impl ClusterApi {
    pub(crate) fn new(client: kube::Client) -> Self {
        Self { client }
    }

    /// The underlying admin client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Whether `/readyz` answers `ok`.
    pub async fn ready(&self) -> Result<bool> {
        let request = Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| Error::ClusterApi {
                operation: "building a request",
                detail: e.to_string(),
            })?;
        match self.client.request_text(request).await {
            Ok(text) => Ok(text.trim() == "ok"),
            Err(err) => Err(api_error("GET /readyz")(err)),
        }
    }

    async fn send(&self, operation: &'static str, request: Request<Vec<u8>>) -> Result<Value> {
        self.client
            .request::<Value>(request)
            .await
            .map_err(api_error(operation))
    }

    async fn get(&self, operation: &'static str, path: &str) -> Result<Option<Value>> {
        let request = Request::get(path)
            .body(Vec::new())
            .map_err(|e| Error::ClusterApi {
                operation,
                detail: e.to_string(),
            })?;
        match self.client.request::<Value>(request).await {
            Ok(value) => Ok(Some(value)),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(err) => Err(api_error(operation)(err)),
        }
    }

    /// Creates `body` at `path` (a collection URL); an existing object is left as it is.
    async fn create(&self, operation: &'static str, path: &str, body: &Value) -> Result<()> {
        let request = Request::post(path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).unwrap_or_default())
            .map_err(|e| Error::ClusterApi {
                operation,
                detail: e.to_string(),
            })?;
        match self.send(operation, request).await {
            Ok(_) => Ok(()),
            Err(Error::ClusterApi { detail, .. }) if detail.contains("AlreadyExists") => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Creates the operator's `ClusterRole` ([`OPERATOR_CLUSTER_ROLE`]) and binds
    /// [`OPERATOR_USER`] to it.
    pub(crate) async fn apply_operator_rbac(&self) -> Result<()> {
        let role: Value =
            serde_saphyr::from_str(OPERATOR_CLUSTER_ROLE).map_err(|e| Error::ClusterApi {
                operation: "parsing docs/rbac/meshca-operator.yaml",
                detail: e.to_string(),
            })?;
        let role_name = role["metadata"]["name"]
            .as_str()
            .unwrap_or(OPERATOR_USER)
            .to_owned();
        self.create(
            "creating the operator ClusterRole",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            &role,
        )
        .await?;
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": { "name": role_name },
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role_name,
            },
            "subjects": [{
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "User",
                "name": OPERATOR_USER,
            }],
        });
        self.create(
            "binding the operator ClusterRole",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            &binding,
        )
        .await
    }

    /// Registers a node handed to kwok (by `annotation`), with `capacity`.
    pub(crate) async fn create_node(
        &self,
        name: &str,
        address: std::net::Ipv4Addr,
        capacity: &NodeCapacity,
        annotation: (&str, &str),
    ) -> Result<()> {
        let resources = json!({
            "cpu": capacity.cpu,
            "memory": capacity.memory,
            "pods": capacity.pods.to_string(),
        });
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": { annotation.0: annotation.1 },
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "addresses": [
                    { "type": "InternalIP", "address": address.to_string() },
                    { "type": "Hostname", "address": name },
                ],
            },
        });
        self.create("registering a node", "/api/v1/nodes", &node)
            .await
    }

    /// Whether node `name` reports the condition Ready=True and carries no scheduling taint
    /// any more (the API server taints new nodes not-ready until the node lifecycle controller
    /// sees them Ready).
    pub async fn node_ready(&self, name: &str) -> Result<bool> {
        let node = self
            .get("reading a node", &format!("/api/v1/nodes/{name}"))
            .await?;
        Ok(node.is_some_and(|node| {
            let ready = node["status"]["conditions"]
                .as_array()
                .is_some_and(|conditions| {
                    conditions
                        .iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
            let tainted = node["spec"]["taints"]
                .as_array()
                .is_some_and(|taints| !taints.is_empty());
            ready && !tainted
        }))
    }

    /// The API resource of `api_version`/`kind`, from the server's discovery.
    async fn resource(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<kube::discovery::ApiResource> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map(|(resource, _)| resource)
            .map_err(api_error("discovering a resource"))
    }

    fn dynamic(
        &self,
        resource: &kube::discovery::ApiResource,
        namespace: Option<&str>,
    ) -> kube::Api<kube::core::DynamicObject> {
        match namespace {
            Some(ns) => kube::Api::namespaced_with(self.client.clone(), ns, resource),
            None => kube::Api::all_with(self.client.clone(), resource),
        }
    }

    /// Creates `object` (any kind the server serves) as the admin, and returns it as stored.
    pub async fn create_object(&self, object: &Value) -> Result<Value> {
        let invalid = |detail: &str| Error::ClusterApi {
            operation: "creating an object",
            detail: detail.to_owned(),
        };
        let api_version = object["apiVersion"]
            .as_str()
            .ok_or_else(|| invalid("no apiVersion"))?;
        let kind = object["kind"].as_str().ok_or_else(|| invalid("no kind"))?;
        let resource = self.resource(api_version, kind).await?;
        let typed: kube::core::DynamicObject =
            serde_json::from_value(object.clone()).map_err(|e| invalid(&e.to_string()))?;
        let created = self
            .dynamic(&resource, object["metadata"]["namespace"].as_str())
            .create(&kube::api::PostParams::default(), &typed)
            .await
            .map_err(api_error("creating an object"))?;
        serde_json::to_value(created).map_err(|e| invalid(&e.to_string()))
    }

    /// Reads `kind` `namespace/name`, or `None` when it does not exist.
    pub async fn get_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>> {
        let resource = self.resource(api_version, kind).await?;
        let found = self
            .dynamic(&resource, namespace)
            .get_opt(name)
            .await
            .map_err(api_error("reading an object"))?;
        found
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| Error::ClusterApi {
                operation: "reading an object",
                detail: e.to_string(),
            })
    }

    /// Lists `kind` in `namespace` (or the cluster).
    pub async fn list_objects(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>> {
        let resource = self.resource(api_version, kind).await?;
        let list = self
            .dynamic(&resource, namespace)
            .list(&kube::api::ListParams::default())
            .await
            .map_err(api_error("listing objects"))?;
        list.items
            .into_iter()
            .map(serde_json::to_value)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::ClusterApi {
                operation: "listing objects",
                detail: e.to_string(),
            })
    }

    /// Creates namespace `namespace` and ServiceAccount `namespace/name` where missing.
    pub async fn ensure_service_account(&self, namespace: &str, name: &str) -> Result<()> {
        self.create(
            "creating a namespace",
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        )
        .await?;
        self.create(
            "creating a ServiceAccount",
            &format!("/api/v1/namespaces/{namespace}/serviceaccounts"),
            &json!({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": name, "namespace": namespace}}),
        )
        .await
    }

    /// A bound token of ServiceAccount `namespace/name` from the TokenRequest API, for
    /// `audiences` (the API server's own when empty), valid `seconds` (at least 600).
    pub async fn create_token(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[&str],
        seconds: u32,
    ) -> Result<secrecy::SecretString> {
        let mut spec = json!({ "expirationSeconds": seconds });
        if !audiences.is_empty() {
            spec["audiences"] = json!(audiences);
        }
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": spec,
        });
        let request = Request::post(format!(
            "/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"
        ))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).unwrap_or_default())
        .map_err(|e| Error::ClusterApi {
            operation: "requesting a token",
            detail: e.to_string(),
        })?;
        let answer = self.send("requesting a token", request).await?;
        answer["status"]["token"]
            .as_str()
            .map(|t| secrecy::SecretString::from(t.to_owned()))
            .ok_or_else(|| Error::ClusterApi {
                operation: "requesting a token",
                detail: "the answer holds no status.token".to_owned(),
            })
    }

    /// Reads namespace `name` (which need not exist): a request that only marks a point in the
    /// audit log.
    pub(crate) async fn probe_namespace(&self, name: &str) -> Result<()> {
        self.get(
            "marking the audit log",
            &format!("/api/v1/namespaces/{name}"),
        )
        .await
        .map(|_| ())
    }

    /// Whether ServiceAccount `namespace/name` exists (the controller manager creates
    /// `default` in every namespace).
    pub async fn service_account_exists(&self, namespace: &str, name: &str) -> Result<bool> {
        Ok(self
            .get(
                "reading a ServiceAccount",
                &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}"),
            )
            .await?
            .is_some())
    }
}
