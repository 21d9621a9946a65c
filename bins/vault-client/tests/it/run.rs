//! `vault-client run` against a real OpenBao whose Kubernetes auth asks a real API server.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use sandbox::OpenBao;
use secrecy::ExposeSecret as _;

use crate::support::tokens::live_tokens;
use crate::support::{Env, client_process, env};

/// Where istiod's tokens come from.
const LOGIN_PATH: &str = "auth/asm-c1/hsm/login";

#[tokio::test]
async fn run_once_writes_the_four_files_privately() {
    let env = env(OpenBao::dev().await).await;
    let jwt = env.jwt("istio-system", "istiod-service-account").await;
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
    // OpenBao asked the real API server, as the reviewer, whether the JWT is valid.
    env.kube.assert_reviews(1).await;
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
        let jwt = env.jwt(namespace, account).await;
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
    let jwt = env.jwt("istio-system", "istiod-service-account").await;
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
    let jwt = env.jwt("istio-system", "istiod-service-account").await;
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

/// `vault-client run` serving its status on a free port, stderr discarded.
fn spawn_run(env: &Env, jwt: &Path, extra: &[&str]) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = client_process()
        .env("VAULT_ADDR", env.bao.addr().as_str())
        .env("VAULT_AUTH_PATH", "asm-c1/hsm")
        .env("VAULT_SECRET_PATH", "asm-c1/hsm")
        .arg("run")
        .arg("--jwt-path")
        .arg(jwt)
        .arg("--output-dir")
        .arg(env.out())
        .args(["--refresh-interval", "1s", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(extra)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    (child, format!("http://127.0.0.1:{port}"))
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn signal(child: &std::process::Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn run_serves_readiness_and_metrics_and_on_sigterm_revokes_its_token_and_exits_0() {
    let env = env(OpenBao::dev().await).await;
    let jwt = env.jwt("istio-system", "istiod-service-account").await;
    let ready_file = env.dir.path().join("ready");
    let ready_arg = ready_file.to_str().unwrap();
    let (mut child, base) = spawn_run(&env, &jwt, &["--ready-file", ready_arg]);
    let http = reqwest::Client::new();
    wait_ready(&http, &base).await;
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
    assert_eq!(live_tokens(&env.bao, LOGIN_PATH).await, 1);

    signal(&child, "-TERM");
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0));
    assert_eq!(
        live_tokens(&env.bao, LOGIN_PATH).await,
        0,
        "the token outlived the sidecar"
    );
}

#[tokio::test]
async fn on_sigint_run_revokes_its_token_and_exits_130() {
    let env = env(OpenBao::dev().await).await;
    let jwt = env.jwt("istio-system", "istiod-service-account").await;
    let (mut child, base) = spawn_run(&env, &jwt, &[]);
    wait_ready(&reqwest::Client::new(), &base).await;
    assert_eq!(live_tokens(&env.bao, LOGIN_PATH).await, 1);
    signal(&child, "-INT");
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert_eq!(live_tokens(&env.bao, LOGIN_PATH).await, 0);
}
