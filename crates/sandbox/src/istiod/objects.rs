//! The istiod objects in the emulated API: namespace, ServiceAccount, Deployment, the pod
//! readiness `kubectl get pods` shows, and the two CA Secrets.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::error::{IstiodError, IstiodResult};
use super::names;
use crate::kube::Cluster;

/// The containers of the istiod pod, in order; `discovery` is ready only once the CA is loaded.
pub(crate) const CONTAINERS: [&str; 3] = ["discovery", "hsm-plugin", "vault-client"];

/// The label selecting the istiod pods.
pub(crate) const APP_LABEL: &str = "istiod";

/// Creates `namespace` when missing.
pub(crate) fn ensure_namespace(cluster: &Cluster, namespace: &str) -> IstiodResult<()> {
    if cluster.get("namespaces", None, namespace).is_none() {
        cluster
            .create(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
            )
            .map_err(IstiodError::kube(format!("creating namespace {namespace}")))?;
    }
    Ok(())
}

/// Creates ServiceAccount `istio-system/istiod-service-account` when missing.
pub(crate) fn ensure_service_account(cluster: &Cluster) -> IstiodResult<()> {
    ensure_namespace(cluster, names::ISTIO_NAMESPACE)?;
    if cluster
        .get(
            "serviceaccounts",
            Some(names::ISTIO_NAMESPACE),
            names::SERVICE_ACCOUNT,
        )
        .is_none()
    {
        cluster
            .create(json!({
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": names::SERVICE_ACCOUNT, "namespace": names::ISTIO_NAMESPACE},
            }))
            .map_err(IstiodError::kube("creating the istiod ServiceAccount"))?;
    }
    Ok(())
}

/// The Deployment name of a revision (`istiod-asm-183-2`).
pub(crate) fn deployment_name(revision: &str) -> String {
    format!("istiod-{revision}")
}

/// Creates the istiod Deployment of `revision` (its controller creates the pod) when missing.
pub(crate) fn ensure_deployment(
    cluster: &Cluster,
    revision: &str,
    images: &[(&str, &str); 3],
) -> IstiodResult<()> {
    let name = deployment_name(revision);
    if cluster
        .get("deployments", Some(names::ISTIO_NAMESPACE), &name)
        .is_some()
    {
        return Ok(());
    }
    let labels = json!({"app": APP_LABEL, "istio": "pilot", "istio.io/rev": revision});
    let containers: Vec<Value> = images
        .iter()
        .map(|(container, image)| json!({"name": container, "image": image}))
        .collect();
    cluster
        .create(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": names::ISTIO_NAMESPACE, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": APP_LABEL, "istio.io/rev": revision}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": names::SERVICE_ACCOUNT,
                        "containers": containers,
                    },
                },
            },
        }))
        .map_err(IstiodError::kube(format!("creating Deployment {name}")))?;
    Ok(())
}

