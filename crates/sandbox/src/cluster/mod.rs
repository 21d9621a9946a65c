//! A real Kubernetes control plane on this machine: [`LocalCluster`].
//!
//! It runs the components built from the pinned Go modules (`cargo xtask setup`, see the
//! `go-components` crate): etcd, `kube-apiserver` (RBAC, its own CA and serving certificate,
//! service-account issuer and signing key, so TokenRequest and TokenReview are the real ones),
//! `kube-controller-manager` and `kube-scheduler`, and kwok's controller, which keeps the
//! cluster's nodes Ready and takes the pods bound to them through Running, Ready and deletion
//! without a kubelet. Pod IPs are simulated: nothing listens there, so no test sends traffic to
//! them.
//!
//! Two kubeconfigs are written: an admin one (client certificate in `system:masters`) and one
//! for the least-privilege **operator** (`meshca-operator`, bound to the `ClusterRole` of
//! `docs/rbac/meshca-operator.yaml` that `docs/operations.md` documents).
//!
//! Every process is stopped when the [`LocalCluster`] is dropped; a watchdog stops them too if
//! the owning process dies first.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sandbox::Error> {
//! let cluster = sandbox::LocalCluster::builder().nodes(2).start().await?;
//! let status = cluster.kubectl().args(["get", "nodes"]).status();
//! assert!(status.is_ok_and(|s| s.success()));
//! println!("export KUBECONFIG={}", cluster.admin_kubeconfig().display());
//! # Ok(())
//! # }
//! ```

mod api;
mod audit;
mod components;
mod kubeconfig;
mod limit;
mod pki;
mod processes;
mod webhook;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use go_components::{ETCD, KUBERNETES, KWOK};

use self::components::Layout;
use self::pki::Identity;
use self::processes::ProcessGroup;
use crate::{Error, Result};

pub use self::api::ClusterApi;
pub use self::audit::AuditEvent;
pub use self::webhook::InjectionWebhook;

/// The user name of the least-privilege operator identity.
pub const OPERATOR_USER: &str = "meshca-operator";

/// The `ClusterRole` the operator is bound to: the exact rules the `meshca` flow needs.
pub const OPERATOR_CLUSTER_ROLE: &str = include_str!("../../../../docs/rbac/meshca-operator.yaml");

/// The annotation that hands a node to kwok's controller.
pub(crate) const KWOK_NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");

/// The service-account token issuer (and default audience) of the API server.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// How long a cold component start may take on a loaded two-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(90);

const ADMIN: Identity = Identity {
    file: "admin",
    user: "sandbox-admin",
    groups: &["system:masters"],
};
const CONTROLLER_MANAGER: Identity = Identity {
    file: "controller-manager",
    user: "system:kube-controller-manager",
    groups: &[],
};
const SCHEDULER: Identity = Identity {
    file: "scheduler",
    user: "system:kube-scheduler",
    groups: &[],
};
/// kwok updates node and pod status and finalises deletions of the nodes it manages; it runs
/// with the admin group as kwok's own cluster tool runs it.
const NODE_SIMULATOR: Identity = Identity {
    file: "kwok",
    user: "kwok-controller",
    groups: &["system:masters"],
};
const OPERATOR: Identity = Identity {
    file: "operator",
    user: OPERATOR_USER,
    groups: &[],
};

/// The resources of one simulated node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCapacity {
    /// CPU cores (`cpu`), e.g. `8`.
    pub cpu: String,
    /// Memory (`memory`), e.g. `32Gi`.
    pub memory: String,
    /// Pod slots (`pods`).
    pub pods: u32,
}

impl Default for NodeCapacity {
    /// Comfortably above the guide's prerequisite (4 vCPU and 15 GB in the cluster).
    fn default() -> Self {
        Self {
            cpu: "8".to_owned(),
            memory: "32Gi".to_owned(),
            pods: 110,
        }
    }
}

/// Options of a new [`LocalCluster`].
#[derive(Debug, Clone)]
pub struct LocalClusterBuilder {
    nodes: usize,
    capacity: NodeCapacity,
}

impl Default for LocalClusterBuilder {
    fn default() -> Self {
        Self {
            nodes: 1,
            capacity: NodeCapacity::default(),
        }
    }
}

