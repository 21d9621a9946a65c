//! The HTTPS front of an emulated cluster: its own CA, a thread with its own runtime, and a
//! kubeconfig for kubectl and kube.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http_body_util::BodyExt as _;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::{broadcast, oneshot};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use super::cluster::{self, Cluster, Shared, State};
use super::handler::Req;
use super::tokens::Signer;
use crate::{Error, Result};

/// The issuer (and default audience) of service-account tokens, as on a kubeadm cluster.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

fn emulator(operation: &'static str) -> impl FnOnce(String) -> Error {
    move |detail| Error::KubeEmulator { operation, detail }
}

/// Options for a new [`ApiServer`].
#[derive(Debug)]
pub struct ApiServerBuilder {
    issuer: String,
    audiences: Vec<String>,
    sidecar_injection: bool,
}

impl Default for ApiServerBuilder {
    fn default() -> Self {
        Self {
            issuer: DEFAULT_ISSUER.to_owned(),
            audiences: vec![DEFAULT_ISSUER.to_owned()],
            sidecar_injection: true,
        }
    }
}

struct Tls {
    ca_pem: String,
    config: Arc<rustls::ServerConfig>,
}

fn make_tls() -> Result<Tls> {
    let fail = emulator("creating its TLS certificates");
    let build = || -> std::result::Result<Tls, String> {
        let ca_key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sandbox-kubernetes-ca");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).map_err(|e| e.to_string())?;
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = rcgen::CertificateParams::new(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
            "kubernetes.default.svc.cluster.local".to_owned(),
        ])
        .map_err(|e| e.to_string())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca).map_err(|e| e.to_string())?;
        let chain = vec![cert.der().clone(), ca.der().clone()];
        let private = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
            .map_err(str::to_owned)?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| e.to_string())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            ca_pem: ca.pem(),
            config: Arc::new(config),
        })
    };
    build().map_err(fail)
}

impl ApiServerBuilder {
    /// The `iss` claim of issued tokens (default [`DEFAULT_ISSUER`]).
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// The API server's own audiences: the default of TokenRequest, and what TokenReview
    /// accepts when the review names none (default: the issuer).
    #[must_use]
    pub fn audiences(mut self, audiences: Vec<String>) -> Self {
        self.audiences = audiences;
        self
    }

    /// Whether pods created in a namespace labelled `istio.io/rev=<rev>` (or
    /// `istio-injection=enabled`) get the Istio sidecar and `istio.io/rev` label, as the
    /// revision's injector webhook would add (default on).
    #[must_use]
    pub fn sidecar_injection(mut self, on: bool) -> Self {
        self.sidecar_injection = on;
        self
    }

