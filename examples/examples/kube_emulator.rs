//! The sandbox's emulated Kubernetes API server: step 4's cluster side (namespace `vault`,
//! the `system:auth-delegator` binding, a reviewer token), then the real `kubectl` reading it
//! back through a kubeconfig. The token never reaches argv or the terminal.

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use std::process::Command;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let server = sandbox::kube::ApiServer::start()?;
    println!("emulated API server at {}", server.url());
    let cluster = server.cluster();
    cluster
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vault"}}))?;
    cluster.create(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "role-tokenreview-binding"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "vault"}],
    }))?;
    let reviewer = cluster.create_token("vault", "default", &[], Duration::from_secs(3600))?;
    let dir = tempfile::tempdir()?;
    sandbox::write_secret_file(
        &dir.path().join("c1-tokenreview_jwt"),
        reviewer.expose_secret().as_bytes(),
    )?;
    println!("reviewer token for vault/default written to c1-tokenreview_jwt (0600)");

    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    let out = Command::new("kubectl")
        .args(["get", "namespaces"])
        .env("KUBECONFIG", &kubeconfig)
        .env("KUBECACHEDIR", dir.path().join("cache"))
        .env("HOME", dir.path())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout)?;
    anyhow::ensure!(table.lines().any(|l| l.starts_with("vault ")));
    print!("{table}");
    println!("requests served: {}", cluster.requests().len());
    Ok(())
}
