//! Step 5 applied to a real OpenBao server.

use std::time::Duration;

use sandbox::OpenBao;
use secrecy::ExposeSecret as _;
use vault_bootstrap::{
    Connection, Error, HttpVault, KvVersion, Mode, ObjectKind, Outcome, Vault as _,
};

use crate::support::{self, Kubernetes};

fn assert_all_changed(report: &vault_bootstrap::Report) {
    assert_eq!(report.changes.len(), 7, "{report}");
    for c in &report.changes {
        assert!(
            matches!(c.outcome, Outcome::Created | Outcome::Updated),
            "{report}"
        );
    }
}

/// The guide's inputs against a real cluster that OpenBao asks for token reviews: the
/// cluster and the credential files' directory (both kept alive by the caller), the credentials
/// and the spec.
async fn inputs() -> (
    Kubernetes,
    tempfile::TempDir,
    support::Credentials,
    vault_bootstrap::BootstrapSpec,
) {
    let kube = Kubernetes::start().await;
    let dir = tempfile::tempdir().unwrap();
    let creds = support::write_credentials(dir.path());
    let spec = support::spec(kube.endpoint(), vec![], &creds);
    (kube, dir, creds, spec)
}

#[tokio::test]
async fn apply_creates_everything_and_a_second_apply_changes_nothing() {
    let bao = OpenBao::dev().await;
    let (kube, _dir, creds, spec) = inputs().await;
    let vault = support::admin(&bao);

    let first = vault_bootstrap::apply(&vault, &spec, Mode::Apply)
        .await
        .unwrap();
    assert_all_changed(&first);
    assert_eq!(
        first.outcome(ObjectKind::SecretsMount),
        Some(Outcome::Created)
    );
    let second = vault_bootstrap::apply(&vault, &spec, Mode::Apply)
        .await
        .unwrap();
    assert!(second.is_unchanged(), "{second}");

    // Read back with the bao CLI.
    let mount = support::bao_read(&bao, "sys/mounts/asm-c1");
    assert_eq!(mount["type"], "kv");
    assert_eq!(mount["options"]["version"], "1");
    assert_eq!(mount["config"]["max_lease_ttl"], 87_600 * 3600);
    let policy = support::bao_cli(&bao, &["policy", "read", "asm-c1-hsm-policy"]);
    assert_eq!(
        String::from_utf8_lossy(&policy.stdout).trim(),
        spec.policy_rules().trim()
    );
    let auth = support::bao_read(&bao, "sys/auth/asm-c1/hsm");
    assert_eq!(auth["type"], "kubernetes");
    let config = support::bao_read(&bao, "auth/asm-c1/hsm/config");
    assert_eq!(config["kubernetes_host"], kube.endpoint().url.as_str());
    assert_eq!(config["token_reviewer_jwt_set"], true);
    assert_eq!(
        config["kubernetes_ca_cert"].as_str().unwrap().trim(),
        kube.endpoint().ca_pem.trim()
    );
    let role = support::bao_read(&bao, "auth/asm-c1/hsm/role/istiod");
    assert_eq!(
        role["bound_service_account_names"],
        serde_json::json!(["istiod-service-account"])
    );
    assert_eq!(
        role["bound_service_account_namespaces"],
        serde_json::json!(["istio-system"])
    );
    assert_eq!(
        role["token_policies"],
        serde_json::json!(["asm-c1-hsm-policy"])
    );
    assert_eq!(role["token_ttl"], 768 * 3600);
    let secret = support::bao_read(&bao, "asm-c1/hsm");
    assert_eq!(secret["PIN"], creds.pin.as_str());
    assert_eq!(secret["clientkey"], creds.client_key.as_str());
    assert_eq!(secret["clientcert"], creds.client_cert.as_str());
    assert_eq!(secret["servercert"], creds.server_cert.as_str());
}

#[tokio::test]
async fn apply_over_tls_with_kv_v2_is_idempotent() {
    let bao = OpenBao::builder().tls(true).start().await.unwrap();
    let (_kube, _dir, creds, spec) = inputs().await;
    let spec = spec.with_kv_version(KvVersion::V2);
    // The CA is given as a file, as VAULT_CACERT would name it.
    let conn = Connection::new(bao.addr().clone())
        .with_ca_cert_file(&bao.ca_cert_path().unwrap())
        .unwrap()
        .with_retry(support::quick_retry());
    let vault = HttpVault::new(conn, Some(bao.root_token())).unwrap();

    let first = vault_bootstrap::apply(&vault, &spec, Mode::Apply)
        .await
        .unwrap();
    assert_all_changed(&first);
    let second = vault_bootstrap::apply(&vault, &spec, Mode::Apply)
        .await
        .unwrap();
    assert!(second.is_unchanged(), "{second}");
    let mount = support::bao_read(&bao, "sys/mounts/asm-c1");
    assert_eq!(mount["options"]["version"], "2");
    let policy = support::bao_cli(&bao, &["policy", "read", "asm-c1-hsm-policy"]);
    assert!(String::from_utf8_lossy(&policy.stdout).contains("path \"asm-c1/data/hsm\""));
    let secret = support::bao_read(&bao, "asm-c1/data/hsm");
    assert_eq!(secret["data"]["PIN"], creds.pin.as_str());
}

