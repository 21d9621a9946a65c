//! A sandbox for the install figures (SoftHSM2 token, OpenBao over TLS, emulated API server)
//! and `meshca` runs against it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

use crate::procs;

/// The application namespace step 12 labels, with one Deployment in it.
pub(crate) const APP_NAMESPACE: &str = "shop";
/// The address step 13 gives the ingress gateway.
pub(crate) const INGRESS_IP: &str = "203.0.113.1";

/// One Vault and one HSM token, and the files meshca and the guide script read.
pub(crate) struct Sandbox {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) hsm: sandbox::SoftHsm,
    pub(crate) bao: sandbox::OpenBao,
    pub(crate) pin: PathBuf,
    pub(crate) vault_token: PathBuf,
    pub(crate) vault_ca: PathBuf,
    pub(crate) root_cert: PathBuf,
}

impl Sandbox {
    /// A fresh token, a fresh OpenBao (TLS) and the secret files (0600).
    pub(crate) fn start(rt: &Runtime, label: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("mesh-bench-{label}-"))
            .tempdir()
            .context("creating a sandbox directory")?;
        let hsm = sandbox::SoftHsm::builder()
            .label(label)
            .create()
            .context("creating a SoftHSM2 token")?;
        let bao = rt
            .block_on(sandbox::OpenBao::builder().tls(true).start())
            .context("starting OpenBao")?;
        let pin = dir.path().join("hsm-pin");
        hsm.write_user_pin_file(&pin)?;
        let vault_token = dir.path().join("vault-token");
        sandbox::write_secret_file(&vault_token, bao.root_token().expose_secret().as_bytes())?;
        let vault_ca = bao
            .ca_cert_path()
            .context("the sandbox OpenBao server runs without TLS")?;
        let signer = ca_signing::SoftwareSigner::generate(
            ca_signing::KeyAlgorithm::EcdsaP256,
            "bench root key",
        )?;
        let root = ca_signing::issue_root(&ca_signing::RootProfile::default(), &signer)?;
        let root_cert = dir.path().join("root-cert.pem");
        std::fs::write(&root_cert, root.pem()).context("writing the bench root certificate")?;
        Ok(Self {
            dir,
            hsm,
            bao,
            pin,
            vault_token,
            vault_ca,
            root_cert,
        })
    }

    /// A path in the sandbox directory.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The meshca configuration (TOML) for cluster `suffix` reached through `kubeconfig`,
    /// every secret as a file reference.
    pub(crate) fn config(&self, suffix: &str, kubeconfig: &Path) -> Value {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        json!({
            "cluster": {"suffix": suffix, "kubeconfig": path(kubeconfig)},
            "hsm": {
                "module": path(self.hsm.module_path()),
                "token-label": self.hsm.label().to_string(),
                "pin": {"file": path(&self.pin)},
            },
            "vault": {
                "address": self.bao.addr().to_string(),
                "ca-cert": path(&self.vault_ca),
                "token": {"file": path(&self.vault_token)},
            },
            "root-ca": {"cert": path(&self.root_cert)},
            "injection": {"namespaces": [APP_NAMESPACE], "wait-seconds": 60},
            "ingress": {"mode": "integrated", "ip": INGRESS_IP},
            // Steps 9 to 11 need a running istiod, which neither timed sequence includes:
            // render the install only.
            "install": {"method": "manual"},
        })
    }

    /// Writes `config` as `name` in the sandbox directory.
    pub(crate) fn write_config(&self, name: &str, config: &Value) -> anyhow::Result<PathBuf> {
        let text = toml::to_string(config).context("rendering a meshca configuration")?;
        let path = self.path(name);
        std::fs::write(&path, text)
            .with_context(|| format!("writing the meshca configuration {}", path.display()))?;
        Ok(path)
    }
}

/// An emulated API server as steps 9 and 12 find it: the application namespace with a
/// Deployment of two pods, and the ingress gateway Service that `istioctl install` (step 9,
/// not part of either timed sequence) leaves in `istio-system`.
pub(crate) fn api_server(with_workloads: bool) -> anyhow::Result<sandbox::kube::ApiServer> {
    let api = sandbox::kube::ApiServer::start().context("starting the emulated API server")?;
    if with_workloads {
        let cluster = api.cluster();
        for object in [
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APP_NAMESPACE}}),
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": APP_NAMESPACE},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
                    },
                },
            }),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}),
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
                "spec": {
                    "type": "LoadBalancer",
                    "selector": {"istio": "ingressgateway"},
                    "ports": [
                        {"name": "status-port", "port": 15020, "targetPort": 15020},
                        {"name": "http2", "port": 80, "targetPort": 8080},
                        {"name": "https", "port": 443, "targetPort": 8443},
                    ],
                },
            }),
        ] {
            cluster
                .create(object)
                .context("seeding the emulated API server")?;
        }
    }
    Ok(api)
}

