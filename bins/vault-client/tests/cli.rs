//! `vault-client` against a real OpenBao server.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test on error")]

use assert_cmd::Command;
use sandbox::OpenBao;

fn client() -> Command {
    let mut cmd = Command::cargo_bin("vault-client").unwrap();
    for var in VAULT_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// Variables vault-client reads; cleared so the surrounding environment cannot leak in.
const VAULT_VARS: [&str; 9] = [
    "VAULT_ADDR",
    "VAULT_CACERT",
    "VAULT_CAPATH",
    "VAULT_NAMESPACE",
    "VAULT_AUTH_PATH",
    "VAULT_AUTH_ROLE",
    "VAULT_AUTH_JWT_PATH",
    "VAULT_SECRET_PATH",
    "HSM_CREDENTIALS_DIR",
];

#[tokio::test]
async fn tls_without_the_ca_fails_unless_verification_is_explicitly_off() {
    let bao = OpenBao::builder().tls(true).start().await.unwrap();
    let refused = client()
        .args(["health", "--vault-addr", bao.addr().as_str()])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("TLS"));
    let insecure = client()
        .args([
            "health",
            "--tls-skip-verify",
            "--vault-addr",
            bao.addr().as_str(),
        ])
        .output()
        .unwrap();
    assert!(
        insecure.status.success(),
        "{}",
        String::from_utf8_lossy(&insecure.stderr)
    );
}

