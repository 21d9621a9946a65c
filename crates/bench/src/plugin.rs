//! Part 1: the plugin against its two floors, at 1 and at 16 concurrent clients, on one
//! SoftHSM2 token.
//!
//! - transport floor: an empty unary RPC (`grpc.health.v1.Health/Check`) over the same socket;
//! - HSM floor: the same operation called in-process through `hsm-core`, on OS threads;
//! - plugin: the operation through the socket (in-process `KmsServer`, `KmsClient` clients).
//!
//! The three are measured in alternating short slices, so background load on the machine
//! falls on all of them alike, and the samples of every slice are pooled.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hsm_core::{
    AuthenticatedEncryptRequest, GenerateDekRequest, HsmAdminService, HsmIstioKms, HsmKey,
    HsmKubeKms, HsmToken, IstioConfig, KekId, KeyAlgorithm, KeyPairId, KeyRef, KubeEncryptRequest,
    KubeKmsConfig, Mode, ObjectLabel, TokenOptions,
};
use kms_grpc::proto::{health, istio, signing, v2};
use kms_grpc::{Backend, Backends, CaKeyMode, KmsClient, KmsServer, ServerConfig};
use tokio::runtime::Runtime;

use crate::report::{Report, Target, Unit};
use crate::stats::{Samples, nanos};

/// KEK of the Istio operations.
pub(crate) const KEK_ID: &str = "bench-kek";
/// AES key of Kubernetes KMS v2.
pub(crate) const KUBE_KEY_ID: &str = "bench-k8s";
/// The in-HSM signing key pair (hsm-key mode).
pub(crate) const SIGNING_KEY_ID: &str = "bench-ca";

/// How long and how often to measure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Alternating rounds per concurrency level.
    pub(crate) rounds: usize,
    /// Length of one measuring slice.
    pub(crate) slice: Duration,
    /// Unmeasured run of every series before the first round.
    pub(crate) warmup: Duration,
    /// Run only this series (for a profiler attached to the bench), instead of the figures.
    pub(crate) focus: Option<Focus>,
}

/// One series run on its own for a while.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Focus {
    series: Series,
    /// Concurrent clients (or threads).
    pub(crate) clients: usize,
    /// How long.
    pub(crate) duration: Duration,
}

impl Focus {
    /// Parses `transport`, `hsm:OP`, `port:OP` or `plugin:OP`, OP one of `auth-encrypt`,
    /// `kms-encrypt`, `sign`.
    pub(crate) fn parse(text: &str, clients: usize, duration: Duration) -> anyhow::Result<Self> {
        let op = |name: &str| match name {
            "auth-encrypt" => Ok(Op::AuthEncrypt),
            "kms-encrypt" => Ok(Op::KubeEncrypt),
            "sign" => Ok(Op::Sign),
            other => Err(anyhow::anyhow!(
                "--focus: unknown operation {other:?}; use auth-encrypt, kms-encrypt or sign"
            )),
        };
        let series = match text.split_once(':') {
            None if text == "transport" => Series::Transport,
            Some(("hsm", o)) => Series::Hsm(op(o)?),
            Some(("port", o)) => Series::Port(op(o)?),
            Some(("plugin", o)) => Series::Plugin(op(o)?),
            _ => anyhow::bail!(
                "--focus {text:?}: use transport, hsm:OP, port:OP or plugin:OP (OP: auth-encrypt, kms-encrypt, sign)"
            ),
        };
        anyhow::ensure!(clients > 0, "--clients must be at least 1");
        Ok(Self {
            series,
            clients,
            duration,
        })
    }
}

/// The operations the plugin is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Istio KMS `AuthenticatedEncrypt` of 1 KiB.
    AuthEncrypt,
    /// Kubernetes KMS v2 Encrypt of 32 bytes.
    KubeEncrypt,
    /// ECDSA P-256 signature through the signing API.
    Sign,
}

impl Op {
    pub(crate) const ALL: [Self; 3] = [Self::AuthEncrypt, Self::KubeEncrypt, Self::Sign];

