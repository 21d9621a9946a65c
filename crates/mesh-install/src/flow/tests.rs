//! The flow over the other crates' mockall mocks, backed by small in-memory states so that
//! a second apply sees what the first one wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use hsm_core::MockHsmAdmin;
use k8s_bootstrap::MockKube;
use serde_json::{Value, json};
use vault_bootstrap::{KubernetesConfigInfo, KubernetesRole, MockVault, MountInfo};

use super::*;
use crate::config::Config;
use crate::install::{Installer, MockInstaller};

type Log = Arc<Mutex<Vec<&'static str>>>;

fn log(log: &Log, plane: &'static str) {
    let mut log = log.lock().unwrap();
    if log.last() != Some(&plane) {
        log.push(plane);
    }
}

#[derive(Default)]
struct HsmState {
    keks: BTreeSet<Vec<u8>>,
    anchors: BTreeMap<Vec<u8>, Vec<u8>>,
}

fn hsm_mock(state: &Arc<Mutex<HsmState>>, calls: &Log) -> MockHsmAdmin {
    let mut hsm = MockHsmAdmin::new();
    let l = calls.clone();
    hsm.expect_health().returning(move || {
        log(&l, "hsm");
        hsm_core::Health::Ready
    });
    hsm.expect_list_keks().returning(|| Ok(Vec::new()));
    let (s, l) = (state.clone(), calls.clone());
    hsm.expect_ensure_kek().returning(move |id, mode| {
        log(&l, "hsm");
        let mut s = s.lock().unwrap();
        if s.keks.contains(id.as_bytes()) {
            return Ok(Outcome::Unchanged);
        }
        if mode == Mode::Apply {
            s.keks.insert(id.as_bytes().to_vec());
        }
        Ok(Outcome::create(mode))
    });
    let (s, l) = (state.clone(), calls.clone());
    hsm.expect_import_ca_cert()
        .returning(move |id, cert, _policy, mode| {
            log(&l, "hsm");
            let mut s = s.lock().unwrap();
            match s.anchors.get(id.as_bytes()) {
                Some(stored) if *stored == cert => Ok(Outcome::Unchanged),
                Some(_) => Err(hsm_core::Error::InvalidArgument {
                    operation: "importing a CA certificate",
                    reason: "another certificate is stored".into(),
                }),
                None => {
                    if mode == Mode::Apply {
                        s.anchors.insert(id.as_bytes().to_vec(), cert);
                    }
                    Ok(Outcome::create(mode))
                }
            }
        });
    hsm
}

#[derive(Default)]
struct VaultState {
    mounts: BTreeMap<String, MountInfo>,
    secrets: BTreeMap<String, SecretFields>,
    policies: BTreeMap<String, String>,
    auth: BTreeMap<String, String>,
    configs: BTreeMap<String, KubernetesConfigInfo>,
    roles: BTreeMap<String, KubernetesRole>,
    writes: usize,
    fail_reads: bool,
}

