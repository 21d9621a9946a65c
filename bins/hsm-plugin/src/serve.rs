//! `serve`: opens the token and serves the KMS services on the socket, with the operations
//! port beside it. A rejected PIN keeps the process up, not ready, and never retried.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use hsm_core::{
    CaId, HsmAdminService, HsmIstioKms, HsmKubeKms, HsmToken, IstioConfig, KekId, KeyPairId,
    KeyRef, KubeKmsConfig, Module, TokenLabel, TokenOptions,
};
use kms_grpc::{Backend, Backends, CaKeyMode, KmsServer, PeerAllowlist, Profile, ServerConfig};

/// Token selection and PIN, shared by `serve` and the `--in-process` client commands.
#[derive(Debug, Clone, Args)]
pub(crate) struct TokenArgs {
    /// PKCS#11 module (`ChrystokiConfigurationPath` in the environment reaches the Luna module).
    #[arg(long, env = "P11_LIB", default_value = hsm_core::DEFAULT_SOFTHSM_MODULE)]
    pub(crate) p11_lib: PathBuf,
    /// Token (partition) label (`--p11-label` is the Thales spelling).
    #[arg(long, env = "P11_TOKEN", visible_alias = "p11-label")]
    pub(crate) p11_token: Option<String>,
    /// Slot number, used only when no token label is given (labels are stable, slots are not).
    #[arg(long, env = "P11_SLOT")]
    pub(crate) p11_slot: Option<u64>,
    /// File holding the user PIN (trailing whitespace trimmed; must be mode 0600).
    #[arg(long, env = "P11_PIN_FILE")]
    pub(crate) p11_pin_file: Option<PathBuf>,
    /// Accept a PIN file readable by group or others (a Kubernetes secret volume).
    #[arg(long)]
    pub(crate) allow_shared_pin_file: bool,
    /// Refused (exit 3): a PIN in argv is visible in ps and /proc. Use `P11_PIN_FILE` or the
    /// `P11_PIN` environment variable.
    #[arg(long, value_name = "PIN", value_parser = secret_arg)]
    pub(crate) p11_pin: Option<secrecy::SecretString>,
}

#[allow(
    clippy::unnecessary_wraps,
    reason = "clap value parsers return a Result"
)]
fn secret_arg(s: &str) -> Result<secrecy::SecretString, std::convert::Infallible> {
    Ok(secrecy::SecretString::from(s))
}

impl TokenArgs {
    /// Refuses `--p11-pin` before anything is opened or changed.
    pub(crate) fn check(&self) -> Result<(), crate::compat::ConfigError> {
        if self.p11_pin.is_some() {
            return Err(crate::compat::p11_pin_refused());
        }
        Ok(())
    }

    /// The module and the token label (from `P11_TOKEN`, else from `P11_SLOT`).
    pub(crate) fn locate(&self) -> anyhow::Result<(Module, TokenLabel)> {
        let module = Module::load(&self.p11_lib)?;
        let label = match (&self.p11_token, self.p11_slot) {
            (Some(label), _) => TokenLabel::new(label.clone())?,
            (None, Some(slot)) => {
                let token = module
                    .tokens()?
                    .into_iter()
                    .find(|t| t.slot.id() == slot)
                    .with_context(|| {
                        format!(
                            "no initialised token in slot {slot} of {}",
                            self.p11_lib.display()
                        )
                    })?;
                TokenLabel::new(token.label)?
            }
            (None, None) => {
                anyhow::bail!("name the token: set P11_TOKEN (or --p11-token), or P11_SLOT")
            }
        };
        Ok((module, label))
    }

