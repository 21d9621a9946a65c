//! Part 3: peak resident memory (`VmHWM`) of the real `hsm-plugin` under a 16-client load and
//! of the real `vault-client` in its fetch-and-renew loop.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hsm_core::{GenerateDekRequest, HsmIstioKms, IstioConfig};
use secrecy::ExposeSecret as _;
use serde_json::json;
use tokio::runtime::Runtime;

use crate::plugin::{self, Op, Requests};
use crate::procs::{self, Guard};
use crate::report::{Report, Target, Unit};
use crate::stats::to_f64_u64;

/// How long each process is loaded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// The 16-client load on hsm-plugin.
    pub(crate) plugin_load: Duration,
    /// The vault-client loop.
    pub(crate) agent_run: Duration,
}

#[allow(
    clippy::cast_precision_loss,
    reason = "KiB counts of a process are far below 2^52"
)]
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Measures part 3 and adds its figures to `report`.
pub(crate) fn run(rt: &Runtime, settings: Settings, report: &mut Report) -> anyhow::Result<()> {
    let plugin = hsm_plugin(rt, settings.plugin_load)?;
    report.judged(
        3,
        "memory.hsm_plugin.peak_rss_mib",
        "hsm-plugin peak RSS under 16-client load",
        mib(plugin.peak_kib),
        Unit::MiB,
        Target::Below(24.0),
    );
    report.info(
        3,
        "memory.hsm_plugin.calls",
        "hsm-plugin calls served during the memory load",
        to_f64_u64(plugin.calls),
        Unit::Count,
    );
    let agent = vault_client(rt, settings.agent_run)?;
    report.judged(
        3,
        "memory.vault_client.peak_rss_mib",
        "vault-client peak RSS in its renew loop",
        mib(agent.peak_kib),
        Unit::MiB,
        Target::Below(12.0),
    );
    report.info(
        3,
        "memory.vault_client.fetches",
        "vault-client fetches during the memory run",
        to_f64_u64(agent.fetches),
        Unit::Count,
    );
    report.info(
        3,
        "memory.vault_client.renewals",
        "vault-client token renewals during the memory run",
        to_f64_u64(agent.renewals),
        Unit::Count,
    );
    Ok(())
}

struct PluginMemory {
    peak_kib: u64,
    calls: u64,
}

fn hsm_plugin(rt: &Runtime, load: Duration) -> anyhow::Result<PluginMemory> {
    let hsm = sandbox::SoftHsm::builder()
        .label("bench-memory")
        .create()
        .context("creating the memory bench SoftHSM2 token")?;
    let keys = plugin::prepare_token(&hsm)?;
    let dek = HsmIstioKms::new(Arc::clone(&keys.token), IstioConfig::default())
        .generate_dek_blocking(&GenerateDekRequest {
            kek_id: keys.kek.clone(),
        })?;
    let requests = Arc::new(Requests::new(&keys, &dek));
    drop(keys);

    let dir = tempfile::Builder::new()
        .prefix("mesh-bench-memory-")
        .tempdir()
        .context("creating the hsm-plugin directory")?;
    let pin = dir.path().join("pin");
    hsm.write_user_pin_file(&pin)?;
    let socket = dir.path().join("hsm-plugin.sock");
    let (log, file) = procs::log_file(dir.path(), "hsm-plugin.log")?;
    let child = Command::new(procs::sibling("hsm-plugin")?)
        .arg("serve")
        .env("SOCKET", &socket)
        .env("P11_LIB", hsm.module_path())
        .env("P11_TOKEN", hsm.label().as_str())
        .env("P11_PIN_FILE", &pin)
        .env("HSM_PLUGIN_METRICS_ADDR", "off")
        .env("HSM_PLUGIN_CA_KEY_MODE", "hsm-key")
        .env("HSM_PLUGIN_SIGNING_KEY_IDS", plugin::SIGNING_KEY_ID)
        .env("KMS_KEY_ID", plugin::KUBE_KEY_ID)
        .envs(hsm.child_env()?)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .context("starting hsm-plugin serve")?;
    let mut guard = Guard::new(child, "hsm-plugin serve", Some(log));

    let started = Instant::now();
    let clients = loop {
        guard.check_running()?;
        if socket.exists()
            && let Ok(clients) = rt.block_on(plugin::connect(&socket, 16))
            && let Some(first) = clients.first()
            && rt.block_on(first.is_serving()).unwrap_or(false)
        {
            break clients;
        }
        if started.elapsed() > Duration::from_secs(30) {
            anyhow::bail!(
                "hsm-plugin did not serve on {} within 30 s; its log ends with:\n{}",
                socket.display(),
                guard.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };

    let calls = rt.block_on(async {
        let deadline = Instant::now() + load;
        let mut set = tokio::task::JoinSet::new();
        for (i, client) in clients.into_iter().enumerate() {
            let requests = Arc::clone(&requests);
            set.spawn(async move {
                let mut n = 0u64;
                let mut k = i;
                while Instant::now() < deadline {
                    plugin::plugin_call(&client, &requests, Op::ALL[k % Op::ALL.len()]).await?;
                    k += 1;
                    n += 1;
                }
                Ok::<_, anyhow::Error>(n)
            });
        }
        let mut total = 0;
        while let Some(joined) = set.join_next().await {
            total += joined.context("a load task ended abnormally")??;
        }
        Ok::<_, anyhow::Error>(total)
    })?;
    guard.check_running()?;
    let peak_kib = procs::peak_rss_kib(guard.pid())?;
    guard.stop();
    Ok(PluginMemory { peak_kib, calls })
}

struct AgentMemory {
    peak_kib: u64,
    fetches: u64,
    renewals: u64,
}

/// Variables vault-client reads; cleared so the bench's environment cannot leak in.
const VAULT_VARS: [&str; 9] = [
    "VAULT_ADDR",
    "VAULT_CACERT",
    "VAULT_CAPATH",
    "VAULT_NAMESPACE",
    "VAULT_AUTH_PATH",
    "VAULT_AUTH_ROLE",
    "VAULT_AUTH_JWT_PATH",
    "VAULT_SECRET_PATH",
    "HSM_CREDENTIALS_DIR",
];

const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// OpenBao configured as step 5 leaves it, its Kubernetes auth calling the emulated API
/// server; the role's tokens live 6 s, so the agent renews within the run.
fn configure(
    rt: &Runtime,
    bao: &sandbox::OpenBao,
    api: &sandbox::kube::ApiServer,
) -> anyhow::Result<()> {
    let cluster = api.cluster();
    for object in [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vault"}}),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "role-tokenreview-binding"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:auth-delegator",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "vault"}],
        }),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}),
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "istiod-service-account", "namespace": "istio-system"},
        }),
    ] {
        cluster
            .create(object)
            .context("creating the vault-client cluster objects")?;
    }
    let reviewer = cluster.create_token("vault", "default", &[], TOKEN_LIFETIME)?;
    let mut fields = vault_bootstrap::SecretFields::new();
    fields.insert("clientcert", "CLIENT CERT PEM".into());
    fields.insert("clientkey", "CLIENT KEY PEM".into());
    fields.insert("servercert", "SERVER CERT PEM".into());
    fields.insert("PIN", sandbox::random_string(12).into());
    let mut spec = vault_bootstrap::BootstrapSpec::for_cluster(
        "mem",
        vault_bootstrap::KubernetesAuthConfig {
            kubernetes_host: api.url().to_owned(),
            kubernetes_ca_cert: Some(api.ca_pem().to_owned()),
            token_reviewer_jwt: Some(reviewer),
            pem_keys: vec![cluster.service_account_public_key_pem()],
            disable_local_ca_jwt: true,
            ..vault_bootstrap::KubernetesAuthConfig::default()
        },
        Some(fields),
    )?;
    spec.auth.role.ttl = Duration::from_secs(6);
    let admin = vault_bootstrap::HttpVault::new(bao.connection()?, Some(bao.root_token()))?;
    rt.block_on(vault_bootstrap::apply(
        &admin,
        &spec,
        vault_bootstrap::Mode::Apply,
    ))
    .context("configuring OpenBao for the vault-client run")?;
    Ok(())
}