/// The names of the istiod pods of `revision`.
pub(crate) fn pod_names(cluster: &Cluster, revision: &str) -> Vec<String> {
    cluster
        .list("pods", Some(names::ISTIO_NAMESPACE))
        .into_iter()
        .filter(|p| {
            p["metadata"]["labels"]["app"] == APP_LABEL
                && p["metadata"]["labels"]["istio.io/rev"] == revision
        })
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

/// Sets the readiness of the `discovery` container of every istiod pod (the other two are
/// ready) and the pod's `Ready`/`ContainersReady` conditions, as the kubelet would report
/// them, so `kubectl get pods` shows `2/3` or `3/3`; the Deployment's ready and available
/// replicas follow (`0/1` or `1/1`).
///
/// The emulator keeps a pod's status across API writes (its status subresource included),
/// so the status is written into the cluster's store directly, with a new resourceVersion.
pub(crate) fn set_discovery_ready(cluster: &Cluster, revision: &str, ready: bool) {
    let pods = pod_names(cluster, revision);
    let mut st = cluster.shared.lock();
    let keys: Vec<_> = st
        .objects
        .iter()
        .filter(|(_, v)| {
            v["kind"] == "Pod"
                && v["metadata"]["namespace"] == names::ISTIO_NAMESPACE
                && v["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| pods.iter().any(|p| p == n))
        })
        .map(|(k, _)| k.clone())
        .collect();
    let deployment = deployment_name(revision);
    let deployment_key = st
        .objects
        .iter()
        .find(|(_, v)| {
            v["kind"] == "Deployment"
                && v["metadata"]["namespace"] == names::ISTIO_NAMESPACE
                && v["metadata"]["name"] == deployment.as_str()
        })
        .map(|(k, _)| k.clone());
    for key in keys {
        st.rv += 1;
        let rv = st.rv;
        if let Some(pod) = st.objects.get_mut(&key) {
            pod["status"] = pod_status(&pod["status"], ready);
            pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        }
    }
    if let Some(key) = deployment_key {
        st.rv += 1;
        let rv = st.rv;
        if let Some(dep) = st.objects.get_mut(&key) {
            let count = if ready {
                dep["spec"]["replicas"].clone()
            } else {
                json!(0)
            };
            dep["status"]["readyReplicas"] = count.clone();
            dep["status"]["availableReplicas"] = count;
            if let Some(list) = dep["status"]["conditions"].as_array_mut() {
                for c in list.iter_mut().filter(|c| c["type"] == "Available") {
                    c["status"] = json!(if ready { "True" } else { "False" });
                    c["reason"] = json!(if ready {
                        "MinimumReplicasAvailable"
                    } else {
                        "MinimumReplicasUnavailable"
                    });
                }
            }
            dep["metadata"]["resourceVersion"] = json!(rv.to_string());
        }
    }
}

fn pod_status(status: &Value, ready: bool) -> Value {
    let mut status = status.clone();
    if let Some(list) = status["containerStatuses"].as_array_mut() {
        for s in list {
            let is_discovery = s["name"] == CONTAINERS[0];
            s["ready"] = json!(!is_discovery || ready);
        }
    }
    if let Some(list) = status["conditions"].as_array_mut() {
        for c in list {
            if c["type"] == "Ready" || c["type"] == "ContainersReady" {
                c["status"] = json!(if ready { "True" } else { "False" });
                if ready {
                    if let Some(m) = c.as_object_mut() {
                        m.remove("reason");
                    }
                } else {
                    c["reason"] = json!("ContainersNotReady");
                }
            }
        }
    }
    status
}

/// Writes Secret `istio-system/istio-ca-cert-csr` with `data` (field → raw bytes), replacing
/// an earlier one (a restarted istiod makes a new CSR).
pub(crate) fn write_csr_secret(cluster: &Cluster, data: &[(&str, &[u8])]) -> IstiodResult<()> {
    let _ = cluster.delete(
        "secrets",
        Some(names::ISTIO_NAMESPACE),
        names::CA_CSR_SECRET,
    );
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(STANDARD.encode(v))))
        .collect();
    cluster
        .create(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": names::CA_CSR_SECRET, "namespace": names::ISTIO_NAMESPACE},
            "data": data,
        }))
        .map_err(IstiodError::kube(format!(
            "creating Secret {}/{}",
            names::ISTIO_NAMESPACE,
            names::CA_CSR_SECRET
        )))?;
    Ok(())
}

/// The PEM of `cert-chain.pem` in Secret `istio-system/istio-ca-cert`, once it exists.
pub(crate) fn read_ca_chain(cluster: &Cluster) -> IstiodResult<Option<Vec<u8>>> {
    let Some(secret) = cluster.get(
        "secrets",
        Some(names::ISTIO_NAMESPACE),
        names::CA_CERT_SECRET,
    ) else {
        return Ok(None);
    };
    let value = secret["data"][names::CERT_CHAIN_KEY]
        .as_str()
        .ok_or_else(|| IstiodError::CaSecret {
            reason: format!("it has no {} field", names::CERT_CHAIN_KEY),
        })?;
    STANDARD
        .decode(value)
        .map(Some)
        .map_err(|e| IstiodError::CaSecret {
            reason: format!("{} is not base64 ({e})", names::CERT_CHAIN_KEY),
        })
}
