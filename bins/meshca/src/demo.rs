//! `meshca demo`: the real flow against a fresh SoftHSM2 token, a real OpenBao server (TLS) and
//! the emulated Kubernetes API server, applied twice (the second run must change nothing).

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use mesh_common::Mode;
use mesh_install::config::{Config, IngressMode, Overrides, SecretSource};
use mesh_install::flow::{BUILT, FlowReport, StepStatus};
use secrecy::ExposeSecret as _;
use serde::Serialize;

use crate::run::{self, Progress};

/// The namespace the demo labels for injection (an application namespace that exists before
/// the mesh).
const DEMO_NAMESPACE: &str = "demo-app";

/// The demo's JSON document.
#[derive(Debug, Serialize)]
struct DemoReport {
    /// The first apply.
    apply: FlowReport,
    /// The second apply, which must change nothing.
    reapply: FlowReport,
    /// True when the second apply changed nothing.
    reapply_unchanged: bool,
    /// Wall time of the whole demo, in milliseconds.
    elapsed_ms: u64,
}

/// Runs the demo. SoftHSM2 reads `SOFTHSM2_CONF` once per process, so when it is not set
/// (meshca started outside cargo) the demo re-runs itself with a private configuration.
pub(crate) fn run(json: bool, quiet: bool) -> anyhow::Result<ExitCode> {
    if std::env::var_os("SOFTHSM2_CONF").is_none() {
        let dir = tempfile::tempdir().context("creating a SoftHSM2 directory for the demo")?;
        let exe = std::env::current_exe().context("locating the meshca binary")?;
        let status = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("SOFTHSM2_CONF", dir.path().join("softhsm2.conf"))
            .status()
            .context("re-running meshca demo with its own SoftHSM2 configuration")?;
        return Ok(status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .map_or(ExitCode::FAILURE, ExitCode::from));
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(flow(quiet))?;
    print(&report, json)?;
    Ok(if report.reapply_unchanged {
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

/// Writes the demo configuration: every secret as a 0600 file reference.
fn write_config(
    dir: &Path,
    hsm: &sandbox::SoftHsm,
    bao: &sandbox::OpenBao,
    api: &sandbox::kube::ApiServer,
) -> anyhow::Result<std::path::PathBuf> {
    let pin = dir.join("hsm-pin");
    hsm.write_user_pin_file(&pin)?;
    let token = dir.join("vault-token");
    sandbox::write_secret_file(&token, bao.root_token().expose_secret().as_bytes())?;
    let kubeconfig = dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig)?;
    let vault_ca = bao
        .ca_cert_path()
        .context("the demo OpenBao server runs without TLS")?;

    let signer =
        ca_signing::SoftwareSigner::generate(ca_signing::KeyAlgorithm::EcdsaP384, "demo root key")?;
    let root = ca_signing::issue_root(&ca_signing::RootProfile::default(), &signer)?;
    let root_cert = dir.join("root-cert.pem");
    std::fs::write(&root_cert, root.pem()).context("writing the demo root certificate")?;

    let mut config = Config::default();
    "demo".clone_into(&mut config.cluster.suffix);
    config.cluster.kubeconfig = Some(kubeconfig);
    hsm.module_path().clone_into(&mut config.hsm.module);
    config.hsm.token_label = hsm.label().to_string();
    config.hsm.pin = SecretSource::File(pin);
    config.vault.address = bao.addr().to_string();
    config.vault.ca_cert = Some(vault_ca);
    config.vault.token = SecretSource::File(token);
    config.root_ca.cert = Some(root_cert);
    config.injection.namespaces = vec![DEMO_NAMESPACE.to_owned()];
    config.injection.wait_seconds = 30;
    config.ingress.mode = IngressMode::Integrated;
    config.ingress.ip = Some(std::net::IpAddr::from([10, 200, 0, 34]));
    let text = toml::to_string(&config).context("rendering the demo configuration")?;
    let path = dir.join("meshca.toml");
    std::fs::write(&path, text).context("writing the demo configuration")?;
    Ok(path)
}

async fn flow(quiet: bool) -> anyhow::Result<DemoReport> {
    let started = Instant::now();
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
    let config = write_config(dir.path(), &hsm, &bao, &api)?;

    let progress = if quiet {
        Progress::Quiet
    } else {
        Progress::Lines
    };
    say(quiet, "meshca apply");
    let apply = run::execute(
        &config,
        Overrides::default(),
        None,
        &BUILT,
        Mode::Apply,
        progress,
    )
    .await?
    .map_err(|f| anyhow::Error::new(*f))?;
    say(quiet, "meshca apply, again: nothing may change");
    let reapply = run::execute(
        &config,
        Overrides::default(),
        None,
        &BUILT,
        Mode::Apply,
        progress,
    )
    .await?
    .map_err(|f| anyhow::Error::new(*f))?;
    let reapply_unchanged = reapply.is_unchanged();
    Ok(DemoReport {
        apply,
        reapply,
        reapply_unchanged,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
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
            StepStatus::Failed => "✗",
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
    let done = report
        .apply
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Done)
        .count();
    writeln!(
        out,
        "\n{done} of {} steps ran against SoftHSM2, OpenBao and the emulated API server in {:.1} s; \
         second apply {}.",
        report.apply.steps.len(),
        Duration::from_millis(report.elapsed_ms).as_secs_f64(),
        if report.reapply_unchanged {
            "changed nothing"
        } else {
            "CHANGED OBJECTS (not idempotent)"
        }
    )?;
    Ok(())
}
