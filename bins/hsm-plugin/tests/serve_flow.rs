//! `hsm-plugin serve` and the client subcommands as separate processes against SoftHSM2:
//! the guide's CLI flow, exit codes, JSON output, the wrong-PIN behaviour and SIGTERM.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test on error")]
#![allow(
    clippy::too_many_lines,
    reason = "the guide's flow reads best as one story"
)]

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use assert_cmd::Command;
use ca_signing::{
    CsrPolicy, CsrPurpose, IstiodCaProfile, RootProfile, San, SoftwareSigner, Subject,
};
use sandbox::SoftHsm;

use support::{Plugin, client, stdout_of};

#[test]
fn guide_cli_flow_works_as_written_across_two_server_processes() {
    let hsm = SoftHsm::new("cli-flow");
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("pin");
    hsm.write_user_pin_file(&pin).unwrap();
    let socket = dir.path().join("run/hsm-plugin.sock");
    // `serve` exactly as the guide runs it on a workstation: no profile flag.
    let plugin = Plugin::start(&hsm, &pin, &socket, &[]);
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
    let (elapsed, ok, stderr) = plugin.terminate();
    assert!(ok);
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert!(
        stderr.contains("policy profile") && stderr.contains("workstation"),
        "the log says which profile and why: {stderr}"
    );
    assert!(!socket.exists(), "the socket is removed on shutdown");

    // The second server runs as istiod's sidecar would: in a pod.
    let plugin = Plugin::start(
        &hsm,
        &pin,
        &socket,
        &[("KUBERNETES_SERVICE_HOST", "10.96.0.1")],
    );
    let out = stdout_of(
        client(&socket)
            .args(["verify-cert", "-f"])
            .arg(dir.path().join("chain.pem")),
    );
    assert_eq!(out, "certificate chain verified\n");
    // A sidecar (the default profile in a pod) refuses GenerateKEK.
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