#[tokio::test]
async fn dry_run_reports_and_changes_nothing() {
    let bao = OpenBao::dev().await;
    let (_kube, _dir, _, spec) = inputs().await;
    let vault = support::admin(&bao);

    let plan = vault_bootstrap::plan(&vault, &spec).await.unwrap();
    assert!(plan.dry_run);
    assert!(
        plan.changes
            .iter()
            .all(|c| c.outcome == Outcome::WouldCreate),
        "{plan}"
    );
    assert!(vault.read_secrets_mount("asm-c1").await.unwrap().is_none());
    assert!(vault.read_auth_mount("asm-c1/hsm").await.unwrap().is_none());
    assert!(
        vault
            .read_policy("asm-c1-hsm-policy")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn changing_one_input_updates_only_that_object() {
    let bao = OpenBao::dev().await;
    let (_kube, _dir, creds, mut spec) = inputs().await;
    let vault = support::admin(&bao);
    vault_bootstrap::apply(&vault, &spec, Mode::Apply)
        .await
        .unwrap();

    // A new PIN in the PIN file: only the secret changes, and the report names the field.
    sandbox::write_secret_file(&creds.files.pin, b"new-pin-value\n").unwrap();
    spec.secret.as_mut().unwrap().fields = creds.files.read().unwrap();
    let report = vault_bootstrap::apply(&vault, &spec, Mode::Apply)
        .await
        .unwrap();
    let changed: Vec<_> = report.changed().iter().map(|c| c.kind).collect();
    assert_eq!(changed, [ObjectKind::Secret], "{report}");
    assert_eq!(report.changed()[0].differences, ["PIN"]);
    assert!(!report.to_string().contains("new-pin-value"));
    assert_eq!(
        support::bao_read(&bao, "asm-c1/hsm")["PIN"],
        "new-pin-value"
    );

    // A shorter role TTL: only the role changes.
    spec.auth.role.ttl = Duration::from_secs(3600);
    let report = vault_bootstrap::apply(&vault, &spec, Mode::Apply)
        .await
        .unwrap();
    let changed: Vec<_> = report
        .changed()
        .iter()
        .map(|c| (c.kind, c.outcome))
        .collect();
    assert_eq!(
        changed,
        [(ObjectKind::AuthRole, Outcome::Updated)],
        "{report}"
    );
    assert_eq!(
        support::bao_read(&bao, "auth/asm-c1/hsm/role/istiod")["token_ttl"],
        3600
    );

    // A tune changed behind our back is put back, and only the tune.
    support::bao_cli(&bao, &["secrets", "tune", "-max-lease-ttl=1h", "asm-c1/"]);
    let report = vault_bootstrap::apply(&vault, &spec, Mode::Apply)
        .await
        .unwrap();
    let changed: Vec<_> = report.changed().iter().map(|c| c.kind).collect();
    assert_eq!(changed, [ObjectKind::MountTune], "{report}");
    assert!(
        vault_bootstrap::apply(&vault, &spec, Mode::Apply)
            .await
            .unwrap()
            .is_unchanged()
    );
}

#[tokio::test]
async fn the_policy_grants_read_on_the_secret_and_nothing_else() {
    let bao = OpenBao::dev().await;
    let (_kube, _dir, creds, spec) = inputs().await;
    let admin = support::admin(&bao);
    vault_bootstrap::apply(&admin, &spec, Mode::Apply)
        .await
        .unwrap();
    // Another secret in the same mount, and one in the default kv v2 mount.
    let mut other = vault_bootstrap::SecretFields::new();
    other.insert("x", "y".into());
    admin
        .write_secret("asm-c1", KvVersion::V1, "other", &other)
        .await
        .unwrap();
    admin
        .write_secret("secret", KvVersion::V2, "hsm", &other)
        .await
        .unwrap();

    let token = support::token_with_only(&bao, "asm-c1-hsm-policy").await;
    let limited = HttpVault::new(bao.connection().unwrap(), Some(&token)).unwrap();
    let read = limited
        .read_secret("asm-c1", KvVersion::V1, "hsm")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.get("PIN").unwrap().expose_secret(), creds.pin);

    let write = limited
        .write_secret("asm-c1", KvVersion::V1, "hsm", &other)
        .await
        .unwrap_err();
    assert!(write.is_permission_denied(), "{write}");
    for (mount, version, path) in [
        ("asm-c1", KvVersion::V1, "other"),
        ("secret", KvVersion::V2, "hsm"),
    ] {
        let err = limited.read_secret(mount, version, path).await.unwrap_err();
        assert!(err.is_permission_denied(), "{mount}/{path}: {err}");
    }
    let err = limited.read_policy("asm-c1-hsm-policy").await.unwrap_err();
    assert!(err.is_permission_denied(), "{err}");
    // The secret is untouched.
    assert_eq!(
        support::bao_read(&bao, "asm-c1/hsm")["PIN"],
        creds.pin.as_str()
    );
}

#[tokio::test]
async fn a_wrong_ca_file_is_a_tls_error_naming_the_file() {
    let bao = OpenBao::builder().tls(true).start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("some-other-ca.pem");
    let other = rcgen::generate_simple_self_signed(vec!["other-ca".to_owned()]).unwrap();
    std::fs::write(&wrong, other.cert.pem()).unwrap();
    let conn = Connection::new(bao.addr().clone())
        .with_ca_cert_file(&wrong)
        .unwrap();
    let vault = HttpVault::new(conn, Some(bao.root_token())).unwrap();
    let err = vault.read_policy("default").await.unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("some-other-ca.pem"), "{text}");
    assert!(text.contains(bao.addr().as_str()), "{text}");
    assert!(err.is_unavailable());
}