#[expect(clippy::too_many_lines, reason = "one closure per port method")]
fn vault_mock(state: &Arc<Mutex<VaultState>>, calls: &Log) -> MockVault {
    let mut v = MockVault::new();
    let (s, l) = (state.clone(), calls.clone());
    v.expect_read_secrets_mount().returning(move |path| {
        log(&l, "vault");
        let s = s.lock().unwrap();
        if s.fail_reads {
            return Err(vault_bootstrap::Error::Unavailable {
                addr: "https://vault.test:8200".into(),
                source: "connection refused".into(),
            });
        }
        Ok(s.mounts.get(path).cloned())
    });
    let s = state.clone();
    v.expect_enable_secrets_mount()
        .returning(move |path, version| {
            let mut s = s.lock().unwrap();
            s.writes += 1;
            s.mounts.insert(
                path.to_owned(),
                MountInfo {
                    kind: "kv".into(),
                    kv_version: Some(version),
                    max_lease_ttl: Duration::ZERO,
                },
            );
            Ok(())
        });
    let s = state.clone();
    v.expect_tune_max_lease_ttl().returning(move |path, ttl| {
        let mut s = s.lock().unwrap();
        s.writes += 1;
        if let Some(m) = s.mounts.get_mut(path) {
            m.max_lease_ttl = ttl;
        }
        Ok(())
    });
    let s = state.clone();
    v.expect_read_secret().returning(move |mount, _, path| {
        Ok(s.lock()
            .unwrap()
            .secrets
            .get(&format!("{mount}/{path}"))
            .cloned())
    });
    let s = state.clone();
    v.expect_write_secret()
        .returning(move |mount, _, path, fields| {
            let mut s = s.lock().unwrap();
            s.writes += 1;
            s.secrets.insert(format!("{mount}/{path}"), fields.clone());
            Ok(())
        });
    let s = state.clone();
    v.expect_read_policy()
        .returning(move |name| Ok(s.lock().unwrap().policies.get(name).cloned()));
    let s = state.clone();
    v.expect_write_policy().returning(move |name, rules| {
        let mut s = s.lock().unwrap();
        s.writes += 1;
        s.policies.insert(name.to_owned(), rules.to_owned());
        Ok(())
    });
    let s = state.clone();
    v.expect_read_auth_mount()
        .returning(move |path| Ok(s.lock().unwrap().auth.get(path).cloned()));
    let s = state.clone();
    v.expect_enable_auth_mount().returning(move |path, kind| {
        let mut s = s.lock().unwrap();
        s.writes += 1;
        s.auth.insert(path.to_owned(), kind.to_owned());
        Ok(())
    });
    let s = state.clone();
    v.expect_read_kubernetes_config()
        .returning(move |path| Ok(s.lock().unwrap().configs.get(path).cloned()));
    let s = state.clone();
    v.expect_write_kubernetes_config()
        .returning(move |path, config| {
            let mut s = s.lock().unwrap();
            s.writes += 1;
            s.configs.insert(
                path.to_owned(),
                KubernetesConfigInfo {
                    kubernetes_host: config.kubernetes_host.clone(),
                    kubernetes_ca_cert: config.kubernetes_ca_cert.clone(),
                    token_reviewer_jwt_set: config.token_reviewer_jwt.is_some(),
                    issuer: config.issuer.clone(),
                    pem_keys: config.pem_keys.clone(),
                    disable_local_ca_jwt: config.disable_local_ca_jwt,
                },
            );
            Ok(())
        });
    let s = state.clone();
    v.expect_read_kubernetes_role()
        .returning(move |path, name| {
            Ok(s.lock()
                .unwrap()
                .roles
                .get(&format!("{path}/{name}"))
                .cloned())
        });
    let s = state.clone();
    v.expect_write_kubernetes_role()
        .returning(move |path, role| {
            let mut s = s.lock().unwrap();
            s.writes += 1;
            s.roles
                .insert(format!("{path}/{}", role.name), role.clone());
            Ok(())
        });
    v
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[derive(Default)]
struct KubeState {
    objects: BTreeMap<String, Value>,
    writes: usize,
}

fn kube_mock(state: &Arc<Mutex<KubeState>>, calls: &Log) -> MockKube {
    let mut k = MockKube::new();
    let (s, l) = (state.clone(), calls.clone());
    k.expect_get().returning(move |object| {
        log(&l, "kube");
        Ok(s.lock().unwrap().objects.get(&object.to_string()).cloned())
    });
    let s = state.clone();
    k.expect_list().returning(move |query| {
        let s = s.lock().unwrap();
        Ok(s.objects
            .values()
            .filter(|o| o["kind"] == query.kind.kind())
            .filter(|o| match &query.namespace {
                Some(ns) => o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns),
                None => true,
            })
            .cloned()
            .collect())
    });
    let s = state.clone();
    k.expect_apply().returning(move |object, manifest, mode| {
        let mut s = s.lock().unwrap();
        let mut stored = s
            .objects
            .get(&object.to_string())
            .cloned()
            .unwrap_or(json!({}));
        merge(&mut stored, manifest);
        if mode == Mode::Apply {
            s.writes += 1;
            s.objects.insert(object.to_string(), stored.clone());
            if object.name == "istio-ca-cert" {
                // istiod loads the chain and its discovery container turns ready.
                istiod_ready(&mut s, true);
            }
            if object.kind == k8s_bootstrap::Kind::Namespace {
                // What the service account controller does for every namespace.
                let sa = k8s_bootstrap::ObjectRef::namespaced(
                    k8s_bootstrap::Kind::ServiceAccount,
                    object.name.clone(),
                    "default",
                );
                s.objects.insert(sa.to_string(), sa.manifest_skeleton());
            }
        }
        Ok(stored)
    });
    let s = state.clone();
    k.expect_merge_patch()
        .returning(move |object, patch, mode| {
            let mut s = s.lock().unwrap();
            let mut stored = s
                .objects
                .get(&object.to_string())
                .cloned()
                .unwrap_or(json!({}));
            merge(&mut stored, patch);
            if mode == Mode::Apply {
                s.writes += 1;
                s.objects.insert(object.to_string(), stored.clone());
            }
            Ok(stored)
        });
    k.expect_request_token()
        .returning(|_, _, _| Ok(SecretString::from("reviewer.jwt.value")));
    k
}

