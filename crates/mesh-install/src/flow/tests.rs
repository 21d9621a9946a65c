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
        Self {
            spec: spec(&certificate_pem()),
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
        self.calls.lock().unwrap().clear();
        let hsm = hsm_mock(&self.hsm, &self.calls);
        let vault = vault_mock(&self.vault, &self.calls);
        let kube = kube_mock(&self.kube, &self.calls);
        let ports = Ports {
            hsm: Some(&hsm),
            vault: Some(&vault),
            kube: Some(&kube),
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
    assert_eq!(status(&first, Step::Install), StepStatus::NotBuilt);
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
    assert_eq!(json["steps"][9]["status"], "not_built");
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
        vault: None,
        kube: None,
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
