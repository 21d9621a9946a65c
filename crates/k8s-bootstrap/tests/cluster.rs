//! Every operation against the real control plane (`sandbox::LocalCluster`: kube-apiserver,
//! etcd, controller manager, scheduler, kwok): run twice (the second run is `Unchanged` and
//! writes nothing, by the API server's own audit log), dry run first (nothing stored), and the
//! error mapping for a real RBAC refusal and a stopped server.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test helpers outside #[test] fns; each test walks one step end to end"
)]

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_bootstrap::ingress::{AddressType, IntegratedLb, LbAnnotation};
use k8s_bootstrap::vault_auth::{ClusterEndpoint, Output, ReviewerToken, VaultAuthSpec};
use k8s_bootstrap::wait::WaitOptions;
use k8s_bootstrap::{
    CertificatePem, ClusterSuffix, Error, KubeClient, Mode, Outcome, Report, RetryPolicy, Verb,
    ca_secrets, control_plane, ingress, injection, vault_auth,
};
use kube::config::Kubeconfig;
use sandbox::LocalCluster;
use sandbox::cluster::ClusterApi;
use secrecy::SecretString;
use serde_json::{Value, json};

struct Env {
    cluster: LocalCluster,
    api: ClusterApi,
    kube: KubeClient,
    kubeconfig: Kubeconfig,
    /// Audit events already returned by [`Env::writes`].
    seen: Mutex<usize>,
}

/// The identity the admin kubeconfig authenticates as.
const ADMIN_USER: &str = "sandbox-admin";

async fn env() -> Env {
    sandbox::init_crypto();
    let cluster = LocalCluster::builder().start().await.unwrap();
    let kubeconfig = Kubeconfig::read_from(cluster.admin_kubeconfig()).unwrap();
    let kube = KubeClient::from_kubeconfig(kubeconfig.clone(), None)
        .await
        .unwrap();
    let api = cluster.api().await.unwrap();
    Env {
        cluster,
        api,
        kube,
        kubeconfig,
        seen: Mutex::new(0),
    }
}

/// `apiVersion` and `kind` of the plural resources the tests read.
fn kind_of(resource: &str) -> (&'static str, &'static str) {
    match resource {
        "namespaces" => ("v1", "Namespace"),
        "secrets" => ("v1", "Secret"),
        "configmaps" => ("v1", "ConfigMap"),
        "services" => ("v1", "Service"),
        "pods" => ("v1", "Pod"),
        "clusterrolebindings" => ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        other => panic!("no kind known for {other}"),
    }
}

impl Env {
    async fn create(&self, object: Value) {
        self.api.create_object(&object).await.unwrap();
    }

    /// Creates the namespace `name`, without labels.
    async fn create_namespace(&self, name: &str) {
        self.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
            .await;
    }

    async fn get(&self, resource: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let (api_version, kind) = kind_of(resource);
        self.api
            .get_object(api_version, kind, namespace, name)
            .await
            .unwrap()
    }

    /// Pods of `namespace` that are not being deleted.
    async fn live_pods(&self, namespace: &str) -> Vec<Value> {
        self.api
            .list_objects("v1", "Pod", Some(namespace))
            .await
            .unwrap()
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect()
    }

    /// Requests of the admin identity that could have changed something since the last call,
    /// as the API server's audit log records them (`verb uri`).
    async fn writes(&self) -> Vec<String> {
        let events = self.cluster.audit_events().await.unwrap();
        let mut seen = self.seen.lock().unwrap();
        let new = events
            .iter()
            .skip(*seen)
            .filter(|e| e.user == ADMIN_USER && e.is_write())
            .map(|e| format!("{} {}", e.verb, e.uri))
            .collect();
        *seen = events.len();
        new
    }

    /// The admin kubeconfig with its client certificate replaced by a bearer token.
    fn kubeconfig_with_token(&self, token: &SecretString) -> Kubeconfig {
        let mut kubeconfig = self.kubeconfig.clone();
        for named in &mut kubeconfig.auth_infos {
            if let Some(auth) = named.auth_info.as_mut() {
                auth.client_certificate_data = None;
                auth.client_key_data = None;
                auth.token = Some(token.clone());
            }
        }
        kubeconfig
    }
}

fn actions(report: &Report) -> Vec<Outcome> {
    report.changes.iter().map(|c| c.action).collect()
}