const ISTIOD_POD: &str = "pod istio-system/istiod-asm-183-2-0";

fn istiod_ready(s: &mut KubeState, ready: bool) {
    if let Some(pod) = s.objects.get_mut(ISTIOD_POD) {
        for (i, c) in pod["status"]["containerStatuses"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .enumerate()
        {
            c["ready"] = json!(i != 0 || ready);
        }
    }
}

/// The root CA of the tests: a real software key, so step 10 really signs.
struct Root {
    signer: ca_signing::SoftwareSigner,
    cert: CertificatePem,
}

fn root() -> Root {
    let signer =
        ca_signing::SoftwareSigner::generate(ca_signing::KeyAlgorithm::EcdsaP256, "test root")
            .unwrap();
    let cert = ca_signing::issue_root(&ca_signing::RootProfile::default(), &signer).unwrap();
    Root {
        cert: CertificatePem::parse(cert.pem(), "test root").unwrap(),
        signer,
    }
}

/// istiod's side of the hand-off: its CSR in plain text (what the KMS mock decrypts to).
fn istiod_csr() -> (ca_signing::SoftwareSigner, String) {
    let key = ca_signing::SoftwareSigner::generate(ca_signing::KeyAlgorithm::EcdsaP256, "istiod")
        .unwrap();
    let csr = ca_signing::create_csr(
        &ca_signing::Subject::new("Istio", "Intermediate CA"),
        &[ca_signing::San::Dns(ca_signing::ISTIOD_DNS_NAME.to_owned())],
        &key,
    )
    .unwrap();
    (key, csr.to_pem())
}

/// An installer that does what istioctl and istiod do: records the installed state, starts an
/// istiod pod (discovery not ready) and writes the encrypted CSR Secret.
fn installer_mock(state: &Arc<Mutex<KubeState>>, installs: &Arc<Mutex<usize>>) -> MockInstaller {
    let mut i = MockInstaller::new();
    i.expect_describe()
        .returning(|| "test installer".to_owned());
    let (s, n) = (state.clone(), installs.clone());
    i.expect_install().returning(move |operator| {
        *n.lock().unwrap() += 1;
        let mut s = s.lock().unwrap();
        s.objects.insert(
            "istiooperator istio-system/installed-state-asm-183-2".to_owned(),
            operator.clone(),
        );
        s.objects.insert(
            ISTIOD_POD.to_owned(),
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "istiod-asm-183-2-0", "namespace": "istio-system",
                    "labels": {"app": "istiod", "istio.io/rev": "asm-183-2"}},
                "spec": {"containers": [{"name": "discovery"}, {"name": "hsm-plugin"}, {"name": "vault-client"}]},
                "status": {"phase": "Running", "containerStatuses": [
                    {"name": "discovery", "ready": false}, {"name": "hsm-plugin", "ready": true},
                    {"name": "vault-client", "ready": true}]}}),
        );
        let b64 = |v: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, v);
        s.objects.insert(
            "secret istio-system/istio-ca-cert-csr".to_owned(),
            json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "istio-ca-cert-csr", "namespace": "istio-system"},
                "data": {"kek-id": b64(b"asm-kek"), "encrypted-dek": b64(b"wrapped-dek"),
                    "csr-id": b64(b"istiod-csr-1"), "encrypted-csr": b64(b"jwe-of-the-csr")}}),
        );
        Ok(())
    });
    i
}

fn kms_mock(csr_pem: &str) -> hsm_core::MockIstioKms {
    let mut k = hsm_core::MockIstioKms::new();
    let csr = csr_pem.as_bytes().to_vec();
    k.expect_authenticated_decrypt().returning(move |req| {
        assert_eq!(req.kek_id.as_bytes(), b"asm-kek");
        assert_eq!(req.aad, b"istiod-csr-1");
        assert_eq!(req.ciphertext, b"jwe-of-the-csr");
        Ok(secrecy::zeroize::Zeroizing::new(csr.clone()))
    });
    k
}