    fn id(self) -> &'static str {
        match self {
            Self::AuthEncrypt => "auth_encrypt_1k",
            Self::KubeEncrypt => "kms_v2_encrypt_32b",
            Self::Sign => "ecdsa_p256_sign",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::AuthEncrypt => "AuthenticatedEncrypt 1 KiB",
            Self::KubeEncrypt => "KMS v2 Encrypt 32 B",
            Self::Sign => "ECDSA P-256 sign",
        }
    }
}

/// The keys a bench token holds.
pub(crate) struct Keys {
    pub(crate) token: Arc<HsmToken>,
    pub(crate) kek: KekId,
    pub(crate) kube_key: KekId,
    pub(crate) signing_key: KeyPairId,
}

/// Opens the sandbox token and creates the bench's keys on it (idempotent).
pub(crate) fn prepare_token(hsm: &sandbox::SoftHsm) -> anyhow::Result<Keys> {
    let token = Arc::new(
        HsmToken::open(
            hsm.module(),
            hsm.label(),
            hsm.user_pin().clone(),
            TokenOptions::default(),
        )
        .with_context(|| format!("opening the bench token {}", hsm.label()))?,
    );
    let kek = KekId::new(KEK_ID)?;
    let kube_key = KekId::new(KUBE_KEY_ID)?;
    let signing_key = KeyPairId::new(SIGNING_KEY_ID)?;
    token.ensure_kek(&kek, Mode::Apply)?;
    token.ensure_kek(&kube_key, Mode::Apply)?;
    token.ensure_key_pair(
        &signing_key,
        &ObjectLabel::new(SIGNING_KEY_ID)?,
        KeyAlgorithm::EcdsaP256,
        Mode::Apply,
    )?;
    Ok(Keys {
        token,
        kek,
        kube_key,
        signing_key,
    })
}

/// The requests every series sends, built once.
pub(crate) struct Requests {
    ae: istio::AuthenticatedEncryptRequest,
    v2: v2::EncryptRequest,
    sign: signing::SignRequest,
}

impl Requests {
    /// The wire requests for `keys`, with `dek` wrapped under the KEK.
    pub(crate) fn new(keys: &Keys, dek: &[u8]) -> Self {
        Self {
            ae: istio::AuthenticatedEncryptRequest {
                kek_kid: keys.kek.as_bytes().to_vec(),
                encrypted_dek_blob: dek.to_vec(),
                plaintext: plaintext_1k(),
                aad: AAD.to_vec(),
            },
            v2: v2::EncryptRequest {
                plaintext: vec![0x5a; 32],
                uid: "bench".to_owned(),
            },
            sign: signing::SignRequest {
                key_id: Vec::new(),
                message: message(),
            },
        }
    }
}

const AAD: &[u8] = b"csr-bench";

fn plaintext_1k() -> Vec<u8> {
    (0..1024u32)
        .map(|i| u8::try_from(i % 251).unwrap_or(0))
        .collect()
}

/// What is signed: the size of a small `TBSCertificate`.
fn message() -> Vec<u8> {
    (0..512u32)
        .map(|i| u8::try_from(i % 241).unwrap_or(0))
        .collect()
}

/// One call through the socket.
pub(crate) async fn plugin_call(client: &KmsClient, req: &Requests, op: Op) -> anyhow::Result<()> {
    match op {
        Op::AuthEncrypt => {
            let out = client
                .istio()
                .authenticated_encrypt(req.ae.clone())
                .await
                .context("AuthenticatedEncrypt through the socket")?;
            anyhow::ensure!(
                !out.get_ref().ciphertext.is_empty(),
                "AuthenticatedEncrypt returned an empty ciphertext"
            );
        }
        Op::KubeEncrypt => {
            let out = client
                .kube_v2()
                .encrypt(req.v2.clone())
                .await
                .context("KMS v2 Encrypt through the socket")?;
            anyhow::ensure!(
                !out.get_ref().ciphertext.is_empty(),
                "KMS v2 Encrypt returned an empty ciphertext"
            );
        }
        Op::Sign => {
            let out = client
                .signing()
                .sign(req.sign.clone())
                .await
                .context("Sign through the socket")?;
            anyhow::ensure!(
                !out.get_ref().signature.is_empty(),
                "Sign returned an empty signature"
            );
        }
    }
    Ok(())
}

