//! An emulated ASM istiod in HSM mode, running against the sandbox's components.
//!
//! [`EmulatedIstiod::start`] plays what an istiod pod of the guide does, with the real
//! libraries of this workspace:
//!
//! 1. creates ServiceAccount `istio-system/istiod-service-account`, the Deployment
//!    `istiod-<revision>` and (through the emulated Deployment controller) its pod, whose
//!    `discovery` container reports not ready, so `kubectl get pods` shows `2/3`;
//! 2. obtains a service-account token from the emulated API, and runs the `vault-client`
//!    agent logic ([`vault_bootstrap::agent::Agent::run_once`]) against Vault's Kubernetes
//!    auth to write the HSM credentials (PIN included) into a private temporary directory;
//! 3. opens the token with that PIN and serves the `kms-grpc` server (sidecar profile) on a real
//!    Unix socket, then bootstraps over gRPC:
//!    - compat: GenerateDEK, GenerateSKey (RSA 2048), LoadSKey, a CSR for
//!      `istiod.istio-system.svc` signed by the loaded key;
//!    - hsm-key: an ECDSA P-256 key pair created on the token (never extractable), LoadSKey
//!      refused by the server, the CSR made by the signing service's CreateCsr inside the HSM;
//!      GenerateDEK still provides the DEK that protects the CSR in transit;
//!
//!    then AuthenticatedEncrypt of the CSR PEM with its `csr-id` as AAD, and Secret
//!    `istio-ca-cert-csr` with the same four fields in both modes, so the security admin
//!    decrypts it the same way (`meshca ca sign`, or `decrypt-csr` against an admin plugin):
//!    - `kek-id`: the KEK's id on the token;
//!    - `encrypted-dek`: the DEK from GenerateDEK, wrapped by the KEK (compact JWE);
//!    - `csr-id`: `istiod-csr-<uuid>`, the AAD of the encryption;
//!    - `encrypted-csr`: the CSR PEM encrypted under the DEK (compact JWE). In compat mode
//!      the CSR carries the software key GenerateSKey made (its wrapped copy stays with
//!      istiod); in hsm-key mode it carries the public key of the token's key pair and was
//!      signed inside the HSM, so nothing in the Secret or in istiod relates to a private key;
//! 4. polls Secret `istio-ca-cert` (`cert-chain.pem`), checks that its first certificate
//!    carries the istiod key, calls VerifyCertChain, logs `CA cert:` with the chain and
//!    marks the pod `3/3`;
//! 5. issues workload certificates for two demo workloads under the new CA (compat: with the
//!    loaded key; hsm-key: IssueCertificate, signed in the HSM) and completes a mutual TLS
//!    handshake between them with ALPN `istio`, recording the chain the server presented.
//!
//! The task stops, and the plugin socket is removed, when the [`EmulatedIstiod`] is dropped.

#![allow(
    clippy::doc_markdown,
    reason = "RPC names (GenerateDEK, VerifyCertChain) read wrong in backticks"
)]

mod error;
mod install;
mod mesh;
mod objects;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ca_signing::{Certificate, San, Signer as _, SoftwareSigner, Subject};
use hsm_core::{
    CaId, HsmAdminService, HsmIstioKms, HsmToken, IstioConfig, KekId, KeyAlgorithm, KeyPairId,
    Module, ObjectLabel, TokenLabel, TokenOptions,
};
use kms_grpc::csr_bundle::EncryptedCsr;
use kms_grpc::proto::{istio, signing};
use kms_grpc::{Backend, Backends, CaKeyMode, KmsClient, KmsServer, Profile, ServerConfig};
use secrecy::SecretString;
use secrecy::zeroize::Zeroizing;
use tokio::sync::watch;
use vault_bootstrap::KvVersion;
use vault_bootstrap::agent::{Agent, AgentConfig, OutputFiles, SecretLocation};

pub use error::{IstiodError, IstiodResult};
pub use install::{EmulatedInstall, HandshakeProbe, ingress_gateway};
use mesh::DemoWorkload;
pub use mesh::{HandshakeRecord, ISTIO_ALPN};

use crate::kube::Cluster;