fn certificate_pem() -> CertificatePem {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["test-ca".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    CertificatePem::parse(params.self_signed(&key).unwrap().pem(), "test CA").unwrap()
}

fn spec(ca: &CertificatePem) -> FlowSpec {
    let mut config = Config::default();
    config.injection.namespaces = vec!["app".to_owned()];
    let mut spec = FlowSpec::from_config(
        &config,
        Inputs {
            endpoint: Some(ClusterEndpoint {
                addr: "https://127.0.0.1:6443".to_owned(),
                ca: ca.clone(),
            }),
            pin: Some(SecretString::from("s3cr3t-pin")),
            tools: Vec::new(),
        },
    )
    .unwrap();
    spec.root_cert = Some(ca.as_str().as_bytes().to_vec());
    spec.vault_ca = Some(ca.clone());
    spec.inject_wait = WaitOptions {
        timeout: Duration::from_secs(2),
        interval: Duration::from_millis(10),
    };
    spec
}

struct World {
    spec: FlowSpec,
    root: Root,
    istiod_key: ca_signing::SoftwareSigner,
    csr: String,
    installs: Arc<Mutex<usize>>,
    calls: Log,
    hsm: Arc<Mutex<HsmState>>,
    vault: Arc<Mutex<VaultState>>,
    kube: Arc<Mutex<KubeState>>,
}

impl World {
    fn new() -> Self {
        let kube = Arc::new(Mutex::new(KubeState::default()));
        // The application namespace exists before the mesh is installed.
        kube.lock().unwrap().objects.insert(
            "namespace app".to_owned(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app"}}),
        );
        let root = root();
        let (istiod_key, csr) = istiod_csr();
        let mut spec = spec(&certificate_pem());
        spec.root_cert = Some(root.cert.as_str().as_bytes().to_vec());
        spec.install.wait = WaitOptions {
            timeout: Duration::from_secs(2),
            interval: Duration::from_millis(10),
        };
        Self {
            spec,
            root,
            istiod_key,
            csr,
            installs: Arc::default(),
            calls: Log::default(),
            hsm: Arc::default(),
            vault: Arc::default(),
            kube,
        }
    }

    async fn run(
        &self,
        selection: &[Step],
        mode: Mode,
    ) -> (std::result::Result<FlowReport, Box<Failure>>, Vec<Step>) {
        self.run_with(selection, mode, None, true).await
    }

    /// As [`World::run`], with another installer in place of the one that plays istiod, and
    /// without the root key when `root_key` is false.
    async fn run_with(
        &self,
        selection: &[Step],
        mode: Mode,
        installer: Option<&dyn Installer>,
        root_key: bool,
    ) -> (std::result::Result<FlowReport, Box<Failure>>, Vec<Step>) {
        self.calls.lock().unwrap().clear();
        let hsm = hsm_mock(&self.hsm, &self.calls);
        let vault = vault_mock(&self.vault, &self.calls);
        let kube = kube_mock(&self.kube, &self.calls);
        let istiod = installer_mock(&self.kube, &self.installs);
        let kms = kms_mock(&self.csr);
        let ports = Ports {
            hsm: Some(&hsm),
            vault: Some(&vault),
            kube: Some(&kube),
            installer: Some(installer.unwrap_or(&istiod)),
            kms: Some(&kms),
            root_signer: root_key.then_some(&self.root.signer as &dyn ca_signing::Signer),
            probe: None,
        };
        let mut started = Vec::new();
        let mut events = |e: Event<'_>| {
            if let Event::Started(step) = e {
                started.push(step);
            }
        };
        let result = run(&self.spec, ports, selection, mode, &mut events).await;
        (result, started)
    }
}

#[tokio::test]
async fn steps_run_in_guide_order_and_a_second_apply_changes_nothing() {
    let world = World::new();
    let (first, started) = world.run(&BUILT, Mode::Apply).await;
    let first = first.unwrap();
    assert_eq!(started, BUILT);
    // HSM (1-3), cluster (4), Vault (5), cluster again (7, 8, 12).
    assert_eq!(
        *world.calls.lock().unwrap(),
        ["hsm", "kube", "vault", "kube"]
    );
    assert_eq!(first.steps.len(), 14);
    let status = |r: &FlowReport, s: Step| r.step(s).unwrap().status;
    for step in [
        Step::Kek,
        Step::RootImport,
        Step::VaultSetup,
        Step::ControlPlaneResources,
    ] {
        assert_eq!(status(&first, step), StepStatus::Done, "{step}");
        assert!(!first.step(step).unwrap().is_unchanged(), "{step}");
    }
    for step in [Step::Install, Step::SignCa, Step::Verify] {
        assert_eq!(status(&first, step), StepStatus::Done, "{step}: {first}");
    }
    assert_eq!(*world.installs.lock().unwrap(), 1);
    assert_eq!(status(&first, Step::ExternalIp), StepStatus::Skipped);
    assert_eq!(
        first.step(Step::Kek).unwrap().changes[0].outcome,
        Outcome::Created
    );
    let vault_writes = world.vault.lock().unwrap().writes;
    let kube_writes = world.kube.lock().unwrap().writes;
    assert!(vault_writes >= 7 && kube_writes >= 6);
    let labels = world.kube.lock().unwrap().objects["namespace app"]["metadata"]["labels"].clone();
    assert_eq!(labels["istio.io/rev"], "asm-183-2");

    let (second, _) = world.run(&BUILT, Mode::Apply).await;
    let second = second.unwrap();
    assert!(second.is_unchanged(), "{second}");
    assert!(second.changes().count() >= first.changes().count() - 1);
    assert_eq!(world.vault.lock().unwrap().writes, vault_writes);
    assert_eq!(world.kube.lock().unwrap().writes, kube_writes);
    assert_eq!(*world.installs.lock().unwrap(), 1, "installed once only");
}

#[tokio::test]
async fn a_dry_run_reports_would_create_and_writes_nothing() {
    let world = World::new();
    let (report, _) = world.run(&BUILT, Mode::DryRun).await;
    let report = report.unwrap();
    assert!(report.dry_run);
    assert!(
        report
            .changes()
            .any(|(_, c)| c.outcome == Outcome::WouldCreate)
    );
    assert!(
        report
            .changes()
            .all(|(_, c)| !matches!(c.outcome, Outcome::Created | Outcome::Updated))
    );
    assert_eq!(world.vault.lock().unwrap().writes, 0);
    assert_eq!(world.kube.lock().unwrap().writes, 0);
    assert!(world.hsm.lock().unwrap().keks.is_empty());

    // After an apply, the plan is empty.
    world.run(&BUILT, Mode::Apply).await.0.unwrap();
    let (plan, _) = world.run(&BUILT, Mode::DryRun).await;
    assert!(plan.unwrap().is_unchanged());
}

#[tokio::test]
async fn a_failed_step_stops_the_run_and_a_rerun_resumes() {
    let world = World::new();
    world.vault.lock().unwrap().fail_reads = true;
    let (result, _) = world.run(&BUILT, Mode::Apply).await;
    let failure = result.unwrap_err();
    assert_eq!(failure.error.step(), Some(Step::VaultSetup));
    assert!(failure.error.is_unavailable());
    let status = |s: Step| failure.report.step(s).unwrap().status;
    assert_eq!(status(Step::Kek), StepStatus::Done);
    assert_eq!(status(Step::VaultSetup), StepStatus::Failed);
    assert_eq!(status(Step::ControlPlaneResources), StepStatus::NotRun);
    assert!(
        failure
            .report
            .step(Step::VaultSetup)
            .unwrap()
            .detail
            .contains("vault.test")
    );

    world.vault.lock().unwrap().fail_reads = false;
    let (again, _) = world.run(&BUILT, Mode::Apply).await;
    let again = again.unwrap();
    assert!(again.step(Step::Kek).unwrap().is_unchanged());
    assert!(!again.step(Step::VaultSetup).unwrap().is_unchanged());
    assert_eq!(
        again.step(Step::WebhookService).unwrap().status,
        StepStatus::Done
    );
}

#[tokio::test]
async fn only_selected_steps_touch_their_backends() {
    let world = World::new();
    let (report, started) = world.run(&[Step::Kek], Mode::Apply).await;
    let report = report.unwrap();
    assert_eq!(started, [Step::Kek]);
    assert_eq!(*world.calls.lock().unwrap(), ["hsm"]);
    assert_eq!(
        report.step(Step::VaultSetup).unwrap().status,
        StepStatus::Skipped
    );

    let (result, _) = world.run(&[Step::VaultSetup], Mode::Apply).await;
    let failure = result.unwrap_err();
    assert!(matches!(
        failure.error,
        Error::MissingInput {
            step: Step::VaultSetup,
            ..
        }
    ));
}

#[tokio::test]
async fn the_report_serialises_with_step_names_and_outcomes() {
    let world = World::new();
    let report = world.run(&BUILT, Mode::Apply).await.0.unwrap();
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["steps"][2]["step"], "kek");
    assert_eq!(json["steps"][2]["changes"][0]["plane"], "hsm");
    assert_eq!(json["steps"][2]["changes"][0]["outcome"], "created");
    assert_eq!(json["steps"][9]["status"], "done");
    let text = serde_json::to_string(&report).unwrap();
    assert!(!text.contains("s3cr3t-pin") && !text.contains("reviewer.jwt.value"));
}

