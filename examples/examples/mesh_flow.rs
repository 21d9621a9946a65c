//! The built steps of the guide (0-8, 12, 13) as one flow through `mesh-install`,
//! in-process, against a SoftHSM2 token, a TLS OpenBao server and the emulated API server: a
//! plan, an apply, and a second apply that changes nothing.

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use std::sync::Arc;

use k8s_bootstrap::KubeClient;
use k8s_bootstrap::vault_auth::ClusterEndpoint;
use mesh_common::Mode;
use mesh_install::config::Config;
use mesh_install::flow::{self, BUILT, FlowSpec, Inputs, Ports};
use secrecy::ExposeSecret as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sandbox::init_crypto();
    let hsm = sandbox::SoftHsm::builder().label("asm-ca").create()?;
    let bao = sandbox::OpenBao::builder().tls(true).start().await?;
    let api = sandbox::kube::ApiServer::start()?;

    // The three ports, as meshca connects them.
    let token = hsm_core::HsmToken::open(
        hsm.module(),
        hsm.label(),
        hsm.user_pin().clone(),
        hsm_core::TokenOptions::default(),
    )?;
    let hsm_admin = hsm_core::HsmAdminService::new(Arc::new(token));
    let vault = vault_bootstrap::HttpVault::new(bao.connection()?, Some(bao.root_token()))?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(
        api.kubeconfig_yaml(api.admin_token()).expose_secret(),
    )?;
    let endpoint = ClusterEndpoint::from_kubeconfig(&kubeconfig, None)?;
    let kube = KubeClient::from_kubeconfig(kubeconfig, None).await?;

    // The guide's defaults, with this sandbox's token, Vault and a fresh root certificate.
    let mut config = Config::default();
    config.hsm.token_label = hsm.label().to_string();
    config.vault.address = bao.addr().to_string();
    config.vault.ca_cert = bao.ca_cert_path();
    let root_key = ca_signing::SoftwareSigner::generate(
        ca_signing::KeyAlgorithm::EcdsaP256,
        "example root key",
    )?;
    let root = ca_signing::issue_root(&ca_signing::RootProfile::default(), &root_key)?;
    config.validate()?;
    let mut spec = FlowSpec::from_config(
        &config,
        Inputs {
            endpoint: Some(endpoint),
            pin: Some(hsm.user_pin().clone()),
            tools: Vec::new(),
        },
    )?;
    spec.root_cert = Some(root.pem().into_bytes());

    let ports = Ports {
        hsm: Some(&hsm_admin),
        vault: Some(&vault),
        kube: Some(&kube),
    };
    for (round, mode) in [Mode::DryRun, Mode::Apply, Mode::Apply]
        .into_iter()
        .enumerate()
    {
        let mut quiet = |_: flow::Event<'_>| {};
        let report = flow::run(&spec, ports, &BUILT, mode, &mut quiet)
            .await
            .map_err(|failure| anyhow::Error::new(*failure))?;
        println!("--- {mode:?}\n{report}");
        anyhow::ensure!(
            report.is_unchanged() == (round == 2),
            "only the second apply may be free of changes"
        );
    }
    Ok(())
}
