//! Shared fixtures: the `vault-client` command with a clean environment, and OpenBao with
//! step 5 applied against the real Kubernetes control plane.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use sandbox::OpenBao;
use secrecy::ExposeSecret as _;
use vault_bootstrap::{BootstrapSpec, HttpVault, KubernetesAuthConfig, Mode, SecretFields};

#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with vault-bootstrap's tests"
)]
#[path = "../../../../crates/vault-bootstrap/tests/it/support/kube.rs"]
mod kube;
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with vault-bootstrap's tests"
)]
#[path = "../../../../crates/vault-bootstrap/tests/it/support/tokens.rs"]
pub(crate) mod tokens;

pub(crate) use kube::Kubernetes;

/// `vault-client` with none of the variables it reads set.
pub(crate) fn client() -> Command {
    let mut cmd = Command::cargo_bin("vault-client").unwrap();
    for var in VAULT_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// The same as a `std` command, for tests that signal the process.
pub(crate) fn client_process() -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("vault-client"));
    for var in VAULT_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// Variables vault-client reads; cleared so the surrounding environment cannot leak in.
const VAULT_VARS: [&str; 10] = [
    "VAULT_ADDR",
    "VAULT_CACERT",
    "VAULT_CAPATH",
    "VAULT_NAMESPACE",
    "VAULT_AUTH_PATH",
    "VAULT_AUTH_ROLE",
    "VAULT_AUTH_JWT_PATH",
    "VAULT_SECRET_PATH",
    "HSM_CREDENTIALS_DIR",
    "RUST_LOG",
];

pub(crate) struct Env {
    pub(crate) bao: OpenBao,
    pub(crate) kube: Kubernetes,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) pin: String,
}

/// OpenBao with step 5 applied, the Kubernetes auth pointing at the real API server.
pub(crate) async fn env(bao: OpenBao) -> Env {
    let kube = Kubernetes::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pin = sandbox::random_string(12);
    let mut fields = SecretFields::new();
    fields.insert("clientcert", "CLIENT CERT PEM".into());
    fields.insert("clientkey", "CLIENT KEY PEM".into());
    fields.insert("servercert", "SERVER CERT PEM".into());
    fields.insert("PIN", pin.clone().into());
    let endpoint = kube.endpoint();
    let spec = BootstrapSpec::for_cluster(
        "c1",
        KubernetesAuthConfig {
            kubernetes_host: endpoint.url.clone(),
            kubernetes_ca_cert: Some(endpoint.ca_pem.clone()),
            token_reviewer_jwt: Some(endpoint.reviewer_jwt.clone()),
            pem_keys: vec![kube.public_key_pem()],
            disable_local_ca_jwt: true,
            ..KubernetesAuthConfig::default()
        },
        Some(fields),
    )
    .unwrap();
    let admin = HttpVault::new(bao.connection().unwrap(), Some(bao.root_token())).unwrap();
    vault_bootstrap::apply(&admin, &spec, Mode::Apply)
        .await
        .unwrap();
    Env {
        bao,
        kube,
        dir,
        pin,
    }
}

impl Env {
    pub(crate) async fn jwt(&self, namespace: &str, account: &str) -> PathBuf {
        let path = self.dir.path().join("token");
        let token = self.kube.issue(namespace, account).await;
        sandbox::write_secret_file(&path, token.expose_secret().as_bytes()).unwrap();
        path
    }

    pub(crate) fn out(&self) -> PathBuf {
        self.dir.path().join("hsm")
    }

    pub(crate) fn run(&self, jwt: &Path) -> Command {
        let mut cmd = client();
        cmd.arg("run")
            .env("VAULT_ADDR", self.bao.addr().as_str())
            .env("VAULT_AUTH_PATH", "auth/asm-c1/hsm/login")
            .env("VAULT_SECRET_PATH", "asm-c1/hsm")
            .args(["--retries", "2", "--timeout", "5s"])
            .arg("--jwt-path")
            .arg(jwt)
            .arg("--output-dir")
            .arg(self.out());
        cmd
    }
}