#[test]
fn port_names_follow_istio_protocol_prefixes() {
    for ok in [
        "http", "http-web", "grpc-web", "GRPC-api", "tcp-db", "https", "tls-x",
    ] {
        assert!(is_valid_port_name(ok), "{ok}");
    }
    for bad in ["", "web", "http-", "httpx", "metrics", "-http"] {
        assert!(!is_valid_port_name(bad), "{bad}");
    }
}

#[tokio::test]
async fn preflight_names_each_check_and_flags_misnamed_ports() {
    let world = World::new();
    world.kube.lock().unwrap().objects.insert(
        "service app/web".to_owned(),
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "app"},
        "spec": {"ports": [
            {"name": "http-web", "port": 80},
            {"name": "metrics", "port": 9090},
            {"name": "admin", "port": 9091, "appProtocol": "http"},
        ]}}),
    );
    let mut spec = world.spec.clone();
    spec.tools = vec![Tool {
        name: "istioctl".to_owned(),
        path: None,
        used_for: "step 9",
    }];
    let world = World { spec, ..world };
    let (report, _) = world.run(&[Step::Prerequisites], Mode::DryRun).await;
    let report = report.unwrap();
    let step0 = report.step(Step::Prerequisites).unwrap();
    assert_eq!(step0.status, StepStatus::Done);
    let find = |name: &str| step0.checks.iter().find(|c| c.name == name).unwrap();
    assert!(find("API server reachable").ok);
    assert!(find("Vault reachable").ok);
    assert!(find("HSM token asm-ca usable").ok);
    let tool = find("tool istioctl");
    assert!(!tool.ok && !tool.required);
    let ports = find("Service port names in app");
    assert!(!ports.ok, "{ports:?}");
    assert!(ports.detail.contains("web/metrics"), "{}", ports.detail);
    assert!(!ports.detail.contains("admin"), "{}", ports.detail);
}

