//! `vault-client` against a real OpenBao server.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test on error")]

use assert_cmd::Command;
use sandbox::OpenBao;

fn client() -> Command {
    let mut cmd = Command::cargo_bin("vault-client").unwrap();
    cmd.env_remove("VAULT_ADDR").env_remove("VAULT_CACERT");
    cmd
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
