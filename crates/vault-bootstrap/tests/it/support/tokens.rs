//! What OpenBao holds about the agent's tokens, read and set with the root token: the live
//! tokens issued through a login path, and the token settings of a Kubernetes auth role.
//!
//! Also compiled into `vault-client`'s tests (`#[path]`), so it uses only `sandbox`, `reqwest`,
//! `secrecy` and `serde_json`.

use sandbox::OpenBao;
use secrecy::ExposeSecret as _;
use serde_json::Value;

async fn root(bao: &OpenBao, method: &str, path: &str, body: Option<Value>) -> Value {
    let http = bao.connection().unwrap().http_client().unwrap();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = http
        .request(method.clone(), format!("{}/v1/{path}", bao.addr()))
        .header("X-Vault-Token", bao.root_token().expose_secret());
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{method} {path}: {status} {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    }
}

/// Service tokens alive in OpenBao that were issued by a login at `login_path`
/// (`auth/asm-c1/hsm/login`): every accessor is looked up, as an operator would.
pub(crate) async fn live_tokens(bao: &OpenBao, login_path: &str) -> usize {
    let list = root(bao, "LIST", "auth/token/accessors", None).await;
    let mut count = 0;
    for accessor in list["data"]["keys"].as_array().unwrap() {
        let info = root(
            bao,
            "POST",
            "auth/token/lookup-accessor",
            Some(serde_json::json!({ "accessor": accessor })),
        )
        .await;
        if info["data"]["path"] == login_path {
            count += 1;
        }
    }
    count
}

/// Updates the token settings (`token_ttl`, `token_max_ttl` in seconds, `token_type`, ...) of the
/// Kubernetes auth role `role` mounted at `auth/<mount>`, keeping its other fields.
pub(crate) async fn set_role_tokens(bao: &OpenBao, mount: &str, role: &str, settings: Value) {
    let path = format!("auth/{mount}/role/{role}");
    root(bao, "POST", &path, Some(settings.clone())).await;
    let read = root(bao, "GET", &path, None).await;
    for (key, want) in settings.as_object().unwrap() {
        assert_eq!(&read["data"][key], want, "{path}: {key}");
    }
}
