//! The server: configuration, the hsm-core ports it serves (behind the one access layer,
//! `access.rs`), and the Unix socket lifecycle (directory checked, socket created with
//! its mode and group before it appears at its path, removed on shutdown, graceful stop
//! within a bounded time).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hsm_core::{Health, HsmAdmin, IstioKms, KeyPairId, KubeKms};
use tokio::net::UnixListener;
use tonic::{Code, Request, Response, Status};

use crate::error::{Error, Result};
use crate::metrics::{AnchorExpiry, Metrics};
use crate::policy::{PeerAllowlist, PeerCred, Profile, Rpc};
use crate::proto;
#[cfg(doc)]
use crate::socket;

/// Where the istiod CA key lives, which decides whether LoadSKey is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaKeyMode {
    /// The guide's mode: a software key wrapped under the DEK; LoadSKey returns it.
    #[default]
    Compat,
    /// The key pair lives in the HSM; LoadSKey is refused and signing goes through the
    /// signing service.
    HsmKey,
}

/// Settings of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The Unix socket path.
    pub socket: PathBuf,
    /// Permission bits of the socket (0660 by default).
    pub socket_mode: u32,
    /// Group of the socket (istiod's 1337 in the pod); unchanged when `None`.
    pub socket_gid: Option<u32>,
    /// Who may call.
    pub peers: PeerAllowlist,
    /// Which RPCs are answered.
    pub profile: Profile,
    /// Whether LoadSKey is served.
    pub ca_key_mode: CaKeyMode,
    /// Largest request or response message, in bytes.
    pub max_message_bytes: usize,
    /// Key pairs the signing service may use; the first is used when a request names none.
    pub signing_keys: Vec<KeyPairId>,
    /// The trust domain of the workload certificates the signing service issues
    /// (`cluster.local` by default); a request naming another one is refused.
    pub trust_domain: String,
    /// How long in-flight calls may finish after shutdown is requested.
    pub shutdown_grace: Duration,
}

impl ServerConfig {
    /// The default path of the Thales plugin, `/tmp/run/hsm-plugin-server.sock`.
    pub const DEFAULT_SOCKET: &'static str = "/tmp/run/hsm-plugin-server.sock";
    /// The default trust domain, `cluster.local`.
    pub const DEFAULT_TRUST_DOMAIN: &'static str = "cluster.local";
    /// Default message size limit, 4 MiB.
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

    /// A sidecar server on `socket`: mode 0660, any peer, compat mode, 4 MiB messages.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            socket_mode: 0o660,
            socket_gid: None,
            peers: PeerAllowlist::any(),
            profile: Profile::Sidecar,
            ca_key_mode: CaKeyMode::Compat,
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
            signing_keys: Vec::new(),
            trust_domain: Self::DEFAULT_TRUST_DOMAIN.to_owned(),
            shutdown_grace: Duration::from_millis(1500),
        }
    }
}

/// The hsm-core ports the server puts on the socket.
#[derive(Clone)]
pub struct Backends {
    /// The Istio KMS operations.
    pub istio: Arc<dyn IstioKms>,
    /// Token administration: health, anchors (metrics) and the hsm-key signing operations.
    pub admin: Arc<dyn HsmAdmin>,
    /// Kubernetes KMS v2 and v1beta1; those services are not registered when `None`.
    pub kube: Option<Arc<dyn KubeKms>>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("kube", &self.kube.is_some())
            .finish_non_exhaustive()
    }
}

/// What the server serves with: the ports, or the reason it cannot (a rejected PIN).
#[derive(Debug, Clone)]
pub enum Backend {
    /// The token is open.
    Ready(Backends),
    /// The token could not be opened; every call fails with `code` and `reason`, /readyz
    /// reports it, and nothing is retried (a rejected PIN must not lock the partition).
    Unavailable {
        /// Why, for operators (never a secret).
        reason: String,
        /// The gRPC code calls get (Unauthenticated for a rejected PIN).
        code: Code,
    },
}

/// Whether the server can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Serving.
    Ready,
    /// Not serving, with the reason.
    NotReady(String),
}

impl Readiness {
    /// True when serving.
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready)
    }
}

pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) backend: Backend,
    pub(crate) metrics: Arc<Metrics>,
}

/// A cheap handle on the server's state for the operations endpoints.
#[derive(Clone)]
pub struct PluginState {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PluginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginState")
            .field("socket", &self.shared.config.socket)
            .finish_non_exhaustive()
    }
}

