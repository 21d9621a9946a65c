//! An emulated Kubernetes API server, faithful enough that the real `kubectl`, `kube::Client`
//! and OpenBao's Kubernetes auth work against it.
//!
//! [`ApiServer`] serves HTTPS on 127.0.0.1 with a CA of its own and bearer-token
//! authentication (an admin token, and the service-account tokens it issues), and writes a
//! kubeconfig. Behind it a [`Cluster`] keeps objects in memory with real semantics: `uid`,
//! `resourceVersion`, `creationTimestamp`, `generation`, `Status` errors (404, 409, 422, 403),
//! label and field selectors, `dryRun=All`, JSON merge / JSON / strategic merge patches,
//! server-side apply with field managers and conflicts, watches, Tables for `kubectl get`,
//! protobuf request bodies of kubectl 1.32, RBAC, TokenRequest (ES256 JWTs with the projected
//! claims) and TokenReview. Deployments own emulated pods that a rollout restart replaces;
//! namespaces labelled with an Istio revision get injected pods.
//!
//! ```no_run
//! # fn demo() -> Result<(), sandbox::Error> {
//! let server = sandbox::kube::ApiServer::start()?;
//! server.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?;
//! server.cluster().deny("create", "configmaps");
//! let token = server.cluster().create_token("default", "default", &["vault"], std::time::Duration::from_secs(600))?;
//! # let _ = token;
//! # Ok(())
//! # }
//! ```

mod api;
mod body;
mod cluster;
mod handler;
mod kinds;
mod managed;
mod patch;
mod protobuf;
mod resources;
mod selectors;
mod server;
mod status;
mod table;
mod tokens;

pub use api::ClusterService;
pub use body::ResponseBody;
pub use cluster::{Cluster, RecordedRequest};
pub use server::{ApiServer, ApiServerBuilder, DEFAULT_ISSUER};