fn ca(cn: &str) -> CertificatePem {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![cn.to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    CertificatePem::parse(params.self_signed(&key).unwrap().pem(), cn).unwrap()
}

fn quick_wait() -> WaitOptions {
    WaitOptions {
        timeout: Duration::from_secs(20),
        interval: Duration::from_millis(100),
    }
}

#[tokio::test]
async fn step4_dry_run_stores_nothing_then_runs_twice() {
    let env = env().await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = ClusterEndpoint::from_kubeconfig(&env.kubeconfig, None).unwrap();
    assert_eq!(endpoint.addr, env.cluster.server());
    assert_eq!(
        endpoint.ca,
        CertificatePem::parse(env.cluster.ca_pem(), "ca").unwrap()
    );
    let spec = VaultAuthSpec {
        wait: quick_wait(),
        ..VaultAuthSpec::files(ClusterSuffix::new("c1").unwrap(), dir.path())
    };
    env.writes().await;

    let dry = vault_auth::prepare_vault_auth(&env.kube, &spec, &endpoint, Mode::DryRun)
        .await
        .unwrap();
    assert!(
        dry.report
            .changes
            .iter()
            .all(|c| c.action == Outcome::WouldCreate),
        "{}",
        dry.report
    );
    assert!(env.get("namespaces", None, "vault").await.is_none());
    assert!(
        env.get("clusterrolebindings", None, "role-tokenreview-binding")
            .await
            .is_none()
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let dry_writes = env.writes().await;
    assert!(!dry_writes.is_empty());
    assert!(
        dry_writes.iter().all(|w| w.contains("dryRun=All")),
        "{dry_writes:?}"
    );

    let first = vault_auth::prepare_vault_auth(&env.kube, &spec, &endpoint, Mode::Apply)
        .await
        .unwrap();
    assert!(
        first
            .report
            .changes
            .iter()
            .all(|c| c.action == Outcome::Created),
        "{}",
        first.report
    );
    let crb = env
        .get("clusterrolebindings", None, "role-tokenreview-binding")
        .await
        .unwrap();
    assert_eq!(crb["roleRef"]["name"], "system:auth-delegator");
    assert_eq!(crb["subjects"][0]["namespace"], "vault");
    let managers: Vec<&str> = crb["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"meshca"), "{managers:?}");

    let jwt = std::fs::read_to_string(dir.path().join("c1-tokenreview_jwt")).unwrap();
    let payload = jwt.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "system:serviceaccount:vault:default");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("c1-k8s_addr")).unwrap(),
        env.cluster.server()
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("c1-k8s_cert")).unwrap(),
        endpoint.ca.as_str()
    );
    env.writes().await;

    let second = vault_auth::prepare_vault_auth(&env.kube, &spec, &endpoint, Mode::Apply)
        .await
        .unwrap();
    assert!(second.report.is_unchanged(), "{}", second.report);
    assert_eq!(
        env.writes().await,
        Vec::<String>::new(),
        "a second run sends no write and issues no token"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("c1-tokenreview_jwt")).unwrap(),
        jwt
    );
}

#[tokio::test]
async fn step4_returns_a_token_the_api_server_accepts_or_uses_a_legacy_secret() {
    let env = env().await;
    let endpoint = ClusterEndpoint::from_kubeconfig(&env.kubeconfig, None).unwrap();
    let spec = VaultAuthSpec {
        output: Output::Return,
        wait: quick_wait(),
        ..VaultAuthSpec::files(ClusterSuffix::new("c1").unwrap(), ".")
    };
    let out = vault_auth::prepare_vault_auth(&env.kube, &spec, &endpoint, Mode::Apply)
        .await
        .unwrap();
    let material = out.material.unwrap();
    assert_eq!(material.kubernetes_host, env.cluster.server());

    // The reviewer token authenticates against the API server as vault/default.
    let as_vault = KubeClient::from_kubeconfig(
        env.kubeconfig_with_token(&material.token_reviewer_jwt),
        None,
    )
    .await
    .unwrap()
    .with_retry(RetryPolicy::none());
    let err = k8s_bootstrap::Kube::get(
        &as_vault,
        &k8s_bootstrap::ObjectRef::namespaced(k8s_bootstrap::Kind::Secret, "istio-system", "x"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::Forbidden { .. }),
        "the token authenticates (no 401) as vault/default, which may not read secrets: {err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let legacy = VaultAuthSpec {
        token: ReviewerToken::legacy(),
        wait: quick_wait(),
        ..VaultAuthSpec::files(ClusterSuffix::new("c2").unwrap(), dir.path())
    };
    let first = vault_auth::prepare_vault_auth(&env.kube, &legacy, &endpoint, Mode::Apply)
        .await
        .unwrap();
    assert_eq!(
        first
            .report
            .outcome_of("secret vault/vault-tokenreview-token"),
        Some(Outcome::Created)
    );
    let secret = env
        .get("secrets", Some("vault"), "vault-tokenreview-token")
        .await
        .unwrap();
    let token = STANDARD
        .decode(secret["data"]["token"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("c2-tokenreview_jwt")).unwrap(),
        token
    );
    let second = vault_auth::prepare_vault_auth(&env.kube, &legacy, &endpoint, Mode::Apply)
        .await
        .unwrap();
    assert!(second.report.is_unchanged(), "{}", second.report);
}