#[tokio::test]
async fn a_failed_required_preflight_check_stops_the_run() {
    let world = World::new();
    let mut hsm = MockHsmAdmin::new();
    hsm.expect_health()
        .returning(|| hsm_core::Health::PinRejected(cryptoki::error::RvError::PinIncorrect));
    let ports = Ports {
        hsm: Some(&hsm),
        ..Ports::default()
    };
    let result = run(
        &world.spec,
        ports,
        &[Step::Prerequisites, Step::Kek],
        Mode::Apply,
        &mut |_| {},
    )
    .await;
    let failure = result.unwrap_err();
    assert!(
        matches!(&failure.error, Error::Preflight { failed, .. } if failed == &["HSM token asm-ca usable"]),
        "{:?}",
        failure.error
    );
    let step0 = failure.report.step(Step::Prerequisites).unwrap();
    assert_eq!(step0.status, StepStatus::Failed);
    assert!(step0.checks[0].detail.contains("hsm.pin"));
    assert_eq!(
        failure.report.step(Step::Kek).unwrap().status,
        StepStatus::NotRun
    );
}

#[test]
fn a_partial_release_section_is_refused() {
    let release = crate::config::ReleaseConfig {
        file: Some("istio.tgz".into()),
        signature: None,
        public_key: None,
    };
    let err = ReleaseFiles::from_config(&release).unwrap_err();
    assert!(err.to_string().contains("release"), "{err}");
    assert!(
        ReleaseFiles::from_config(&crate::config::ReleaseConfig::default())
            .unwrap()
            .is_none()
    );
}

fn secret_chain(world: &World) -> ca_signing::CertChain {
    use base64::Engine as _;

    let objects = &world.kube.lock().unwrap().objects;
    let b64 = objects["secret istio-system/istio-ca-cert"]["data"]["cert-chain.pem"]
        .as_str()
        .unwrap()
        .to_owned();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    ca_signing::CertChain::parse_pem(&pem).unwrap()
}

