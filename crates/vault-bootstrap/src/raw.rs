//! Endpoints vaultrs 0.8 lacks or cannot read completely, as rustify endpoints so that they go
//! through vaultrs' token, namespace and error handling: mount tuning, the Kubernetes auth
//! configuration with `token_reviewer_jwt`, a single auth mount, and roles with `audience`.

use rustify_derive::Endpoint;
use serde::Deserialize;

/// `POST sys/mounts/{path}/tune`.
#[derive(Default, Endpoint)]
#[endpoint(path = "sys/mounts/{self.path}/tune", method = "POST")]
pub(crate) struct TuneMount {
    #[endpoint(skip)]
    pub(crate) path: String,
    pub(crate) max_lease_ttl: Option<String>,
}

/// `GET sys/auth/{path}`: one auth mount (vaultrs only lists all of them).
#[derive(Default, Endpoint)]
#[endpoint(path = "sys/auth/{self.path}", response = "AuthMount")]
pub(crate) struct ReadAuthMount {
    #[endpoint(skip)]
    pub(crate) path: String,
}

/// The part of an auth mount we use.
#[derive(Debug, Deserialize)]
pub(crate) struct AuthMount {
    #[serde(rename = "type")]
    pub(crate) kind: String,
}

/// `POST auth/{mount}/config` with every field the guide sets, including the reviewer JWT.
/// The server replaces the whole configuration.
#[derive(Default, Endpoint)]
#[endpoint(path = "auth/{self.mount}/config", method = "POST")]
pub(crate) struct WriteKubernetesConfig {
    #[endpoint(skip)]
    pub(crate) mount: String,
    pub(crate) kubernetes_host: String,
    pub(crate) kubernetes_ca_cert: Option<String>,
    pub(crate) token_reviewer_jwt: Option<String>,
    pub(crate) issuer: Option<String>,
    pub(crate) pem_keys: Option<Vec<String>>,
    pub(crate) disable_local_ca_jwt: bool,
}

/// `GET auth/{mount}/config`, read leniently (OpenBao reports `token_reviewer_jwt_set`).
#[derive(Default, Endpoint)]
#[endpoint(path = "auth/{self.mount}/config", response = "KubernetesConfig")]
pub(crate) struct ReadKubernetesConfig {
    #[endpoint(skip)]
    pub(crate) mount: String,
}

/// A Kubernetes auth configuration as read back.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct KubernetesConfig {
    pub(crate) kubernetes_host: String,
    pub(crate) kubernetes_ca_cert: Option<String>,
    pub(crate) token_reviewer_jwt_set: bool,
    pub(crate) issuer: Option<String>,
    pub(crate) pem_keys: Option<Vec<String>>,
    pub(crate) disable_local_ca_jwt: bool,
}

/// `GET auth/{mount}/role/{name}`, read leniently (vaultrs' response lacks `audience`).
#[derive(Default, Endpoint)]
#[endpoint(
    path = "auth/{self.mount}/role/{self.name}",
    response = "KubernetesRole"
)]
pub(crate) struct ReadKubernetesRole {
    #[endpoint(skip)]
    pub(crate) mount: String,
    #[endpoint(skip)]
    pub(crate) name: String,
}

/// A Kubernetes auth role as read back.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct KubernetesRole {
    pub(crate) bound_service_account_names: Vec<String>,
    pub(crate) bound_service_account_namespaces: Vec<String>,
    pub(crate) token_policies: Vec<String>,
    pub(crate) token_ttl: u64,
    pub(crate) audience: Option<String>,
}