    fn cluster(self, ca_pem: String) -> Result<Cluster> {
        let signer = Signer::generate().map_err(|_| Error::KubeEmulator {
            operation: "creating its token signing key",
            detail: "key generation failed".into(),
        })?;
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                rv: 0,
                log: VecDeque::new(),
                denials: Vec::new(),
                requests: VecDeque::new(),
                faults: VecDeque::new(),
            }),
            events,
            signer,
            issuer: self.issuer,
            api_audiences: self.audiences,
            admin_token: SecretString::from(crate::random_string(32)),
            sidecar_injection: self.sidecar_injection,
            ca_pem,
            server_url: Mutex::new(String::new()),
        });
        Ok(Cluster { shared })
    }

    /// A cluster without a socket, to serve in-process through [`Cluster::service`].
    pub fn in_process(self) -> Result<Cluster> {
        let cluster = self.cluster(String::new())?;
        cluster::seed(&cluster.shared, "127.0.0.1");
        Ok(cluster)
    }

    /// Starts the HTTPS server on a free 127.0.0.1 port, on a thread of its own (so blocking
    /// callers such as `std::process::Command` running kubectl cannot stall it).
    pub fn start(self) -> Result<ApiServer> {
        let tls = make_tls()?;
        let cluster = self.cluster(tls.ca_pem.clone())?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::io(
            "binding the emulated API server to",
            "127.0.0.1:0",
        ))?;
        let addr = listener
            .local_addr()
            .map_err(Error::io("reading the address of", "127.0.0.1:0"))?;
        listener
            .set_nonblocking(true)
            .map_err(Error::io("configuring", addr.to_string()))?;
        let url = format!("https://{addr}");
        if let Ok(mut u) = cluster.shared.server_url.lock() {
            u.clone_from(&url);
        }
        cluster::seed(&cluster.shared, &addr.ip().to_string());
        let (stop_tx, stop_rx) = oneshot::channel();
        let serving = cluster.clone();
        let acceptor = TlsAcceptor::from(tls.config);
        let thread = std::thread::Builder::new()
            .name(format!("kube-apiserver-{}", addr.port()))
            .spawn(move || serve(listener, acceptor, serving, stop_rx))
            .map_err(Error::io(
                "spawning the emulated API server thread for",
                addr.to_string(),
            ))?;
        Ok(ApiServer {
            cluster,
            addr,
            url,
            ca_pem: tls.ca_pem,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

fn serve(
    listener: std::net::TcpListener,
    acceptor: TlsAcceptor,
    cluster: Cluster,
    stop: oneshot::Receiver<()>,
) {
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    else {
        tracing::error!("the emulated API server could not build its runtime");
        return;
    };
    rt.block_on(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            tracing::error!("the emulated API server could not register its listener");
            return;
        };
        let accept = async {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                };
                let acceptor = acceptor.clone();
                let cluster = cluster.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let cluster = cluster.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(http_body_util::Collected::to_bytes)
                                .unwrap_or_default();
                            let req = Req {
                                method: parts.method,
                                path: parts.uri.path().to_owned(),
                                query: parts.uri.query().unwrap_or_default().to_owned(),
                                headers: parts.headers,
                                body,
                            };
                            Ok::<_, Infallible>(cluster.handle(&req, false))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        };
        tokio::select! {
            () = accept => {}
            _ = stop => {}
        }
    });
    rt.shutdown_background();
}

/// An emulated Kubernetes API server over HTTPS on 127.0.0.1, with its own CA, an admin token
/// and the service-account tokens it issues. Stopped on drop.
pub struct ApiServer {
    cluster: Cluster,
    addr: SocketAddr,
    url: String,
    ca_pem: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("url", &self.url)
            .field("running", &self.thread.is_some())
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// Options for a new server.
    pub fn builder() -> ApiServerBuilder {
        ApiServerBuilder::default()
    }

    /// Starts a server with default options.
    pub fn start() -> Result<Self> {
        Self::builder().start()
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate (PEM) that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The bearer token of the cluster admin (`system:masters`).
    pub fn admin_token(&self) -> &SecretString {
        &self.cluster.shared.admin_token
    }

    /// The cluster behind the server.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The kubeconfig YAML for `token` (context `sandbox`, namespace `default`).
    pub fn kubeconfig_yaml(&self, token: &SecretString) -> SecretString {
        let ca = STANDARD.encode(&self.ca_pem);
        SecretString::from(format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: sandbox-user\n  user:\n    token: {token}\ncontexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    user: sandbox-user\n    namespace: default\ncurrent-context: sandbox\npreferences: {{}}\n",
            url = self.url,
            token = token.expose_secret(),
        ))
    }

    /// Writes a kubeconfig (mode 0600) that authenticates as the admin.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<()> {
        self.write_kubeconfig_with_token(path, self.admin_token())
    }

    /// Writes a kubeconfig (mode 0600) that authenticates with `token` (for example a
    /// service-account token from [`Cluster::create_token`]).
    pub fn write_kubeconfig_with_token(&self, path: &Path, token: &SecretString) -> Result<()> {
        crate::write_secret_file(path, self.kubeconfig_yaml(token).expose_secret().as_bytes())
    }

    /// Stops serving: the port is closed and clients see connection refused (for "API server
    /// down" tests). The cluster's state stays readable.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Whether the server is still serving.
    pub fn is_running(&self) -> bool {
        self.thread.is_some()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}