#[tokio::test]
async fn the_csr_hand_off_signs_istiods_key_with_the_root_and_waits_for_istiod() {
    let world = World::new();
    let report = world.run(&BUILT, Mode::Apply).await.0.unwrap();
    let chain = secret_chain(&world);
    // The chain is istiod's CA (the CSR's key) followed by the root, and verifies.
    let csr = ca_signing::Csr::parse(world.csr.as_bytes()).unwrap();
    ca_signing::check_cert_matches_csr(chain.first(), &csr).unwrap();
    let root = ca_signing::Certificate::parse(world.root.cert.as_str().as_bytes()).unwrap();
    chain.verify(Some(&root)).unwrap();
    assert_eq!(chain.certs().len(), 2);
    let step10 = report.step(Step::SignCa).unwrap();
    assert!(step10.detail.contains("3/3"), "{}", step10.detail);
    let step11 = report.step(Step::Verify).unwrap();
    assert!(step11.checks.iter().all(|c| c.ok), "{:?}", step11.checks);
    assert!(
        step11
            .checks
            .iter()
            .any(|c| c.name.contains("chains to the root")),
        "{:?}",
        step11.checks
    );

    // Re-signing is not needed while the chain matches the CSR: the Secret stays as it is.
    let before = chain.to_pem();
    let again = world.run(&BUILT, Mode::Apply).await.0.unwrap();
    assert!(again.step(Step::SignCa).unwrap().is_unchanged());
    assert_eq!(secret_chain(&world).to_pem(), before);
}

#[tokio::test]
async fn a_plan_before_the_install_shows_steps_10_and_11_blocked() {
    let world = World::new();
    let plan = world.run(&BUILT, Mode::DryRun).await.0.unwrap();
    assert_eq!(
        plan.step(Step::Install).unwrap().changes[0].outcome,
        Outcome::WouldCreate
    );
    for step in [Step::SignCa, Step::Verify] {
        let s = plan.step(step).unwrap();
        assert_eq!(s.status, StepStatus::Blocked, "{step}");
        assert!(s.detail.contains("not installed"), "{}", s.detail);
    }
    assert_eq!(*world.installs.lock().unwrap(), 0);
}

#[tokio::test]
async fn changed_install_values_reinstall_and_a_wrong_root_fails_verification() {
    let world = World::new();
    world.run(&BUILT, Mode::Apply).await.0.unwrap();
    let mut spec = world.spec.clone();
    spec.install.values.kek_id = "kek-2".to_owned();
    let world = World { spec, ..world };
    let plan = world.run(&BUILT, Mode::DryRun).await.0.unwrap();
    let change = &plan.step(Step::Install).unwrap().changes[0];
    assert_eq!(change.outcome, Outcome::WouldUpdate);
    assert_eq!(change.differences, ["values.hsm.hsmKEKID"]);

    // Another root: step 10 would sign again, and step 11's chain check fails.
    let mut spec = world.spec.clone();
    spec.install.values.kek_id = "asm-kek".to_owned();
    spec.root_cert = Some(root().cert.as_str().as_bytes().to_vec());
    let world = World { spec, ..world };
    let plan = world.run(&[Step::SignCa, Step::Verify], Mode::DryRun).await;
    let failure = plan.0.unwrap_err();
    assert_eq!(
        failure.report.step(Step::SignCa).unwrap().changes[0].outcome,
        Outcome::WouldUpdate
    );
    let step11 = failure.report.step(Step::Verify).unwrap();
    assert_eq!(step11.status, StepStatus::Failed);
    assert!(
        step11
            .checks
            .iter()
            .any(|c| !c.ok && c.name.contains("chains to the root")),
        "{:?}",
        step11.checks
    );
}

#[tokio::test]
async fn manual_method_renders_the_file_and_leaves_the_install_to_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut spec = world.spec.clone();
    spec.install.method = crate::config::InstallMethod::Manual;
    spec.install.manifest = Some(dir.path().join("iop.yaml"));
    let world = World { spec, ..world };
    let report = world.run(&BUILT, Mode::Apply).await.0.unwrap();
    let step9 = report.step(Step::Install).unwrap();
    assert_eq!(step9.changes[0].outcome, Outcome::Created);
    assert!(
        step9.detail.contains("istioctl install -y -f"),
        "{}",
        step9.detail
    );
    let yaml = std::fs::read_to_string(dir.path().join("iop.yaml")).unwrap();
    assert!(yaml.contains("hsmKEKID: asm-kek"), "{yaml}");
    assert_eq!(*world.installs.lock().unwrap(), 0);
    assert_eq!(
        report.step(Step::SignCa).unwrap().status,
        StepStatus::Blocked
    );
    let again = world.run(&BUILT, Mode::Apply).await.0.unwrap();
    assert_eq!(
        again.step(Step::Install).unwrap().changes[0].outcome,
        Outcome::Unchanged
    );
}

