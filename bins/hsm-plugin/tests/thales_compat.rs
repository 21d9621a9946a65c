//! The Thales `k8s-kms-plugin` flags and environment variables a manifest or runbook passes,
//! through the binary: accepted where they can be honoured, refused with exit code 3 and
//! nothing changed where they cannot (`--p11-pin`, an algorithm we do not serve).

#![allow(clippy::unwrap_used, reason = "test helpers fail the test on error")]

mod support;

use std::time::Duration;

use assert_cmd::Command;
use sandbox::SoftHsm;
use support::{Plugin, client, stdout_of};

const PIN_IN_ARGV: &str = "9876-in-argv";

/// The binary with the token's environment (module, label, PIN file), as a runbook sets it.
fn plugin_cmd(hsm: &SoftHsm, pin_file: &std::path::Path) -> Command {
    let mut cmd = Command::cargo_bin("hsm-plugin").unwrap();
    cmd.env("P11_LIB", hsm.module_path())
        .env("P11_TOKEN", hsm.label().as_str())
        .env("P11_PIN_FILE", pin_file)
        .env("HSM_PLUGIN_METRICS_ADDR", "off")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .timeout(Duration::from_secs(30));
    for (k, v) in hsm.child_env().unwrap() {
        cmd.env(k, v);
    }
    cmd
}

#[test]
fn thales_serve_flags_and_env_names_are_accepted() {
    let hsm = SoftHsm::new("compat-flags");
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("pin");
    hsm.write_user_pin_file(&pin).unwrap();
    let socket = dir.path().join("run/hsm-plugin-server.sock");
    let module = hsm.module_path().display().to_string();
    // P11_TOKEN names a token that does not exist: --p11-label on the command line wins.
    let plugin = Plugin::start_with(
        &hsm,
        &pin,
        &socket,
        &[("P11_TOKEN", "not-this-token")],
        &[
            "--p11-lib",
            &module,
            "--p11-label",
            hsm.label().as_str(),
            "--kek-id",
            "asm-kek",
            "--ca-id",
            "1c3d30d5-dfa8-4167-a9f9-2c768464181b",
            "--provider",
            "luna",
            "--algorithm",
            "aes-gcm",
            "--auto-create",
            "--enable-server",
            "--disable-socket=false",
        ],
    );
    // The hyphenated environment names of the Thales CLI: kek-id, ca-id.
    let out = stdout_of(
        client(&socket)
            .arg("generate-kek")
            .env("kek-id", "from-env"),
    );
    assert_eq!(out, "KEK ID: from-env\n");
    let (_, ok, stderr) = plugin.terminate();
    assert!(ok, "{stderr}");
    assert!(stderr.contains("KEK ID: asm-kek"), "{stderr}");
    assert!(
        stderr.contains("--enable-server accepted without effect"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--auto-create accepted without effect"),
        "{stderr}"
    );
}

#[test]
fn p11_pin_in_argv_is_refused_with_exit_3_and_changes_nothing() {
    let hsm = SoftHsm::new("compat-pin");
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("pin");
    hsm.write_user_pin_file(&pin).unwrap();
    let socket = dir.path().join("run/hsm-plugin-server.sock");

    let out = plugin_cmd(&hsm, &pin)
        .args(["serve", "--p11-pin", PIN_IN_ARGV, "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--p11-pin is refused"), "{stderr}");
    assert!(
        stderr.contains("ps") && stderr.contains("P11_PIN_FILE"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(PIN_IN_ARGV),
        "the PIN is never echoed: {stderr}"
    );
    assert!(!socket.exists(), "nothing was served");

    // A client command refuses it too, before touching the token.
    let out = plugin_cmd(&hsm, &pin)
        .args([
            "generate-kek",
            "--in-process",
            "--kek-id",
            "k1",
            "--p11-pin",
            PIN_IN_ARGV,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(PIN_IN_ARGV));
    // k1 was not created: creating it now succeeds (a duplicate id would be refused).
    let out =
        stdout_of(plugin_cmd(&hsm, &pin).args(["generate-kek", "--in-process", "--kek-id", "k1"]));
    assert_eq!(out, "KEK ID: k1\n");
}

#[test]
fn an_algorithm_we_do_not_serve_is_a_configuration_error() {
    let hsm = SoftHsm::new("compat-alg");
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("pin");
    hsm.write_user_pin_file(&pin).unwrap();
    let socket = dir.path().join("plugin.sock");
    let out = plugin_cmd(&hsm, &pin)
        .args(["serve", "--algorithm", "aes-cbc", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("aes-cbc"));
    assert!(!socket.exists());
}

#[test]
fn help_documents_the_default_profile_and_the_refused_pin_flag() {
    let out = Command::cargo_bin("hsm-plugin")
        .unwrap()
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("inside a Kubernetes pod"), "{help}");
    assert!(help.contains("--p11-pin"), "{help}");
    assert!(help.contains("--p11-label"), "{help}");
}