#[tokio::test]
async fn a_ca_directory_is_trusted_like_a_ca_file() {
    let bao = OpenBao::builder().tls(true).start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(bao.ca_cert_path().unwrap(), dir.path().join("vault.pem")).unwrap();
    std::fs::write(dir.path().join("README"), "not a certificate").unwrap();
    let out = client()
        .args(["health", "--vault-addr", bao.addr().as_str()])
        .env("VAULT_CAPATH", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn health_of_a_tls_server_with_its_ca_as_json() {
    let bao = OpenBao::builder().tls(true).start().await.unwrap();
    let out = client()
        .args(["health", "--output", "json"])
        .env("VAULT_ADDR", bao.addr().as_str())
        .env("VAULT_CACERT", bao.ca_cert_path().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["initialized"], true);
    assert_eq!(doc["sealed"], false);
    assert_eq!(doc["addr"], bao.addr().as_str());
}

#[tokio::test]
async fn unreachable_server_exits_4_naming_the_address() {
    let mut bao = OpenBao::dev().await;
    let addr = bao.addr().to_string();
    bao.stop();
    let out = client()
        .args(["health", "--vault-addr", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&addr));
}

#[test]
fn invalid_address_exits_3_naming_it() {
    let out = client()
        .args(["health", "--vault-addr", "vault.example:8200"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("vault.example:8200"));
}

// --- the agent (`run`) -----------------------------------------------------------------------

#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with vault-bootstrap's tests"
)]
#[path = "../../../crates/vault-bootstrap/tests/it/support/kube.rs"]
mod kube;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::Kubernetes;
use secrecy::ExposeSecret as _;
use vault_bootstrap::{BootstrapSpec, HttpVault, KubernetesAuthConfig, Mode, SecretFields};

struct Env {
    bao: OpenBao,
    kube: Kubernetes,
    dir: tempfile::TempDir,
    pin: String,
}

/// OpenBao with step 5 applied, the Kubernetes auth pointing at the emulated API server.
async fn env(bao: OpenBao) -> Env {
    let kube = Kubernetes::start();
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
    fn jwt(&self, namespace: &str, account: &str) -> PathBuf {
        let path = self.dir.path().join("token");
        let token = self.kube.issue(namespace, account);
        sandbox::write_secret_file(&path, token.expose_secret().as_bytes()).unwrap();
        path
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("hsm")
    }

    fn run(&self, jwt: &Path) -> Command {
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

#[tokio::test]
async fn run_once_writes_the_four_files_privately() {
    let env = env(OpenBao::dev().await).await;
    let jwt = env.jwt("istio-system", "istiod-service-account");
    let out = env.run(&jwt).arg("--once").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for (name, want) in [
        ("client-cert.pem", "CLIENT CERT PEM".to_owned()),
        ("client-key.pem", "CLIENT KEY PEM".to_owned()),
        ("server-cert.pem", "SERVER CERT PEM".to_owned()),
        ("pin", format!("{}\n", env.pin)),
    ] {
        let path = env.out().join(name);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), want, "{name}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
    assert!(!stderr.contains(&env.pin), "the PIN is in the log");
    assert!(!stderr.contains("CLIENT KEY PEM"), "the key is in the log");
    // OpenBao asked the emulated API server, as the reviewer, whether the JWT is valid.
    env.kube.assert_reviews(1);
}

#[tokio::test]
async fn run_once_for_another_service_account_or_namespace_exits_1_saying_why() {
    let env = env(OpenBao::dev().await).await;
    for (namespace, account, expected) in [
        (
            "istio-system",
            "default",
            "service account name not authorized",
        ),
        (
            "default",
            "istiod-service-account",
            "namespace not authorized",
        ),
    ] {
        let jwt = env.jwt(namespace, account);
        let out = env.run(&jwt).arg("--once").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{namespace}/{account}: {stderr}"
        );
        assert!(stderr.contains(expected), "{namespace}/{account}: {stderr}");
        assert!(stderr.contains("auth/asm-c1/hsm/login"), "{stderr}");
        let token = std::fs::read_to_string(&jwt).unwrap();
        assert!(!stderr.contains(token.trim()), "the JWT is in the log");
        assert!(!env.out().join("pin").exists());
    }
}

#[tokio::test]
async fn run_once_against_a_sealed_server_exits_4() {
    let bao = OpenBao::builder()
        .storage(sandbox::Storage::Raft)
        .start()
        .await
        .unwrap();
    let env = env(bao).await;
    let http = env.bao.connection().unwrap().http_client().unwrap();
    let sealed = http
        .put(format!("{}/v1/sys/seal", env.bao.addr()))
        .header("X-Vault-Token", env.bao.root_token().expose_secret())
        .send()
        .await
        .unwrap();
    assert!(sealed.status().is_success());
    let jwt = env.jwt("istio-system", "istiod-service-account");
    let out = env.run(&jwt).arg("--once").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("sealed"), "{stderr}");
    assert!(stderr.contains(env.bao.addr().as_str()), "{stderr}");
}

#[tokio::test]
async fn run_once_with_the_wrong_ca_file_names_it() {
    let bao = OpenBao::builder().tls(true).start().await.unwrap();
    let env = env(bao).await;
    let wrong = env.dir.path().join("not-the-vault-ca.pem");
    let other = rcgen::generate_simple_self_signed(vec!["other".to_owned()]).unwrap();
    std::fs::write(&wrong, other.cert.pem()).unwrap();
    let jwt = env.jwt("istio-system", "istiod-service-account");
    let out = env
        .run(&jwt)
        .arg("--once")
        .env("VAULT_CACERT", &wrong)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("not-the-vault-ca.pem"), "{stderr}");
    assert!(stderr.contains("TLS"), "{stderr}");
}

#[tokio::test]
async fn run_serves_readiness_and_metrics_and_stops_on_sigterm() {
    let env = env(OpenBao::dev().await).await;
    let jwt = env.jwt("istio-system", "istiod-service-account");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ready_file = env.dir.path().join("ready");
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("vault-client"));
    for var in VAULT_VARS {
        cmd.env_remove(var);
    }
    cmd.env("VAULT_ADDR", env.bao.addr().as_str())
        .env("VAULT_AUTH_PATH", "asm-c1/hsm")
        .env("VAULT_SECRET_PATH", "asm-c1/hsm")
        .arg("run")
        .arg("--jwt-path")
        .arg(&jwt)
        .arg("--output-dir")
        .arg(env.out())
        .arg("--ready-file")
        .arg(&ready_file)
        .args(["--refresh-interval", "1s", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready_file.is_file());
    assert_eq!(
        std::fs::read_to_string(env.out().join("pin")).unwrap(),
        format!("{}\n", env.pin)
    );
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("vault_client_logins_total{result=\"success\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("vault_client_fetches_total{result=\"success\"}"));
    assert!(metrics.contains("vault_client_ready 1"));

    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0));
}
