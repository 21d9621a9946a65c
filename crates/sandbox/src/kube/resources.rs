//! The resource types the emulator serves, and the discovery and `OpenAPI` documents built from
//! them.

use serde_json::{Value, json};

/// One served resource type (a REST collection).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResourceType {
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    pub(crate) plural: &'static str,
    pub(crate) singular: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) namespaced: bool,
    pub(crate) short_names: &'static [&'static str],
    pub(crate) verbs: &'static [&'static str],
    pub(crate) categories: &'static [&'static str],
    /// Subresources: (name, response kind, verbs).
    pub(crate) subresources: &'static [(&'static str, &'static str, &'static [&'static str])],
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const STATUS: (&str, &str, &[&str]) = ("status", "", &["get", "patch", "update"]);

/// Every resource type the emulator serves, in discovery order.
pub(crate) static RESOURCES: &[ResourceType] = &[
    ResourceType {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        verbs: &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ],
        categories: &[],
        subresources: &[STATUS],
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        verbs: ALL_VERBS,
        categories: &[],
        subresources: &[("token", "TokenRequest", &["create"])],
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        verbs: ALL_VERBS,
        categories: &[],
        subresources: &[],
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        verbs: ALL_VERBS,
        categories: &[],
        subresources: &[],
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        verbs: ALL_VERBS,
        categories: &["all"],
        subresources: &[STATUS],
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        verbs: ALL_VERBS,
        categories: &["all"],
        subresources: &[STATUS, ("log", "Pod", &["get"])],
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        verbs: ALL_VERBS,
        categories: &[],
        subresources: &[STATUS],
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "endpoints",
        singular: "endpoints",
        kind: "Endpoints",
        namespaced: true,
        short_names: &["ep"],
        verbs: ALL_VERBS,
        categories: &[],
        subresources: &[],
    },
    ResourceType {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        verbs: ALL_VERBS,
        categories: &["all"],
        subresources: &[STATUS],
    },
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterroles",
        singular: "clusterrole",
        kind: "ClusterRole",
        namespaced: false,
        short_names: &[],
        verbs: ALL_VERBS,
        categories: &[],
        subresources: &[],
    },
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        kind: "ClusterRoleBinding",
        namespaced: false,
        short_names: &[],
        verbs: ALL_VERBS,
        categories: &[],
        subresources: &[],
    },
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "roles",
        singular: "role",
        kind: "Role",
        namespaced: true,
        short_names: &[],
        verbs: ALL_VERBS,
        categories: &[],
        subresources: &[],
    },
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "rolebindings",
        singular: "rolebinding",
        kind: "RoleBinding",
        namespaced: true,
        short_names: &[],
        verbs: ALL_VERBS,
        categories: &[],
        subresources: &[],
    },
    ResourceType {
        group: "authentication.k8s.io",
        version: "v1",
        plural: "tokenreviews",
        singular: "tokenreview",
        kind: "TokenReview",
        namespaced: false,
        short_names: &[],
        verbs: &["create"],
        categories: &[],
        subresources: &[],
    },
    ResourceType {
        group: "certificates.k8s.io",
        version: "v1",
        plural: "certificatesigningrequests",
        singular: "certificatesigningrequest",
        kind: "CertificateSigningRequest",
        namespaced: false,
        short_names: &["csr"],
        verbs: ALL_VERBS,
        categories: &[],
        subresources: &[STATUS, ("approval", "", &["get", "patch", "update"])],
    },
    // The CRD `istioctl install` records its input in (`installed-state-<revision>`).
    ResourceType {
        group: "install.istio.io",
        version: "v1alpha1",
        plural: "istiooperators",
        singular: "istiooperator",
        kind: "IstioOperator",
        namespaced: true,
        short_names: &["iop", "io"],
        verbs: ALL_VERBS,
        categories: &[],
        subresources: &[],
    },
];

