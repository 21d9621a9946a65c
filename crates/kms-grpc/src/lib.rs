//! gRPC KMS services of mesh-hsm, served on a Unix socket.
//!
//! The services sit on top of `hsm-core`'s ports and never touch PKCS#11 directly; this crate
//! adds the wire format, transport, access control, error mapping and operations:
//!
//! - [`proto`]: our own protos, wire-compatible with the Thales plugin
//!   (`thalescpl.io.ekms.istio.v1.KeyManagementService`, `v1beta1.KeyManagementService`),
//!   Kubernetes KMS `v2.KeyManagementService`, `grpc.health.v1.Health`, and our
//!   `meshhsm.signing.v1.SigningService` for hsm-key mode;
//! - [`authority`]: [`authority::NormalizeAuthority`], the connection adapter that lets
//!   gRPC clients of every stack through with the `:authority` they send over a Unix socket
//!   (the socket path, percent-encoded or raw), which h2 alone refuses;
//! - [`server`]: [`KmsServer`] binds the socket (its directory checked, the socket created
//!   with mode 0660 and its group before it appears at its path), puts one access layer in
//!   front of every service (peer-credential allowlist, policy [`Profile`], the RPC catalogue
//!   of [`policy`]; unknown method paths refused),
//!   maps every error to a gRPC code with a message naming the input, and shuts down within
//!   a bounded grace period, removing the socket;
//! - [`ops`]: `/metrics`, `/healthz` and `/readyz` on a local HTTP port;
//! - [`client`]: [`KmsClient`], a typed client over the socket that checks who serves it
//!   (`SO_PEERCRED`) before sending anything;
//! - [`csr_bundle`]: the `encrypted_csr.json` document of `decrypt-csr`.
//!
//! A server that could not open its token (a rejected PIN) still starts: it reports not-ready
//! with the reason and answers every call with that reason, and nothing is retried.
//!
//! ```no_run
//! use std::sync::Arc;
//! use kms_grpc::{Backend, Backends, KmsServer, ServerConfig};
//!
//! # async fn run(token: Arc<hsm_core::HsmToken>) -> kms_grpc::Result<()> {
//! let backends = Backends {
//!     istio: Arc::new(hsm_core::HsmIstioKms::new(Arc::clone(&token), Default::default())),
//!     admin: Arc::new(hsm_core::HsmAdminService::new(token)),
//!     kube: None,
//! };
//! let server = KmsServer::new(ServerConfig::new("/tmp/run/hsm-plugin-server.sock"), Backend::Ready(backends));
//! server.bind()?.serve(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

#![allow(
    clippy::doc_markdown,
    reason = "RPC names (GenerateDEK, VerifyCertChain) read wrong in backticks"
)]

mod access;
pub mod authority;
pub mod client;
pub mod csr_bundle;
mod error;
mod health_svc;
mod istio_svc;
mod kube_svc;
pub mod metrics;
pub mod ops;
pub mod policy;
pub mod proto;
pub mod server;
mod signing_svc;
pub mod socket;

pub use client::{KmsClient, ServerUid};
pub use error::{Error, Result, code_for, hsm_status};
pub use policy::{PeerAllowlist, PeerCred, Profile, Rpc};
pub use server::{
    Backend, Backends, BoundServer, CaKeyMode, KmsServer, PluginState, Readiness, ServerConfig,
};
/// gRPC status codes, as [`Error::code`] reports them.
pub use tonic::Code;

#[cfg(test)]
mod tests;