#[tokio::test]
async fn a_sealed_server_is_unavailable_naming_the_address() {
    let bao = OpenBao::builder()
        .storage(sandbox::Storage::Raft)
        .start()
        .await
        .unwrap();
    let resp = support::root_request(&bao, reqwest::Method::PUT, "sys/seal", None).await;
    assert!(resp.status().is_success(), "{}", resp.status());
    let vault = support::admin(&bao);
    let err = vault.read_policy("default").await.unwrap_err();
    assert!(matches!(err, Error::Sealed { .. }), "{err:?}");
    assert!(err.is_unavailable());
    assert!(err.to_string().contains(bao.addr().as_str()), "{err}");
}

#[tokio::test]
async fn an_apply_interrupted_by_a_restart_converges_when_run_again() {
    let mut bao = OpenBao::builder()
        .storage(sandbox::Storage::Raft)
        .start()
        .await
        .unwrap();
    let (_kube, _dir, creds, spec) = inputs().await;
    let vault = HttpVault::new(
        bao.connection()
            .unwrap()
            .with_retry(vault_bootstrap::RetryPolicy::none()),
        Some(bao.root_token()),
    )
    .unwrap();

    // Part of the configuration is in place when the server goes away.
    vault_bootstrap::ensure_secrets_mount(&vault, &spec.mount, Mode::Apply)
        .await
        .unwrap();
    let interrupted = {
        let apply = vault_bootstrap::apply(&vault, &spec, Mode::Apply);
        let restart = async {
            bao.restart().await.unwrap();
        };
        let (result, ()) = tokio::join!(apply, restart);
        result
    };
    if let Err(err) = &interrupted {
        assert!(err.is_unavailable() || err.is_retryable(), "{err}");
    }
    let again = vault_bootstrap::apply(&vault, &spec, Mode::Apply)
        .await
        .unwrap();
    assert_eq!(
        again.outcome(ObjectKind::SecretsMount),
        Some(Outcome::Unchanged)
    );
    let third = vault_bootstrap::apply(&vault, &spec, Mode::Apply)
        .await
        .unwrap();
    assert!(third.is_unchanged(), "{third}");
    assert_eq!(
        support::bao_read(&bao, "asm-c1/hsm")["PIN"],
        creds.pin.as_str()
    );
}

#[tokio::test]
async fn apply_inside_a_namespace_stays_in_that_namespace() {
    let bao = OpenBao::dev().await;
    let created =
        support::root_request(&bao, reqwest::Method::POST, "sys/namespaces/mesh", None).await;
    assert!(created.status().is_success(), "{}", created.status());
    let (_kube, _dir, _, spec) = inputs().await;
    let conn = bao
        .connection()
        .unwrap()
        .with_namespace(Some("mesh".to_owned()));
    let vault = HttpVault::new(conn, Some(bao.root_token())).unwrap();
    let first = vault_bootstrap::apply(&vault, &spec, Mode::Apply)
        .await
        .unwrap();
    assert_all_changed(&first);
    assert!(
        vault_bootstrap::apply(&vault, &spec, Mode::Apply)
            .await
            .unwrap()
            .is_unchanged()
    );
    // The root namespace has none of it.
    let root = support::admin(&bao);
    assert!(root.read_secrets_mount("asm-c1").await.unwrap().is_none());
    assert!(
        root.read_policy("asm-c1-hsm-policy")
            .await
            .unwrap()
            .is_none()
    );
}
