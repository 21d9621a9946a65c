//! `meshca` as a process.

use assert_cmd::Command;

#[test]
fn steps_lists_the_guide_in_order_as_json() {
    let out = Command::cargo_bin("meshca")
        .unwrap()
        .args(["steps", "--output", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = doc.as_array().unwrap();
    assert_eq!(steps.len(), 14);
    assert_eq!(steps[5]["name"], "vault-setup");
    assert_eq!(steps[5]["owner"], "vault-bootstrap");
}

#[test]
fn demo_runs_the_built_steps_against_real_components() {
    let out = Command::cargo_bin("meshca")
        .unwrap()
        .args(["demo", "--output", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = doc.as_array().unwrap();
    assert_eq!(steps.len(), 14);
    assert_eq!(steps[1]["status"], "done");
    assert_eq!(steps[5]["status"], "partial");
    // Every step not run says so instead of pretending.
    assert!(steps.iter().any(|s| s["status"] == "not-built-yet"));
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    Command::cargo_bin("meshca")
        .unwrap()
        .arg("no-such-command")
        .assert()
        .code(2);
}