impl ResourceType {
    /// `v1` or `apps/v1`.
    pub(crate) fn group_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `configmaps` or `clusterrolebindings.rbac.authorization.k8s.io`, as in API messages.
    pub(crate) fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The URL of the collection in namespace `ns` (ignored for cluster-scoped types).
    pub(crate) fn collection_path(&self, ns: &str) -> String {
        let prefix = if self.group.is_empty() {
            "/api/v1".to_owned()
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        if self.namespaced {
            format!("{prefix}/namespaces/{ns}/{}", self.plural)
        } else {
            format!("{prefix}/{}", self.plural)
        }
    }
}

/// The index of the type serving `plural` in `group`/`version`.
pub(crate) fn find(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The index of the type of `kind` in `group`.
pub(crate) fn find_kind(group: &str, kind: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.kind == kind)
}

/// The group-versions served, in discovery order (core first).
fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

fn discovery_resource(r: &ResourceType) -> Value {
    let subresources: Vec<Value> = r
        .subresources
        .iter()
        .map(|(name, kind, verbs)| {
            let (group, version, kind) = subresource_kind(r, kind);
            json!({
                "subresource": name,
                "responseKind": {"group": group, "version": version, "kind": kind},
                "verbs": verbs,
            })
        })
        .collect();
    let mut res = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        res["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        res["categories"] = json!(r.categories);
    }
    if !subresources.is_empty() {
        res["subresources"] = Value::Array(subresources);
    }
    res
}

fn subresource_kind(
    r: &ResourceType,
    kind: &'static str,
) -> (&'static str, &'static str, &'static str) {
    match kind {
        "" => (r.group, r.version, r.kind),
        "TokenRequest" => ("authentication.k8s.io", "v1", "TokenRequest"),
        other => (r.group, r.version, other),
    }
}

/// The aggregated discovery document (`apidiscovery.k8s.io/v2`) of the core group (`/api`)
/// or of the named groups (`/apis`).
pub(crate) fn aggregated(core: bool) -> Value {
    let items: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(group, version)| {
            let resources: Vec<Value> = RESOURCES
                .iter()
                .filter(|r| r.group == group && r.version == version)
                .map(discovery_resource)
                .collect();
            let metadata = if core {
                json!({"creationTimestamp": null})
            } else {
                json!({"name": group, "creationTimestamp": null})
            };
            json!({
                "metadata": metadata,
                "versions": [{"version": version, "resources": resources, "freshness": "Current"}],
            })
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// The legacy `/api` document.
pub(crate) fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn api_group(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// The legacy `/apis` document.
pub(crate) fn api_group_list() -> Value {
    let groups: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, v)| api_group(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// The legacy `/apis/{group}` document, if the group is served.
pub(crate) fn api_group_doc(group: &str) -> Option<Value> {
    let (g, v) = group_versions().into_iter().find(|(g, _)| *g == group)?;
    let mut doc = api_group(g, v);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// The legacy `APIResourceList` of one group-version, if served.
pub(crate) fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut res = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            res["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            res["categories"] = json!(r.categories);
        }
        resources.push(res);
        for (name, kind, verbs) in r.subresources {
            let (g, v, k) = subresource_kind(r, kind);
            let mut sub = json!({
                "name": format!("{}/{name}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": k,
                "verbs": verbs,
            });
            if g != r.group || v != r.version {
                sub["group"] = json!(g);
                sub["version"] = json!(v);
            }
            resources.push(sub);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}

/// The `OpenAPI` v3 path key of a group-version (`api/v1`, `apis/apps/v1`).
fn openapi_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The `OpenAPI` v3 document of one group-version: one PATCH operation per kind, tagged with its
/// group-version-kind and the `fieldValidation` parameter, which is what kubectl's apply checks.
pub(crate) fn openapi_group_version(key: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    for r in RESOURCES {
        if openapi_key(r.group, r.version) != key || !r.verbs.contains(&"patch") {
            continue;
        }
        let item = format!("{}/{{name}}", r.collection_path("{namespace}"));
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
            {"name": "force", "in": "query", "schema": {"type": "boolean"}},
        ]);
        let op = |action: &str| {
            json!({
                "operationId": format!("{action}{}", r.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
            })
        };
        paths.insert(
            item,
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
        );
        let collection = r.collection_path("{namespace}");
        paths.insert(collection, json!({"get": op("list"), "post": op("post")}));
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
    }))
}

/// The `OpenAPI` v3 root index, each group-version with an opaque content hash.
pub(crate) fn openapi_root() -> Value {
    let mut paths = serde_json::Map::new();
    for (g, v) in group_versions() {
        let key = openapi_key(g, v);
        let hash = openapi_group_version(&key)
            .map(|doc| hex_sha256(doc.to_string().as_bytes()))
            .unwrap_or_default();
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

/// Lower-case hex SHA-256 of `data`.
pub(crate) fn hex_sha256(data: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_version_has_an_openapi_document_listed_in_the_root() {
        let root = openapi_root();
        for (g, v) in group_versions() {
            let key = openapi_key(g, v);
            let url = root["paths"][&key]["serverRelativeURL"].as_str().unwrap();
            assert!(
                url.starts_with(&format!("/openapi/v3/{key}?hash=")),
                "{url}"
            );
            if g != "authentication.k8s.io" {
                assert!(openapi_group_version(&key).is_some(), "{key}");
            }
        }
    }

    #[test]
    fn aggregated_discovery_carries_short_names() {
        let core = aggregated(true);
        let resources = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap();
        let sa = resources
            .iter()
            .find(|r| r["resource"] == "serviceaccounts")
            .unwrap();
        assert_eq!(sa["shortNames"], json!(["sa"]));
        assert_eq!(
            sa["subresources"][0]["responseKind"]["kind"],
            "TokenRequest"
        );
        let groups = aggregated(false);
        assert!(
            groups["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["metadata"]["name"] == "apps")
        );
    }
}
