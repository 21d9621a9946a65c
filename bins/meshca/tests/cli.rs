//! `meshca` as a process, against a real SoftHSM2 token, a real OpenBao server (TLS) and the
//! emulated Kubernetes API server.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns; a failed fixture is a failed test"
)]

use std::path::PathBuf;

use assert_cmd::Command;
use mesh_install::config::{Config, IngressMode, InstallMethod, SecretSource};
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

fn run_demo(mode: &str) -> (Value, tempfile::TempDir) {
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("meshca")
        .unwrap()
        .args(["demo", "--output", "json", "--mode", mode, "--out"])
        .arg(out_dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (serde_json::from_slice(&out.stdout).unwrap(), out_dir)
}

/// `openssl verify` of `leaf` against the root the demo wrote, with the chain as intermediates.
fn openssl_verifies(dir: &std::path::Path, leaf: &str) {
    let out = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.join("root-cert.pem"))
        .arg("-untrusted")
        .arg(dir.join("cert-chain.pem"))
        .arg(dir.join(leaf))
        .output()
        .expect("openssl is installed by `cargo xtask setup`");
    assert!(
        out.status.success(),
        "openssl verify {leaf}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn demo_runs_every_step_in_hsm_key_mode_and_its_chain_verifies_with_openssl() {
    let (doc, out) = run_demo("hsm-key");
    assert_eq!(doc["mode"], "hsm-key");
    // The plan ran first: everything would be created, steps 10-11 wait for the install.
    let plan = doc["plan"]["steps"].as_array().unwrap();
    assert_eq!(plan[2]["changes"][0]["outcome"], "would_create");
    assert_eq!(plan[10]["status"], "blocked");
    let steps = doc["apply"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 14);
    for (n, step) in steps.iter().enumerate() {
        let want = if n == 6 { "skipped" } else { "done" };
        assert_eq!(step["status"], want, "step {n}: {step}");
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
    // ... step 9 recorded the install, step 10 created istio-ca-cert ...
    assert!(
        steps[9]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(
                |c| c["object"] == "istiooperator istio-system/installed-state-asm-183-2"
                    && c["outcome"] == "created"
            )
    );
    assert!(
        steps[10]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(
                |c| c["object"] == "secret istio-system/istio-ca-cert" && c["outcome"] == "created"
            )
    );
    // ... step 11 checked everything, the mTLS probe included ...
    let checks = steps[11]["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["ok"] == true), "{checks:?}");
    assert!(
        checks
            .iter()
            .any(|c| c["name"].as_str().unwrap().starts_with("mTLS")),
        "{checks:?}"
    );
    assert_eq!(doc["handshake"]["alpn"], "istio");
    // ... and nothing changed the second time.
    assert_eq!(doc["reapply_unchanged"], true);
    assert!(
        doc["reapply"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["changes"].as_array().unwrap())
            .all(|c| c["outcome"] == "unchanged")
    );
    // Pre-flight ran its named checks; no release is configured in the demo.
    let checks = steps[0]["checks"].as_array().unwrap();
    for name in ["API server reachable", "Vault reachable"] {
        assert!(
            checks.iter().any(|c| c["name"] == name && c["ok"] == true),
            "{name}: {checks:?}"
        );
    }
    // The artefacts: the printed chain is the written one, and openssl accepts it and the
    // workload's chain against the written root.
    let chain = std::fs::read_to_string(out.path().join("cert-chain.pem")).unwrap();
    assert_eq!(doc["chain_pem"], chain);
    openssl_verifies(out.path(), "cert-chain.pem");
    openssl_verifies(out.path(), "workload-chain.pem");
    let yaml = std::fs::read_to_string(out.path().join("istio-operator.yaml")).unwrap();
    assert!(yaml.contains("hsmKEKID: asm-kek"), "{yaml}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["reapply_unchanged"], true);
    let audit = std::fs::read_to_string(out.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("secret istio-system/istio-ca-cert"),
        "{audit}"
    );
    assert!(
        !audit.contains("BEGIN"),
        "certificate or key material in the audit log"
    );
}

#[test]
fn demo_runs_in_compat_mode_too() {
    let (doc, out) = run_demo("compat");
    assert_eq!(doc["mode"], "compat");
    let steps = doc["apply"]["steps"].as_array().unwrap();
    for n in [9, 10, 11, 12, 13] {
        assert_eq!(steps[n]["status"], "done", "step {n}: {}", steps[n]);
    }
    assert_eq!(doc["reapply_unchanged"], true);
    openssl_verifies(out.path(), "cert-chain.pem");
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
    bao: sandbox::OpenBao,
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
    // No istioctl here: step 9 renders the file for the operator; steps 10-11 wait for an
    // istiod (the demo tests run them against the emulated one).
    config.install.method = InstallMethod::Manual;
    let path = p("meshca.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    Env {
        dir,
        hsm,
        bao,
        api,
        config: path,
    }
}

fn meshca_output(env: &Env, args: &[&str]) -> std::process::Output {
    Command::cargo_bin("meshca")
        .unwrap()
        .arg("--config")
        .arg(&env.config)
        .args(["--output", "json"])
        .args(args)
        .envs(env.hsm.child_env().unwrap())
        .current_dir(env.dir.path())
        .output()
        .unwrap()
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
    // The token holds exactly the KEK and the anchor, with the KEK never extractable.
    let list = meshca(&env, &["hsm", "list"]);
    let keks = list["keks"].as_array().unwrap();
    assert_eq!(keks.len(), 1, "{list:#}");
    assert_eq!(keks[0]["id"], "asm-kek");
    assert_eq!(keks[0]["extractable"], false);
    assert_eq!(keks[0]["sensitive"], true);
    let anchors = list["anchors"].as_array().unwrap();
    assert_eq!(anchors.len(), 1, "{list:#}");
    assert_eq!(anchors[0]["subject"], "CN=Root CA,O=Istio");
}

fn changed_objects(report: &Value) -> Vec<String> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["changes"].as_array().unwrap().clone())
        .filter(|c| c["outcome"] == "created" || c["outcome"] == "updated")
        .map(|c| c["object"].as_str().unwrap().to_owned())
        .collect()
}

fn audit_objects(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let record: Value = serde_json::from_str(l).unwrap();
            for key in ["time", "step", "plane", "object", "outcome"] {
                assert!(record.get(key).is_some(), "{key} missing in {l}");
            }
            record["object"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_appends_exactly_its_changes_to_the_audit_log_and_no_secret() {
    let env = sandbox_env().await;
    let audit = env.dir.path().join("meshca-audit.jsonl");
    meshca(&env, &["plan"]);
    assert!(!audit.exists(), "a dry run must not write the audit log");

    let first = meshca(&env, &["apply"]);
    let expected = changed_objects(&first);
    assert!(expected.iter().any(|o| o == "KEK asm-kek"), "{expected:?}");
    assert!(
        expected.iter().any(|o| o.starts_with("policy ")),
        "{expected:?}"
    );
    assert_eq!(audit_objects(&audit), expected);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&audit).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "audit log readable by others: {mode:o}");

    // A re-apply changes nothing and so appends nothing.
    meshca(&env, &["apply"]);
    assert_eq!(audit_objects(&audit), expected);

    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(
        !text.contains(env.hsm.user_pin().expose_secret()),
        "PIN in the audit log"
    );
    assert!(
        !text.contains(env.bao.root_token().expose_secret()),
        "Vault token in the audit log"
    );
    // Every JWT (the reviewer token included) starts with a base64url `{"`.
    assert!(!text.contains("eyJ"), "a JWT in the audit log");

    // `--audit-log` chooses another file.
    let other = env.dir.path().join("other.jsonl");
    let shop_ns = env.api.cluster().get("namespaces", None, "shop").unwrap();
    assert!(env.api.cluster().delete("namespaces", None, "shop"));
    let mut bare = shop_ns.clone();
    bare["metadata"] = serde_json::json!({"name": "shop"});
    env.api.cluster().create(bare).unwrap();
    meshca(&env, &["apply", "--audit-log", other.to_str().unwrap()]);
    let objects = audit_objects(&other);
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert!(objects[0].contains("shop"), "{objects:?}");
}

fn drifted(status: &Value) -> Vec<String> {
    status["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] != "ok" && c["state"] != "warning")
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn status_is_clean_after_apply_and_reports_objects_changed_behind_its_back() {
    let env = sandbox_env().await;
    // Before the apply everything is missing.
    let out = meshca_output(&env, &["status"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(before["clean"], false);
    assert!(drifted(&before).iter().any(|o| o == "KEK asm-kek"));

    meshca(&env, &["apply"]);
    let out = meshca_output(&env, &["status"]);
    let clean: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{clean:#}");
    assert_eq!(clean["clean"], true);
    assert!(drifted(&clean).is_empty());
    assert!(clean["checks"].as_array().unwrap().len() > 5);

    // A namespace label changed behind meshca's back.
    assert!(env.api.cluster().delete("namespaces", None, "shop"));
    env.api
        .cluster()
        .create(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "shop", "labels": {"istio.io/rev": "asm-old"}},
        }))
        .unwrap();
    let out = meshca_output(&env, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let drift = drifted(&status);
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert!(drift[0].contains("shop"), "{drift:?}");

    // The Vault policy rewritten behind its back.
    meshca(&env, &["apply"]);
    let client = env.bao.client().unwrap();
    vaultrs::sys::policy::set(
        &client,
        "asm-c1-hsm-policy",
        "path \"secret/*\" { capabilities = [\"read\"] }",
    )
    .await
    .unwrap();
    let out = meshca_output(&env, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(drifted(&status), ["policy asm-c1-hsm-policy"]);

    // Text output: linkerd-check style marks with a hint.
    let text = Command::cargo_bin("meshca")
        .unwrap()
        .arg("--config")
        .arg(&env.config)
        .arg("status")
        .envs(env.hsm.child_env().unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains("\u{2718} vault policy asm-c1-hsm-policy"),
        "{stdout}"
    );
    assert!(
        stdout.contains("hint: differs from the configuration"),
        "{stdout}"
    );
    assert!(stdout.contains("\u{2714} hsm KEK asm-kek"), "{stdout}");
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (cargo xtask setup)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A release archive signed the guide's way with `openssl dgst -sha256 -sign`.
fn signed_release(dir: &std::path::Path) {
    std::fs::write(dir.join("istio.tar.gz"), b"istio 1.8.3-asm.2 release bytes").unwrap();
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "release-key.pem",
        ],
    );
    openssl(
        dir,
        &[
            "ec",
            "-in",
            "release-key.pem",
            "-pubout",
            "-out",
            "release-pub.pem",
        ],
    );
    openssl(
        dir,
        &[
            "dgst",
            "-sha256",
            "-sign",
            "release-key.pem",
            "-out",
            "istio.sig",
            "istio.tar.gz",
        ],
    );
}

fn verify_release(dir: &std::path::Path) -> std::process::Output {
    meshca_in(
        dir,
        &[
            "mesh",
            "verify-release",
            "--file",
            "istio.tar.gz",
            "--signature",
            "istio.sig",
            "--public-key",
            "release-pub.pem",
        ],
    )
}

/// Runs `meshca args...` in `dir`, without a sandbox environment.
fn meshca_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::cargo_bin("meshca")
        .unwrap()
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn verify_release_accepts_an_openssl_signature_and_rejects_a_changed_byte() {
    let dir = tempfile::tempdir().unwrap();
    signed_release(dir.path());
    let ok = verify_release(dir.path());
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("signature verified"));

    let path = dir.path().join("istio.tar.gz");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[3] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let bad = verify_release(dir.path());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("istio.tar.gz"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_checks_the_configured_release_in_step_6() {
    let env = sandbox_env().await;
    signed_release(env.dir.path());
    let mut config = Config::load(&env.config).unwrap();
    let p = |n: &str| Some(env.dir.path().join(n));
    config.release.file = p("istio.tar.gz");
    config.release.signature = p("istio.sig");
    config.release.public_key = p("release-pub.pem");
    std::fs::write(&env.config, toml::to_string(&config).unwrap()).unwrap();

    let plan = meshca(&env, &["plan"]);
    assert_eq!(plan["steps"][6]["status"], "done", "{}", plan["steps"][6]);
    assert!(
        plan["steps"][6]["detail"]
            .as_str()
            .unwrap()
            .contains("verified")
    );

    std::fs::write(env.dir.path().join("istio.tar.gz"), b"tampered").unwrap();
    let out = meshca_output(&env, &["apply"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["steps"][6]["status"], "failed");
    assert_eq!(report["steps"][7]["status"], "not_run");
}

/// A root CA and an istiod CSR made by the openssl CLI.
fn openssl_root_and_csr(dir: &std::path::Path, san: Option<&str>) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "root-key.pem",
            "-out",
            "root-cert.pem",
            "-days",
            "3650",
            "-subj",
            "/O=Example/CN=Root CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    let mut args = vec![
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "istiod-key.pem",
        "-out",
        "istiod.csr",
        "-subj",
        "/O=Istio/CN=Intermediate CA",
    ];
    let ext;
    if let Some(san) = san {
        ext = format!("subjectAltName={san}");
        args.extend(["-addext", ext.as_str()]);
    }
    openssl(dir, &args);
}

#[test]
fn ca_inspect_reports_the_csr_and_policy_violations() {
    let dir = tempfile::tempdir().unwrap();
    openssl_root_and_csr(dir.path(), None);
    let out = meshca_in(
        dir.path(),
        &["ca", "inspect", "--csr", "istiod.csr", "--output", "json"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["acceptable"], true);
    assert!(
        doc["review"]["subject"]
            .as_str()
            .unwrap()
            .contains("Intermediate CA")
    );

    openssl_root_and_csr(dir.path(), Some("DNS:evil.example.com"));
    let out = meshca_in(dir.path(), &["ca", "inspect", "--csr", "istiod.csr"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("evil.example.com"), "{stdout}");
    assert!(stdout.contains('\u{2718}'), "{stdout}");
}

#[test]
fn ca_sign_writes_a_chain_that_openssl_verifies() {
    let dir = tempfile::tempdir().unwrap();
    openssl_root_and_csr(dir.path(), None);
    // An encrypted root key with its passphrase in an owner-only file.
    sandbox::write_secret_file(&dir.path().join("pass"), b"root-passphrase\n").unwrap();
    openssl(
        dir.path(),
        &[
            "pkcs8",
            "-topk8",
            "-in",
            "root-key.pem",
            "-out",
            "root-key.enc.pem",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "file:pass",
        ],
    );
    let out = meshca_in(
        dir.path(),
        &[
            "ca",
            "sign",
            "--csr",
            "istiod.csr",
            "--root-cert",
            "root-cert.pem",
            "--root-key",
            "root-key.enc.pem",
            "--passphrase-file",
            "pass",
            "--out",
            "out",
            "--output",
            "json",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["files"].as_array().unwrap().len(), 4);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("root-passphrase"));
    openssl(
        dir.path(),
        &["verify", "-CAfile", "root-cert.pem", "out/ca-cert.pem"],
    );
    let chain = std::fs::read_to_string(dir.path().join("out/cert-chain.pem")).unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);

    // A CSR that breaks the policy is refused and nothing is written.
    openssl_root_and_csr(dir.path(), Some("DNS:evil.example.com"));
    let out = meshca_in(
        dir.path(),
        &[
            "ca",
            "sign",
            "--csr",
            "istiod.csr",
            "--root-cert",
            "root-cert.pem",
            "--root-key",
            "root-key.pem",
            "--out",
            "refused",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(!dir.path().join("refused/ca-cert.pem").exists());
}

fn edit_config(env: &Env, edit: impl FnOnce(&mut Config)) {
    let mut config = Config::load(&env.config).unwrap();
    edit(&mut config);
    std::fs::write(&env.config, toml::to_string(&config).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn without_istioctl_apply_fails_at_step_9_with_exit_4_and_the_hint() {
    let env = sandbox_env().await;
    edit_config(&env, |c| {
        c.install.method = InstallMethod::Istioctl;
        c.install.istioctl = Some(env.dir.path().join("no-such-istioctl"));
    });
    // A plan needs no istioctl.
    let plan = meshca(&env, &["plan"]);
    assert_eq!(plan["steps"][9]["changes"][0]["outcome"], "would_create");
    let out = meshca_output(&env, &["apply"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("istioctl not found"), "{stderr}");
    assert!(stderr.contains("no-such-istioctl"), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["steps"][9]["status"], "failed");
    assert_eq!(report["steps"][10]["status"], "not_run");
    // Everything before it was applied.
    assert!(exists(&env, "services", Some("istio-system"), "istiod"));
}

#[test]
fn mesh_render_writes_the_istio_operator_for_asm_and_for_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("meshca.toml");
    std::fs::write(&config, mesh_install::config::SAMPLE).unwrap();
    let render = |extra: &[&str]| {
        let out = Command::cargo_bin("meshca")
            .unwrap()
            .arg("--config")
            .arg(&config)
            .args(["mesh", "render"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let asm = render(&[]);
    assert!(asm.contains("profile: asm-multicloud"), "{asm}");
    assert!(
        asm.contains("vaultAuthPath: auth/asm-c1/hsm/login"),
        "{asm}"
    );
    assert!(asm.contains("vaultSecretPath: asm-c1/hsm"), "{asm}");
    let upstream = render(&["--upstream"]);
    assert!(upstream.contains("name: hsm-plugin"), "{upstream}");
    assert!(upstream.contains("name: vault-client"), "{upstream}");
    assert!(!upstream.contains("hsmKEKID"), "{upstream}");
    let file = dir.path().join("iop.yaml");
    render(&["--out", file.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), asm);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_after_the_vault_step_resumes_on_the_next_apply() {
    use std::io::BufRead as _;
    use std::os::unix::process::ExitStatusExt as _;

    let env = sandbox_env().await;
    // An istioctl that never returns: the kill lands inside step 9, after step 5.
    let hang = env.dir.path().join("istioctl");
    std::fs::write(
        &hang,
        "#!/bin/sh
exec sleep 120
",
    )
    .unwrap();
    std::fs::set_permissions(&hang, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    edit_config(&env, |c| {
        c.install.method = InstallMethod::Istioctl;
        c.install.istioctl = Some(hang.clone());
    });
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("meshca"))
        .arg("--config")
        .arg(&env.config)
        .arg("apply")
        .envs(env.hsm.child_env().unwrap())
        .current_dir(env.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line.unwrap();
        let installing = line.contains("installing with istioctl");
        seen.push(line);
        if installing {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("installing with istioctl")),
        "{seen:#?}"
    );
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9));
    // Steps 1-8 are in place; the istiod CA is not.
    assert!(exists(&env, "services", Some("istio-system"), "istiod"));
    assert!(!exists(
        &env,
        "secrets",
        Some("istio-system"),
        "istio-ca-cert"
    ));

    // The next run (the operator now installs by hand) picks up where the killed one stopped.
    edit_config(&env, |c| c.install.method = InstallMethod::Manual);
    let again = meshca(&env, &["apply"]);
    for n in [2, 3, 5, 7, 8] {
        let step = &again["steps"][n];
        assert_eq!(step["status"], "done", "step {n}: {step}");
        assert!(
            step["changes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["outcome"] == "unchanged"),
            "step {n} redid work: {step}"
        );
    }
    assert_eq!(again["steps"][9]["status"], "done");
    assert_eq!(again["steps"][12]["status"], "done");
    let shop = env.api.cluster().get("namespaces", None, "shop").unwrap();
    assert_eq!(shop["metadata"]["labels"]["istio.io/rev"], "asm-183-2");
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_tell_a_failed_check_from_bad_configuration_and_an_unreachable_dependency() {
    let env = sandbox_env().await;

    // Nothing installed: nothing verified (exit 1), which is not a dependency problem.
    let out = meshca_output(&env, &["verify"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");

    // A PIN the token rejects is a configuration error (exit 3).
    let wrong_pin = env.dir.path().join("wrong-pin");
    sandbox::write_secret_file(&wrong_pin, b"00000000").unwrap();
    let right = SecretSource::File(env.dir.path().join("pin"));
    edit_config(&env, |c| c.hsm.pin = SecretSource::File(wrong_pin.clone()));
    let out = meshca_output(&env, &["plan"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("rejected the PIN"), "{stderr}");
    edit_config(&env, |c| c.hsm.pin = right);

    // A Vault nobody answers at is an unavailable dependency (exit 4).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    edit_config(&env, |c| {
        c.vault.address = format!("https://127.0.0.1:{port}");
    });
    let out = meshca_output(&env, &["plan"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("Vault reachable"), "{stderr}");
}
