//! `vault-client health` against real OpenBao servers, plain and TLS.

use sandbox::OpenBao;

use crate::support::client;

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
