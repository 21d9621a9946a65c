//! `LocalCluster`: the real control plane built from the Go module proxy, checked with the
//! kubectl of the same release and with the machine's own kubectl where one is installed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "tests: a failed expectation is the test failing"
)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sandbox::LocalCluster;
use serde_json::Value;

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Out {
    let out = cmd.output().expect("running kubectl");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn kubectl(cluster: &LocalCluster, args: &[&str]) -> Out {
    run(cluster.kubectl().args(args))
}

fn kubectl_ok(cluster: &LocalCluster, args: &[&str]) -> String {
    let out = kubectl(cluster, args);
    assert!(out.ok, "kubectl {args:?} failed: {}", out.stderr);
    out.stdout
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Polls `probe` every 200 ms for up to `limit`; on timeout, fails with what the cluster shows.
fn eventually(
    cluster: &LocalCluster,
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + limit;
    while !probe() {
        if Instant::now() >= deadline {
            let pods = kubectl(cluster, &["get", "pods", "-A", "-o", "wide"]).stdout;
            let events = kubectl(cluster, &["get", "events", "-A"]).stdout;
            let kwok = cluster
                .log_of("kwok")
                .and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_default();
            let kwok: Vec<&str> = kwok.lines().rev().take(15).collect();
            panic!(
                "timed out waiting for {what}\npods:\n{pods}\nevents:\n{events}\nkwok:\n{}",
                kwok.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would still show, but the fixture reaps.
    Path::new(&format!("/proc/{pid}")).exists()
}

const DEPLOYMENT: &str = r#"{
  "apiVersion": "apps/v1",
  "kind": "Deployment",
  "metadata": {"name": "web", "namespace": "demo"},
  "spec": {
    "replicas": 3,
    "selector": {"matchLabels": {"app": "web"}},
    "template": {
      "metadata": {"labels": {"app": "web"}},
      "spec": {"containers": [
        {"name": "web", "image": "example.invalid/web:1"},
        {"name": "sidecar", "image": "example.invalid/sidecar:1"}
      ]}
    }
  }
}"#;

fn running_pods(cluster: &LocalCluster) -> Vec<Value> {
    let pods = json(&kubectl_ok(
        cluster,
        &["get", "pods", "-n", "demo", "-l", "app=web", "-o", "json"],
    ));
    pods["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| p["status"]["phase"] == "Running")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_control_plane_schedules_runs_and_restarts_pods() {
    sandbox::init_tracing();
    let started = Instant::now();
    let cluster = LocalCluster::builder().nodes(2).start().await.unwrap();
    let start_time = started.elapsed();
    eprintln!("control plane ready in {start_time:?}");

    // The kubectl and the API server of the pinned release report it, not v0.0.0-master.
    let version = json(&kubectl_ok(&cluster, &["version", "-o", "json"]));
    let release = go_components_version();
    assert_eq!(version["clientVersion"]["gitVersion"], release.as_str());
    assert_eq!(version["serverVersion"]["gitVersion"], release.as_str());

    // Both nodes Ready, with the capacity step 0 asks for.
    let nodes = json(&kubectl_ok(&cluster, &["get", "nodes", "-o", "json"]));
    let nodes = nodes["items"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    for node in nodes {
        let ready = node["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert!(ready, "{node}");
        assert_eq!(node["status"]["allocatable"]["cpu"], "8");
        let name = node["metadata"]["name"].as_str().unwrap();
        let index = cluster.node_names().iter().position(|n| n == name).unwrap();
        assert_eq!(
            node["status"]["addresses"][0],
            serde_json::json!({"type": "InternalIP", "address": sandbox::cluster::node_address(index).to_string()})
        );
    }

    // A Deployment goes through the real controllers and scheduler to Running pods.
    kubectl_ok(&cluster, &["create", "namespace", "demo"]);
    let manifest = cluster.dir().join("web.json");
    std::fs::write(&manifest, DEPLOYMENT).unwrap();
    kubectl_ok(
        &cluster,
        &["apply", "-f", manifest.to_str().unwrap(), "--server-side"],
    );
    eventually(&cluster, "3 Running pods", Duration::from_secs(60), || {
        running_pods(&cluster).len() == 3
    });
    let pods = running_pods(&cluster);
    let first_names: Vec<String> = pods
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    for pod in &pods {
        let node = pod["spec"]["nodeName"].as_str().unwrap();
        assert!(
            cluster.node_names().iter().any(|n| n == node),
            "bound to {node}"
        );
        let statuses = pod["status"]["containerStatuses"].as_array().unwrap();
        assert_eq!(statuses.len(), 2, "{pod}");
        assert!(statuses.iter().all(|s| s["ready"] == true), "{pod}");
    }
    let wide = kubectl_ok(&cluster, &["get", "pods", "-A", "-o", "wide"]);
    assert!(wide.contains("2/2") && wide.contains("Running"), "{wide}");

    // rollout restart replaces every pod, and rollout status sees the rollout complete.
    kubectl_ok(
        &cluster,
        &["rollout", "restart", "-n", "demo", "deployment/web"],
    );
    kubectl_ok(
        &cluster,
        &[
            "rollout",
            "status",
            "-n",
            "demo",
            "deployment/web",
            "--timeout=90s",
        ],
    );
    eventually(
        &cluster,
        "3 new Running pods",
        Duration::from_secs(60),
        || {
            let now = running_pods(&cluster);
            now.len() == 3
                && now.iter().all(|p| {
                    !first_names
                        .iter()
                        .any(|n| p["metadata"]["name"] == n.as_str())
                })
        },
    );

    // Namespace deletion is real: Terminating until the pods are finalised, then gone.
    kubectl_ok(&cluster, &["delete", "namespace", "demo", "--wait=false"]);
    let phase = kubectl(
        &cluster,
        &["get", "namespace", "demo", "-o", "jsonpath={.status.phase}"],
    );
    assert!(
        !phase.ok || phase.stdout == "Terminating",
        "phase {}",
        phase.stdout
    );
    eventually(
        &cluster,
        "namespace demo gone",
        Duration::from_secs(90),
        || !kubectl(&cluster, &["get", "namespace", "demo"]).ok,
    );

    let processes = cluster.pids();
    assert_eq!(processes.len(), 5, "{processes:?}");
    drop(cluster);
    for (name, pid) in processes {
        assert!(!alive(pid), "{name} ({pid}) still running after drop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_real_and_the_operator_is_least_privileged() {
    sandbox::init_tracing();
    let cluster = LocalCluster::builder().start().await.unwrap();

    // TokenRequest: a bound token with the requested expiry, capped by nothing we wrote.
    kubectl_ok(&cluster, &["create", "serviceaccount", "reviewer"]);
    let token = kubectl_ok(
        &cluster,
        &[
            "create",
            "token",
            "reviewer",
            "--duration=10m",
            "--audience=vault",
        ],
    );
    let token = token.trim();
    // TokenReview with the audience accepts it and names the service account ...
    let review = |audience: &str| {
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [audience]},
        });
        let path = cluster.dir().join(format!("review-{audience}.json"));
        std::fs::write(&path, body.to_string()).unwrap();
        json(&kubectl_ok(
            &cluster,
            &["create", "-f", path.to_str().unwrap(), "-o", "json"],
        ))
    };
    let accepted = review("vault");
    assert_eq!(accepted["status"]["authenticated"], true, "{accepted}");
    assert_eq!(
        accepted["status"]["user"]["username"],
        "system:serviceaccount:default:reviewer"
    );
    // ... and without it refuses it.
    let refused = review("someone-else");
    assert_ne!(refused["status"]["authenticated"], true, "{refused}");

    // The operator: what the flow needs, and nothing more.
    let operator = |args: &[&str]| {
        run(Command::new(cluster.kubectl_path())
            .env("KUBECONFIG", cluster.operator_kubeconfig())
            .args(args))
    };
    let who = operator(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert!(who.ok, "{}", who.stderr);
    assert_eq!(who.stdout, sandbox::cluster::OPERATOR_USER);
    assert!(operator(&["get", "nodes"]).ok);
    assert!(operator(&["create", "namespace", "mesh-test"]).ok);
    assert_eq!(
        operator(&["auth", "can-i", "create", "secrets", "-n", "istio-system"])
            .stdout
            .trim(),
        "yes"
    );
    // Deleting namespaces and reading cluster roles are not part of the flow: refused with the
    // verb and the resource named, and nothing changed.
    let denied = operator(&["delete", "namespace", "mesh-test"]);
    assert!(!denied.ok);
    assert!(
        denied
            .stderr
            .contains("cannot delete resource \"namespaces\""),
        "{}",
        denied.stderr
    );
    assert!(kubectl(&cluster, &["get", "namespace", "mesh-test"]).ok);
    // The API server's audit log saw the refusal, as that user.
    let events = cluster.audit_events().await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.user == sandbox::cluster::OPERATOR_USER
                && e.verb == "delete"
                && e.code == 403
                && e.uri.ends_with("/namespaces/mesh-test")),
        "{events:?}"
    );
    let denied = operator(&[
        "create",
        "clusterrolebinding",
        "escalate",
        "--clusterrole=cluster-admin",
        "--user=meshca-operator",
    ]);
    assert!(!denied.ok, "the operator could bind cluster-admin");
    assert!(!kubectl(&cluster, &["get", "clusterrolebinding", "escalate"]).ok);

    // The machine's kubectl, where installed, reads the same kubeconfig.
    if let Some(system) = ["/usr/bin/kubectl", "/usr/local/bin/kubectl"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
    {
        let out = run(Command::new(system)
            .env("KUBECONFIG", cluster.admin_kubeconfig())
            .args(["get", "nodes", "-o", "name"]));
        assert!(out.ok, "{}: {}", system.display(), out.stderr);
        assert!(out.stdout.contains("node/sandbox-node-1"), "{}", out.stdout);
    }
}

fn go_components_version() -> String {
    go_components::KUBERNETES.version().to_owned()
}