    /// Reads the PIN file (`P11_PIN_FILE`), else the `P11_PIN` environment variable.
    pub(crate) fn pin(&self) -> anyhow::Result<secrecy::SecretString> {
        let Some(path) = self.p11_pin_file.as_ref() else {
            if let Some(value) = std::env::var_os("P11_PIN") {
                return Ok(hsm_core::pin::pin_from_env("P11_PIN", Some(value))?);
            }
            anyhow::bail!(
                "set P11_PIN_FILE (or --p11-pin-file) to the file holding the user PIN, or P11_PIN"
            );
        };
        let access = if self.allow_shared_pin_file {
            hsm_core::pin::FileAccess::AllowShared
        } else {
            hsm_core::pin::FileAccess::OwnerOnly
        };
        Ok(hsm_core::pin::pin_from_file(path, access)?)
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ProfileArg {
    Sidecar,
    Admin,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum CaKeyModeArg {
    Compat,
    HsmKey,
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Unix socket to listen on.
    #[arg(long, env = "SOCKET", default_value = ServerConfig::DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(flatten)]
    token: TokenArgs,
    /// Policy profile: sidecar (no GenerateKEK/ImportCACert) or admin (everything). Default:
    /// sidecar inside a Kubernetes pod (`KUBERNETES_SERVICE_HOST` set or a service-account
    /// token mounted), admin elsewhere (an operator's workstation, as in the guide).
    #[arg(long, env = "HSM_PLUGIN_PROFILE", value_enum)]
    profile: Option<ProfileArg>,
    /// The KEK istiod uses (Thales `--kek-id`; also `KEK_ID` or `kek-id`): logged at start.
    #[arg(long, env = "KEK_ID")]
    kek_id: Option<String>,
    #[command(flatten)]
    thales: crate::compat::ThalesServeArgs,
    /// Uids allowed to call (comma separated). Default: root, this process's uid, gid 1337.
    #[arg(long, env = "HSM_PLUGIN_ALLOW_UIDS", value_delimiter = ',')]
    allow_uid: Vec<u32>,
    /// Gids allowed to call (comma separated).
    #[arg(long, env = "HSM_PLUGIN_ALLOW_GIDS", value_delimiter = ',')]
    allow_gid: Vec<u32>,
    /// Let any peer call (the socket's mode and group are then the only guard).
    #[arg(long, conflicts_with_all = ["allow_uid", "allow_gid"])]
    allow_any_peer: bool,
    /// Group of the socket (istiod's gid is 1337).
    #[arg(long, env = "HSM_PLUGIN_SOCKET_GROUP")]
    socket_group: Option<u32>,
    /// Mode of the socket, octal.
    #[arg(long, default_value = "660", value_parser = parse_mode)]
    socket_mode: u32,
    /// Address of /metrics, /healthz and /readyz; `off` disables them.
    #[arg(
        long,
        env = "HSM_PLUGIN_METRICS_ADDR",
        default_value = "127.0.0.1:9464"
    )]
    metrics_addr: String,
    /// KEK id of the Kubernetes KMS v2 key (enables KMS v2 and v1beta1).
    #[arg(long, env = "KMS_KEY_ID")]
    kms_key_id: Option<String>,
    /// Version marker of the KMS v2 key id (`<kek-id>:<version>`).
    #[arg(long, env = "KMS_KEY_VERSION", default_value = "v1")]
    kms_key_version: String,
    /// Where the istiod CA key lives: compat (`LoadSKey` served) or hsm-key (refused).
    #[arg(long, env = "HSM_PLUGIN_CA_KEY_MODE", value_enum, default_value_t = CaKeyModeArg::Compat)]
    ca_key_mode: CaKeyModeArg,
    /// Key pair ids the signing service may use (the first is the default).
    #[arg(long, env = "HSM_PLUGIN_SIGNING_KEY_IDS", value_delimiter = ',')]
    signing_key_id: Vec<String>,
    /// CA anchor ids `VerifyCertChain` trusts; the first is `ImportCACert`'s default (also
    /// `ca-id`; default 1c3d30d5-dfa8-4167-a9f9-2c768464181b).
    #[arg(long = "ca-id", env = "CA_ID", value_delimiter = ',')]
    ca_ids: Vec<String>,
    /// Largest gRPC message, bytes.
    #[arg(long, default_value_t = ServerConfig::DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Trust domain of the workload certificates the signing service issues; a request
    /// naming another one is refused.
    #[arg(long, env = "HSM_PLUGIN_TRUST_DOMAIN", default_value = ServerConfig::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal file mode such as 660"))
}

fn own_ids() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt as _;
    // The process's uid owns /proc/self.
    std::fs::metadata("/proc/self").map_or((0, 0), |m| (m.uid(), m.gid()))
}

fn peers(args: &ServeArgs) -> PeerAllowlist {
    if args.allow_any_peer {
        PeerAllowlist::any()
    } else if args.allow_uid.is_empty() && args.allow_gid.is_empty() {
        let (uid, gid) = own_ids();
        PeerAllowlist::new([0, uid], [gid, 1337])
    } else {
        PeerAllowlist::new(
            args.allow_uid.iter().copied(),
            args.allow_gid.iter().copied(),
        )
    }
}

