//! `meshca` as a process, against a real SoftHSM2 token, a real OpenBao server (TLS) and the
//! emulated Kubernetes API server.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns; a failed fixture is a failed test"
)]

use std::path::PathBuf;

use assert_cmd::Command;
use mesh_install::config::{Config, IngressMode, SecretSource};
use secrecy::ExposeSecret as _;
use serde_json::Value;

#[test]
fn steps_lists_the_guide_in_order_as_json() {
    let out = Command::cargo_bin("meshca")
        .unwrap()
        .args(["steps", "--output", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = doc.as_array().unwrap();
    assert_eq!(steps.len(), 14);
    assert_eq!(steps[5]["name"], "vault-setup");
    assert_eq!(steps[5]["owner"], "vault-bootstrap");
}

#[test]
fn demo_runs_the_built_steps_against_real_components() {
    let out = Command::cargo_bin("meshca")
        .unwrap()
        .args(["demo", "--output", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = doc["apply"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 14);
    for n in [1, 2, 3, 4, 5, 7, 8, 12] {
        assert_eq!(steps[n]["status"], "done", "step {n}: {}", steps[n]);
    }
    // The KEK, the anchor and the Vault objects were created by the first apply ...
    assert_eq!(steps[2]["changes"][0]["outcome"], "created");
    assert_eq!(steps[3]["changes"][0]["outcome"], "created");
    assert!(
        steps[5]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["object"] == "policy asm-demo-hsm-policy" && c["outcome"] == "created")
    );
    // ... and nothing changed the second time.
    assert_eq!(doc["reapply_unchanged"], true);
    // Every step not built says so instead of pretending.
    for n in [0, 6, 9, 10, 11] {
        assert_eq!(steps[n]["status"], "not_built", "step {n}");
    }
    assert_eq!(steps[13]["status"], "blocked");
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    Command::cargo_bin("meshca")
        .unwrap()
        .arg("no-such-command")
        .assert()
        .code(2);
}

#[test]
fn init_writes_a_sample_that_parses_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meshca.toml");
    let meshca = || {
        let mut cmd = Command::cargo_bin("meshca").unwrap();
        cmd.arg("--config").arg(&path);
        cmd
    };
    meshca().arg("init").assert().code(0);
    let config = Config::load(&path).unwrap();
    assert_eq!(config.cluster.revision, "asm-183-2");
    let out = meshca().arg("init").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    meshca().args(["init", "--force"]).assert().code(0);
}

#[test]
fn bad_config_exits_3_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[hsm]\ntoken-lable = \"asm-ca\"\n", "token-lable"),
        ("[cluster]\nsuffix = \"C 1\"\n", "cluster.suffix"),
        (
            "[hsm]\npin = { env = \"MESHCA_TEST_UNSET_PIN\" }\n",
            "hsm.pin",
        ),
    ];
    for (text, field) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::cargo_bin("meshca")
            .unwrap()
            .arg("--config")
            .arg(&path)
            .args(["hsm", "init"])
            .env_remove("MESHCA_TEST_UNSET_PIN")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{text}: {stderr}");
        assert!(stderr.contains(field), "{text}: {stderr}");
    }
    // A flag overrides the file and is validated like it.
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, "").unwrap();
    let out = Command::cargo_bin("meshca")
        .unwrap()
        .arg("--config")
        .arg(&path)
        .args(["--revision=bad revision!", "k8s", "control-plane"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("cluster.revision"), "{stderr}");
}

#[test]
fn a_missing_pkcs11_module_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meshca.toml");
    std::fs::write(
        &path,
        "[hsm]\nmodule = \"/nonexistent/libpkcs11.so\"\npin = { env = \"MESHCA_TEST_PIN\" }\n",
    )
    .unwrap();
    let out = Command::cargo_bin("meshca")
        .unwrap()
        .arg("--config")
        .arg(&path)
        .args(["hsm", "init"])
        .env("MESHCA_TEST_PIN", "1234")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("/nonexistent/libpkcs11.so"), "{stderr}");
}

/// A sandbox and a configuration file pointing at it; secrets only as 0600 files.
struct Env {
    dir: tempfile::TempDir,
    hsm: sandbox::SoftHsm,
    _bao: sandbox::OpenBao,
    api: sandbox::kube::ApiServer,
    config: PathBuf,
}

