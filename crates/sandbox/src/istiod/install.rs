//! The install port ([`mesh_install::install::Installer`]) as the sandbox implements it: what
//! `istioctl install` and the profile do in a real cluster, done against the emulated API
//! server, with the [`EmulatedIstiod`] playing istiod from the values step 9 rendered.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mesh_install::install::{InstallError, Installer, MeshProbe};
use serde_json::Value;

use super::{EmulatedIstiod, IstiodConfig, IstiodPhase, names};
use crate::kube::Cluster;

/// The demo server workload the probe reports on.
const PROBE_TARGET: &str = "httpbin.demo:9080, the demo server workload";

/// The install port of the sandbox: records the `IstioOperator` as `istioctl` does, creates
/// the ingress gateway the profile brings, and starts the emulated istiod with the values
/// step 9 rendered (a re-install replaces it).
pub struct EmulatedInstall {
    cluster: Cluster,
    vault: vault_bootstrap::Connection,
    module: PathBuf,
    istiod: Mutex<Option<EmulatedIstiod>>,
}

impl EmulatedInstall {
    /// An installer for `cluster` whose istiod logs in to `vault` and opens tokens through
    /// the PKCS#11 module at `module`.
    pub fn new(
        cluster: Cluster,
        vault: vault_bootstrap::Connection,
        module: impl Into<PathBuf>,
    ) -> Self {
        Self {
            cluster,
            vault,
            module: module.into(),
            istiod: Mutex::new(None),
        }
    }

    fn config_from(&self, operator: &Value) -> Result<IstiodConfig, String> {
        let hsm = &operator["spec"]["values"]["hsm"];
        let field = |name: &str| {
            hsm[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("the IstioOperator has no values.hsm.{name}"))
        };
        let annotation = |name: &str| {
            operator["metadata"]["annotations"][name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("the IstioOperator has no annotation {name}"))
        };
        let mode = match annotation(mesh_install::install::MODE_ANNOTATION)?.as_str() {
            "compat" => kms_grpc::CaKeyMode::Compat,
            _ => kms_grpc::CaKeyMode::HsmKey,
        };
        let label = hsm_core::TokenLabel::new(field("hsmSlotLabel")?).map_err(|e| e.to_string())?;
        let kek = hsm_core::KekId::new(field("hsmKEKID")?).map_err(|e| e.to_string())?;
        let ca_id = hsm_core::CaId::new(annotation(mesh_install::install::CA_ID_ANNOTATION)?)
            .map_err(|e| e.to_string())?;
        let mut config = IstiodConfig::new(
            self.cluster.clone(),
            self.vault.clone(),
            field("vaultAuthPath")?,
            field("vaultSecretPath")?,
            &self.module,
            label,
            kek,
            ca_id,
            mode,
        )
        .map_err(|e| e.to_string())?;
        if let Some(rev) = operator["spec"]["revision"].as_str() {
            rev.clone_into(&mut config.revision);
        }
        Ok(config)
    }

    /// istiod's phase once it is `Ready` or failed, or after `timeout`; `None` before the
    /// install.
    async fn ready_phase(&self, timeout: Duration) -> Option<IstiodPhase> {
        let deadline = Instant::now() + timeout;
        loop {
            let phase = self.with(|i| Some(i.phase()))?;
            if matches!(phase, IstiodPhase::Ready) || phase.is_failed() || Instant::now() > deadline
            {
                return Some(phase);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `f` on the installed istiod (`None` before the install).
    pub fn with<T>(&self, f: impl FnOnce(&EmulatedIstiod) -> Option<T>) -> Option<T> {
        self.istiod.lock().ok()?.as_ref().and_then(f)
    }
}

#[async_trait::async_trait]
impl Installer for EmulatedInstall {
    fn describe(&self) -> String {
        "the emulated istiod".to_owned()
    }

    async fn install(&self, operator: &Value) -> Result<(), InstallError> {
        let backend = |reason: String| InstallError::Backend { reason };
        let config = self.config_from(operator).map_err(backend)?;
        let ns = operator["metadata"]["namespace"].as_str();
        let name = operator["metadata"]["name"].as_str().unwrap_or_default();
        self.cluster.delete("istiooperators", ns, name);
        self.cluster
            .create(operator.clone())
            .map_err(|e| backend(format!("recording the installed state: {e}")))?;
        for object in ingress_gateway(&config.revision) {
            let kind = if object["kind"] == "Service" {
                "services"
            } else {
                "deployments"
            };
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            if self.cluster.get(kind, ns, name).is_none() {
                self.cluster
                    .create(object)
                    .map_err(|e| backend(format!("creating the ingress gateway: {e}")))?;
            }
        }
        let istiod = EmulatedIstiod::start(config).map_err(|e| backend(e.to_string()))?;
        let mut slot = self
            .istiod
            .lock()
            .map_err(|_| backend("the istiod slot is poisoned".to_owned()))?;
        // A re-install replaces the running istiod (dropping the old one stops it).
        *slot = Some(istiod);
        Ok(())
    }
}

/// What the profile installs besides istiod: the ingress gateway's Deployment and its
/// `LoadBalancer` Service (step 13 gives it the external address).
pub fn ingress_gateway(revision: &str) -> [Value; 2] {
    let labels = serde_json::json!({"app": "istio-ingressgateway", "istio": "ingressgateway"});
    let namespace = names::ISTIO_NAMESPACE;
    [
        serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "istio-ingressgateway", "namespace": namespace,
                         "labels": labels, "annotations": {"istio.io/rev": revision}},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "istio-proxy", "image": "proxyv2"}]}}},
        }),
        serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "istio-ingressgateway", "namespace": namespace, "labels": labels},
            "spec": {"type": "LoadBalancer", "selector": labels, "ports": [
                {"name": "status-port", "port": 15021, "targetPort": 15021},
                {"name": "http2", "port": 80, "targetPort": 8080},
                {"name": "https", "port": 443, "targetPort": 8443},
            ]},
        }),
    ]
}

/// Step 11's probe in the sandbox: the chain the demo server workload presented in the
/// emulated istiod's mTLS handshake (ALPN `istio`), once istiod is ready.
pub struct HandshakeProbe<'a>(pub &'a EmulatedInstall);

#[async_trait::async_trait]
impl MeshProbe for HandshakeProbe<'_> {
    fn target(&self) -> String {
        PROBE_TARGET.to_owned()
    }

    async fn server_chain(&self) -> Result<String, InstallError> {
        let probe = |reason: String| InstallError::Probe {
            target: self.target(),
            reason,
        };
        match self.0.ready_phase(Duration::from_secs(30)).await {
            Some(IstiodPhase::Ready) => {}
            Some(IstiodPhase::Failed { reason }) => return Err(probe(reason)),
            Some(other) => return Err(probe(format!("istiod is still {other:?}"))),
            None => return Err(probe("istiod is not running".to_owned())),
        }
        self.0
            .with(|i| i.handshake().map(|h| h.server_chain_pem))
            .ok_or_else(|| probe("no handshake was recorded".to_owned()))
    }
}
