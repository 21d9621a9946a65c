//! `meshca demo`: the whole guide on this machine. A fresh SoftHSM2 token, a real OpenBao
//! server (TLS), the emulated Kubernetes API server and the emulated istiod (which runs the real
//! vault-client logic and the real plugin on a Unix socket); every step applied, applied again
//! (nothing may change), verified, and the artefacts written to `--out`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use mesh_common::Mode;
use mesh_install::config::{Config, HsmMode, IngressMode, Overrides, RootKey, SecretSource};
use mesh_install::flow::{BUILT, FlowReport, StepStatus};
use sandbox::istiod::{EmulatedInstall, EmulatedIstiod, HandshakeProbe};
use secrecy::ExposeSecret as _;
use serde::Serialize;

use crate::run::{self, Progress, Supplied};

/// The namespace the demo labels for injection (an application namespace that exists before
/// the mesh).
const DEMO_NAMESPACE: &str = "demo-app";

/// Set when the demo made its own SoftHSM2 directory (and removes it at the end).
const OWNED_SOFTHSM_DIR: &str = "MESHCA_DEMO_SOFTHSM_DIR";

/// The CA-key mode the demo installs istiod with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum DemoMode {
    /// The istiod CA key is generated in the HSM and never leaves it.
    HsmKey,
    /// The guide's mode: a software key wrapped under the KEK.
    Compat,
}

impl From<DemoMode> for HsmMode {
    fn from(m: DemoMode) -> Self {
        match m {
            DemoMode::HsmKey => Self::HsmKey,
            DemoMode::Compat => Self::Compat,
        }
    }
}

/// Flags of `meshca demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How istiod's CA key is protected.
    #[arg(long, value_enum, default_value_t = DemoMode::HsmKey)]
    mode: DemoMode,
    /// Leave everything running, print how to reach it, and wait for Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// Where the artefacts go (root and chain, rendered IstioOperator, audit log, report).
    #[arg(long, default_value = "demo-out")]
    out: PathBuf,
}

/// The demo's JSON document.
#[derive(Debug, Serialize)]
struct DemoReport {
    /// The CA-key mode.
    mode: DemoMode,
    /// The plan before anything exists.
    plan: FlowReport,
    /// The first apply.
    apply: FlowReport,
    /// The second apply, which must change nothing.
    reapply: FlowReport,
    /// True when the second apply changed nothing.
    reapply_unchanged: bool,
    /// Secret `istio-ca-cert`'s chain (istiod CA, then root), as verified in step 11.
    chain_pem: String,
    /// The chain a demo workload presented in the mTLS handshake (ALPN `istio`).
    workload_chain_pem: String,
    /// The workload identities of the handshake.
    handshake: Option<Handshake>,
    /// The files written.
    artefacts: Vec<PathBuf>,
    /// Wall time of the whole demo, in milliseconds.
    elapsed_ms: u64,
}

/// The demo mTLS handshake between two workloads.
#[derive(Debug, Serialize)]
struct Handshake {
    /// The server's SPIFFE id, as the client verified it.
    server_identity: String,
    /// The client's SPIFFE id, as the server saw it.
    client_identity: String,
    /// The negotiated ALPN protocol (`istio`).
    alpn: String,
    /// The TLS version.
    protocol_version: String,
}

impl From<sandbox::istiod::HandshakeRecord> for Handshake {
    fn from(h: sandbox::istiod::HandshakeRecord) -> Self {
        Self {
            server_identity: h.server_identity,
            client_identity: h.client_identity,
            alpn: String::from_utf8_lossy(&h.alpn).into_owned(),
            protocol_version: h.protocol_version,
        }
    }
}

impl DemoReport {
    fn passed(&self) -> bool {
        self.reapply_unchanged
            && self
                .apply
                .steps
                .iter()
                .all(|s| !matches!(s.status, StepStatus::Failed | StepStatus::Blocked))
    }
}

