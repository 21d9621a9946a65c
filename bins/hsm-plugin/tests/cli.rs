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