#[tokio::test]
async fn step7_and_step8_dry_run_then_run_twice() {
    let env = env().await;
    let vault_ca = ca("vault-ca");

    let dry = control_plane::ensure_vault_tls_configmap(&env.kube, &vault_ca, Mode::DryRun)
        .await
        .unwrap();
    assert_eq!(actions(&dry), [Outcome::WouldCreate, Outcome::WouldCreate]);
    let dry = control_plane::ensure_istiod_service(&env.kube, "asm-183-2", Mode::DryRun)
        .await
        .unwrap();
    assert_eq!(actions(&dry), [Outcome::WouldCreate, Outcome::WouldCreate]);
    assert!(env.get("namespaces", None, "istio-system").await.is_none());

    let first = control_plane::ensure_vault_tls_configmap(&env.kube, &vault_ca, Mode::Apply)
        .await
        .unwrap();
    assert_eq!(actions(&first), [Outcome::Created, Outcome::Created]);
    let cm = env
        .get("configmaps", Some("istio-system"), "vault-tls-cert")
        .await
        .unwrap();
    assert_eq!(cm["data"]["cert"], vault_ca.as_str());

    // Now the namespace exists, so the Service's dry run reaches the API server.
    env.writes().await;
    let dry = control_plane::ensure_istiod_service(&env.kube, "asm-183-2", Mode::DryRun)
        .await
        .unwrap();
    assert_eq!(actions(&dry), [Outcome::Unchanged, Outcome::WouldCreate]);
    assert_eq!(env.writes().await.len(), 1);
    assert!(
        env.get("services", Some("istio-system"), "istiod")
            .await
            .is_none()
    );

    let first = control_plane::ensure_istiod_service(&env.kube, "asm-183-2", Mode::Apply)
        .await
        .unwrap();
    assert_eq!(actions(&first), [Outcome::Unchanged, Outcome::Created]);
    let svc = env
        .get("services", Some("istio-system"), "istiod")
        .await
        .unwrap();
    assert_eq!(svc["metadata"]["labels"]["istio"], "pilot");
    assert_eq!(svc["spec"]["ports"][2]["targetPort"], 15017);
    assert_eq!(
        svc["spec"]["selector"],
        json!({"app": "istiod", "istio.io/rev": "asm-183-2"})
    );
    env.writes().await;

    let again = control_plane::ensure_vault_tls_configmap(&env.kube, &vault_ca, Mode::Apply)
        .await
        .unwrap();
    assert!(again.is_unchanged(), "{again}");
    let again = control_plane::ensure_istiod_service(&env.kube, "asm-183-2", Mode::Apply)
        .await
        .unwrap();
    assert!(again.is_unchanged(), "{again}");
    assert_eq!(env.writes().await, Vec::<String>::new());

    // A new Vault CA or revision is an update.
    let rotated =
        control_plane::ensure_vault_tls_configmap(&env.kube, &ca("vault-ca-2"), Mode::Apply)
            .await
            .unwrap();
    assert_eq!(actions(&rotated), [Outcome::Unchanged, Outcome::Updated]);
    let moved = control_plane::ensure_istiod_service(&env.kube, "asm-184-1", Mode::Apply)
        .await
        .unwrap();
    assert_eq!(actions(&moved), [Outcome::Unchanged, Outcome::Updated]);
}

