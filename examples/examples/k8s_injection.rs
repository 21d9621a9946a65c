//! Step 12 of the guide against the emulated API server: a namespace still labelled
//! `istio-injection=enabled` with a running deployment is moved to `istio.io/rev=asm-183-2`,
//! the deployment is restarted, and the example waits (with progress) until its pods carry the
//! revision label. A second run changes nothing.

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use k8s_bootstrap::wait::WaitOptions;
use k8s_bootstrap::{KubeClient, Mode, injection, names};
use secrecy::ExposeSecret as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sandbox::init_crypto();
    let server = sandbox::kube::ApiServer::start()?;
    let cluster = server.cluster();
    cluster.create(serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}}))?;
    cluster.create(
        serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}),
    )?;

    let kubeconfig = kube::config::Kubeconfig::from_yaml(
        server.kubeconfig_yaml(server.admin_token()).expose_secret(),
    )?;
    let kube = KubeClient::from_kubeconfig(kubeconfig, None).await?;
    for mode in [Mode::DryRun, Mode::Apply, Mode::Apply] {
        let report = injection::enable_injection(
            &kube,
            "shop",
            names::DEFAULT_REVISION,
            WaitOptions::default(),
            mode,
            &mut |progress| println!("  pods: {progress}"),
        )
        .await?;
        println!("--- {mode:?}\n{report}");
    }
    Ok(())
}