fn vault_client(rt: &Runtime, run_for: Duration) -> anyhow::Result<AgentMemory> {
    let bao = rt
        .block_on(sandbox::OpenBao::builder().tls(true).start())
        .context("starting OpenBao for the vault-client run")?;
    let api = sandbox::kube::ApiServer::start().context("starting the emulated API server")?;
    configure(rt, &bao, &api)?;
    let cluster = api.cluster();
    let dir = tempfile::Builder::new()
        .prefix("mesh-bench-agent-")
        .tempdir()
        .context("creating the vault-client directory")?;
    let jwt = dir.path().join("token");
    let token = cluster.create_token(
        "istio-system",
        "istiod-service-account",
        &[],
        TOKEN_LIFETIME,
    )?;
    sandbox::write_secret_file(&jwt, token.expose_secret().as_bytes())?;
    let out = dir.path().join("hsm");
    let port = procs::free_port()?;
    let (log, file) = procs::log_file(dir.path(), "vault-client.log")?;
    let mut cmd = Command::new(procs::sibling("vault-client")?);
    for var in VAULT_VARS {
        cmd.env_remove(var);
    }
    cmd.arg("run")
        .env("VAULT_ADDR", bao.addr().as_str())
        .env(
            "VAULT_CACERT",
            bao.ca_cert_path()
                .context("the OpenBao server runs without TLS")?,
        )
        .env("VAULT_AUTH_PATH", "auth/asm-mem/hsm/login")
        .env("VAULT_SECRET_PATH", "asm-mem/hsm")
        .arg("--jwt-path")
        .arg(&jwt)
        .arg("--output-dir")
        .arg(&out)
        .args(["--refresh-interval", "250ms", "--retry-interval", "1s"])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file);
    let child = cmd.spawn().context("starting vault-client run")?;
    let mut guard = Guard::new(child, "vault-client run", Some(log));
    let started = Instant::now();
    procs::wait_until(
        "vault-client to write the PIN file",
        Duration::from_secs(30),
        || {
            guard.check_running()?;
            Ok(out.join("pin").is_file())
        },
    )?;
    let rest = run_for.saturating_sub(started.elapsed());
    std::thread::sleep(rest);
    guard.check_running()?;
    let peak_kib = procs::peak_rss_kib(guard.pid())?;
    let metrics = procs::http_get(port, "/metrics").unwrap_or_default();
    guard.stop();
    Ok(AgentMemory {
        peak_kib,
        fetches: metric(&metrics, "vault_client_fetches_total{result=\"success\"}"),
        renewals: metric(
            &metrics,
            "vault_client_token_renewals_total{result=\"success\"}",
        ),
    })
}

/// A counter's value from the Prometheus text, 0 when absent.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_the_exposition_text() {
        let text = "# HELP x\nvault_client_fetches_total{result=\"success\"} 17\n\
                    vault_client_fetches_total{result=\"failure\"} 1\n";
        assert_eq!(
            metric(text, "vault_client_fetches_total{result=\"success\"}"),
            17
        );
        assert_eq!(metric(text, "nothing"), 0);
    }
}