impl PluginState {
    /// The metrics the server records.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Whether the server can serve now (the token's health is asked each time).
    pub async fn readiness(&self) -> Readiness {
        self.shared.readiness().await
    }

    /// The Prometheus exposition text, with the CA anchors read from the token now.
    pub async fn render_metrics(&self) -> String {
        let ready = self.readiness().await;
        let anchors = match &self.shared.backend {
            Backend::Ready(b) if ready.is_ready() => {
                match tokio::time::timeout(Duration::from_secs(5), b.admin.list_anchors()).await {
                    Ok(Ok(list)) => list
                        .iter()
                        .filter_map(|a| {
                            Some(AnchorExpiry {
                                ca_id: a.ca_id.to_text(),
                                subject: a.label.clone(),
                                not_after_unix: crate::metrics::not_after_unix(&a.der)?,
                            })
                        })
                        .collect(),
                    Ok(Err(err)) => {
                        tracing::warn!(error = %crate::error::chain(&err), "listing CA anchors for /metrics failed");
                        Vec::new()
                    }
                    Err(_) => Vec::new(),
                }
            }
            _ => Vec::new(),
        };
        self.shared.metrics.render(ready.is_ready(), &anchors)
    }
}

impl Shared {
    pub(crate) async fn readiness(&self) -> Readiness {
        match &self.backend {
            Backend::Unavailable { reason, .. } => Readiness::NotReady(reason.clone()),
            Backend::Ready(b) => match b.admin.health().await {
                Health::Ready => Readiness::Ready,
                Health::PinRejected(rv) => Readiness::NotReady(format!(
                    "the HSM rejected the PIN ({rv:?}); not retrying: fix the PIN and restart the plugin"
                )),
            },
        }
    }

    /// Starts a call the access layer let through: answers with the backend's reason when
    /// the token could not be opened; otherwise the call is recorded when it finishes.
    pub(crate) fn begin<T>(&self, rpc: Rpc, req: &Request<T>) -> Result<Call<'_>, Status> {
        let call = Call {
            shared: self,
            rpc,
            start: Instant::now(),
            peer: crate::access::peer_of(req.extensions()),
        };
        if let Backend::Unavailable { reason, code } = &self.backend {
            return Err(call.fail(Status::new(*code, format!("{rpc}: {reason}"))));
        }
        Ok(call)
    }

    pub(crate) fn backends(&self) -> Option<&Backends> {
        match &self.backend {
            Backend::Ready(b) => Some(b),
            Backend::Unavailable { .. } => None,
        }
    }
}

/// One admitted call: records its outcome once.
pub(crate) struct Call<'a> {
    shared: &'a Shared,
    rpc: Rpc,
    start: Instant,
    peer: Option<PeerCred>,
}

impl Call<'_> {
    pub(crate) fn backends(&self) -> Result<&Backends, Status> {
        self.shared.backends().ok_or_else(|| {
            Status::unavailable(format!("{}: the HSM backend is not available", self.rpc))
        })
    }

    pub(crate) fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    fn fail(&self, status: Status) -> Status {
        self.record(status.code());
        tracing::warn!(
            rpc = %self.rpc,
            peer = ?self.peer,
            code = ?status.code(),
            message = status.message(),
            "call failed"
        );
        status
    }

    fn record(&self, code: Code) {
        self.shared
            .metrics
            .record(self.rpc, code, self.start.elapsed());
    }

    pub(crate) fn finish<T>(self, result: Result<T, Status>) -> Result<Response<T>, Status> {
        match result {
            Ok(value) => {
                self.record(Code::Ok);
                tracing::debug!(rpc = %self.rpc, peer = ?self.peer, elapsed_us = self.start.elapsed().as_micros(), "call served");
                Ok(Response::new(value))
            }
            Err(status) => {
                self.record(status.code());
                tracing::warn!(
                    rpc = %self.rpc,
                    peer = ?self.peer,
                    code = ?status.code(),
                    message = status.message(),
                    "call failed"
                );
                Err(status)
            }
        }
    }
}

/// The server, ready to bind.
pub struct KmsServer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for KmsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsServer")
            .field("config", &self.shared.config)
            .field("backend", &self.shared.backend)
            .finish()
    }
}

