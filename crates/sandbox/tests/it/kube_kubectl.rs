//! The real `kubectl` against the emulated API server, with the guide's commands; each
//! answer is checked for what a real cluster prints, not just the exit code.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test helpers; each test walks one step of the guide end to end"
)]

use std::path::PathBuf;
use std::process::{Command, Output};

use base64::Engine as _;
use sandbox::kube::ApiServer;
use serde_json::json;

struct Kubectl {
    server: ApiServer,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

fn kubectl_binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .expect("kubectl is not installed; run `cargo xtask setup` to install it")
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn new() -> Self {
        let server = ApiServer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        server
            .write_kubeconfig(&dir.path().join("kubeconfig"))
            .unwrap();
        Self {
            server,
            dir,
            bin: kubectl_binary(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn run(&self, args: &[&str]) -> Run {
        let out: Output = Command::new(&self.bin)
            .args(args)
            .current_dir(self.dir.path())
            .env("KUBECONFIG", self.path("kubeconfig"))
            .env("KUBECACHEDIR", self.path("cache"))
            .env("HOME", self.dir.path())
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs and requires exit 0; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, 0,
            "kubectl {args:?} failed: {}{}",
            r.stdout, r.stderr
        );
        r.stdout
    }

    /// Runs and requires exit 1; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, 1,
            "kubectl {args:?} should fail: {}{}",
            r.stdout, r.stderr
        );
        r.stderr
    }
}

const CRB: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: role-tokenreview-binding
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:auth-delegator
subjects:
- kind: ServiceAccount
  name: default
  namespace: vault
";

fn istiod_service(release: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: istiod
  namespace: istio-system
  labels:
    istio.io/rev: asm-183-2
    app: istiod
    istio: pilot
    release: {release}
spec:
  ports:
    - port: 15010
      name: grpc-xds
    - port: 15012
      name: https-dns
    - port: 443
      name: https-webhook
      targetPort: 15017
    - port: 15014
      name: http-monitoring
  selector:
    app: istiod
    istio.io/rev: asm-183-2
"
    )
}

#[test]
fn namespaces_and_rbac_from_step_4() {
    let k = Kubectl::new();
    assert_eq!(
        k.ok(&["create", "ns", "vault"]).trim(),
        "namespace/vault created"
    );
    let ns = k.server.cluster().get("namespaces", None, "vault").unwrap();
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "vault"
    );
    assert_eq!(ns["status"]["phase"], "Active");
    let err = k.fails(&["create", "ns", "vault"]);
    assert!(
        err.contains("Error from server (AlreadyExists): namespaces \"vault\" already exists"),
        "{err}"
    );

    k.write("crb.yaml", CRB);
    assert_eq!(
        k.ok(&["apply", "-f", "crb.yaml"]).trim(),
        "clusterrolebinding.rbac.authorization.k8s.io/role-tokenreview-binding created"
    );
    assert_eq!(
        k.ok(&["apply", "-f", "crb.yaml"]).trim(),
        "clusterrolebinding.rbac.authorization.k8s.io/role-tokenreview-binding unchanged"
    );
    let crb = k
        .server
        .cluster()
        .get("clusterrolebindings", None, "role-tokenreview-binding")
        .unwrap();
    assert_eq!(crb["roleRef"]["name"], "system:auth-delegator");
    assert_eq!(
        crb["subjects"][0],
        json!({"kind": "ServiceAccount", "name": "default", "namespace": "vault"})
    );
    // A real server refuses to change roleRef.
    k.write("crb2.yaml", &CRB.replace("system:auth-delegator", "view"));
    let err = k.fails(&["apply", "-f", "crb2.yaml"]);
    assert!(err.contains("cannot change roleRef"), "{err}");

    // Modern service accounts have no token secrets: jsonpath prints nothing.
    let r = k.run(&[
        "get",
        "sa",
        "-n",
        "vault",
        "default",
        "-o=jsonpath={.secrets[0].name}",
    ]);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{}", r.stderr);
    assert_eq!(
        k.ok(&[
            "get",
            "sa",
            "-n",
            "vault",
            "default",
            "-o=jsonpath={.metadata.name}"
        ]),
        "default"
    );

    // kubectl create token (protobuf body) returns a JWT the cluster itself accepts.
    let token = k.ok(&["create", "token", "default", "-n", "vault"]);
    assert_eq!(token.split('.').count(), 3, "{token}");
    let err = k.fails(&["create", "token", "nosuch", "-n", "vault"]);
    assert!(
        err.contains("serviceaccounts \"nosuch\" not found"),
        "{err}"
    );

    let r = k.run(&["get", "pods", "-n", "vault"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stderr.contains("No resources found in vault namespace."),
        "{}",
        r.stderr
    );

    assert_eq!(
        k.ok(&["delete", "ns", "vault"]).trim(),
        "namespace \"vault\" deleted"
    );
    assert!(
        k.server
            .cluster()
            .get("namespaces", None, "vault")
            .is_none()
    );
    assert!(
        k.server
            .cluster()
            .get("serviceaccounts", Some("vault"), "default")
            .is_none()
    );
}

