//! Vault/OpenBao side of the mesh HSM install.
//!
//! This crate holds the connection to Vault or OpenBao (address validation, TLS with a custom
//! CA, health probing that works on both servers) and, as it grows, the `ensure_*`
//! configuration of FLOW.md step 5 and the `vault-client` agent. It knows nothing about
//! Kubernetes or the HSM.
//!
//! ```no_run
//! use vault_bootstrap::{Connection, VaultAddr};
//!
//! # async fn demo() -> vault_bootstrap::Result<()> {
//! let conn = Connection::new(VaultAddr::parse("https://vault.example:8200")?)
//!     .with_ca_cert_pem(std::fs::read("vault-ca.pem").unwrap_or_default());
//! let health = conn.health().await?;
//! println!("initialised={} sealed={}", health.initialized, health.sealed);
//! # Ok(())
//! # }
//! ```

mod addr;
mod connection;
mod error;

pub use addr::VaultAddr;
pub use connection::{Connection, Health};
pub use error::{Error, Result};

/// Installs the process-wide rustls crypto provider (ring) that vaultrs and reqwest need.
///
/// The workspace compiles exactly one provider, so nothing else can claim the slot; calling this
/// more than once is harmless. [`Connection`] calls it before building its HTTP client.
pub fn install_crypto_provider() {
    // Err means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