/// The object names istiod uses (those of `k8s-bootstrap`'s `names`).
pub mod names {
    /// Namespace of the control plane.
    pub const ISTIO_NAMESPACE: &str = "istio-system";
    /// istiod's service account, the one Vault's role `istiod` is bound to.
    pub const SERVICE_ACCOUNT: &str = "istiod-service-account";
    /// Secret istiod writes with the encrypted CSR.
    pub const CA_CSR_SECRET: &str = "istio-ca-cert-csr";
    /// Secret the security admin writes with the signed chain.
    pub const CA_CERT_SECRET: &str = "istio-ca-cert";
    /// Key of the chain in [`CA_CERT_SECRET`].
    pub const CERT_CHAIN_KEY: &str = "cert-chain.pem";
    /// The four fields of [`CA_CSR_SECRET`], in order.
    pub const CA_CSR_FIELDS: [&str; 4] = ["kek-id", "encrypted-dek", "csr-id", "encrypted-csr"];
    /// The default ASM revision.
    pub const DEFAULT_REVISION: &str = "asm-183-2";
}

/// Where the emulated istiod is in its start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IstiodPhase {
    /// Creating its objects, fetching credentials, bootstrapping the CA key and CSR.
    Starting,
    /// Secret `istio-ca-cert-csr` is written; waiting for Secret `istio-ca-cert`.
    WaitingForCa,
    /// The CA chain is loaded and verified, and the demo handshake succeeded.
    Ready,
    /// A step failed; istiod stays not ready.
    Failed {
        /// The error, with its causes.
        reason: String,
    },
}

impl IstiodPhase {
    /// True for [`IstiodPhase::Failed`].
    pub fn is_failed(&self) -> bool {
        matches!(self, Self::Failed { .. })
    }
}

/// Settings of the emulated istiod: where the cluster, Vault and the HSM are.
#[derive(Clone)]
pub struct IstiodConfig {
    /// The emulated cluster.
    pub cluster: Cluster,
    /// Vault's address and CA.
    pub vault: vault_bootstrap::Connection,
    /// Vault login path of the Kubernetes auth (`auth/asm-c1/hsm/login`, `values.hsm.vaultAuthPath`).
    pub vault_auth_path: String,
    /// Vault role (`istiod`).
    pub vault_role: String,
    /// Secret path (`asm-c1/hsm`, `values.hsm.vaultSecretPath`).
    pub vault_secret_path: String,
    /// KV version of the secret's mount.
    pub kv_version: KvVersion,
    /// The PKCS#11 module.
    pub module_path: PathBuf,
    /// The token label.
    pub token_label: TokenLabel,
    /// The KEK (created beforehand, e.g. by `meshca hsm init`).
    pub kek_id: KekId,
    /// The CA anchor id VerifyCertChain trusts.
    pub ca_id: CaId,
    /// compat or hsm-key.
    pub mode: CaKeyMode,
    /// hsm-key mode: the id of istiod's CA key pair on the token.
    pub key_pair_id: KeyPairId,
    /// ASM revision (`asm-183-2`); the Deployment is `istiod-<revision>`.
    pub revision: String,
    /// Trust domain of the demo workloads.
    pub trust_domain: String,
    /// How often Secret `istio-ca-cert` is looked for.
    pub poll_interval: Duration,
}

impl std::fmt::Debug for IstiodConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IstiodConfig")
            .field("vault_auth_path", &self.vault_auth_path)
            .field("vault_role", &self.vault_role)
            .field("vault_secret_path", &self.vault_secret_path)
            .field("module_path", &self.module_path)
            .field("token_label", &self.token_label)
            .field("kek_id", &self.kek_id)
            .field("ca_id", &self.ca_id)
            .field("mode", &self.mode)
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

