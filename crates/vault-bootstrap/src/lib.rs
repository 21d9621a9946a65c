//! Vault/OpenBao side of the mesh HSM install (FLOW.md step 5) and the `vault-client` agent.
//!
//! - [`Connection`]: address validation, TLS with a custom CA (file or directory), namespace,
//!   timeout and bounded retries with backoff; health probing that works on Vault and OpenBao.
//! - [`Vault`]: the port the bootstrap needs, implemented by [`HttpVault`] over vaultrs plus a
//!   few raw endpoints vaultrs lacks (mount tuning, `token_reviewer_jwt`); mocked with
//!   `MockVault` under the `mock` feature.
//! - [`apply()`] / [`plan()`] and the `ensure_*` operations: mount, tune, HSM secret, read-only
//!   policy, Kubernetes auth mount, its configuration and the `istiod` role, each reported as
//!   `Created`, `Updated` or `Unchanged` (`WouldCreate`/`WouldUpdate` in a dry run).
//! - [`agent`]: what the `vault-client` sidecar does: log in with a service-account JWT, fetch
//!   the secret, write the HSM plugin's files (0600, atomically), renew, refetch.
//!
//! It knows nothing about Kubernetes or the HSM, reads no environment variables and prints
//! nothing.
//!
//! ```no_run
//! use vault_bootstrap::{BootstrapSpec, Connection, HttpVault, KubernetesAuthConfig, Mode, VaultAddr};
//!
//! # async fn demo(token: secrecy::SecretString) -> vault_bootstrap::Result<()> {
//! let conn = Connection::new(VaultAddr::parse("https://vault.example:8200")?)
//!     .with_ca_cert_file("vault-ca.pem".as_ref())?;
//! let vault = HttpVault::new(conn, Some(&token))?;
//! let spec = BootstrapSpec::for_cluster("c1", KubernetesAuthConfig::default(), None)?;
//! let report = vault_bootstrap::apply(&vault, &spec, Mode::DryRun).await?;
//! print!("{report}");
//! # Ok(())
//! # }
//! ```

mod addr;
pub mod agent;
mod api;
mod bootstrap;
mod connection;
mod error;
mod openbao;
pub mod plan;
mod raw;
mod retry;
mod spec;
mod token;
mod types;

pub use addr::VaultAddr;
pub use api::{AgentVault, KubernetesConfigInfo, Login, MountInfo, Vault};
#[cfg(any(test, feature = "mock"))]
pub use api::{MockAgentVault, MockVault};
pub use bootstrap::{
    apply, ensure_auth_mount, ensure_kubernetes_config, ensure_kubernetes_role, ensure_mount_tune,
    ensure_policy, ensure_secret, ensure_secrets_mount, plan,
};
pub use connection::{Connection, Health};
pub use error::{BoxError, Error, Result};
pub use openbao::HttpVault;
pub use retry::RetryPolicy;
pub use spec::{
    AuthSpec, BootstrapSpec, DEFAULT_MAX_LEASE_TTL, DEFAULT_NAMESPACE, DEFAULT_ROLE,
    DEFAULT_ROLE_TTL, DEFAULT_SECRET_PATH, DEFAULT_SERVICE_ACCOUNT, HsmCredentialFiles,
    KubernetesAuthConfig, KubernetesRole, MountSpec, PolicySpec, SecretSpec, fields, policy_rules,
};
pub use token::TokenSources;
pub use types::{Change, KvVersion, Mode, ObjectKind, Outcome, Report, SecretFields};

/// Installs the process-wide rustls crypto provider (ring) that vaultrs and reqwest need.
///
/// The workspace compiles exactly one provider, so nothing else can claim the slot; calling this
/// more than once is harmless. [`Connection`] calls it before building its HTTP client.
pub fn install_crypto_provider() {
    // Err means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
