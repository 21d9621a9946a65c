//! Runnable examples of mesh-hsm's libraries, one scenario per file, each against the sandbox's
//! real components. Run one with `cargo run -p examples --example <name>`; `cargo xtask test`
//! runs them all.
//!
//! The library half holds set-up that several examples share.

use std::sync::Arc;

use k8s_bootstrap::KubeClient;
use k8s_bootstrap::vault_auth::ClusterEndpoint;
use mesh_install::config::Config;
use mesh_install::flow::{FlowSpec, Inputs, Ports};
use secrecy::ExposeSecret as _;

/// A fresh SoftHSM2 token whose label starts with `label`, opened and logged in as its user, as
/// the HSM examples need it: the fixture (which removes the token when dropped) and the shared
/// token handle.
///
/// # Errors
///
/// If SoftHSM2 is missing or the login fails.
pub fn user_token(label: &str) -> anyhow::Result<(sandbox::SoftHsm, Arc<hsm_core::HsmToken>)> {
    let hsm = sandbox::SoftHsm::builder().label(label).create()?;
    let token = hsm_core::HsmToken::open(
        hsm.module(),
        hsm.label(),
        hsm.user_pin().clone(),
        hsm_core::TokenOptions::default(),
    )?;
    Ok((hsm, Arc::new(token)))
}

/// Everything a whole `mesh-install` flow runs against: a SoftHSM2 token, a TLS OpenBao server
/// and the emulated API server, connected the way `meshca` connects them.
pub struct MeshSandbox {
    /// The token, logged in as its user.
    pub token: Arc<hsm_core::HsmToken>,
    /// The HSM port over [`MeshSandbox::token`].
    pub hsm_admin: hsm_core::HsmAdminService,
    /// The Vault port, with the server's root token.
    pub vault: vault_bootstrap::HttpVault,
    /// The Kubernetes port, as the API server's administrator.
    pub kube: KubeClient,
    endpoint: ClusterEndpoint,
    /// The emulated API server.
    pub api: sandbox::kube::ApiServer,
    /// The OpenBao server (TLS).
    pub bao: sandbox::OpenBao,
    /// The SoftHSM2 token, labelled `asm-ca`.
    pub hsm: sandbox::SoftHsm,
}

impl MeshSandbox {
    /// Installs the crypto provider, starts the three components and connects to each.
    ///
    /// # Errors
    ///
    /// If a component does not start or cannot be reached.
    pub async fn start() -> anyhow::Result<Self> {
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
        let token = Arc::new(token);
        let hsm_admin = hsm_core::HsmAdminService::new(Arc::clone(&token));
        let vault = vault_bootstrap::HttpVault::new(bao.connection()?, Some(bao.root_token()))?;
        let kubeconfig = kube::config::Kubeconfig::from_yaml(
            api.kubeconfig_yaml(api.admin_token()).expose_secret(),
        )?;
        let endpoint = ClusterEndpoint::from_kubeconfig(&kubeconfig, None)?;
        let kube = KubeClient::from_kubeconfig(kubeconfig, None).await?;
        Ok(Self {
            token,
            hsm_admin,
            vault,
            kube,
            endpoint,
            api,
            bao,
            hsm,
        })
    }

    /// The guide's default configuration pointed at this sandbox's token and Vault, validated
    /// and resolved into a flow with the token's user PIN and the API server's endpoint.
    /// Step 9 only renders (`install.method = "manual"`), so steps 10 and 11 report blocked;
    /// [`MeshSandbox::config`] with an installer runs them.
    ///
    /// # Errors
    ///
    /// If the configuration does not validate or resolve.
    pub fn flow_spec(&self) -> anyhow::Result<FlowSpec> {
        let mut config = self.config();
        config.install.method = mesh_install::config::InstallMethod::Manual;
        self.resolve(&config)
    }

    /// The guide's default configuration pointed at this sandbox's token and Vault.
    #[must_use]
    pub fn config(&self) -> Config {
        let mut config = Config::default();
        config.hsm.token_label = self.hsm.label().to_string();
        config.vault.address = self.bao.addr().to_string();
        config.vault.ca_cert = self.bao.ca_cert_path();
        config
    }

    /// `config`, validated and resolved with the token's user PIN and the API server's
    /// endpoint.
    ///
    /// # Errors
    ///
    /// If the configuration does not validate or a file it names cannot be read.
    pub fn resolve(&self, config: &Config) -> anyhow::Result<FlowSpec> {
        config.validate()?;
        Ok(FlowSpec::from_config(
            config,
            Inputs {
                endpoint: Some(self.endpoint.clone()),
                pin: Some(self.hsm.user_pin().clone()),
                tools: Vec::new(),
            },
        )?)
    }

    /// The HSM, Vault and Kubernetes ports (steps 9-11's are added by the caller).
    #[must_use]
    pub fn ports(&self) -> Ports<'_> {
        Ports {
            hsm: Some(&self.hsm_admin),
            vault: Some(&self.vault),
            kube: Some(&self.kube),
            ..Ports::default()
        }
    }
}