#[tokio::test]
async fn step10_reads_the_csr_and_writes_the_chain_twice() {
    let env = env().await;
    env.create_namespace("istio-system").await;
    let err = ca_secrets::read_csr_secret(&env.kube).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    env.create(json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "istio-ca-cert-csr", "namespace": "istio-system"},
            "data": {"kek-id": STANDARD.encode("kek-1"), "encrypted-dek": STANDARD.encode([7u8; 40]),
                     "csr-id": STANDARD.encode("csr-1"), "encrypted-csr": STANDARD.encode([8u8; 300])}}))
        .await;
    let csr = ca_secrets::read_csr_secret(&env.kube).await.unwrap();
    assert_eq!(
        (csr.kek_id.as_slice(), csr.encrypted_csr.len()),
        (b"kek-1".as_slice(), 300)
    );

    let chain = CertificatePem::parse(
        format!("{}{}", ca("istiod-ca").as_str(), ca("root").as_str()),
        "chain",
    )
    .unwrap();
    let dry = ca_secrets::ensure_ca_cert_secret(&env.kube, &chain, Mode::DryRun)
        .await
        .unwrap();
    assert_eq!(
        dry.outcome_of("secret istio-system/istio-ca-cert"),
        Some(Outcome::WouldCreate)
    );
    assert!(
        env.get("secrets", Some("istio-system"), "istio-ca-cert")
            .await
            .is_none()
    );
    let first = ca_secrets::ensure_ca_cert_secret(&env.kube, &chain, Mode::Apply)
        .await
        .unwrap();
    assert_eq!(
        first.outcome_of("secret istio-system/istio-ca-cert"),
        Some(Outcome::Created)
    );
    let stored = env
        .get("secrets", Some("istio-system"), "istio-ca-cert")
        .await
        .unwrap();
    assert_eq!(stored["type"], "Opaque");
    assert_eq!(
        STANDARD
            .decode(stored["data"]["cert-chain.pem"].as_str().unwrap())
            .unwrap(),
        chain.as_str().as_bytes()
    );
    env.writes().await;
    let second = ca_secrets::ensure_ca_cert_secret(&env.kube, &chain, Mode::Apply)
        .await
        .unwrap();
    assert!(second.is_unchanged(), "{second}");
    assert_eq!(env.writes().await, Vec::<String>::new());
}

#[tokio::test]
async fn step12_labels_restarts_and_waits_then_changes_nothing() {
    let env = env().await;
    env.create(json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}}))
        .await;
    env.create(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}))
        .await;
    // The real controllers create the pods and kwok runs them.
    let mut pods_before: Vec<String> = Vec::new();
    for _ in 0..300 {
        let pods = env.live_pods("shop").await;
        if pods.len() == 2 && pods.iter().all(|p| p["status"]["phase"] == "Running") {
            pods_before = pods
                .iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
                .collect();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(pods_before.len(), 2, "the Deployment's pods did not run");

    // No injector for the revision yet: waiting for it times out naming what is missing.
    let err = injection::wait_for_injector(
        &env.kube,
        "asm-183-2",
        WaitOptions {
            timeout: Duration::from_secs(1),
            interval: Duration::from_millis(100),
        },
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("sidecar injector of revision asm-183-2"),
        "{err}"
    );
    // The revision's injector, which the real API server calls for every new pod.
    let webhook = sandbox::cluster::InjectionWebhook::start("asm-183-2").unwrap();
    webhook.register(&env.api).await.unwrap();
    injection::wait_for_injector(&env.kube, "asm-183-2", quick_wait(), &mut |_| {})
        .await
        .unwrap();

    let dry = injection::enable_injection(
        &env.kube,
        "shop",
        "asm-183-2",
        quick_wait(),
        Mode::DryRun,
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(actions(&dry), [Outcome::WouldUpdate, Outcome::WouldUpdate]);
    assert_eq!(
        env.get("namespaces", None, "shop").await.unwrap()["metadata"]["labels"]["istio-injection"],
        "enabled"
    );

    let mut progress = Vec::new();
    let first = injection::enable_injection(
        &env.kube,
        "shop",
        "asm-183-2",
        quick_wait(),
        Mode::Apply,
        &mut |p| {
            progress.push(p.clone());
        },
    )
    .await
    .unwrap();
    assert_eq!(actions(&first), [Outcome::Updated, Outcome::Updated]);
    let labels = &env.get("namespaces", None, "shop").await.unwrap()["metadata"]["labels"];
    assert_eq!(labels["istio.io/rev"], "asm-183-2");
    assert!(labels.get("istio-injection").is_none(), "{labels}");
    // The rollout replaced every pod, and the API server had the webhook inject each new one.
    let pods = env.live_pods("shop").await;
    assert_eq!(pods.len(), 2);
    for pod in &pods {
        assert!(!pods_before.contains(&pod["metadata"]["name"].as_str().unwrap().to_owned()));
        assert_eq!(pod["metadata"]["labels"]["istio.io/rev"], "asm-183-2");
        let containers: Vec<&str> = pod["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(containers, ["web", "istio-proxy"], "{pod}");
    }
    assert!(progress.last().unwrap().is_done());
    env.writes().await;

    let second = injection::enable_injection(
        &env.kube,
        "shop",
        "asm-183-2",
        quick_wait(),
        Mode::Apply,
        &mut |_| {},
    )
    .await
    .unwrap();
    assert!(second.is_unchanged(), "{second}");
    assert_eq!(env.writes().await, Vec::<String>::new());
}

#[tokio::test]
async fn step12_warns_when_both_labels_are_present() {
    let env = env().await;
    env.create(json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "both", "labels": {"istio-injection": "enabled", "istio.io/rev": "asm-183-2"}}}))
        .await;
    let report = injection::ensure_revision_label(&env.kube, "both", "asm-183-2", Mode::Apply)
        .await
        .unwrap();
    assert_eq!(report.warnings.len(), 1);
    assert_eq!(actions(&report), [Outcome::Updated]);
    let labels = &env.get("namespaces", None, "both").await.unwrap()["metadata"]["labels"];
    assert!(labels.get("istio-injection").is_none());
}

