//! Drift detection (`meshca status`) through `mesh-install`: apply the flow against a SoftHSM2
//! token, a TLS OpenBao server and the emulated API server, rewrite the Vault policy behind the
//! flow's back, and find it again with a dry run turned into status checks; the audit records of
//! the apply list what it created.

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use std::sync::Arc;

use k8s_bootstrap::KubeClient;
use k8s_bootstrap::vault_auth::ClusterEndpoint;
use mesh_common::Mode;
use mesh_install::config::Config;
use mesh_install::flow::{self, BUILT, FlowSpec, Inputs, Ports};
use mesh_install::status::{self, CheckState};
use secrecy::ExposeSecret as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sandbox::init_crypto();
    let hsm = sandbox::SoftHsm::builder().label("asm-ca").create()?;
    let bao = sandbox::OpenBao::builder().tls(true).start().await?;
    let api = sandbox::kube::ApiServer::start()?;

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

    let mut config = Config::default();
    config.hsm.token_label = hsm.label().to_string();
    config.vault.address = bao.addr().to_string();
    config.vault.ca_cert = bao.ca_cert_path();
    config.validate()?;
    let spec = FlowSpec::from_config(
        &config,
        Inputs {
            endpoint: Some(endpoint),
            pin: Some(hsm.user_pin().clone()),
            tools: Vec::new(),
        },
    )?;
    let ports = Ports {
        hsm: Some(&hsm_admin),
        vault: Some(&vault),
        kube: Some(&kube),
    };
    let mut quiet = |_: flow::Event<'_>| {};

    let applied = flow::run(&spec, ports, &BUILT, Mode::Apply, &mut quiet)
        .await
        .map_err(|failure| anyhow::Error::new(*failure))?;
    let audit = mesh_install::audit::records(&applied, "2026-01-01T00:00:00Z");
    println!("--- audit: {} change(s)", audit.len());
    for record in &audit {
        println!("{}", serde_json::to_string(record)?);
    }

    let checks = |report: &flow::FlowReport| status::checks(report);
    let clean = flow::run(&spec, ports, &BUILT, Mode::DryRun, &mut quiet)
        .await
        .map_err(|failure| anyhow::Error::new(*failure))?;
    anyhow::ensure!(
        status::is_clean(&checks(&clean)),
        "no drift right after the apply"
    );

    // Someone widens the policy by hand.
    vaultrs::sys::policy::set(
        &bao.client()?,
        "asm-c1-hsm-policy",
        r#"path "*" { capabilities = ["read", "list"] }"#,
    )
    .await?;
    let drifted = flow::run(&spec, ports, &BUILT, Mode::DryRun, &mut quiet)
        .await
        .map_err(|failure| anyhow::Error::new(*failure))?;
    println!("--- status after the policy was changed by hand");
    let found = checks(&drifted);
    for c in found.iter().filter(|c| c.state != CheckState::Ok) {
        println!("\u{2718} {} ({})", c.name, c.hint);
    }
    anyhow::ensure!(
        found
            .iter()
            .any(|c| c.state == CheckState::Drift && c.name == "policy asm-c1-hsm-policy"),
        "the changed policy is reported"
    );
    Ok(())
}
