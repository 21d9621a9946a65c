//! The ports: what the bootstrap and the agent need from a Vault/OpenBao server.

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;

use crate::{KubernetesAuthConfig, KubernetesRole, KvVersion, Result, SecretFields};

/// A secrets engine mount as the server reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    /// Engine type (`kv`).
    pub kind: String,
    /// KV version from the `version` option; `None` for non-KV engines or unknown versions.
    pub kv_version: Option<KvVersion>,
    /// The effective `max_lease_ttl` (0 means the system default).
    pub max_lease_ttl: Duration,
}

/// A Kubernetes auth configuration as the server reports it (the reviewer JWT only as a flag).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubernetesConfigInfo {
    /// API server address.
    pub kubernetes_host: String,
    /// PEM CA certificate.
    pub kubernetes_ca_cert: Option<String>,
    /// Whether a reviewer JWT is stored.
    pub token_reviewer_jwt_set: bool,
    /// Expected issuer.
    pub issuer: Option<String>,
    /// Signature verification keys.
    pub pem_keys: Vec<String>,
    /// Whether the local CA/JWT fallback is off.
    pub disable_local_ca_jwt: bool,
}

/// A Vault token obtained by a login or renewal. `Debug` redacts the token.
#[derive(Clone, Debug)]
pub struct Login {
    /// The client token.
    pub token: SecretString,
    /// How long it is valid from now.
    pub lease: Duration,
    /// Whether it can be renewed.
    pub renewable: bool,
    /// Its policies.
    pub policies: Vec<String>,
}

/// The configuration side of a Vault/OpenBao server (FLOW.md step 5), in domain terms.
/// Reads return `None` for objects that do not exist.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait::async_trait]
pub trait Vault: Send + Sync {
    /// Reads a secrets engine mount.
    async fn read_secrets_mount(&self, path: &str) -> Result<Option<MountInfo>>;
    /// Enables a KV engine of that version at `path`.
    async fn enable_secrets_mount(&self, path: &str, version: KvVersion) -> Result<()>;
    /// Tunes a secrets mount's `max_lease_ttl`.
    async fn tune_max_lease_ttl(&self, path: &str, max_lease_ttl: Duration) -> Result<()>;
    /// Reads a KV secret.
    async fn read_secret(
        &self,
        mount: &str,
        version: KvVersion,
        path: &str,
    ) -> Result<Option<SecretFields>>;
    /// Writes (replaces) a KV secret.
    async fn write_secret(
        &self,
        mount: &str,
        version: KvVersion,
        path: &str,
        fields: &SecretFields,
    ) -> Result<()>;
    /// Reads an ACL policy's rules.
    async fn read_policy(&self, name: &str) -> Result<Option<String>>;
    /// Writes an ACL policy.
    async fn write_policy(&self, name: &str, rules: &str) -> Result<()>;
    /// Reads the type of the auth method mounted at `path`.
    async fn read_auth_mount(&self, path: &str) -> Result<Option<String>>;
    /// Enables an auth method of type `kind` at `path`.
    async fn enable_auth_mount(&self, path: &str, kind: &str) -> Result<()>;
    /// Reads a Kubernetes auth configuration.
    async fn read_kubernetes_config(&self, path: &str) -> Result<Option<KubernetesConfigInfo>>;
    /// Writes (replaces) a Kubernetes auth configuration.
    async fn write_kubernetes_config(
        &self,
        path: &str,
        config: &KubernetesAuthConfig,
    ) -> Result<()>;
    /// Reads a Kubernetes auth role.
    async fn read_kubernetes_role(&self, path: &str, name: &str) -> Result<Option<KubernetesRole>>;
    /// Writes (replaces) a Kubernetes auth role.
    async fn write_kubernetes_role(&self, path: &str, role: &KubernetesRole) -> Result<()>;
}

/// What the vault-client agent needs: log in with a service-account JWT, renew and revoke the
/// token, read the secret with it.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait::async_trait]
pub trait AgentVault: Send + Sync {
    /// Logs in through the Kubernetes auth method mounted at `auth_path` (`asm-c1/hsm`).
    async fn login_kubernetes(
        &self,
        auth_path: &str,
        role: &str,
        jwt: &SecretString,
    ) -> Result<Login>;
    /// Renews `token` itself, asking for `increment` more (zero: the server's default). The
    /// lease answered is shorter than asked when the token's max TTL caps it.
    async fn renew_self(&self, token: &SecretString, increment: Duration) -> Result<Login>;
    /// Revokes `token` itself (`auth/token/revoke-self`).
    async fn revoke_self(&self, token: &SecretString) -> Result<()>;
    /// Reads a KV secret with `token`.
    async fn read_secret_with(
        &self,
        token: &SecretString,
        mount: &str,
        version: KvVersion,
        path: &str,
    ) -> Result<Option<SecretFields>>;
}

impl fmt::Display for MountInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} mount", self.kind)?;
        if let Some(v) = self.kv_version {
            write!(f, " (version {})", v.option())?;
        }
        Ok(())
    }
}
