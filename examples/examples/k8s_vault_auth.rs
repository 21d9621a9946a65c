//! Step 4 of the guide against the emulated API server: namespace `vault`, the TokenReview
//! ClusterRoleBinding, a reviewer JWT from the TokenRequest API, and the `c1-tokenreview_jwt`,
//! `c1-k8s_addr`, `c1-k8s_cert` files (0600). A dry run first, then the real run, then a
//! second run that changes nothing.

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use k8s_bootstrap::vault_auth::{ClusterEndpoint, VaultAuthSpec, prepare_vault_auth};
use k8s_bootstrap::{ClusterSuffix, KubeClient, Mode};
use secrecy::ExposeSecret as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sandbox::init_crypto();
    let server = sandbox::kube::ApiServer::start()?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(
        server.kubeconfig_yaml(server.admin_token()).expose_secret(),
    )?;
    let kube = KubeClient::from_kubeconfig(kubeconfig.clone(), None).await?;
    let endpoint = ClusterEndpoint::from_kubeconfig(&kubeconfig, None)?;
    println!(
        "API server {} (CA: {} certificate)",
        endpoint.addr,
        endpoint.ca.count()
    );

    let dir = tempfile::tempdir()?;
    let spec = VaultAuthSpec::files(ClusterSuffix::new("c1")?, dir.path());
    for mode in [Mode::DryRun, Mode::Apply, Mode::Apply] {
        let out = prepare_vault_auth(&kube, &spec, &endpoint, mode).await?;
        println!("--- {mode:?}\n{}", out.report);
        if mode == Mode::Apply && out.report.is_unchanged() {
            println!("second run: nothing to do");
        }
    }
    Ok(())
}