impl LocalClusterBuilder {
    /// How many simulated nodes (at least one; default one).
    #[must_use]
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes.max(1);
        self
    }

    /// The capacity of each node.
    #[must_use]
    pub fn capacity(mut self, capacity: NodeCapacity) -> Self {
        self.capacity = capacity;
        self
    }

    /// Starts every component and waits until the API server is ready, every node is Ready and
    /// the controllers run (the `default` ServiceAccount exists).
    ///
    /// # Errors
    /// [`Error::MissingTool`] when the components are not built (`cargo xtask setup`),
    /// [`Error::ClusterStart`] with the failing component's log when one does not come up.
    pub async fn start(self) -> Result<LocalCluster> {
        let binaries = Binaries::find()?;
        let permit = limit::acquire().await;
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("sandbox-cluster-")
            .tempdir()
            .map_err(Error::io(
                "creating the cluster directory",
                std::env::temp_dir(),
            ))?;
        let layout = Layout::create(dir.path())?;
        let mut group = ProcessGroup::new()?;
        group.spawn(
            "etcd",
            &mut layout.etcd(&binaries.etcd),
            &layout.log("etcd"),
        )?;
        group.spawn(
            "kube-apiserver",
            &mut layout.apiserver(&binaries.apiserver),
            &layout.log("kube-apiserver"),
        )?;
        // Started once the API server answers, so their first attempts do not fail.
        let controllers = [
            (
                "kube-controller-manager",
                layout.controller_manager(&binaries.controller_manager, CONTROLLER_MANAGER)?,
            ),
            (
                "kube-scheduler",
                layout.scheduler(&binaries.scheduler, SCHEDULER)?,
            ),
            (
                "kwok",
                layout.kwok(&binaries.kwok, &binaries.kwok_stages, NODE_SIMULATOR)?,
            ),
        ]
        .map(|(name, cmd)| (name, cmd, layout.log(name)));
        let port = layout.ports.apiserver;
        let mut cluster = LocalCluster {
            group,
            server: layout.server(),
            ca_pem: layout.pki.ca_pem.clone(),
            admin_kubeconfig: layout.kubeconfig(ADMIN)?,
            operator_kubeconfig: layout.kubeconfig(OPERATOR)?,
            kubectl: binaries.kubectl.clone(),
            node_names: (1..=self.nodes)
                .map(|i| format!("sandbox-node-{i}"))
                .collect(),
            layout,
            _permit: permit,
            dir,
        };
        let api = cluster.api().await?;
        cluster
            .wait_for("the API server's /readyz", || {
                let api = api.clone();
                async move {
                    // Refused connections while it starts are expected; ask once it listens.
                    if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                        return Ok(false);
                    }
                    api.ready().await
                }
            })
            .await?;
        for (name, mut cmd, log) in controllers {
            cluster.group.spawn(name, &mut cmd, &log)?;
        }

        api.apply_operator_rbac().await?;
        for (index, name) in cluster.node_names.iter().enumerate() {
            api.create_node(
                name,
                node_address(index),
                &self.capacity,
                KWOK_NODE_ANNOTATION,
            )
            .await?;
        }
        for name in cluster.node_names.clone() {
            cluster
                .wait_for("a Ready node", || api.node_ready(&name))
                .await?;
        }
        cluster
            .wait_for("the controllers (ServiceAccount default/default)", || {
                api.service_account_exists("default", "default")
            })
            .await?;
        tracing::info!(
            server = %cluster.server,
            nodes = cluster.node_names.len(),
            elapsed_ms = started.elapsed().as_millis(),
            "local Kubernetes cluster ready"
        );
        Ok(cluster)
    }
}

/// The `InternalIP` of the node at `index`: 192.0.2.10, .11, ... (TEST-NET-1, a documentation
/// range: never routed, and nothing here sends traffic to it).
pub fn node_address(index: usize) -> std::net::Ipv4Addr {
    let last = u8::try_from(10 + index).unwrap_or(u8::MAX);
    std::net::Ipv4Addr::new(192, 0, 2, last)
}

/// A running control plane; see the [module documentation](self).
pub struct LocalCluster {
    group: ProcessGroup,
    server: String,
    ca_pem: String,
    admin_kubeconfig: PathBuf,
    operator_kubeconfig: PathBuf,
    kubectl: PathBuf,
    node_names: Vec<String>,
    layout: Layout,
    _permit: tokio::sync::OwnedSemaphorePermit,
    // Last: removed after the processes using it are stopped.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("server", &self.server)
            .field("dir", &self.dir.path())
            .field("nodes", &self.node_names)
            .finish_non_exhaustive()
    }
}

impl LocalCluster {
    /// Options for a new cluster.
    pub fn builder() -> LocalClusterBuilder {
        LocalClusterBuilder::default()
    }