#[tokio::test]
async fn an_install_failure_stops_the_run_before_signing() {
    let world = World::new();
    let mut installer = MockInstaller::new();
    installer
        .expect_describe()
        .returning(|| "istioctl".to_owned());
    installer.expect_install().returning(|_| {
        Err(crate::install::InstallError::ToolMissing {
            tool: "istioctl",
            searched: None,
            hint: "put it on PATH",
        })
    });
    let failure = world
        .run_with(&BUILT, Mode::Apply, Some(&installer), true)
        .await
        .0
        .unwrap_err();
    assert_eq!(failure.error.step(), Some(Step::Install));
    assert!(failure.error.is_unavailable());
    assert!(
        failure
            .report
            .step(Step::Install)
            .unwrap()
            .detail
            .contains("istioctl not found"),
        "{}",
        failure.report.step(Step::Install).unwrap().detail
    );
    assert_eq!(
        failure.report.step(Step::SignCa).unwrap().status,
        StepStatus::NotRun
    );
}

#[tokio::test]
async fn the_probe_must_present_a_workload_chain_under_the_istiod_ca() {
    let world = World::new();
    world.run(&BUILT, Mode::Apply).await.0.unwrap();
    let chain = secret_chain(&world);
    let kube = kube_mock(&world.kube, &world.calls);
    let check = |probe: crate::install::MockMeshProbe| {
        let kube = &kube;
        let spec = world.spec.clone();
        async move {
            let ports = Ports {
                kube: Some(kube),
                probe: Some(&probe),
                ..Ports::default()
            };
            run(&spec, ports, &[Step::Verify], Mode::DryRun, &mut |_| {}).await
        }
    };
    // A certificate the root signed directly is not a workload of this istiod CA.
    let stranger =
        ca_signing::SoftwareSigner::generate(ca_signing::KeyAlgorithm::EcdsaP256, "x").unwrap();
    let foreign = ca_signing::issue_root(&ca_signing::RootProfile::default(), &stranger)
        .unwrap()
        .pem();
    let mut bad = crate::install::MockMeshProbe::new();
    bad.expect_target().returning(|| "web.app:9080".to_owned());
    bad.expect_server_chain()
        .returning(move || Ok(foreign.clone()));
    let failure = check(bad).await.unwrap_err();
    let step11 = failure.report.step(Step::Verify).unwrap();
    assert!(
        step11
            .checks
            .iter()
            .any(|c| !c.ok && c.name.contains("web.app:9080")),
        "{:?}",
        step11.checks
    );

    // The istiod CA certificate itself is not a workload certificate.
    let mut ca_only = crate::install::MockMeshProbe::new();
    ca_only
        .expect_target()
        .returning(|| "web.app:9080".to_owned());
    let ca_pem = chain.first().pem();
    ca_only
        .expect_server_chain()
        .returning(move || Ok(ca_pem.clone()));
    assert!(check(ca_only).await.is_err());

    // A workload certificate issued with istiod's key under the signed CA passes.
    let workload_key =
        ca_signing::SoftwareSigner::generate(ca_signing::KeyAlgorithm::EcdsaP256, "workload")
            .unwrap();
    let leaf = ca_signing::issue_workload(
        &ca_signing::WorkloadProfile::new("cluster.local", "app", "web"),
        &ca_signing::Signer::public_key_spki_der(&workload_key),
        chain.first(),
        &world.istiod_key,
    )
    .unwrap();
    let presented = format!("{}{}", leaf.pem(), chain.to_pem());
    let mut good = crate::install::MockMeshProbe::new();
    good.expect_target().returning(|| "web.app:9080".to_owned());
    good.expect_server_chain()
        .returning(move || Ok(presented.clone()));
    let report = check(good).await.unwrap();
    let step11 = report.step(Step::Verify).unwrap();
    let probe = step11
        .checks
        .iter()
        .find(|c| c.name.contains("web.app:9080"))
        .unwrap();
    assert!(probe.ok, "{probe:?}");
    assert!(
        probe
            .detail
            .contains("spiffe://cluster.local/ns/app/sa/web"),
        "{}",
        probe.detail
    );
}

#[tokio::test]
async fn without_the_root_key_step_10_names_the_setting_and_the_offline_way() {
    let world = World::new();
    let failure = world
        .run_with(&BUILT, Mode::Apply, None, false)
        .await
        .0
        .unwrap_err();
    assert_eq!(failure.error.step(), Some(Step::SignCa));
    assert!(failure.error.is_config());
    let text = failure.error.to_string();
    assert!(
        text.contains("root-ca.key") && text.contains("meshca ca sign"),
        "{text}"
    );
    assert!(
        !world
            .kube
            .lock()
            .unwrap()
            .objects
            .contains_key("secret istio-system/istio-ca-cert")
    );
}
