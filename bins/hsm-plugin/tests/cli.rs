//! `hsm-plugin` against a real SoftHSM2 token.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test on error")]

use assert_cmd::Command;
use sandbox::SoftHsm;

fn plugin(hsm: &SoftHsm) -> Command {
    let mut cmd = Command::cargo_bin("hsm-plugin").unwrap();
    cmd.env("P11_LIB", hsm.module_path());
    for (k, v) in hsm.child_env().unwrap() {
        cmd.env(k, v);
    }
    cmd
}

#[test]
fn token_info_finds_the_token_by_label_as_json() {
    let hsm = SoftHsm::new("cli-info");
    let out = plugin(&hsm)
        .args(["token-info", "--output", "json"])
        .env("P11_TOKEN", hsm.label().as_str())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc[0]["label"], hsm.label().as_str());
    assert_eq!(doc[0]["serial"], hsm.serial());
    assert_eq!(doc[0]["user_pin_initialized"], true);
}

#[test]
fn unknown_label_fails_and_names_it() {
    let hsm = SoftHsm::new("cli-unknown");
    let out = plugin(&hsm)
        .args(["token-info", "--p11-token", "nobody-has-this"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody-has-this"));
}

#[test]
fn missing_module_is_dependency_unavailable() {
    let out = Command::cargo_bin("hsm-plugin")
        .unwrap()
        .args(["token-info", "--p11-lib", "/nonexistent/libpkcs11.so"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/libpkcs11.so"));
}

#[test]
fn serve_refuses_a_world_writable_socket_directory_with_exit_3() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::cargo_bin("hsm-plugin")
        .unwrap()
        .args(["serve", "--p11-lib", "/nonexistent/libpkcs11.so"])
        .env("SOCKET", run.join("kms.sock"))
        .env("P11_PIN", "1234")
        .env("HSM_PLUGIN_METRICS_ADDR", "off")
        .timeout(std::time::Duration::from_secs(20))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&run.display().to_string()), "{stderr}");
    assert!(stderr.contains("chmod"), "{stderr}");
    assert!(!run.join("kms.sock").exists());
}