/// One empty RPC.
async fn transport_call(client: &KmsClient) -> anyhow::Result<()> {
    client
        .health()
        .check(health::HealthCheckRequest::default())
        .await
        .context("Health/Check through the socket")?;
    Ok(())
}

/// The in-process operations, called from OS threads.
struct Floor {
    istio: HsmIstioKms,
    kube: HsmKubeKms,
    key: HsmKey,
    ae: AuthenticatedEncryptRequest,
    v2: KubeEncryptRequest,
    message: Vec<u8>,
}

impl Floor {
    fn call(&self, op: Op) -> anyhow::Result<()> {
        match op {
            Op::AuthEncrypt => {
                self.istio.authenticated_encrypt_blocking(&self.ae)?;
            }
            Op::KubeEncrypt => {
                self.kube.encrypt_blocking(&self.v2)?;
            }
            Op::Sign => {
                self.key.sign(&self.message)?;
            }
        }
        Ok(())
    }
}

/// What one series measures.
#[derive(Debug, Clone, Copy)]
enum Series {
    Transport,
    Hsm(Op),
    /// The operation through hsm-core's async port, in-process: the HSM floor plus the hop
    /// to the blocking pool (a diagnostic between the floor and the plugin).
    Port(Op),
    Plugin(Op),
}

/// hsm-core's async ports, as the server calls them.
pub(crate) struct Ports {
    istio: Arc<dyn hsm_core::IstioKms>,
    kube: Arc<dyn hsm_core::KubeKms>,
    admin: Arc<dyn hsm_core::HsmAdmin>,
    ae: AuthenticatedEncryptRequest,
    v2: KubeEncryptRequest,
    key: KeyPairId,
    message: Vec<u8>,
}

async fn port_call(ports: &Ports, op: Op) -> anyhow::Result<()> {
    match op {
        Op::AuthEncrypt => {
            ports.istio.authenticated_encrypt(ports.ae.clone()).await?;
        }
        Op::KubeEncrypt => {
            ports.kube.encrypt(ports.v2.clone()).await?;
        }
        Op::Sign => {
            ports
                .admin
                .sign(ports.key.clone(), ports.message.clone())
                .await?;
        }
    }
    Ok(())
}

/// Runs `threads` OS threads calling `op` in-process until the slice ends.
fn measure_floor(
    floor: &Floor,
    op: Op,
    threads: usize,
    slice: Duration,
) -> anyhow::Result<(Vec<u64>, Duration)> {
    let start = Instant::now();
    let deadline = start + slice;
    let results: Vec<anyhow::Result<Vec<u64>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(8192);
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        floor.call(op)?;
                        lat.push(nanos(t.elapsed()));
                    }
                    Ok(lat)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("an HSM floor thread panicked")))
            })
            .collect()
    });
    let wall = start.elapsed();
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    Ok((all, wall))
}