#[tokio::test]
async fn step13_integrated_twice_and_manual_table() {
    let env = env().await;
    env.create_namespace("istio-system").await;
    env.create(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "istio-ingressgateway"},
                 "ports": [{"name": "http2", "port": 80, "targetPort": 8080},
                           {"name": "https", "port": 443, "targetPort": 8443}]}}))
        .await;
    let lb = IntegratedLb {
        annotations: vec![LbAnnotation::MetalLb],
        ..IntegratedLb::field("203.0.113.1".parse().unwrap())
    };
    let dry = ingress::ensure_load_balancer_ip(&env.kube, &lb, Mode::DryRun)
        .await
        .unwrap();
    assert_eq!(actions(&dry), [Outcome::WouldUpdate]);
    let svc = env
        .get("services", Some("istio-system"), "istio-ingressgateway")
        .await
        .unwrap();
    assert!(svc["spec"].get("loadBalancerIP").is_none());

    let first = ingress::ensure_load_balancer_ip(&env.kube, &lb, Mode::Apply)
        .await
        .unwrap();
    assert_eq!(actions(&first), [Outcome::Updated]);
    let svc = env
        .get("services", Some("istio-system"), "istio-ingressgateway")
        .await
        .unwrap();
    assert_eq!(svc["spec"]["loadBalancerIP"], "203.0.113.1");
    assert_eq!(
        svc["metadata"]["annotations"]["metallb.io/loadBalancerIPs"],
        "203.0.113.1"
    );
    assert_eq!(
        svc["spec"]["ports"].as_array().unwrap().len(),
        2,
        "the ports are left alone"
    );
    env.writes().await;
    let second = ingress::ensure_load_balancer_ip(&env.kube, &lb, Mode::Apply)
        .await
        .unwrap();
    assert!(second.is_unchanged(), "{second}");
    assert_eq!(env.writes().await, Vec::<String>::new());

    let table = ingress::node_port_table(
        &env.kube,
        "203.0.113.1".parse().unwrap(),
        AddressType::InternalIP,
    )
    .await
    .unwrap();
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert_eq!(table.ports[0].frontend, "203.0.113.1:80");
    assert_eq!(
        table.ports[0].backends,
        [format!("{}:{node_port}", sandbox::cluster::node_address(0))]
    );
    assert_eq!(
        env.writes().await,
        Vec::<String>::new(),
        "manual mode only reads"
    );
}

