//! `hsm-plugin serve` and the client subcommands as separate processes against SoftHSM2:
//! the guide's CLI flow, exit codes, JSON output, the wrong-PIN behaviour and SIGTERM.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test on error")]
#![allow(
    clippy::too_many_lines,
    reason = "the guide's flow reads best as one story"
)]

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use assert_cmd::cargo::CommandCargoExt as _;
use ca_signing::{
    CsrPolicy, CsrPurpose, IstiodCaProfile, RootProfile, San, SoftwareSigner, Subject,
};
use sandbox::SoftHsm;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Plugin {
    child: Child,
    port: u16,
}

impl Plugin {
    fn start(hsm: &SoftHsm, pin_file: &Path, socket: &Path, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut cmd = StdCommand::cargo_bin("hsm-plugin").unwrap();
        cmd.arg("serve")
            .env("SOCKET", socket)
            .env("P11_LIB", hsm.module_path())
            .env("P11_TOKEN", hsm.label().as_str())
            .env("P11_PIN_FILE", pin_file)
            .env("HSM_PLUGIN_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in hsm.child_env().unwrap() {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let plugin = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(socket.exists() && plugin.get("/healthz").is_some()) {
            assert!(Instant::now() < deadline, "the plugin did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        plugin
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        let code = raw.get(9..12)?.parse().ok()?;
        Some((code, raw.split_once("\r\n\r\n")?.1.to_owned()))
    }

    /// Sends SIGTERM and returns how long the process took to exit, and its stderr.
    fn terminate(mut self) -> (Duration, bool, String) {
        let started = Instant::now();
        let ok = StdCommand::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let deadline = started + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the plugin ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let elapsed = started.elapsed();
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (elapsed, status.success(), stderr)
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(socket: &Path) -> Command {
    let mut cmd = Command::cargo_bin("hsm-plugin").unwrap();
    cmd.env("SOCKET", socket);
    cmd
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn guide_cli_flow_works_as_written_across_two_server_processes() {
    let hsm = SoftHsm::new("cli-flow");
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("pin");
    hsm.write_user_pin_file(&pin).unwrap();
    let socket = dir.path().join("run/hsm-plugin.sock");
    let plugin = Plugin::start(&hsm, &pin, &socket, &[("HSM_PLUGIN_PROFILE", "admin")]);
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o660
    );

    let out = stdout_of(client(&socket).args(["generate-kek", "--kek-id", "asm-kek"]));
    assert_eq!(out, "KEK ID: asm-kek\n");
    let json = stdout_of(client(&socket).args(["generate-kek", "--output", "json"]));
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["kek_id"].as_str().unwrap().len(), 36);

    let root_key = SoftwareSigner::generate(ca_signing::KeyAlgorithm::EcdsaP256, "root").unwrap();
    let root = ca_signing::issue_root(&RootProfile::default(), &root_key).unwrap();
    std::fs::write(dir.path().join("root.pem"), root.pem()).unwrap();
    stdout_of(
        client(&socket)
            .args(["import-ca", "-f"])
            .arg(dir.path().join("root.pem")),
    );

    // istiod's side: a real AuthenticatedEncrypt of its CSR, stored as the Secret's .data.
    let istiod_key =
        SoftwareSigner::generate(ca_signing::KeyAlgorithm::EcdsaP256, "istiod").unwrap();
    let csr = ca_signing::create_csr(
        &Subject::new("Istio", "Intermediate CA"),
        &[San::Dns(ca_signing::ISTIOD_DNS_NAME.into())],
        &istiod_key,
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let doc = rt.block_on(async {
        let c = kms_grpc::KmsClient::connect(&socket).await.unwrap();
        let dek = c.generate_dek(b"asm-kek").await.unwrap();
        let encrypted_csr = c
            .authenticated_encrypt(b"asm-kek", &dek, csr.to_pem().as_bytes(), b"csr-0001")
            .await
            .unwrap();
        kms_grpc::csr_bundle::EncryptedCsr {
            kek_id: b"asm-kek".to_vec(),
            encrypted_dek: dek,
            csr_id: b"csr-0001".to_vec(),
            encrypted_csr,
        }
    });
    std::fs::write(dir.path().join("encrypted_csr.json"), doc.to_json()).unwrap();
    let out = stdout_of(
        client(&socket)
            .args(["decrypt-csr", "-f"])
            .arg(dir.path().join("encrypted_csr.json"))
            .arg("-o")
            .arg(dir.path().join("csr.pem")),
    );
    assert_eq!(out, "KEK ID: asm-kek\nCSR ID: csr-0001\n");
    let csr_file = dir.path().join("csr.pem");
    assert_eq!(
        std::fs::metadata(&csr_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read_to_string(&csr_file).unwrap(), csr.to_pem());

    // The operator signs offline; a new server process verifies against the imported root.
    let reviewed = ca_signing::review_csr(
        &std::fs::read(&csr_file).unwrap(),
        &CsrPolicy::default(),
        CsrPurpose::IstiodCa,
    )
    .unwrap();
    let cert = ca_signing::sign_istiod_ca(&reviewed, &root, &root_key, &IstiodCaProfile::default())
        .unwrap();
    std::fs::write(
        dir.path().join("chain.pem"),
        format!("{}{}", cert.pem(), root.pem()),
    )
    .unwrap();
    let (elapsed, ok, _) = plugin.terminate();
    assert!(ok);
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert!(!socket.exists(), "the socket is removed on shutdown");

    let plugin = Plugin::start(&hsm, &pin, &socket, &[]);
    let out = stdout_of(
        client(&socket)
            .args(["verify-cert", "-f"])
            .arg(dir.path().join("chain.pem")),
    );
    assert_eq!(out, "certificate chain verified\n");
    // A sidecar (the default profile) refuses GenerateKEK.
    let out = client(&socket)
        .args(["generate-kek", "--kek-id", "other"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sidecar policy profile"));
    // Garbage chain: exit 1 and the reason.
    std::fs::write(
        dir.path().join("root-only.pem"),
        root_key.public_key_pem().unwrap(),
    )
    .unwrap();
    let out = client(&socket)
        .args(["verify-cert", "-f"])
        .arg(dir.path().join("root-only.pem"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let (elapsed, ok, _) = plugin.terminate();
    assert!(ok && elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[test]
fn wrong_pin_keeps_the_server_up_not_ready_and_sigterm_stops_it_promptly() {
    let hsm = SoftHsm::new("cli-wrongpin");
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("pin");
    sandbox::write_secret_file(&pin, b"not-the-pin\n").unwrap();
    let socket = dir.path().join("plugin.sock");
    let plugin = Plugin::start(&hsm, &pin, &socket, &[("HSM_PLUGIN_PROFILE", "admin")]);

    let (code, body) = plugin.get("/readyz").unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("rejected the PIN"), "{body}");
    assert!(body.contains("not retrying"), "{body}");
    assert_eq!(plugin.get("/healthz").unwrap().0, 200);
    let (_, metrics) = plugin.get("/metrics").unwrap();
    assert!(metrics.contains("hsm_plugin_ready 0"), "{metrics}");

    let out = client(&socket)
        .args(["generate-kek", "--kek-id", "k"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rejected the PIN"), "{stderr}");
    assert!(
        !stderr.contains("not-the-pin"),
        "the PIN never appears: {stderr}"
    );

    let (elapsed, ok, log) = plugin.terminate();
    assert!(ok);
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert!(
        !log.contains("not-the-pin"),
        "the PIN never appears in logs"
    );
    // The token was not locked by retries: the right PIN still logs in.
    assert!(!hsm.info().unwrap().user_pin_locked);
}

#[test]
fn client_commands_report_a_missing_server_as_unavailable_and_run_in_process() {
    let hsm = SoftHsm::new("cli-inproc");
    let dir = tempfile::tempdir().unwrap();
    let out = client(&dir.path().join("nobody.sock"))
        .args(["generate-kek"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody.sock"));

    let pin = dir.path().join("pin");
    hsm.write_user_pin_file(&pin).unwrap();
    let mut cmd = Command::cargo_bin("hsm-plugin").unwrap();
    for (k, v) in hsm.child_env().unwrap() {
        cmd.env(k, v);
    }
    let out = stdout_of(
        cmd.args([
            "generate-kek",
            "--in-process",
            "--kek-id",
            "ws-kek",
            "--output",
            "json",
        ])
        .env("P11_LIB", hsm.module_path())
        .env("P11_TOKEN", hsm.label().as_str())
        .env("P11_PIN_FILE", &pin),
    );
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["kek_id"], "ws-kek");
}