/// Runs one task per client calling `series` through the socket until the slice ends.
async fn measure_rpc(
    clients: &[KmsClient],
    requests: &Arc<Requests>,
    ports: &Arc<Ports>,
    series: Series,
    slice: Duration,
) -> anyhow::Result<(Vec<u64>, Duration)> {
    let start = Instant::now();
    let deadline = start + slice;
    let mut set = tokio::task::JoinSet::new();
    for client in clients {
        let client = client.clone();
        let requests = Arc::clone(requests);
        let ports = Arc::clone(ports);
        set.spawn(async move {
            let mut lat = Vec::with_capacity(8192);
            while Instant::now() < deadline {
                let t = Instant::now();
                match series {
                    Series::Transport => transport_call(&client).await?,
                    Series::Plugin(op) => plugin_call(&client, &requests, op).await?,
                    Series::Port(op) => port_call(&ports, op).await?,
                    Series::Hsm(_) => anyhow::bail!("the HSM floor is measured on OS threads"),
                }
                lat.push(nanos(t.elapsed()));
            }
            Ok::<_, anyhow::Error>(lat)
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = set.join_next().await {
        all.extend(joined.context("a client task ended abnormally")??);
    }
    Ok((all, start.elapsed()))
}

/// Connects `n` clients, each with its own connection.
pub(crate) async fn connect(socket: &Path, n: usize) -> anyhow::Result<Vec<KmsClient>> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(
            KmsClient::connect(socket)
                .await
                .with_context(|| format!("connecting to the plugin at {}", socket.display()))?,
        );
    }
    Ok(clients)
}

struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<kms_grpc::Result<()>>,
}

fn start_server(rt: &Runtime, socket: &Path, keys: &Keys) -> anyhow::Result<Server> {
    let mut config = ServerConfig::new(socket);
    // The raw Sign RPC measured here is refused to the sidecar profile; the admin profile
    // serves the same code path behind the same access layer.
    config.profile = kms_grpc::Profile::Admin;
    config.ca_key_mode = CaKeyMode::HsmKey;
    config.signing_keys = vec![keys.signing_key.clone()];
    let backends = Backends {
        istio: Arc::new(HsmIstioKms::new(
            Arc::clone(&keys.token),
            IstioConfig::default(),
        )),
        admin: Arc::new(HsmAdminService::new(Arc::clone(&keys.token))),
        kube: Some(Arc::new(HsmKubeKms::new(
            Arc::clone(&keys.token),
            KubeKmsConfig::new(KeyRef::kek(keys.kube_key.clone())),
        ))),
    };
    rt.block_on(async {
        let bound = KmsServer::new(config, Backend::Ready(backends))
            .bind()
            .with_context(|| format!("binding the plugin socket {}", socket.display()))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(async {
            let _ = stopped.await;
        }));
        Ok(Server {
            stop: Some(stop),
            task,
        })
    })
}

impl Server {
    fn stop(mut self, rt: &Runtime) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        rt.block_on(&mut self.task)
            .context("the plugin server task ended abnormally")?
            .context("the plugin server failed")?;
        Ok(())
    }
}

/// Every series of one concurrency level, pooled over the rounds.
struct Level {
    transport: Samples,
    hsm: Vec<Samples>,
    port: Vec<Samples>,
    plugin: Vec<Samples>,
    /// hsm-core's own timing of the operation while it served the plugin, per slice, µs.
    inside: Vec<Vec<f64>>,
}

struct Bench<'a> {
    rt: &'a Runtime,
    token: Arc<HsmToken>,
    floor: Floor,
    ports: Arc<Ports>,
    requests: Arc<Requests>,
    socket: PathBuf,
}