impl IstiodConfig {
    /// Settings with the guide's defaults: role `istiod`, KV v1, key pair id `istiod-ca`,
    /// revision `asm-183-2`, trust domain `cluster.local`, polling every 200 ms.
    ///
    /// # Errors
    /// [`IstiodError::Hsm`] when the default key pair id is refused (never in practice).
    #[allow(
        clippy::too_many_arguments,
        reason = "each argument is a required setting"
    )]
    pub fn new(
        cluster: Cluster,
        vault: vault_bootstrap::Connection,
        vault_auth_path: impl Into<String>,
        vault_secret_path: impl Into<String>,
        module_path: impl Into<PathBuf>,
        token_label: TokenLabel,
        kek_id: KekId,
        ca_id: CaId,
        mode: CaKeyMode,
    ) -> IstiodResult<Self> {
        let label = token_label.to_string();
        let key_pair_id = KeyPairId::new("istiod-ca").map_err(|source| IstiodError::Hsm {
            operation: "naming the istiod key pair",
            label,
            source,
        })?;
        Ok(Self {
            cluster,
            vault,
            vault_auth_path: vault_auth_path.into(),
            vault_role: "istiod".to_owned(),
            vault_secret_path: vault_secret_path.into(),
            kv_version: KvVersion::V1,
            module_path: module_path.into(),
            token_label,
            kek_id,
            ca_id,
            mode,
            key_pair_id,
            revision: names::DEFAULT_REVISION.to_owned(),
            trust_domain: "cluster.local".to_owned(),
            poll_interval: Duration::from_millis(200),
        })
    }
}

#[derive(Default)]
struct Outputs {
    csr_secret: Option<EncryptedCsr>,
    csr_pem: Option<String>,
    ca_chain_pem: Option<String>,
    handshake: Option<HandshakeRecord>,
}

struct Shared {
    phase: watch::Sender<IstiodPhase>,
    outputs: Mutex<Outputs>,
}

impl Shared {
    fn outputs(&self) -> std::sync::MutexGuard<'_, Outputs> {
        self.outputs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_phase(&self, phase: IstiodPhase) {
        tracing::info!(?phase, "istiod phase");
        self.phase.send_replace(phase);
    }
}

/// A running emulated istiod; stopped (plugin socket removed, credentials deleted) on drop.
pub struct EmulatedIstiod {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    socket: PathBuf,
    deployment: String,
    // Holds the credentials and the socket; removed on drop, after the task is stopped.
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for EmulatedIstiod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatedIstiod")
            .field("phase", &self.phase())
            .field("socket", &self.socket)
            .field("deployment", &self.deployment)
            .finish_non_exhaustive()
    }
}

impl Drop for EmulatedIstiod {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EmulatedIstiod {
    /// Starts istiod in the background. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`IstiodError::Io`] when its private directory cannot be created; every later failure
    /// is reported as [`IstiodPhase::Failed`].
    pub fn start(config: IstiodConfig) -> IstiodResult<Self> {
        let dir = tempfile::Builder::new()
            .prefix("istiod-")
            .tempdir()
            .map_err(|source| IstiodError::Io {
                action: "creating the private directory of",
                path: std::env::temp_dir(),
                source,
            })?;
        let socket = dir.path().join("hsm-plugin-server.sock");
        let (phase, _) = watch::channel(IstiodPhase::Starting);
        let shared = Arc::new(Shared {
            phase,
            outputs: Mutex::new(Outputs::default()),
        });
        let deployment = objects::deployment_name(&config.revision);
        let task = tokio::spawn(supervise(
            config,
            Arc::clone(&shared),
            dir.path().to_path_buf(),
            socket.clone(),
        ));
        Ok(Self {
            shared,
            task,
            socket,
            deployment,
            _dir: dir,
        })
    }

    /// The current phase.
    pub fn phase(&self) -> IstiodPhase {
        self.shared.phase.borrow().clone()
    }

    /// Waits until the phase satisfies `done` or istiod failed, for at most `timeout`; returns
    /// the phase it stopped at (check it: a timeout returns the current phase).
    pub async fn wait_for_phase(
        &self,
        done: impl Fn(&IstiodPhase) -> bool,
        timeout: Duration,
    ) -> IstiodPhase {
        let mut rx = self.shared.phase.subscribe();
        let wait = rx.wait_for(|p| done(p) || p.is_failed());
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(phase)) => phase.clone(),
            _ => self.phase(),
        }
    }

    /// The contents of Secret `istio-ca-cert-csr` as istiod wrote them.
    pub fn csr_secret(&self) -> Option<EncryptedCsr> {
        self.shared.outputs().csr_secret.clone()
    }

    /// The CSR istiod encrypted into the Secret (PEM), for cross-checks.
    pub fn csr_pem(&self) -> Option<String> {
        self.shared.outputs().csr_pem.clone()
    }

    /// The CA chain istiod loaded from Secret `istio-ca-cert`, once verified.
    pub fn ca_chain_pem(&self) -> Option<String> {
        self.shared.outputs().ca_chain_pem.clone()
    }

    /// The demo handshake, once it completed.
    pub fn handshake(&self) -> Option<HandshakeRecord> {
        self.shared.outputs().handshake.clone()
    }

    /// The plugin's Unix socket (served while istiod runs).
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The istiod Deployment's name (`istiod-<revision>`).
    pub fn deployment_name(&self) -> &str {
        &self.deployment
    }
}