async fn sandbox_env() -> Env {
    sandbox::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let hsm = sandbox::SoftHsm::new("meshca-cli");
    let bao = sandbox::OpenBao::builder().tls(true).start().await.unwrap();
    let api = sandbox::kube::ApiServer::start().unwrap();
    api.cluster()
        .create(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"},
        }))
        .unwrap();
    let p = |name: &str| dir.path().join(name);
    hsm.write_user_pin_file(&p("pin")).unwrap();
    sandbox::write_secret_file(&p("token"), bao.root_token().expose_secret().as_bytes()).unwrap();
    api.write_kubeconfig(&p("kubeconfig")).unwrap();
    let signer =
        ca_signing::SoftwareSigner::generate(ca_signing::KeyAlgorithm::EcdsaP256, "root").unwrap();
    let root = ca_signing::issue_root(&ca_signing::RootProfile::default(), &signer).unwrap();
    std::fs::write(p("root.pem"), root.pem()).unwrap();

    let mut config = Config::default();
    config.cluster.kubeconfig = Some(p("kubeconfig"));
    hsm.module_path().clone_into(&mut config.hsm.module);
    config.hsm.token_label = hsm.label().to_string();
    config.hsm.pin = SecretSource::File(p("pin"));
    config.vault.address = bao.addr().to_string();
    config.vault.ca_cert = bao.ca_cert_path();
    config.vault.token = SecretSource::File(p("token"));
    config.root_ca.cert = Some(p("root.pem"));
    config.injection.namespaces = vec!["shop".to_owned()];
    config.ingress.mode = IngressMode::None;
    let path = p("meshca.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    Env {
        dir,
        hsm,
        _bao: bao,
        api,
        config: path,
    }
}

fn meshca(env: &Env, args: &[&str]) -> Value {
    let out = Command::cargo_bin("meshca")
        .unwrap()
        .arg("--config")
        .arg(&env.config)
        .args(["--output", "json"])
        .args(args)
        .envs(env.hsm.child_env().unwrap())
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "meshca {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No secret reaches the output or the logs.
    let pin = env.hsm.user_pin().expose_secret();
    for stream in [&out.stdout, &out.stderr] {
        assert!(
            !String::from_utf8_lossy(stream).contains(pin),
            "meshca {args:?} printed the PIN"
        );
    }
    serde_json::from_slice(&out.stdout).unwrap()
}

fn outcomes(report: &Value) -> Vec<String> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["changes"].as_array().unwrap().clone())
        .map(|c| c["outcome"].as_str().unwrap().to_owned())
        .collect()
}

fn exists(env: &Env, resource: &str, namespace: Option<&str>, name: &str) -> bool {
    env.api.cluster().get(resource, namespace, name).is_some()
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_then_reapply_is_unchanged_and_dry_run_changes_nothing() {
    let env = sandbox_env().await;

    let plan = meshca(&env, &["plan"]);
    assert_eq!(plan["dry_run"], true);
    assert!(outcomes(&plan).iter().any(|o| o == "would_create"));
    assert!(
        outcomes(&plan)
            .iter()
            .all(|o| o != "created" && o != "updated")
    );
    assert!(!exists(&env, "namespaces", None, "istio-system"));
    assert!(!exists(
        &env,
        "configmaps",
        Some("istio-system"),
        "vault-tls-cert"
    ));
    // `apply --dry-run` is the same plan.
    let dry = meshca(&env, &["apply", "--dry-run"]);
    assert_eq!(outcomes(&dry), outcomes(&plan));
    assert!(!exists(&env, "namespaces", None, "vault"));

    let first = meshca(&env, &["apply"]);
    assert!(outcomes(&first).iter().any(|o| o == "created"));
    assert!(exists(
        &env,
        "configmaps",
        Some("istio-system"),
        "vault-tls-cert"
    ));
    assert!(exists(&env, "services", Some("istio-system"), "istiod"));
    let shop = env.api.cluster().get("namespaces", None, "shop").unwrap();
    assert_eq!(shop["metadata"]["labels"]["istio.io/rev"], "asm-183-2");
    assert_eq!(first["steps"][2]["changes"][0]["outcome"], "created");

    let second = meshca(&env, &["apply"]);
    assert!(
        outcomes(&second).iter().all(|o| o == "unchanged"),
        "{second:#}"
    );
    let plan_after = meshca(&env, &["plan"]);
    assert!(outcomes(&plan_after).iter().all(|o| o == "unchanged"));

    // Per-step groups run only their steps.
    let cp = meshca(&env, &["k8s", "control-plane"]);
    assert_eq!(cp["steps"][7]["status"], "done");
    assert_eq!(cp["steps"][2]["status"], "skipped");
    let vault = meshca(&env, &["vault", "setup"]);
    assert_eq!(vault["steps"][5]["status"], "done");
    assert!(outcomes(&vault).iter().all(|o| o == "unchanged"));
    let hsm = meshca(&env, &["hsm", "init"]);
    assert_eq!(hsm["steps"][3]["changes"][0]["outcome"], "unchanged");
}