impl Bench<'_> {
    fn run(
        &self,
        series: Series,
        clients: &[KmsClient],
        slice: Duration,
    ) -> anyhow::Result<(Vec<u64>, Duration)> {
        match series {
            Series::Hsm(op) => measure_floor(&self.floor, op, clients.len(), slice),
            other => self.rt.block_on(measure_rpc(
                clients,
                &self.requests,
                &self.ports,
                other,
                slice,
            )),
        }
    }

    fn level(&self, concurrency: usize, settings: Settings) -> anyhow::Result<Level> {
        let clients = self.rt.block_on(connect(&self.socket, concurrency))?;
        let mut order = vec![Series::Transport];
        for op in Op::ALL {
            order.push(Series::Hsm(op));
            order.push(Series::Port(op));
            order.push(Series::Plugin(op));
        }
        for series in &order {
            self.run(*series, &clients, settings.warmup)?;
        }
        let mut level = Level {
            transport: Samples::default(),
            hsm: vec![Samples::default(); Op::ALL.len()],
            port: vec![Samples::default(); Op::ALL.len()],
            plugin: vec![Samples::default(); Op::ALL.len()],
            inside: vec![Vec::new(); Op::ALL.len()],
        };
        for round in 0..settings.rounds {
            // Alternate the direction so neither side always follows the other.
            let mut this_round = order.clone();
            if round % 2 == 1 {
                this_round.reverse();
            }
            for series in this_round {
                let (lat, wall) = self.run(series, &clients, settings.slice)?;
                if let (Series::Plugin(op), Some(typical)) = (series, self.token.typical_call()) {
                    level.inside[index(op)].push(typical.as_secs_f64() * 1e6);
                }
                let slot = match series {
                    Series::Transport => &mut level.transport,
                    Series::Hsm(op) => &mut level.hsm[index(op)],
                    Series::Port(op) => &mut level.port[index(op)],
                    Series::Plugin(op) => &mut level.plugin[index(op)],
                };
                slot.add_round(lat, wall);
            }
        }
        let empty = std::iter::once(&level.transport)
            .chain(&level.hsm)
            .chain(&level.port)
            .chain(&level.plugin)
            .any(|s| s.count() == 0);
        anyhow::ensure!(
            !empty,
            "a series completed no operation in {:?}; lengthen the slices",
            settings.slice
        );
        Ok(level)
    }
}

impl Bench<'_> {
    fn focus(&self, focus: Focus, report: &mut Report) -> anyhow::Result<()> {
        let clients = self.rt.block_on(connect(&self.socket, focus.clients))?;
        eprintln!(
            "mesh-bench: running {:?} alone for {:?}",
            focus.series, focus.duration
        );
        self.run(focus.series, &clients, Duration::from_millis(200))?;
        let (lat, wall) = self.run(focus.series, &clients, focus.duration)?;
        let mut samples = Samples::default();
        samples.add_round(lat, wall);
        let label = format!("{:?}, {} client(s)", focus.series, focus.clients);
        report.info(
            1,
            "focus.ops_per_sec",
            &format!("{label}: throughput"),
            samples.ops_per_sec(),
            Unit::OpsPerSec,
        );
        report.info(
            1,
            "focus.p50_us",
            &format!("{label}: p50"),
            samples.p50_us(),
            Unit::Micros,
        );
        report.info(
            1,
            "focus.p99_us",
            &format!("{label}: p99"),
            samples.p99_us(),
            Unit::Micros,
        );
        Ok(())
    }
}

fn index(op: Op) -> usize {
    Op::ALL.iter().position(|o| *o == op).unwrap_or(0)
}

/// Measures part 1 and adds its figures to `report`.
pub(crate) fn run(rt: &Runtime, settings: Settings, report: &mut Report) -> anyhow::Result<()> {
    let hsm = sandbox::SoftHsm::builder()
        .label("bench-plugin")
        .create()
        .context("creating the bench SoftHSM2 token")?;
    let keys = prepare_token(&hsm)?;
    let istio = HsmIstioKms::new(Arc::clone(&keys.token), IstioConfig::default());
    let dek = istio.generate_dek_blocking(&GenerateDekRequest {
        kek_id: keys.kek.clone(),
    })?;
    let requests = Arc::new(Requests::new(&keys, &dek));
    let floor = Floor {
        istio,
        kube: HsmKubeKms::new(
            Arc::clone(&keys.token),
            KubeKmsConfig::new(KeyRef::kek(keys.kube_key.clone())),
        ),
        key: HsmKey::open(Arc::clone(&keys.token), &keys.signing_key)?,
        ae: AuthenticatedEncryptRequest {
            kek_id: keys.kek.clone(),
            encrypted_dek: dek,
            plaintext: plaintext_1k(),
            aad: AAD.to_vec(),
        },
        v2: KubeEncryptRequest {
            plaintext: zeroize::Zeroizing::new(vec![0x5a; 32]),
            uid: "bench".to_owned(),
        },
        message: message(),
    };
    let ports = Arc::new(Ports {
        istio: Arc::new(floor.istio.clone()),
        kube: Arc::new(floor.kube.clone()),
        admin: Arc::new(HsmAdminService::new(Arc::clone(&keys.token))),
        ae: floor.ae.clone(),
        v2: floor.v2.clone(),
        key: keys.signing_key.clone(),
        message: message(),
    });
    let dir = tempfile::Builder::new()
        .prefix("mesh-bench-plugin-")
        .tempdir()
        .context("creating the socket directory")?;
    let socket = dir.path().join("hsm-plugin.sock");
    let server = start_server(rt, &socket, &keys)?;
    let bench = Bench {
        rt,
        token: Arc::clone(&keys.token),
        floor,
        ports,
        requests,
        socket,
    };
    let result = (|| {
        if let Some(focus) = settings.focus {
            return bench.focus(focus, report);
        }
        for concurrency in [1usize, 16] {
            eprintln!("mesh-bench: part 1: {concurrency} client(s)");
            let level = bench.level(concurrency, settings)?;
            figures(report, concurrency, &level);
        }
        Ok::<_, anyhow::Error>(())
    })();
    server.stop(rt)?;
    result
}