/// The error and its causes, one line.
fn chain_text(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

async fn supervise(config: IstiodConfig, shared: Arc<Shared>, dir: PathBuf, socket: PathBuf) {
    // Dropping `_stop` (when this task ends or is aborted) shuts the plugin server down.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let _stop = stop;
    if let Err(err) = run(&config, &shared, &dir, &socket, stopped).await {
        let reason = chain_text(&err);
        tracing::error!(%reason, "emulated istiod failed");
        shared.set_phase(IstiodPhase::Failed { reason });
    }
    // Keep the plugin serving (as the pod's sidecar does) until istiod is dropped.
    std::future::pending::<()>().await;
}

async fn run(
    config: &IstiodConfig,
    shared: &Shared,
    dir: &Path,
    socket: &Path,
    stopped: tokio::sync::oneshot::Receiver<()>,
) -> IstiodResult<()> {
    let cluster = &config.cluster;
    objects::ensure_service_account(cluster)?;
    objects::ensure_deployment(
        cluster,
        &config.revision,
        &[
            (
                objects::CONTAINERS[0],
                "gcr.io/gke-release/asm/pilot:1.8.3-asm.2",
            ),
            (objects::CONTAINERS[1], "hsm-plugin:sandbox"),
            (objects::CONTAINERS[2], "vault-client:sandbox"),
        ],
    )?;
    objects::set_discovery_ready(cluster, &config.revision, false);

    let pin = fetch_pin(config, dir).await?;
    let token = open_token(config, pin).await?;
    let _server = serve_plugin(config, token, socket, stopped)?;
    let client = KmsClient::connect(socket)
        .await
        .map_err(IstiodError::plugin("connecting to the plugin"))?;

    let ca_key = bootstrap(config, shared, &client).await?;
    shared.set_phase(IstiodPhase::WaitingForCa);

    let chain = wait_for_chain(config).await?;
    let certs = Certificate::parse_pem_bundle(&chain).map_err(IstiodError::cert(
        "parsing cert-chain.pem of Secret istio-ca-cert",
    ))?;
    let (Some(istiod_ca), Some(root)) = (certs.first(), certs.last()) else {
        return Err(IstiodError::CaSecret {
            reason: "cert-chain.pem holds no certificate".to_owned(),
        });
    };
    if certs.len() < 2 {
        return Err(IstiodError::CaSecret {
            reason: "cert-chain.pem holds one certificate; the root must follow the istiod CA"
                .to_owned(),
        });
    }
    if !istiod_ca.has_public_key(&ca_key.spki()) {
        return Err(IstiodError::CaSecret {
            reason: format!(
                "its first certificate ({}) does not carry istiod's CA key; sign the CSR of Secret istio-ca-cert-csr",
                istiod_ca.subject()
            ),
        });
    }
    client
        .verify_cert_chain(certs.iter().map(|c| c.der().to_vec()).collect())
        .await
        .map_err(IstiodError::plugin(
            "VerifyCertChain of the istio-ca-cert chain",
        ))?;
    let chain_pem: String = certs.iter().map(Certificate::pem).collect();
    tracing::info!("CA cert:\n{chain_pem}");
    shared.outputs().ca_chain_pem = Some(chain_pem);
    objects::set_discovery_ready(cluster, &config.revision, true);

    let server = issue_workload(config, &ca_key, &client, istiod_ca, "demo", "httpbin").await?;
    let client_wl = issue_workload(config, &ca_key, &client, istiod_ca, "demo", "sleep").await?;
    let record = mesh::handshake(&server, &client_wl, root, istiod_ca).await?;
    tracing::info!(
        server = %record.server_identity,
        client = %record.client_identity,
        alpn = %String::from_utf8_lossy(&record.alpn),
        "demo workloads completed a mutual TLS handshake"
    );
    shared.outputs().handshake = Some(record);
    shared.set_phase(IstiodPhase::Ready);
    Ok(())
}

/// Logs in to Vault as the pod would and returns the PIN the agent wrote.
async fn fetch_pin(config: &IstiodConfig, dir: &Path) -> IstiodResult<SecretString> {
    let jwt = config
        .cluster
        .create_token(
            names::ISTIO_NAMESPACE,
            names::SERVICE_ACCOUNT,
            &[],
            Duration::from_secs(3600),
        )
        .map_err(IstiodError::kube(format!(
            "requesting a token for {}/{}",
            names::ISTIO_NAMESPACE,
            names::SERVICE_ACCOUNT
        )))?;
    let jwt_path = dir.join("token");
    crate::write_secret_file(
        &jwt_path,
        secrecy::ExposeSecret::expose_secret(&jwt).as_bytes(),
    )
    .map_err(IstiodError::kube("writing the service-account token"))?;
    let vault_err = |source| IstiodError::Vault {
        role: config.vault_role.clone(),
        source,
    };
    let files = OutputFiles::in_dir(dir.join("hsm"));
    let pin_path = files.dir.join(&files.pin);
    let agent_config = AgentConfig {
        auth_path: config.vault_auth_path.clone(),
        role: config.vault_role.clone(),
        jwt_path,
        secret: SecretLocation::parse(&config.vault_secret_path, config.kv_version)
            .map_err(vault_err)?,
        files,
        refresh_interval: vault_bootstrap::agent::DEFAULT_REFRESH_INTERVAL,
        retry_interval: vault_bootstrap::agent::DEFAULT_RETRY_INTERVAL,
        ready_file: None,
    };
    let vault = vault_bootstrap::HttpVault::new(config.vault.clone(), None).map_err(vault_err)?;
    let mut agent = Agent::new(agent_config, Arc::new(vault), Arc::default());
    let report = agent.run_once().await.map_err(vault_err)?;
    tracing::info!(
        files = report.written.len() + report.unchanged.len(),
        "vault-client wrote the HSM credentials"
    );
    let raw =
        Zeroizing::new(
            std::fs::read_to_string(&pin_path).map_err(|source| IstiodError::Io {
                action: "reading the PIN file",
                path: pin_path.clone(),
                source,
            })?,
        );
    Ok(SecretString::from(raw.trim_end().to_owned()))
}

/// Opens the token with the PIN (and, in hsm-key mode, makes sure istiod's key pair exists),
/// as the plugin sidecar does at start-up.
async fn open_token(config: &IstiodConfig, pin: SecretString) -> IstiodResult<Arc<HsmToken>> {
    let module_path = config.module_path.clone();
    let label = config.token_label.clone();
    let key = (config.mode == CaKeyMode::HsmKey).then(|| config.key_pair_id.clone());
    tokio::task::spawn_blocking(move || {
        let hsm = |operation| {
            let label = label.to_string();
            move |source| IstiodError::Hsm {
                operation,
                label,
                source,
            }
        };
        let module = Module::load(&module_path).map_err(hsm("loading the PKCS#11 module"))?;
        let token = HsmToken::open(&module, &label, pin, TokenOptions::default())
            .map_err(hsm("logging in"))?;
        if let Some(id) = key {
            let object_label =
                ObjectLabel::new(id.to_text()).map_err(hsm("naming the istiod key pair"))?;
            let outcome = token
                .ensure_key_pair(
                    &id,
                    &object_label,
                    KeyAlgorithm::EcdsaP256,
                    hsm_core::Mode::Apply,
                )
                .map_err(hsm("creating the istiod CA key pair"))?;
            tracing::info!(key = %id, ?outcome, "istiod CA key pair on the token");
        }
        Ok(Arc::new(token))
    })
    .await
    .map_err(|source| IstiodError::Task {
        task: "token opening",
        source,
    })?
}

/// Runs the plugin server (sidecar profile) until `stopped` resolves.
fn serve_plugin(
    config: &IstiodConfig,
    token: Arc<HsmToken>,
    socket: &Path,
    stopped: tokio::sync::oneshot::Receiver<()>,
) -> IstiodResult<tokio::task::JoinHandle<()>> {
    let istio_config = IstioConfig {
        default_ca_id: config.ca_id.clone(),
        trusted_ca_ids: vec![config.ca_id.clone()],
        ..IstioConfig::default()
    };
    let backends = Backends {
        istio: Arc::new(HsmIstioKms::new(Arc::clone(&token), istio_config)),
        admin: Arc::new(HsmAdminService::new(token)),
        kube: None,
    };
    let mut server_config = ServerConfig::new(socket);
    server_config.profile = Profile::Sidecar;
    server_config.socket_mode = 0o600;
    server_config.ca_key_mode = config.mode;
    server_config.trust_domain.clone_from(&config.trust_domain);
    if config.mode == CaKeyMode::HsmKey {
        server_config.signing_keys = vec![config.key_pair_id.clone()];
    }
    let bound = KmsServer::new(server_config, Backend::Ready(backends))
        .bind()
        .map_err(IstiodError::plugin("binding the plugin socket"))?;
    Ok(tokio::spawn(async move {
        let served = bound
            .serve(async {
                let _ = stopped.await;
            })
            .await;
        if let Err(err) = served {
            tracing::error!(error = %chain_text(&err), "the plugin server stopped");
        }
    }))
}

/// istiod's CA key: loaded into istiod (compat) or held by the HSM (hsm-key).
enum CaKey {
    Software(SoftwareSigner),
    Hsm { spki: Vec<u8>, id: KeyPairId },
}

impl CaKey {
    fn spki(&self) -> Vec<u8> {
        match self {
            Self::Software(signer) => signer.public_key_spki_der(),
            Self::Hsm { spki, .. } => spki.clone(),
        }
    }
}

fn istiod_subject() -> Subject {
    Subject::new("Istio", "Intermediate CA")
}

/// The CA bootstrap over the socket; writes Secret `istio-ca-cert-csr`.
async fn bootstrap(
    config: &IstiodConfig,
    shared: &Shared,
    client: &KmsClient,
) -> IstiodResult<CaKey> {
    let kek = config.kek_id.as_bytes().to_vec();
    let dek = client
        .generate_dek(&kek)
        .await
        .map_err(IstiodError::plugin("GenerateDEK"))?;
    let (ca_key, csr_pem) = match config.mode {
        CaKeyMode::Compat => {
            let skey = client
                .istio()
                .generate_s_key(istio::GenerateSKeyRequest {
                    size: 2048,
                    kind: istio::KeyKind::Rsa.into(),
                    curve: 0,
                    kek_kid: kek.clone(),
                    encrypted_dek_blob: dek.clone(),
                })
                .await
                .map_err(IstiodError::rpc("GenerateSKey"))?
                .into_inner()
                .encrypted_skey_blob;
            let pem = Zeroizing::new(
                client
                    .istio()
                    .load_s_key(istio::LoadSKeyRequest {
                        kek_kid: kek.clone(),
                        encrypted_dek_blob: dek.clone(),
                        encrypted_skey_blob: skey,
                    })
                    .await
                    .map_err(IstiodError::rpc("LoadSKey"))?
                    .into_inner()
                    .plaintext_skey,
            );
            let signer = SoftwareSigner::from_bytes(&pem, None, "istiod CA key")
                .map_err(IstiodError::cert("reading the key LoadSKey returned"))?;
            let csr = ca_signing::create_csr(
                &istiod_subject(),
                &[San::Dns(ca_signing::ISTIOD_DNS_NAME.to_owned())],
                &signer,
            )
            .map_err(IstiodError::cert("creating the istiod CA CSR"))?;
            (CaKey::Software(signer), csr.to_pem())
        }
        CaKeyMode::HsmKey => {
            let id = config.key_pair_id.clone();
            let spki = client
                .public_key(id.as_bytes())
                .await
                .map_err(IstiodError::plugin("GetPublicKey of the istiod key pair"))?;
            let subject = istiod_subject();
            let csr_pem = client
                .signing()
                .create_csr(signing::CreateCsrRequest {
                    key_id: id.as_bytes().to_vec(),
                    common_name: subject.common_name.clone(),
                    organization: subject.organization.clone().unwrap_or_default(),
                    dns_names: vec![ca_signing::ISTIOD_DNS_NAME.to_owned()],
                    uris: Vec::new(),
                })
                .await
                .map_err(IstiodError::rpc("CreateCsr"))?
                .into_inner()
                .csr_pem;
            (CaKey::Hsm { spki, id }, csr_pem)
        }
    };
    let csr_id = format!("istiod-csr-{}", uuid::Uuid::new_v4()).into_bytes();
    let encrypted_csr = client
        .authenticated_encrypt(&kek, &dek, csr_pem.as_bytes(), &csr_id)
        .await
        .map_err(IstiodError::plugin("AuthenticatedEncrypt of the CSR"))?;
    let secret = EncryptedCsr {
        kek_id: kek,
        encrypted_dek: dek,
        csr_id,
        encrypted_csr,
    };
    let [kek_field, dek_field, id_field, csr_field] = names::CA_CSR_FIELDS;
    objects::write_csr_secret(
        &config.cluster,
        &[
            (kek_field, &secret.kek_id),
            (dek_field, &secret.encrypted_dek),
            (id_field, &secret.csr_id),
            (csr_field, &secret.encrypted_csr),
        ],
    )?;
    tracing::info!(
        secret = %format!("{}/{}", names::ISTIO_NAMESPACE, names::CA_CSR_SECRET),
        csr_id = %String::from_utf8_lossy(&secret.csr_id),
        "wrote the encrypted CSR; waiting for Secret istio-ca-cert"
    );
    let mut outputs = shared.outputs();
    outputs.csr_secret = Some(secret);
    outputs.csr_pem = Some(csr_pem);
    Ok(ca_key)
}

async fn wait_for_chain(config: &IstiodConfig) -> IstiodResult<Vec<u8>> {
    loop {
        if let Some(chain) = objects::read_ca_chain(&config.cluster)? {
            return Ok(chain);
        }
        tokio::time::sleep(config.poll_interval).await;
    }
}

/// A workload certificate for `namespace/service_account`, signed by istiod's CA key.
async fn issue_workload(
    config: &IstiodConfig,
    ca_key: &CaKey,
    client: &KmsClient,
    istiod_ca: &Certificate,
    namespace: &str,
    service_account: &str,
) -> IstiodResult<DemoWorkload> {
    let key = SoftwareSigner::generate(ca_signing::KeyAlgorithm::EcdsaP256, service_account)
        .map_err(IstiodError::cert("generating a workload key"))?;
    let profile =
        ca_signing::WorkloadProfile::new(&config.trust_domain, namespace, service_account);
    let cert = match ca_key {
        CaKey::Software(signer) => {
            ca_signing::issue_workload(&profile, &key.public_key_spki_der(), istiod_ca, signer)
                .map_err(IstiodError::cert("issuing a workload certificate"))?
        }
        CaKey::Hsm { id, .. } => {
            let csr = ca_signing::create_csr(
                &Subject::new("", service_account),
                &[San::Uri(profile.spiffe_id())],
                &key,
            )
            .map_err(IstiodError::cert("creating a workload CSR"))?;
            let issued = client
                .signing()
                .issue_certificate(signing::IssueCertificateRequest {
                    key_id: id.as_bytes().to_vec(),
                    issuer_certificate: istiod_ca.pem().into_bytes(),
                    csr: csr.to_pem().into_bytes(),
                    purpose: signing::Purpose::Workload.into(),
                    trust_domain: config.trust_domain.clone(),
                    namespace: namespace.to_owned(),
                    service_account: service_account.to_owned(),
                    ..Default::default()
                })
                .await
                .map_err(IstiodError::rpc("IssueCertificate"))?
                .into_inner();
            Certificate::parse(issued.certificate_pem.as_bytes())
                .map_err(IstiodError::cert("parsing the issued workload certificate"))?
        }
    };
    Ok(DemoWorkload {
        spiffe_id: profile.spiffe_id(),
        cert,
        key,
    })
}