/// Runs the demo. SoftHSM2 reads `SOFTHSM2_CONF` once per process, so when it is not set
/// (meshca started outside cargo) the demo re-runs itself with a private configuration.
pub(crate) fn run(args: &DemoArgs, json: bool, quiet: bool) -> anyhow::Result<ExitCode> {
    if std::env::var_os("SOFTHSM2_CONF").is_none() {
        use std::os::unix::process::CommandExt as _;
        // The token directory must outlive this process image, so it is not a TempDir.
        let dir = std::env::temp_dir().join(format!("meshca-demo-softhsm-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating {} for the demo's SoftHSM2", dir.display()))?;
        let exe = std::env::current_exe().context("locating the meshca binary")?;
        // exec, not spawn: the demo keeps this pid, so Ctrl-C and signals reach it directly.
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
            .env(OWNED_SOFTHSM_DIR, &dir)
            .exec();
        return Err(anyhow::Error::new(err)
            .context("re-running meshca demo with its own SoftHSM2 configuration"));
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(flow(args, json, quiet));
    drop(runtime);
    if let Some(dir) = std::env::var_os(OWNED_SOFTHSM_DIR) {
        let _ = std::fs::remove_dir_all(dir);
    }
    let report = report?;
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn say(quiet: bool, message: &str) {
    if !quiet {
        eprintln!("--- {message}");
    }
}

/// The demo's components, alive until dropped.
struct World {
    dir: tempfile::TempDir,
    hsm: sandbox::SoftHsm,
    bao: sandbox::OpenBao,
    api: sandbox::kube::ApiServer,
}

async fn world(quiet: bool) -> anyhow::Result<World> {
    let dir = tempfile::tempdir().context("creating the demo directory")?;
    say(quiet, "creating a SoftHSM2 token");
    let hsm = sandbox::SoftHsm::builder()
        .label("asm-ca")
        .create()
        .context("creating the demo HSM token")?;
    say(quiet, "starting OpenBao (TLS)");
    let bao = sandbox::OpenBao::builder()
        .tls(true)
        .start()
        .await
        .context("starting the demo OpenBao server")?;
    say(quiet, "starting the emulated Kubernetes API server");
    let api = sandbox::kube::ApiServer::start().context("starting the emulated API server")?;
    api.cluster()
        .create(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DEMO_NAMESPACE},
        }))
        .context("creating the demo application namespace")?;
    Ok(World { dir, hsm, bao, api })
}

/// Writes the demo configuration (every secret as a 0600 file reference) and a root CA whose
/// key is a 0600 file, as a security admin's offline root would be.
fn write_config(w: &World, mode: DemoMode) -> anyhow::Result<PathBuf> {
    let dir = w.dir.path();
    let pin = dir.join("hsm-pin");
    w.hsm.write_user_pin_file(&pin)?;
    let token = dir.join("vault-token");
    sandbox::write_secret_file(&token, w.bao.root_token().expose_secret().as_bytes())?;
    let kubeconfig = dir.join("kubeconfig");
    w.api.write_kubeconfig(&kubeconfig)?;
    let vault_ca = w
        .bao
        .ca_cert_path()
        .context("the demo OpenBao server runs without TLS")?;

    let signer =
        ca_signing::SoftwareSigner::generate(ca_signing::KeyAlgorithm::EcdsaP384, "demo root key")?;
    let root = ca_signing::issue_root(&ca_signing::RootProfile::default(), &signer)?;
    let root_cert = dir.join("root-cert.pem");
    std::fs::write(&root_cert, root.pem()).context("writing the demo root certificate")?;
    let root_key = dir.join("root-key.pem");
    sandbox::write_secret_file(&root_key, &signer.private_key_pkcs8_pem()?)?;

    // A network HSM is reached with mTLS; SoftHSM2 is local and needs none, so the demo makes
    // a client certificate and key and a server certificate to store beside the PIN, and the
    // Vault secret carries the guide's four fields.
    let mut hsm_files = Vec::new();
    for (name, subject) in [
        ("hsm-client", "asm-demo HSM client"),
        ("hsm-server", "demo HSM"),
    ] {
        let key = ca_signing::SoftwareSigner::generate(ca_signing::KeyAlgorithm::EcdsaP256, name)?;
        let profile = ca_signing::RootProfile {
            subject: ca_signing::Subject::new("mesh-hsm demo", subject),
            validity_days: 30,
            key_algorithm: ca_signing::KeyAlgorithm::EcdsaP256,
        };
        let cert = dir.join(format!("{name}.pem"));
        std::fs::write(&cert, ca_signing::issue_root(&profile, &key)?.pem())
            .with_context(|| format!("writing {}", cert.display()))?;
        let key_file = dir.join(format!("{name}-key.pem"));
        sandbox::write_secret_file(&key_file, &key.private_key_pkcs8_pem()?)?;
        hsm_files.push((cert, key_file));
    }

    let mut config = Config::default();
    "demo".clone_into(&mut config.cluster.suffix);
    config.vault.hsm_client_cert = Some(hsm_files[0].0.clone());
    config.vault.hsm_client_key = Some(hsm_files[0].1.clone());
    config.vault.hsm_server_cert = Some(hsm_files[1].0.clone());
    config.cluster.kubeconfig = Some(kubeconfig);
    w.hsm.module_path().clone_into(&mut config.hsm.module);
    config.hsm.token_label = w.hsm.label().to_string();
    config.hsm.pin = SecretSource::File(pin);
    config.hsm.mode = mode.into();
    config.vault.address = w.bao.addr().to_string();
    config.vault.ca_cert = Some(vault_ca);
    config.vault.token = SecretSource::File(token);
    config.root_ca.cert = Some(root_cert);
    config.root_ca.key = Some(RootKey::File(root_key));
    config.injection.namespaces = vec![DEMO_NAMESPACE.to_owned()];
    config.injection.wait_seconds = 30;
    config.ingress.mode = IngressMode::Integrated;
    config.ingress.ip = Some(std::net::IpAddr::from([10, 200, 0, 34]));
    config.install.manifest = Some(dir.join("istio-operator.yaml"));
    config.install.out_dir = Some(dir.join("istiod-ca"));
    config.install.wait_seconds = 60;
    config.audit.log = Some(dir.join("audit.jsonl"));
    let text = toml::to_string(&config).context("rendering the demo configuration")?;
    let path = dir.join("meshca.toml");
    std::fs::write(&path, text).context("writing the demo configuration")?;
    Ok(path)
}