fn backend(args: &ServeArgs, istio_config: IstioConfig) -> anyhow::Result<Backend> {
    let (module, label) = args.token.locate()?;
    let pin = args.token.pin()?;
    let token = match HsmToken::open(&module, &label, pin, TokenOptions::default()) {
        Ok(token) => Arc::new(token),
        Err(err) if err.is_pin_rejected() => {
            let reason = format!(
                "{err}; not retrying (the HSM locks the partition after repeated failures): fix the PIN file and restart the plugin"
            );
            tracing::error!(%reason, "serving as not ready");
            return Ok(Backend::Unavailable {
                reason,
                code: kms_grpc::Code::Unauthenticated,
            });
        }
        Err(err) => return Err(err.into()),
    };
    let kube = match &args.kms_key_id {
        Some(id) => {
            let mut config = KubeKmsConfig::new(KeyRef::kek(KekId::new(id.as_bytes().to_vec())?));
            config.current.version.clone_from(&args.kms_key_version);
            Some(Arc::new(HsmKubeKms::new(Arc::clone(&token), config)) as Arc<dyn hsm_core::KubeKms>)
        }
        None => None,
    };
    Ok(Backend::Ready(Backends {
        istio: Arc::new(HsmIstioKms::new(Arc::clone(&token), istio_config)),
        admin: Arc::new(HsmAdminService::new(token)),
        kube,
    }))
}

/// SIGTERM or SIGINT, whichever comes first.
async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the plugin with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// Where the plugin runs decides the default profile: a pod means istiod's sidecar.
fn default_profile() -> (Profile, &'static str) {
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        (
            Profile::Sidecar,
            "KUBERNETES_SERVICE_HOST is set (a Kubernetes pod)",
        )
    } else if std::path::Path::new(SERVICE_ACCOUNT_TOKEN).exists() {
        (
            Profile::Sidecar,
            "a service-account token is mounted (a Kubernetes pod)",
        )
    } else {
        (
            Profile::Admin,
            "not in a Kubernetes pod (an operator's workstation)",
        )
    }
}

const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    args.token.check()?;
    // Before the token is opened: a socket directory other users can write is refused.
    kms_grpc::socket::check_directory(&args.socket)?;
    args.thales.apply()?;
    let ca_ids = if args.ca_ids.is_empty() {
        vec![
            crate::compat::hyphenated_env(None, "ca-id")
                .unwrap_or_else(|| CaId::DEFAULT.to_owned()),
        ]
    } else {
        args.ca_ids.clone()
    };
    let ca_ids = ca_ids
        .iter()
        .map(|id| CaId::new(id.as_bytes().to_vec()))
        .collect::<Result<Vec<_>, _>>()?;
    let istio_config = IstioConfig {
        default_ca_id: ca_ids.first().cloned().unwrap_or_default(),
        trusted_ca_ids: ca_ids,
        ..IstioConfig::default()
    };
    let backend = backend(&args, istio_config)?;
    let mut config = ServerConfig::new(&args.socket);
    config.socket_mode = args.socket_mode;
    config.socket_gid = args.socket_group;
    config.peers = peers(&args);
    let (profile, why) = match args.profile {
        Some(ProfileArg::Sidecar) => (Profile::Sidecar, "--profile sidecar"),
        Some(ProfileArg::Admin) => (Profile::Admin, "--profile admin"),
        None => default_profile(),
    };
    tracing::info!(%profile, reason = why, "policy profile");
    config.profile = profile;
    if let Some(kek) = crate::compat::hyphenated_env(args.kek_id.clone(), "kek-id") {
        tracing::info!(kek_id = %kek, "KEK ID: {kek}");
    }
    config.ca_key_mode = match args.ca_key_mode {
        CaKeyModeArg::Compat => CaKeyMode::Compat,
        CaKeyModeArg::HsmKey => CaKeyMode::HsmKey,
    };
    config.max_message_bytes = args.max_message_bytes;
    config.trust_domain.clone_from(&args.trust_domain);
    config.signing_keys = args
        .signing_key_id
        .iter()
        .map(|id| KeyPairId::new(id.as_bytes().to_vec()))
        .collect::<Result<_, _>>()?;
    let bound = KmsServer::new(config, backend).bind()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let ops = if args.metrics_addr == "off" {
        None
    } else {
        let addr: SocketAddr = args.metrics_addr.parse().with_context(|| {
            format!(
                "--metrics-addr {:?} is not host:port or off",
                args.metrics_addr
            )
        })?;
        let ops = kms_grpc::ops::OpsServer::bind(addr, bound.state()).await?;
        tracing::info!(addr = %ops.local_addr()?, "serving /metrics, /healthz and /readyz");
        Some(tokio::spawn(ops.serve(stopped(stop_rx.clone()))))
    };
    let server = tokio::spawn(bound.serve(stopped(stop_rx)));
    termination().await;
    let _ = stop_tx.send(true);
    let result = server.await.context("the server task ended abnormally")?;
    if let Some(ops) = ops {
        let _ = ops.await;
    }
    result?;
    tracing::info!("stopped");
    Ok(())
}