#[test]
fn config_map_secret_and_service_from_steps_7_8_10() {
    let k = Kubectl::new();
    k.ok(&["create", "ns", "istio-system"]);
    let pem =
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUexample\n-----END CERTIFICATE-----\n";
    k.write("cert", pem);
    assert_eq!(
        k.ok(&[
            "create",
            "configmap",
            "vault-tls-cert",
            "-n",
            "istio-system",
            "--from-file=./cert"
        ])
        .trim(),
        "configmap/vault-tls-cert created"
    );
    let cm = k
        .server
        .cluster()
        .get("configmaps", Some("istio-system"), "vault-tls-cert")
        .unwrap();
    assert_eq!(cm["data"]["cert"], pem);

    let chain = "-----BEGIN CERTIFICATE-----\nchain\n-----END CERTIFICATE-----\n";
    k.write("cert-chain.pem", chain);
    assert_eq!(
        k.ok(&[
            "create",
            "secret",
            "generic",
            "istio-ca-cert",
            "--from-file=cert-chain.pem",
            "-n",
            "istio-system"
        ])
        .trim(),
        "secret/istio-ca-cert created"
    );
    let data = k.ok(&[
        "get",
        "secret",
        "istio-ca-cert",
        "-n",
        "istio-system",
        "-o",
        "jsonpath={.data}",
    ]);
    let data: serde_json::Value = serde_json::from_str(&data).unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(data["cert-chain.pem"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, chain.as_bytes());
    assert_eq!(
        k.server
            .cluster()
            .get("secrets", Some("istio-system"), "istio-ca-cert")
            .unwrap()["type"],
        "Opaque"
    );
    let err = k.fails(&[
        "get",
        "secret",
        "nope",
        "-n",
        "istio-system",
        "-o",
        "jsonpath={.data}",
    ]);
    assert!(
        err.contains("Error from server (NotFound): secrets \"nope\" not found"),
        "{err}"
    );

    // Step 8: the istiod Service, applied, re-applied (unchanged), then changed.
    k.write("istiod.yaml", &istiod_service("istio"));
    assert_eq!(
        k.ok(&["apply", "-f", "istiod.yaml"]).trim(),
        "service/istiod created"
    );
    assert_eq!(
        k.ok(&["apply", "-f", "istiod.yaml"]).trim(),
        "service/istiod unchanged"
    );
    k.write("istiod.yaml", &istiod_service("istio-v2"));
    assert_eq!(
        k.ok(&["apply", "-f", "istiod.yaml"]).trim(),
        "service/istiod configured"
    );
    let svc = k
        .server
        .cluster()
        .get("services", Some("istio-system"), "istiod")
        .unwrap();
    assert_eq!(svc["metadata"]["labels"]["release"], "istio-v2");
    let ports = svc["spec"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 4);
    assert_eq!(
        ports[2],
        json!({"name": "https-webhook", "port": 443, "protocol": "TCP", "targetPort": 15017})
    );
    assert_eq!(ports[0]["targetPort"], 15010);

    let yaml = k.ok(&["get", "svc", "-n", "istio-system", "istiod", "-o", "yaml"]);
    assert!(yaml.contains("kind: Service"), "{yaml}");
    assert!(yaml.contains("targetPort: 15017"), "{yaml}");
    assert!(yaml.contains("clusterIP: 10.96."), "{yaml}");
    assert!(!yaml.contains("managedFields"), "{yaml}");

    let table = k.ok(&["get", "svc", "-n", "istio-system"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert!(
        table.contains("15010/TCP,15012/TCP,443/TCP,15014/TCP"),
        "{table}"
    );

    assert_eq!(
        k.ok(&[
            "delete",
            "configmap",
            "vault-tls-cert",
            "-n",
            "istio-system"
        ])
        .trim(),
        "configmap \"vault-tls-cert\" deleted"
    );
    let err = k.fails(&[
        "delete",
        "configmap",
        "vault-tls-cert",
        "-n",
        "istio-system",
    ]);
    assert!(
        err.contains("Error from server (NotFound): configmaps \"vault-tls-cert\" not found"),
        "{err}"
    );
}

#[test]
fn injection_labels_and_rollout_restart_from_step_12() {
    let k = Kubectl::new();
    let c = k.server.cluster();
    c.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}})).unwrap();
    c.create(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}))
        .unwrap();
    let before: Vec<String> = c
        .list("pods", Some("shop"))
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(before.len(), 2);

    assert_eq!(
        k.ok(&[
            "label",
            "namespace",
            "shop",
            "istio-injection-",
            "istio.io/rev=asm-183-2",
            "--overwrite"
        ])
        .trim(),
        "namespace/shop labeled"
    );
    let labels = c.get("namespaces", None, "shop").unwrap()["metadata"]["labels"].clone();
    assert_eq!(labels["istio.io/rev"], "asm-183-2");
    assert!(labels.get("istio-injection").is_none());
    let again = k.ok(&[
        "label",
        "namespace",
        "shop",
        "istio-injection-",
        "istio.io/rev=asm-183-2",
        "--overwrite",
    ]);
    assert!(again.contains("namespace/shop not labeled"), "{again}");

    let r = k.run(&["get", "pods", "-n", "shop", "-l", "istio.io/rev=asm-183-2"]);
    assert!(
        r.stderr.contains("No resources found in shop namespace."),
        "{}{}",
        r.stdout,
        r.stderr
    );

    assert_eq!(
        k.ok(&["rollout", "restart", "deployment", "-n", "shop"])
            .trim(),
        "deployment.apps/web restarted"
    );
    let dep = c.get("deployments", Some("shop"), "web").unwrap();
    assert!(
        dep["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string()
    );
    assert_eq!(dep["metadata"]["generation"], 2);

    let out = k.ok(&["get", "pods", "-n", "shop", "-l", "istio.io/rev=asm-183-2"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    assert_eq!(lines.len(), 3, "{out}");
    for line in &lines[1..] {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert!(cells[0].starts_with("web-"), "{line}");
        assert!(
            !before.contains(&cells[0].to_owned()),
            "old pod {line} survived the restart"
        );
        assert_eq!(&cells[1..4], ["2/2", "Running", "0"], "{line}");
    }
    let shown = k.ok(&["get", "pods", "-n", "shop", "--show-labels"]);
    assert!(shown.contains("istio.io/rev=asm-183-2"), "{shown}");
    let logs = k.ok(&["logs", "-c", "web", "-l", "app=web", "-n", "shop"]);
    assert_eq!(logs.lines().count(), 4, "{logs}");
    assert!(logs.contains("container web is running"), "{logs}");
    // Without -c, kubectl picks the first container itself, as against a real cluster.
    let r = k.run(&["logs", "-l", "app=web", "-n", "shop"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stderr
            .contains("Defaulted container \"web\" out of: web, istio-proxy"),
        "{}",
        r.stderr
    );
    let err = k.fails(&["logs", "-c", "nope", "-l", "app=web", "-n", "shop"]);
    assert!(
        err.contains("container nope is not valid for pod web-"),
        "{err}"
    );
    let waited = k.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod",
        "-l",
        "app=web",
        "-n",
        "shop",
        "--timeout=20s",
    ]);
    assert_eq!(waited.lines().count(), 2, "{waited}");
    assert!(waited.contains("condition met"), "{waited}");
}

#[test]
fn ingress_gateway_patch_and_server_side_apply_from_step_13() {
    let k = Kubectl::new();
    let c = k.server.cluster();
    c.create(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}),
    )
    .unwrap();
    c.create(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
        "spec": {"type": "LoadBalancer", "selector": {"istio": "ingressgateway"},
                 "ports": [{"name": "http2", "port": 80, "targetPort": 8080}, {"name": "https", "port": 443, "targetPort": 8443}]}}))
        .unwrap();
    let yaml = k.ok(&[
        "get",
        "svc",
        "-n",
        "istio-system",
        "istio-ingressgateway",
        "-o",
        "yaml",
    ]);
    assert!(yaml.contains("type: LoadBalancer"), "{yaml}");
    assert!(yaml.contains("nodePort: 3"), "{yaml}");

    let patch = r#"{"spec":{"loadBalancerIP":"203.0.113.1"}}"#;
    let patch_gateway = || {
        let args = [
            "patch",
            "svc",
            "istio-ingressgateway",
            "-n",
            "istio-system",
            "-p",
            patch,
        ];
        k.ok(&args).trim().to_owned()
    };
    assert_eq!(patch_gateway(), "service/istio-ingressgateway patched");
    assert_eq!(
        patch_gateway(),
        "service/istio-ingressgateway patched (no change)"
    );
    let svc = c
        .get("services", Some("istio-system"), "istio-ingressgateway")
        .unwrap();
    assert_eq!(svc["spec"]["loadBalancerIP"], "203.0.113.1");
    let err = k.fails(&["patch", "svc", "nosuch", "-n", "istio-system", "-p", patch]);
    assert!(err.contains("services \"nosuch\" not found"), "{err}");

    k.write("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio-asm-183-2\n  namespace: istio-system\ndata:\n  mesh: a\n");
    assert_eq!(
        k.ok(&["apply", "--server-side", "-f", "cm.yaml"]).trim(),
        "configmap/istio-asm-183-2 serverside-applied"
    );
    let cm = c
        .get("configmaps", Some("istio-system"), "istio-asm-183-2")
        .unwrap();
    assert_eq!(cm["metadata"]["managedFields"][0]["manager"], "kubectl");
    assert_eq!(cm["metadata"]["managedFields"][0]["operation"], "Apply");
    // Another manager changing the field conflicts unless forced.
    k.write("cm2.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio-asm-183-2\n  namespace: istio-system\ndata:\n  mesh: b\n");
    let err = k.fails(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "-f",
        "cm2.yaml",
    ]);
    assert!(err.contains("conflict"), "{err}");
    k.ok(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        "cm2.yaml",
    ]);
    assert_eq!(
        c.get("configmaps", Some("istio-system"), "istio-asm-183-2")
            .unwrap()["data"]["mesh"],
        "b"
    );
}

#[test]
fn denied_verb_gives_the_forbidden_message() {
    let k = Kubectl::new();
    k.server.cluster().deny("create", "configmaps");
    k.write("f", "x");
    let err = k.fails(&["create", "configmap", "c", "-n", "default", "--from-file=f"]);
    assert!(
        err.contains("error: failed to create configmap: configmaps is forbidden: User \"kubernetes-admin\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"default\""),
        "{err}"
    );
    k.server.cluster().clear_denials();
    k.ok(&["create", "configmap", "c", "-n", "default", "--from-file=f"]);
}

#[test]
fn wrong_token_is_unauthorized() {
    let k = Kubectl::new();
    let bad = secrecy::SecretString::from("not-a-token".to_owned());
    k.server
        .write_kubeconfig_with_token(&k.path("kubeconfig"), &bad)
        .unwrap();
    let err = k.fails(&["get", "ns"]);
    assert!(
        err.contains("error: You must be logged in to the server"),
        "{err}"
    );
    let statuses: Vec<u16> = k
        .server
        .cluster()
        .requests()
        .iter()
        .map(|r| r.status)
        .collect();
    assert!(statuses.contains(&401), "{statuses:?}");
}