impl KmsServer {
    /// A server with `config` over `backend`.
    pub fn new(config: ServerConfig, backend: Backend) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                backend,
                metrics: Arc::new(Metrics::new()),
            }),
        }
    }

    /// A handle for the operations endpoints.
    pub fn state(&self) -> PluginState {
        PluginState {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Binds the socket: checks its directory ([`socket::check_directory`]), removes a
    /// stale socket, and creates the socket with its mode and group before it appears at its
    /// path ([`socket::prepare`]). Must run inside a tokio runtime.
    ///
    /// # Errors
    /// [`Error::Socket`] (a directory other users could write, something other than a
    /// socket at the path), [`Error::Bind`], [`Error::SocketPermissions`].
    pub fn bind(self) -> Result<BoundServer> {
        let config = &self.shared.config;
        let path = config.socket.clone();
        if crate::socket::prepare(&path)? == crate::socket::Prepared::RemovedStale {
            tracing::info!(socket = %path.display(), "removed a stale socket");
        }
        let listener = crate::socket::bind_private(&path, config.socket_mode, config.socket_gid)?;
        let guard = SocketGuard { path: path.clone() };
        tracing::info!(
            socket = %path.display(),
            mode = format!("{:04o}", config.socket_mode),
            gid = ?config.socket_gid,
            profile = %config.profile,
            peers = %config.peers.describe(),
            "listening"
        );
        Ok(BoundServer {
            shared: self.shared,
            listener,
            guard,
        })
    }
}

/// Removes the socket file when the server ends, however it ends.
struct SocketGuard {
    path: PathBuf,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        use std::os::unix::fs::FileTypeExt as _;
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.file_type().is_socket())
            && let Err(err) = std::fs::remove_file(&self.path)
        {
            tracing::warn!(socket = %self.path.display(), %err, "cannot remove the socket");
        }
    }
}

/// A server listening on its socket.
pub struct BoundServer {
    shared: Arc<Shared>,
    listener: UnixListener,
    guard: SocketGuard,
}

impl std::fmt::Debug for BoundServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundServer")
            .field("socket", &self.guard.path)
            .finish_non_exhaustive()
    }
}

impl BoundServer {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.guard.path
    }

    /// A handle for the operations endpoints.
    pub fn state(&self) -> PluginState {
        PluginState {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Serves until `shutdown` completes, then lets in-flight calls finish for at most the
    /// configured grace period and removes the socket.
    ///
    /// # Errors
    /// [`Error::Serve`] when the transport fails.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let Self {
            shared,
            listener,
            guard,
        } = self;
        let limit = shared.config.max_message_bytes;
        let grace = shared.config.shutdown_grace;
        // Access control happens here, once, for every service (see `access`).
        let mut router = tonic::transport::Server::builder()
            .max_frame_size(u32::try_from(crate::authority::MAX_FRAME_SIZE).ok())
            .layer(crate::access::AccessLayer::new(Arc::clone(&shared)))
            .add_service(
                proto::istio::key_management_service_server::KeyManagementServiceServer::new(
                    crate::istio_svc::IstioService::new(Arc::clone(&shared)),
                )
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            )
            .add_service(
                proto::health::health_server::HealthServer::new(
                    crate::health_svc::HealthService::new(Arc::clone(&shared)),
                )
                .max_decoding_message_size(limit),
            )
            .add_service(
                proto::signing::signing_service_server::SigningServiceServer::new(
                    crate::signing_svc::SigningService::new(Arc::clone(&shared)),
                )
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            );
        let kube_served = matches!(&shared.backend, Backend::Ready(b) if b.kube.is_some())
            || matches!(&shared.backend, Backend::Unavailable { .. });
        if kube_served {
            router = router
                .add_service(
                    proto::v2::key_management_service_server::KeyManagementServiceServer::new(
                        crate::kube_svc::V2Service::new(Arc::clone(&shared)),
                    )
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit),
                )
                .add_service(
                    proto::v1beta1::key_management_service_server::KeyManagementServiceServer::new(
                        crate::kube_svc::V1Beta1Service::new(Arc::clone(&shared)),
                    )
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit),
                );
        }
        // Every connection goes through the :authority adapter: gRPC clients other than
        // Rust's send the socket path there, which h2 would refuse (see `authority`).
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            |conn| conn.map(crate::authority::NormalizeAuthority::new),
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = router.serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        });
        tokio::pin!(server);
        let result = tokio::select! {
            result = &mut server => result,
            () = shutdown => {
                tracing::info!("shutting down");
                let _ = stop_tx.send(());
                if let Ok(result) = tokio::time::timeout(grace, &mut server).await { result } else {
                    tracing::warn!(grace_ms = grace.as_millis(), "calls still running after the grace period; closing");
                    Ok(())
                }
            }
        };
        let path = guard.path.clone();
        drop(guard);
        result.map_err(|source| Error::Serve { path, source })
    }
}