    /// The API server's URL (`https://127.0.0.1:<port>`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The cluster CA (PEM), which signed the serving and client certificates.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A kubeconfig for the admin (`system:masters`).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// A kubeconfig for the least-privilege operator ([`OPERATOR_USER`], bound to
    /// [`OPERATOR_CLUSTER_ROLE`]).
    pub fn operator_kubeconfig(&self) -> &Path {
        &self.operator_kubeconfig
    }

    /// The simulated nodes' names.
    pub fn node_names(&self) -> &[String] {
        &self.node_names
    }

    /// The cluster's directory (PKI, kubeconfigs, logs, etcd data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The log file of a component (`etcd`, `kube-apiserver`, `kube-controller-manager`,
    /// `kube-scheduler`, `kwok`).
    pub fn log_of(&self, component: &str) -> Option<&Path> {
        self.group.log_of(component)
    }

    /// The process ids of the components, by name.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.group.pids()
    }

    /// The kubectl built from the same release, with `KUBECONFIG` set to the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.env("KUBECONFIG", &self.admin_kubeconfig);
        cmd
    }

    /// Writes a kubeconfig (`kubeconfig/<file>` in [`Self::dir`]) with a new client certificate
    /// for `user` in `groups`: an identity with no rights but those RBAC gives it.
    pub fn kubeconfig_for(&self, file: &str, user: &str, groups: &[&str]) -> Result<PathBuf> {
        self.layout.kubeconfig_for(file, user, groups)
    }

    /// The PEM public key that verifies this cluster's service-account tokens.
    pub fn service_account_public_key_pem(&self) -> Result<String> {
        let path = &self.layout.pki.service_account_public_key;
        std::fs::read_to_string(path).map_err(Error::io("reading the service-account key", path))
    }

    /// Every request the API server has answered so far, from its audit log.
    pub async fn audit_events(&self) -> Result<Vec<AuditEvent>> {
        audit::events(&self.api().await?, &self.layout.audit_log()).await
    }

    /// Stops every component now (the directory stays until drop): clients then find the
    /// server unavailable.
    pub fn stop(&mut self) {
        self.group.stop();
    }

    /// The path of the kubectl built from the same release.
    pub fn kubectl_path(&self) -> &Path {
        &self.kubectl
    }

    /// A client of the admin identity, bound to the calling runtime.
    pub async fn admin_client(&self) -> Result<kube::Client> {
        api::client(&self.admin_kubeconfig).await
    }

    /// A client of the operator identity, bound to the calling runtime.
    pub async fn operator_client(&self) -> Result<kube::Client> {
        api::client(&self.operator_kubeconfig).await
    }

    /// Admin calls the fixtures need (nodes, readiness, RBAC).
    pub async fn api(&self) -> Result<ClusterApi> {
        Ok(ClusterApi::new(self.admin_client().await?))
    }

    /// Polls `probe` until it answers true, failing early (with the log) when a component
    /// exits, and after [`START_TIMEOUT`].
    async fn wait_for<F, Fut>(&mut self, what: &str, mut probe: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::from("not yet");
        loop {
            self.group.check_running()?;
            match probe().await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(err) => last = err.to_string(),
            }
            if Instant::now() >= deadline {
                let log = self
                    .group
                    .log_of("kube-apiserver")
                    .map(processes::log_tail)
                    .unwrap_or_default();
                return Err(Error::ClusterStart {
                    reason: format!(
                        "{what} not reached within {}s (last: {last})",
                        START_TIMEOUT.as_secs()
                    ),
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The binaries of the pinned release, from the build cache.
struct Binaries {
    etcd: PathBuf,
    apiserver: PathBuf,
    controller_manager: PathBuf,
    scheduler: PathBuf,
    kubectl: PathBuf,
    kwok: PathBuf,
    kwok_stages: PathBuf,
}

impl Binaries {
    fn find() -> Result<Self> {
        let missing = |e: go_components::Missing| Error::MissingTool {
            tool: "Kubernetes components",
            detail: e.to_string(),
        };
        Ok(Self {
            etcd: ETCD.binary("etcd").map_err(missing)?,
            apiserver: KUBERNETES.binary("kube-apiserver").map_err(missing)?,
            controller_manager: KUBERNETES
                .binary("kube-controller-manager")
                .map_err(missing)?,
            scheduler: KUBERNETES.binary("kube-scheduler").map_err(missing)?,
            kubectl: KUBERNETES.binary("kubectl").map_err(missing)?,
            kwok: KWOK.binary("kwok").map_err(missing)?,
            kwok_stages: KWOK
                .data_file(go_components::KWOK_STAGES)
                .map_err(missing)?,
        })
    }
}
