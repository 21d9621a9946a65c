//! Shared fixtures: HSM credential files, the step-5 spec, admin clients and read-back helpers.

pub(crate) mod kube;
pub(crate) mod tokens;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use sandbox::OpenBao;
use secrecy::{ExposeSecret as _, SecretString};
use std::time::Duration;

use vault_bootstrap::agent::{AgentConfig, OutputFiles, SecretLocation};
use vault_bootstrap::{
    BootstrapSpec, HsmCredentialFiles, HttpVault, KubernetesAuthConfig, KvVersion, Mode,
    RetryPolicy,
};

pub(crate) use kube::{Kubernetes, TokenReviewEndpoint};

/// Credential files with fresh random content; the values are kept for assertions.
pub(crate) struct Credentials {
    pub(crate) files: HsmCredentialFiles,
    pub(crate) pin: String,
    pub(crate) client_key: String,
    pub(crate) client_cert: String,
    pub(crate) server_cert: String,
}

pub(crate) fn write_credentials(dir: &Path) -> Credentials {
    let client = rcgen::generate_simple_self_signed(vec!["hsm-client".to_owned()]).unwrap();
    let server = rcgen::generate_simple_self_signed(vec!["hsm.example".to_owned()]).unwrap();
    let pin = format!("pin-{}", sandbox::random_string(16));
    let c = Credentials {
        files: HsmCredentialFiles {
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
            server_cert: dir.join("server.pem"),
            pin: dir.join("pin.txt"),
        },
        client_cert: client.cert.pem(),
        client_key: client.signing_key.serialize_pem(),
        server_cert: server.cert.pem(),
        pin,
    };
    sandbox::write_secret_file(&c.files.client_cert, c.client_cert.as_bytes()).unwrap();
    sandbox::write_secret_file(&c.files.client_key, c.client_key.as_bytes()).unwrap();
    sandbox::write_secret_file(&c.files.server_cert, c.server_cert.as_bytes()).unwrap();
    sandbox::write_secret_file(&c.files.pin, format!("{}\n", c.pin).as_bytes()).unwrap();
    c
}

/// The guide's configuration for suffix `c1`, pointing the Kubernetes auth at `reviewer`.
pub(crate) fn spec(
    reviewer: &TokenReviewEndpoint,
    pem_keys: Vec<String>,
    creds: &Credentials,
) -> BootstrapSpec {
    BootstrapSpec::for_cluster(
        "c1",
        KubernetesAuthConfig {
            kubernetes_host: reviewer.url.clone(),
            kubernetes_ca_cert: Some(reviewer.ca_pem.clone()),
            token_reviewer_jwt: Some(reviewer.reviewer_jwt.clone()),
            issuer: None,
            pem_keys,
            disable_local_ca_jwt: true,
        },
        Some(creds.files.read().unwrap()),
    )
    .unwrap()
}

/// An adapter holding the root token, retrying only briefly.
pub(crate) fn admin(bao: &OpenBao) -> HttpVault {
    let conn = bao.connection().unwrap().with_retry(quick_retry());
    HttpVault::new(conn, Some(bao.root_token())).unwrap()
}

pub(crate) fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        initial_backoff: std::time::Duration::from_millis(100),
        max_backoff: std::time::Duration::from_millis(400),
    }
}

/// `bao <args>` against the server, the token passed in the environment (never argv).
pub(crate) fn bao_cli(bao: &OpenBao, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(sandbox::bao_binary().unwrap());
    cmd.args(args)
        .env("BAO_ADDR", bao.addr().as_str())
        .env("BAO_TOKEN", bao.root_token().expose_secret())
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN");
    if let Some(ca) = bao.ca_cert_path() {
        cmd.env("BAO_CACERT", ca);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "bao {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `bao read -format=json <path>` → `data`.
pub(crate) fn bao_read(bao: &OpenBao, path: &str) -> serde_json::Value {
    let out = bao_cli(bao, &["read", "-format=json", path]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["data"].clone()
}

/// Raw authenticated request with the root token.
pub(crate) async fn root_request(
    bao: &OpenBao,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> reqwest::Response {
    let http = bao.connection().unwrap().http_client().unwrap();
    let mut req = http
        .request(method, format!("{}/v1/{path}", bao.addr()))
        .header("X-Vault-Token", bao.root_token().expose_secret());
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

/// A token holding only `policy` (no `default` policy).
pub(crate) async fn token_with_only(bao: &OpenBao, policy: &str) -> SecretString {
    let resp = root_request(
        bao,
        reqwest::Method::POST,
        "auth/token/create",
        Some(serde_json::json!({ "policies": [policy], "no_default_policy": true, "ttl": "10m" })),
    )
    .await;
    let doc: serde_json::Value = resp.json().await.unwrap();
    SecretString::from(doc["auth"]["client_token"].as_str().unwrap().to_owned())
}

pub(crate) struct Setup {
    pub(crate) kube: Kubernetes,
    pub(crate) creds: Credentials,
    pub(crate) spec: BootstrapSpec,
    pub(crate) dir: tempfile::TempDir,
}

/// Applies step 5 to `bao` against a real cluster, with OpenBao verifying JWT signatures
/// against the cluster's service-account key and asking its API server for a TokenReview.
pub(crate) async fn bootstrap(bao: &OpenBao) -> Setup {
    let kube = Kubernetes::start().await;
    let dir = tempfile::tempdir().unwrap();
    let creds = write_credentials(dir.path());
    let spec = spec(kube.endpoint(), vec![kube.public_key_pem()], &creds);
    vault_bootstrap::apply(&admin(bao), &spec, Mode::Apply)
        .await
        .unwrap();
    Setup {
        kube,
        creds,
        spec,
        dir,
    }
}

pub(crate) async fn agent_config(setup: &Setup, namespace: &str, account: &str) -> AgentConfig {
    let jwt = setup.dir.path().join(format!("{namespace}-{account}.jwt"));
    let token = setup.kube.issue(namespace, account).await;
    sandbox::write_secret_file(&jwt, token.expose_secret().as_bytes()).unwrap();
    AgentConfig {
        auth_path: setup.spec.login_path(),
        role: "istiod".into(),
        jwt_path: jwt,
        secret: SecretLocation::parse("asm-c1/hsm", KvVersion::V1).unwrap(),
        files: OutputFiles::in_dir(setup.dir.path().join("hsm")),
        refresh_interval: Duration::from_millis(300),
        retry_interval: Duration::from_millis(200),
        ready_file: Some(setup.dir.path().join("ready")),
    }
}

pub(crate) fn agent_vault(bao: &OpenBao) -> Arc<HttpVault> {
    let conn = bao.connection().unwrap().with_retry(quick_retry());
    Arc::new(HttpVault::new(conn, None).unwrap())
}

/// The four files hold `creds` (the PIN with a newline) with mode 0600.
pub(crate) fn assert_files(dir: &Path, creds: &Credentials) {
    use std::os::unix::fs::PermissionsExt as _;
    for (name, want) in [
        ("client-cert.pem", creds.client_cert.clone()),
        ("client-key.pem", creds.client_key.clone()),
        ("server-cert.pem", creds.server_cert.clone()),
        ("pin", format!("{}\n", creds.pin)),
    ] {
        let path = dir.join(name);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), want, "{name}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
}

/// Polls `cond` every 20 ms; fails the test after 60 s.
pub(crate) async fn wait_for(mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