fn figures(report: &mut Report, c: usize, level: &Level) {
    let series = |report: &mut Report, id: &str, label: &str, s: &Samples| {
        report.info(
            1,
            &format!("{id}.c{c}.ops_per_sec"),
            &format!("{label}, {c} client(s): throughput"),
            s.ops_per_sec(),
            Unit::OpsPerSec,
        );
        report.info(
            1,
            &format!("{id}.c{c}.p50_us"),
            &format!("{label}, {c} client(s): p50"),
            s.p50_us(),
            Unit::Micros,
        );
        report.info(
            1,
            &format!("{id}.c{c}.p99_us"),
            &format!("{label}, {c} client(s): p99"),
            s.p99_us(),
            Unit::Micros,
        );
    };
    series(
        report,
        "plugin.transport",
        "transport floor (empty RPC)",
        &level.transport,
    );
    for op in Op::ALL {
        let hsm = &level.hsm[index(op)];
        let plugin = &level.plugin[index(op)];
        series(
            report,
            &format!("plugin.{}.hsm", op.id()),
            &format!("HSM floor {}", op.label()),
            hsm,
        );
        series(
            report,
            &format!("plugin.{}.port", op.id()),
            &format!("hsm-core async port {}", op.label()),
            &level.port[index(op)],
        );
        series(
            report,
            &format!("plugin.{}.plugin", op.id()),
            &format!("plugin {}", op.label()),
            plugin,
        );
        report.info(
            1,
            &format!("plugin.{}.c{c}.hsm_inside_us", op.id()),
            &format!(
                "{} as hsm-core timed it inside the plugin, {c} client(s) (moving average)",
                op.label()
            ),
            crate::stats::median(&mut level.inside[index(op)].clone()),
            Unit::Micros,
        );
        if c == 1 {
            let floors = level.transport.p50_us() + hsm.p50_us();
            let ratio = if floors > 0.0 {
                plugin.p50_us() / floors
            } else {
                0.0
            };
            report.judged(
                1,
                &format!("plugin.{}.c1.p50_vs_floors", op.id()),
                &format!(
                    "plugin {} p50 / (transport p50 + HSM p50), 1 client",
                    op.label()
                ),
                ratio,
                Unit::Ratio,
                Target::AtMost(1.10),
            );
        } else {
            let floor = level.transport.ops_per_sec().min(hsm.ops_per_sec());
            let ratio = if floor > 0.0 {
                plugin.ops_per_sec() / floor
            } else {
                0.0
            };
            report.judged(
                1,
                &format!("plugin.{}.c{c}.ops_vs_floors", op.id()),
                &format!(
                    "plugin {} ops/s / min(transport, HSM) ops/s, {c} clients",
                    op.label()
                ),
                ratio,
                Unit::Ratio,
                Target::AtLeast(0.80),
            );
        }
    }
}