/// A finished meshca run.
pub(crate) struct MeshcaRun {
    /// Wall time of the process.
    pub(crate) wall: Duration,
    /// Its `--output json` document.
    pub(crate) report: Value,
}

impl MeshcaRun {
    /// Wall time without the steps that wait for istiod (9 to 11), in seconds.
    pub(crate) fn secs_without_istiod_waits(&self) -> f64 {
        let waits: u64 = self
            .steps()
            .iter()
            .filter(|s| matches!(s["number"].as_u64(), Some(9..=11)))
            .filter_map(|s| s["elapsed_ms"].as_u64())
            .sum();
        (self.wall.as_secs_f64() - Duration::from_millis(waits).as_secs_f64()).max(0.0)
    }

    /// Time spent inside the steps (the rest is start-up, configuration and connections).
    pub(crate) fn steps_secs(&self) -> f64 {
        let ms: u64 = self
            .steps()
            .iter()
            .filter_map(|s| s["elapsed_ms"].as_u64())
            .sum();
        Duration::from_millis(ms).as_secs_f64()
    }

    fn steps(&self) -> &[Value] {
        self.report["steps"].as_array().map_or(&[], Vec::as_slice)
    }

    /// Fails unless every step in `numbers` is done.
    pub(crate) fn require_done(&self, numbers: &[u64]) -> anyhow::Result<()> {
        for n in numbers {
            let step = self
                .steps()
                .iter()
                .find(|s| s["number"].as_u64() == Some(*n))
                .with_context(|| format!("meshca's report has no step {n}"))?;
            let status = step["status"].as_str().unwrap_or_default();
            anyhow::ensure!(
                status == "done",
                "meshca step {n} ({}) is {status}, not done: {}",
                step["title"].as_str().unwrap_or_default(),
                step["detail"].as_str().unwrap_or_default()
            );
        }
        Ok(())
    }

    /// How many objects the run created or changed.
    pub(crate) fn changes(&self) -> usize {
        self.steps()
            .iter()
            .flat_map(|s| s["changes"].as_array().map_or(&[][..], Vec::as_slice))
            .filter(|c| {
                let outcome = c["outcome"].as_str().unwrap_or_default();
                outcome != "unchanged"
            })
            .count()
    }
}

/// Runs `meshca --config CONFIG --output json --quiet ARGS...` in `dir` and times it.
pub(crate) fn meshca(dir: &Path, config: &Path, args: &[&str]) -> anyhow::Result<MeshcaRun> {
    let bin = procs::sibling("meshca")?;
    let started = Instant::now();
    let out = Command::new(&bin)
        .arg("--config")
        .arg(config)
        .args(["--output", "json", "--quiet"])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let wall = started.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "meshca {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("meshca {} printed no JSON report", args.join(" ")))?;
    Ok(MeshcaRun { wall, report })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istiod_waits_are_taken_out_and_changes_counted() {
        let run = MeshcaRun {
            wall: Duration::from_secs(5),
            report: json!({"steps": [
                {"number": 4, "status": "done", "elapsed_ms": 300,
                 "changes": [{"outcome": "created"}, {"outcome": "unchanged"}]},
                {"number": 9, "status": "done", "elapsed_ms": 1500, "changes": []},
                {"number": 11, "status": "done", "elapsed_ms": 500, "changes": []},
                {"number": 12, "status": "blocked", "elapsed_ms": 10, "changes": [],
                 "title": "injection", "detail": "no istiod"},
            ]}),
        };
        assert!((run.secs_without_istiod_waits() - 3.0).abs() < 1e-9);
        assert_eq!(run.changes(), 1);
        assert!(run.require_done(&[4, 9]).is_ok());
        let err = run.require_done(&[12]).unwrap_err().to_string();
        assert!(
            err.contains("step 12") && err.contains("no istiod"),
            "{err}"
        );
        assert!(run.require_done(&[13]).is_err());
    }
}