#[tokio::test]
async fn a_denied_verb_and_a_stopped_server_give_the_named_errors() {
    let mut env = env().await;
    // A real RBAC refusal: a user who may manage namespaces and read ConfigMaps, not patch them.
    env.create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "configmap-reader"},
        "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "create", "patch"]},
                  {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]}))
        .await;
    env.create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "configmap-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "configmap-reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "reader"}]}))
        .await;
    let path = env.cluster.kubeconfig_for("reader", "reader", &[]).unwrap();
    let reader = KubeClient::from_kubeconfig(Kubeconfig::read_from(path).unwrap(), None)
        .await
        .unwrap();
    let err = control_plane::ensure_vault_tls_configmap(&reader, &ca("vault-ca"), Mode::Apply)
        .await
        .unwrap_err();
    match &err {
        Error::Forbidden {
            verb,
            resource,
            namespace,
            ..
        } => assert_eq!(
            (*verb, resource.as_str(), namespace.as_deref()),
            (
                Verb::Apply,
                "configmaps/vault-tls-cert",
                Some("istio-system")
            )
        ),
        other => panic!("expected Forbidden, got {other}"),
    }
    assert!(
        env.get("configmaps", Some("istio-system"), "vault-tls-cert")
            .await
            .is_none(),
        "nothing was written"
    );

    env.cluster.stop();
    let kube = env.kube.clone().with_retry(RetryPolicy {
        attempts: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
    });
    let err = control_plane::ensure_istiod_service(&kube, "asm-183-2", Mode::Apply)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        err.to_string().starts_with(
            "kubernetes API server unavailable: could not get namespaces/istio-system"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn fields_of_another_manager_are_a_named_conflict_never_taken_over() {
    let env = env().await;
    env.create_namespace("istio-system").await;
    // Someone else (kubectl, with their own field manager) owns the ConfigMap's cert.
    let theirs = ca("their-vault-ca");
    let manifest = env.cluster.dir().join("theirs.json");
    std::fs::write(
        &manifest,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "vault-tls-cert", "namespace": "istio-system"},
               "data": {"cert": theirs.as_str()}})
        .to_string(),
    )
    .unwrap();
    let out = env
        .cluster
        .kubectl()
        .args([
            "apply",
            "--server-side",
            "--field-manager=someone-else",
            "-f",
        ])
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let err = control_plane::ensure_vault_tls_configmap(&env.kube, &ca("vault-ca"), Mode::Apply)
        .await
        .unwrap_err();
    match &err {
        Error::Conflict { object, detail } => {
            assert_eq!(
                object,
                "configmaps/vault-tls-cert in namespace istio-system"
            );
            assert!(detail.contains("someone-else"), "{detail}");
            assert!(detail.contains(".data.cert"), "{detail}");
            assert!(detail.contains("--force-conflicts"), "{detail}");
        }
        other => panic!("expected a conflict, got {other}"),
    }
    let cm = env
        .get("configmaps", Some("istio-system"), "vault-tls-cert")
        .await
        .unwrap();
    assert_eq!(cm["data"]["cert"], theirs.as_str(), "their value is kept");

    // The same value is shared ownership, not a conflict.
    let same = control_plane::ensure_vault_tls_configmap(&env.kube, &theirs, Mode::Apply)
        .await
        .unwrap();
    assert!(same.is_unchanged(), "{same}");
}

#[tokio::test]
async fn a_terminating_namespace_is_waited_for_then_made_anew() {
    let env = env().await;
    // istio-system is being deleted, held in Terminating by a finalizer on an object inside.
    env.create_namespace("istio-system").await;
    env.create(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "held", "namespace": "istio-system",
                     "finalizers": ["example.com/hold"]}}))
        .await;
    let kubectl = |args: &[&str]| {
        let out = env.cluster.kubectl().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    kubectl(&["delete", "namespace", "istio-system", "--wait=false"]);
    assert_eq!(
        kubectl(&[
            "get",
            "namespace",
            "istio-system",
            "-o",
            "jsonpath={.status.phase}"
        ]),
        "Terminating"
    );

    // A dry run says what will happen once the deletion is over, without waiting.
    let dry = control_plane::ensure_vault_tls_configmap(&env.kube, &ca("vault-ca"), Mode::DryRun)
        .await
        .unwrap();
    assert_eq!(actions(&dry), [Outcome::WouldCreate, Outcome::WouldCreate]);

    // The step waits; the deletion finishes once the finalizer is released.
    let vault_ca = ca("vault-ca");
    let apply = control_plane::ensure_vault_tls_configmap(&env.kube, &vault_ca, Mode::Apply);
    let release = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        kubectl(&[
            "patch",
            "configmap",
            "held",
            "-n",
            "istio-system",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]);
    };
    let (report, ()) = tokio::join!(apply, release);
    let report = report.unwrap();
    assert_eq!(actions(&report), [Outcome::Created, Outcome::Created]);
    let ns = env.get("namespaces", None, "istio-system").await.unwrap();
    assert!(ns["metadata"]["deletionTimestamp"].is_null(), "{ns}");
    assert!(
        env.get("configmaps", Some("istio-system"), "vault-tls-cert")
            .await
            .is_some()
    );
}
