use std::collections::HashMap;

use sandbox::{OpenBao, Storage};
use vaultrs::{kv1, kv2, sys};

#[tokio::test]
async fn dev_server_stores_and_returns_a_kv_secret() {
    let bao = OpenBao::dev().await;
    let client = bao.client().unwrap();

    let health = bao.connection().unwrap().health().await.unwrap();
    assert!(health.initialized && !health.sealed);
    assert!(!health.version.is_empty());

    // The guide's KV v1 mount, and the dev server's KV v2 `secret/`.
    let mut options = HashMap::new();
    options.insert("version".to_owned(), "1".to_owned());
    sys::mount::enable(
        &client,
        "asm-c1",
        "kv",
        Some(vaultrs::api::sys::requests::EnableEngineRequest::builder().options(options)),
    )
    .await
    .unwrap();
    let mut data = HashMap::new();
    data.insert("PIN", "1234");
    kv1::set(&client, "asm-c1", "hsm", &data).await.unwrap();
    let back: HashMap<String, String> = kv1::get(&client, "asm-c1", "hsm").await.unwrap();
    assert_eq!(back.get("PIN").map(String::as_str), Some("1234"));

    kv2::set(&client, "secret", "probe", &data).await.unwrap();
    let back: HashMap<String, String> = kv2::read(&client, "secret", "probe").await.unwrap();
    assert_eq!(back.get("PIN").map(String::as_str), Some("1234"));
}

#[tokio::test]
async fn tls_server_is_trusted_only_with_its_ca() {
    let bao = OpenBao::builder().tls(true).start().await.unwrap();
    assert!(bao.addr().is_tls());
    let ca = bao.ca_cert_path().unwrap();
    assert!(ca.is_file());

    let health = bao.connection().unwrap().health().await.unwrap();
    assert!(!health.sealed);

    // Without the CA the certificate is rejected: verification is on.
    let bare = vault_bootstrap::Connection::new(bao.addr().clone());
    let err = bare.health().await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");

    let client = bao.client().unwrap();
    let mut data = HashMap::new();
    data.insert("k", "v");
    kv2::set(&client, "secret", "tls", &data).await.unwrap();
}

#[tokio::test]
async fn raft_storage_survives_a_restart() {
    let mut bao = OpenBao::builder()
        .storage(Storage::Raft)
        .start()
        .await
        .unwrap();
    let client = bao.client().unwrap();
    sys::mount::enable(&client, "kv", "kv", None).await.unwrap();
    let mut data = HashMap::new();
    data.insert("clientcert", "pem");
    kv1::set(&client, "kv", "hsm", &data).await.unwrap();

    bao.restart().await.unwrap();

    let client = bao.client().unwrap();
    let back: HashMap<String, String> = kv1::get(&client, "kv", "hsm").await.unwrap();
    assert_eq!(back.get("clientcert").map(String::as_str), Some("pem"));
}

#[tokio::test]
async fn stopped_server_is_reported_unavailable_with_its_address() {
    let mut bao = OpenBao::dev().await;
    let conn = bao.connection().unwrap();
    bao.stop();
    let err = conn.health().await.unwrap_err();
    assert!(err.is_unavailable());
    assert!(err.to_string().contains(bao.addr().as_str()), "{err}");
}
