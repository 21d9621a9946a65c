//! Cluster-side steps of the mesh HSM install (FLOW.md steps 4, 7, 8, 12, 13 and the Secrets of
//! step 10), over a narrow [`Kube`] port.
//!
//! Every operation reads the cluster, plans with the pure [`plan_object`], and writes only what
//! differs, by server-side apply with field manager `meshca` (or a server-side dry run under
//! [`Mode::DryRun`]). Each returns a [`Report`] of `Created`/`Updated`/`Unchanged` (or
//! `WouldCreate`/`WouldUpdate`) per object, so running it twice changes nothing the second time.
//! [`KubeClient`] implements the port with `kube::Client`; `MockKube` (feature `mock`) is its
//! mockall mock.
//!
//! The crate knows the guide's object names ([`names`]) but nothing of Istio's install itself:
//! that belongs to `mesh-install`. It sets no k8s-openapi version feature; binaries choose it
//! (tests and examples use `v1_33`). Building the library on its own, as `cargo doc -p
//! k8s-bootstrap` does, therefore needs `K8S_OPENAPI_ENABLED_VERSION=1.33` in the environment.
//!
//! ```no_run
//! # async fn demo(kubeconfig: kube::config::Kubeconfig) -> k8s_bootstrap::Result<()> {
//! use k8s_bootstrap::{control_plane, KubeClient, Mode};
//! let kube = KubeClient::from_kubeconfig(kubeconfig, None).await?;
//! let report = control_plane::ensure_istiod_service(&kube, "asm-183-2", Mode::DryRun).await?;
//! print!("{report}");
//! # Ok(())
//! # }
//! ```

mod adapter;
pub mod ca_secrets;
mod certs;
pub mod control_plane;
mod error;
#[cfg(test)]
mod fake;
mod files;
pub mod ingress;
pub mod injection;
pub mod names;
mod plan;
mod port;
mod retry;
mod types;
pub mod vault_auth;
pub mod wait;

pub use adapter::KubeClient;
pub use certs::CertificatePem;
pub use error::{BoxError, Error, Result, Verb};
pub use names::{ClusterSuffix, InvalidSuffix};
pub use plan::{Action, ensure_object, plan_object};
#[cfg(any(test, feature = "mock"))]
pub use port::MockKube;
pub use port::{Kind, Kube, ListQuery, ObjectRef, TokenSpec};
pub use retry::RetryPolicy;
pub use types::{Change, Mode, Outcome, Report};
