//! The plugin server driven by gRPC clients of other stacks, each with its DEFAULT
//! `:authority` over the Unix socket: Python grpcio (gRPC's C core: the percent-encoded
//! socket path) and grpc-go (`unix:<path>` the Thales way, and `unix://<abs path>`), over
//! grpc.health.v1, the Istio v1 service and Kubernetes KMS v2, against a real SoftHSM2 token
//! and the sidecar profile istiod meets.
//!
//! Python comes from `<workspace>/.tools/venv` (`cargo xtask setup` installs grpcio and
//! grpcio-tools there); the Go client is built from `go/testclients` into
//! `go-bin/` of the Go components' cache (`$MESH_HSM_CACHE`, default `~/.cache/mesh-hsm`). A missing tool fails the test with the command to fix it.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test on error")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use hsm_core::{
    HsmAdminService, HsmIstioKms, HsmKubeKms, HsmToken, IstioConfig, KekId, KeyRef, KubeKmsConfig,
    Mode, TokenOptions,
};
use kms_grpc::{Backend, Backends, KmsServer, ServerConfig};
use sandbox::SoftHsm;

const KEK: &str = "asm-kek";
const KUBE_KEK: &str = "kube-kek";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

struct Served {
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<kms_grpc::Result<()>>,
    _dir: tempfile::TempDir,
    _hsm: SoftHsm,
}

impl Served {
    /// A sidecar-profile server (istiod's view) on a fresh token holding both KEKs.
    fn start(name: &str) -> Self {
        let hsm = SoftHsm::new(name);
        let token = Arc::new(
            HsmToken::open(
                hsm.module(),
                hsm.label(),
                hsm.user_pin().clone(),
                TokenOptions::default(),
            )
            .unwrap(),
        );
        for kek in [KEK, KUBE_KEK] {
            token
                .ensure_kek(&KekId::new(kek).unwrap(), Mode::Apply)
                .unwrap();
        }
        let kube = HsmKubeKms::new(
            Arc::clone(&token),
            KubeKmsConfig::new(KeyRef::kek(KekId::new(KUBE_KEK).unwrap())),
        );
        let backend = Backend::Ready(Backends {
            istio: Arc::new(HsmIstioKms::new(Arc::clone(&token), IstioConfig::default())),
            admin: Arc::new(HsmAdminService::new(token)),
            kube: Some(Arc::new(kube)),
        });
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run").join("hsm-plugin-server.sock");
        let bound = KmsServer::new(ServerConfig::new(&socket), backend)
            .bind()
            .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(async {
            let _ = rx.await;
        }));
        Self {
            socket,
            stop: Some(tx),
            task,
            _dir: dir,
            _hsm: hsm,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }
}

/// Runs a client process off the runtime's threads; returns its stdout, asserting success.
async fn run_client(mut cmd: Command, what: &str) -> String {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The calls the clients report, as JSON lines.
fn calls(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn assert_full_sequence(stdout: &str, what: &str) {
    let calls = calls(stdout);
    let names: Vec<&str> = calls.iter().filter_map(|c| c["call"].as_str()).collect();
    assert_eq!(
        names,
        [
            "Check",
            "GenerateDEK",
            "GenerateSKey",
            "LoadSKey",
            "AuthenticatedEncrypt",
            "AuthenticatedDecrypt",
            "Status",
            "Encrypt+Decrypt"
        ],
        "{what}: {stdout}"
    );
    assert_eq!(calls[0]["status"], 1, "{what}: health SERVING");
    assert_eq!(calls[3]["rsa_pem"], true, "{what}");
    assert_eq!(calls[5]["round_trip"], true, "{what}");
    assert_eq!(calls[6]["healthz"], "ok", "{what}");
    assert_eq!(calls[7]["round_trip"], true, "{what}");
}

fn python() -> PathBuf {
    let python = workspace().join(".tools/venv/bin/python");
    let probe = Command::new(&python)
        .args(["-c", "import grpc, grpc_tools"])
        .output();
    match probe {
        Ok(out) if out.status.success() => python,
        _ => panic!(
            "{} with grpcio and grpcio-tools is required: run `cargo xtask setup` \
             (or `{} -m pip install grpcio grpcio-tools`)",
            python.display(),
            python.display()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_with_its_default_authority_runs_the_istio_sequence() {
    let python = python();
    let served = Served::start("foreign-py");
    let stubs = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(python);
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/istio_sequence.py"))
        .arg(format!("unix://{}", served.socket.display()))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("proto"))
        .arg(stubs.path())
        .arg(KEK);
    let stdout = run_client(cmd, "the Python grpcio client").await;
    assert_full_sequence(&stdout, "python");
    served.stop().await;
}

/// Builds the grpc-go client of `go/testclients` into the cache directory, against the
/// module's go.mod (current grpc-go) or `asm18.mod` (grpc-go 1.33, the ASM 1.8 era, which
/// sends the socket target as `:authority`).
fn go_client(modfile: &str) -> PathBuf {
    let module = workspace().join("go/testclients");
    // The same cache as the Go components `cargo xtask setup` builds.
    let bin_dir = go_components::cache_root().join("go-bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let bin = bin_dir.join(format!(
        "kms-testclient-{}",
        modfile.trim_end_matches(".mod")
    ));
    let built = Command::new("go")
        .args(["build", "-trimpath", "-mod=readonly"])
        .arg(format!("-modfile={modfile}"))
        .arg("-o")
        .arg(&bin)
        .arg("./kmsclient")
        .current_dir(&module)
        .output();
    match built {
        Err(e) => panic!(
            "`go` is required to build the grpc-go test client ({e}): install Go 1.26 \
             (https://go.dev/doc/install) or run `cargo xtask setup`"
        ),
        Ok(out) => assert!(
            out.status.success(),
            "go build -modfile={modfile} in {} failed:\n{}",
            module.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_go_dialling_unix_targets_runs_the_istio_sequence() {
    let current = go_client("go.mod");
    let asm18 = go_client("asm18.mod");
    let served = Served::start("foreign-go");
    let socket = served.socket.display();
    // The Thales client dials "unix:" + path, current grpc-go also takes unix://<abs path>
    // (both send "localhost"); a bare socket path with a custom dialer, as the Kubernetes
    // KMS client dials, makes grpc-go send the path itself as :authority.
    let path = socket.to_string();
    for (client, target, dialer) in [
        (&asm18, format!("unix:{socket}"), false),
        (&asm18, path.clone(), true),
        (&current, format!("unix:{socket}"), false),
        (&current, format!("unix://{socket}"), false),
        (&current, path.clone(), true),
    ] {
        let mut cmd = Command::new(client);
        cmd.args(["--target", &target, "--kek", KEK]);
        if dialer {
            cmd.arg("--dialer");
        }
        let what = format!("{} ({target})", client.display());
        let stdout = run_client(cmd, &what).await;
        assert_full_sequence(&stdout, &what);
    }
    served.stop().await;
}
