//! Part 2: `meshca apply` against the guide's command sequence, on identical fresh sandboxes;
//! and the no-op re-apply.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::runtime::Runtime;

use crate::cluster::{self, APP_NAMESPACE, INGRESS_IP, Sandbox};
use crate::report::{Report, Target, Unit};

/// The guide-way script, kept in the crate as `scripts/guide-steps.sh`.
pub(crate) const GUIDE_SCRIPT: &str = include_str!("../scripts/guide-steps.sh");

/// The steps both sides perform.
const STEPS: [u64; 6] = [4, 5, 7, 8, 12, 13];
const SUFFIX: &str = "c1";
/// The guide's revision label, meshca's default.
const REVISION: &str = "asm-183-2";

/// Measures part 2 and adds its figures to `report`.
pub(crate) fn run(rt: &Runtime, out_dir: &Path, report: &mut Report) -> anyhow::Result<()> {
    // The guide's way first, on its own sandbox.
    let guide = {
        let sandbox = Sandbox::start(rt, "bench-guide")?;
        let api = cluster::api_server(true)?;
        let took = guide_steps(&sandbox, &api)?;
        let log = out_dir.join("guide-steps.log");
        std::fs::copy(sandbox.path("guide.log"), &log)
            .with_context(|| format!("copying the guide's output to {}", log.display()))?;
        check_cluster(&api, "the guide's commands")?;
        took
    };
    // meshca on an identical one.
    let sandbox = Sandbox::start(rt, "bench-apply")?;
    let api = cluster::api_server(true)?;
    let kubeconfig = sandbox.path("kubeconfig");
    api.write_kubeconfig(&kubeconfig)?;
    let config = sandbox.write_config("meshca.toml", &sandbox.config(SUFFIX, &kubeconfig))?;
    let first = cluster::meshca(sandbox.dir.path(), &config, &["apply"])?;
    first.require_done(&STEPS)?;
    check_cluster(&api, "meshca apply")?;
    let again = cluster::meshca(sandbox.dir.path(), &config, &["apply"])?;
    // The reports, with every step's time, are kept beside report.json.
    for (name, run) in [
        ("meshca-apply.json", &first),
        ("meshca-reapply.json", &again),
    ] {
        let path = out_dir.join(name);
        std::fs::write(&path, serde_json::to_string_pretty(&run.report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let apply_secs = first.secs_without_istiod_waits();
    let reapply_secs = again.secs_without_istiod_waits();
    let guide_secs = guide.as_secs_f64();

    report.info(
        2,
        "install.guide.seconds",
        "guide's command sequence (steps 4, 5, 7, 8, 12, 13): wall time",
        guide_secs,
        Unit::Seconds,
    );
    report.info(
        2,
        "install.apply.seconds",
        "meshca apply (steps 0-8, 12, 13): wall time",
        apply_secs,
        Unit::Seconds,
    );
    report.judged(
        2,
        "install.speedup",
        "guide's sequence time / meshca apply time",
        ratio(guide_secs, apply_secs),
        Unit::Ratio,
        Target::AtLeast(10.0),
    );
    report.info(
        2,
        "install.reapply.seconds",
        "meshca apply again (no-op): wall time",
        reapply_secs,
        Unit::Seconds,
    );
    report.info(
        2,
        "install.reapply.steps_seconds",
        "meshca apply again (no-op): time inside the steps",
        again.steps_secs(),
        Unit::Seconds,
    );
    report.judged(
        2,
        "install.reapply_fraction",
        "no-op re-apply time / first apply time",
        ratio(reapply_secs, apply_secs),
        Unit::Ratio,
        Target::Below(0.10),
    );
    #[allow(clippy::cast_precision_loss, reason = "a handful of changed objects")]
    let changed = again.changes() as f64;
    report.judged(
        2,
        "install.reapply_changes",
        "objects the no-op re-apply changed",
        changed,
        Unit::Count,
        Target::AtMost(0.0),
    );
    Ok(())
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// Runs the guide-way script against the sandbox and returns its wall time.
fn guide_steps(sandbox: &Sandbox, api: &sandbox::kube::ApiServer) -> anyhow::Result<Duration> {
    let work = sandbox.path("guide");
    std::fs::create_dir_all(&work)
        .with_context(|| format!("creating the guide directory {}", work.display()))?;
    let script = sandbox.path("guide-steps.sh");
    std::fs::write(&script, GUIDE_SCRIPT)
        .with_context(|| format!("writing {}", script.display()))?;
    let kubeconfig = sandbox.path("kubeconfig");
    api.write_kubeconfig(&kubeconfig)?;
    let bao = sandbox::bao_binary()?;
    let log = sandbox.path("guide.log");
    let log_file = std::fs::File::create(&log)
        .with_context(|| format!("creating the guide log {}", log.display()))?;
    let err_file = log_file
        .try_clone()
        .context("duplicating the guide log handle")?;
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .current_dir(&work)
        .env("HOME", &work)
        .env("KUBECONFIG", &kubeconfig)
        .env("KUBECACHEDIR", work.join(".kube-cache"))
        .env("VAULT_ADDR", sandbox.bao.addr().as_str())
        .env("VAULT_CACERT", &sandbox.vault_ca)
        .env("VAULT_TOKEN_FILE", &sandbox.vault_token)
        .env("HSM_PIN_FILE", &sandbox.pin)
        .env("CLUSTER_SUFFIX", SUFFIX)
        .env("REVISION", REVISION)
        .env("APP_NAMESPACE", APP_NAMESPACE)
        .env("INGRESS_IP", INGRESS_IP)
        .env("BAO", &bao)
        .env_remove("VAULT_TOKEN")
        .env_remove("BAO_TOKEN")
        .env_remove("KUBECTL_EXTERNAL_DIFF")
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(err_file);
    let started = Instant::now();
    let status = cmd.status().context("running bash for the guide's steps")?;
    let took = started.elapsed();
    anyhow::ensure!(
        status.success(),
        "the guide's command sequence failed ({status}); its output ends with:\n{}",
        tail(&log)
    );
    Ok(took)
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Both sides must leave the cluster in the state the guide describes.
fn check_cluster(api: &sandbox::kube::ApiServer, who: &str) -> anyhow::Result<()> {
    let c = api.cluster();
    let ns = c
        .get("namespaces", None, APP_NAMESPACE)
        .with_context(|| format!("{who}: namespace {APP_NAMESPACE} is gone"))?;
    anyhow::ensure!(
        ns["metadata"]["labels"]["istio.io/rev"] == REVISION,
        "{who}: namespace {APP_NAMESPACE} does not carry istio.io/rev={REVISION}"
    );
    let gateway = c
        .get("services", Some("istio-system"), "istio-ingressgateway")
        .with_context(|| format!("{who}: the ingress gateway Service is gone"))?;
    anyhow::ensure!(
        gateway["spec"]["loadBalancerIP"] == INGRESS_IP,
        "{who}: istio-ingressgateway has no loadBalancerIP {INGRESS_IP}"
    );
    for (resource, namespace, name) in [
        ("clusterrolebindings", None, "role-tokenreview-binding"),
        ("configmaps", Some("istio-system"), "vault-tls-cert"),
        ("services", Some("istio-system"), "istiod"),
    ] {
        anyhow::ensure!(
            c.get(resource, namespace, name).is_some(),
            "{who}: {resource} {name} was not created"
        );
    }
    Ok(())
}