async fn flow(args: &DemoArgs, json: bool, quiet: bool) -> anyhow::Result<DemoReport> {
    let started = Instant::now();
    let w = world(quiet).await?;
    let config = write_config(&w, args.mode)?;
    let install = EmulatedInstall::new(
        w.api.cluster().clone(),
        w.bao.connection()?,
        w.hsm.module_path(),
    );
    let probe = HandshakeProbe(&install);
    let supplied = Supplied {
        installer: Some(&install),
        probe: Some(&probe),
    };
    let progress = Progress::for_stderr(quiet);
    let apply_all = |what: &'static str, mode: Mode| {
        say(quiet, what);
        run::execute(
            &config,
            Overrides::default(),
            None,
            &BUILT,
            mode,
            progress,
            supplied,
        )
    };
    let plan = apply_all("meshca plan", Mode::DryRun)
        .await?
        .map_err(|f| anyhow::Error::new(*f))?;
    let apply = apply_all("meshca apply", Mode::Apply)
        .await?
        .map_err(|f| anyhow::Error::new(*f))?;
    let reapply = apply_all("meshca apply, again: nothing may change", Mode::Apply)
        .await?
        .map_err(|f| anyhow::Error::new(*f))?;
    let reapply_unchanged = reapply.is_unchanged();

    let ca_dir = w.dir.path().join("istiod-ca");
    let chain_pem = std::fs::read_to_string(ca_dir.join(ca_signing::ops::files::CERT_CHAIN))
        .context("reading the signed chain step 10 wrote")?;
    let workload_chain_pem = install
        .with(|i| i.handshake().map(|h| h.server_chain_pem))
        .unwrap_or_default();
    let handshake = install.with(EmulatedIstiod::handshake).map(Handshake::from);

    let artefacts = write_artefacts(
        &args.out,
        &[
            (
                "root-cert.pem",
                ca_dir.join(ca_signing::ops::files::ROOT_CERT),
            ),
            (
                "cert-chain.pem",
                ca_dir.join(ca_signing::ops::files::CERT_CHAIN),
            ),
            ("ca-cert.pem", ca_dir.join(ca_signing::ops::files::CA_CERT)),
            (
                "istio-operator.yaml",
                w.dir.path().join("istio-operator.yaml"),
            ),
            ("audit.jsonl", w.dir.path().join("audit.jsonl")),
        ],
        &workload_chain_pem,
    )?;
    let mut report = DemoReport {
        mode: args.mode,
        plan,
        apply,
        reapply,
        reapply_unchanged,
        chain_pem,
        workload_chain_pem,
        handshake,
        artefacts,
        elapsed_ms: 0,
    };
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let report_path = args.out.join("report.json");
    std::fs::write(&report_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", report_path.display()))?;
    report.artefacts.push(report_path);
    print(&report, json)?;

    if args.keep {
        keep(&w, &install, &args.out).await?;
    }
    Ok(report)
}

fn write_artefacts(
    out: &Path,
    files: &[(&str, PathBuf)],
    workload_chain: &str,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    for (name, from) in files {
        let to = out.join(name);
        std::fs::copy(from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        written.push(to);
    }
    let to = out.join("workload-chain.pem");
    std::fs::write(&to, workload_chain).with_context(|| format!("writing {}", to.display()))?;
    written.push(to);
    Ok(written)
}

/// `--keep`: print how to reach every component, then wait for Ctrl-C.
async fn keep(w: &World, install: &EmulatedInstall, out_dir: &Path) -> anyhow::Result<()> {
    let socket = install
        .with(|i| Some(i.socket_path().to_owned()))
        .unwrap_or_default();
    // On stderr, so that `--output json` keeps stdout one JSON document.
    let mut out = std::io::stderr().lock();
    writeln!(out, "\nThe sandbox keeps running; Ctrl-C tears it down.")?;
    writeln!(
        out,
        "  export KUBECONFIG={}",
        w.dir.path().join("kubeconfig").display()
    )?;
    writeln!(out, "  export VAULT_ADDR={}", w.bao.addr())?;
    if let Some(ca) = w.bao.ca_cert_path() {
        writeln!(out, "  export VAULT_CACERT={}", ca.display())?;
    }
    writeln!(
        out,
        "  export VAULT_TOKEN=$(cat {})",
        w.dir.path().join("vault-token").display()
    )?;
    writeln!(
        out,
        "  export SOFTHSM2_CONF={}",
        std::env::var("SOFTHSM2_CONF").unwrap_or_default()
    )?;
    writeln!(out, "  plugin socket: {}", socket.display())?;
    writeln!(
        out,
        "  try: kubectl get pods -n istio-system; bao kv get asm-demo/hsm; \
         hsm-plugin verify-cert --socket {} -f {}",
        socket.display(),
        out_dir.join("cert-chain.pem").display()
    )?;
    drop(out);
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}

fn print(report: &DemoReport, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(report)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:>4}  {:<48} {:<14} {:>8}  {:<22} detail",
        "step", "title", "status", "ms", "apply / re-apply"
    )?;
    for (first, second) in report.apply.steps.iter().zip(&report.reapply.steps) {
        let mark = match first.status {
            StepStatus::Done => "✓",
            StepStatus::Failed | StepStatus::Blocked => "✗",
            _ => "-",
        };
        let changes = if first.status == StepStatus::Done {
            let changed = |r: &mesh_install::flow::StepReport| {
                r.changes.iter().filter(|c| c.outcome.is_change()).count()
            };
            format!("{} changed / {} changed", changed(first), changed(second))
        } else {
            String::new()
        };
        writeln!(
            out,
            "{:>4}  {:<48} {mark} {:<12} {:>8}  {:<22} {}",
            first.number,
            first.title,
            first.status.to_string(),
            first.elapsed_ms,
            changes,
            first.detail
        )?;
    }
    if let Some(h) = &report.handshake {
        writeln!(
            out,
            "\nmTLS {} ALPN {}: {} -> {}",
            h.protocol_version, h.alpn, h.client_identity, h.server_identity
        )?;
    }
    writeln!(
        out,
        "\nVerified chain (istiod CA, then root):\n{}",
        report.chain_pem.trim_end()
    )?;
    let done = report
        .apply
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Done)
        .count();
    writeln!(
        out,
        "\n{done} of {} steps ran ({:?} mode) against SoftHSM2, OpenBao, the emulated API server \
         and istiod in {:.1} s; second apply {}.",
        report.apply.steps.len(),
        report.mode,
        Duration::from_millis(report.elapsed_ms).as_secs_f64(),
        if report.reapply_unchanged {
            "changed nothing"
        } else {
            "CHANGED OBJECTS (not idempotent)"
        }
    )?;
    for a in &report.artefacts {
        writeln!(out, "  wrote {}", a.display())?;
    }
    Ok(())
}
