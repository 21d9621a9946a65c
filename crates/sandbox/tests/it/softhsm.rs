use std::collections::HashSet;

use sandbox::SoftHsm;
use secrecy::SecretString;

#[test]
fn token_is_created_found_by_label_and_logged_into() {
    let hsm = SoftHsm::new("it-login");

    let info = hsm.info().unwrap();
    assert_eq!(info.label, hsm.label().as_str());
    assert_eq!(info.serial, hsm.serial());
    assert!(info.user_pin_initialized);
    assert_eq!(info.model, "SoftHSM v2");

    let session = hsm
        .module()
        .login_user(hsm.label(), hsm.user_pin())
        .unwrap();
    let session_info = session.get_session_info().unwrap();
    assert!(
        format!("{:?}", session_info.session_state()).contains("User"),
        "expected a user session, got {:?}",
        session_info.session_state()
    );
}

#[test]
fn wrong_pin_is_a_distinct_error() {
    let hsm = SoftHsm::new("it-wrong-pin");
    let err = hsm
        .module()
        .login_user(hsm.label(), &SecretString::from("not-the-pin"))
        .unwrap_err();
    assert!(err.is_pin_rejected(), "{err}");
    // The error names the token but never the PIN.
    let text = format!("{err} {err:?}");
    assert!(text.contains(hsm.label().as_str()));
    assert!(!text.contains("not-the-pin"));
}

#[test]
fn missing_label_lists_what_exists() {
    let hsm = SoftHsm::new("it-missing");
    let label = hsm_core::TokenLabel::new("no-such-token-here").unwrap();
    let err = hsm.module().find_token(&label).unwrap_err();
    assert!(err.is_not_found());
    assert!(err.to_string().contains(hsm.label().as_str()), "{err}");
}

#[test]
fn parallel_threads_get_distinct_tokens() {
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let hsm = SoftHsm::new(&format!("it-par{i}"));
                // Each thread logs into its own token by label.
                let _session = hsm
                    .module()
                    .login_user(hsm.label(), hsm.user_pin())
                    .unwrap();
                (hsm.label().to_string(), hsm.serial().to_owned())
            })
        })
        .collect();
    let results: Vec<(String, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let labels: HashSet<_> = results.iter().map(|r| &r.0).collect();
    let serials: HashSet<_> = results.iter().map(|r| &r.1).collect();
    assert_eq!(labels.len(), 4);
    assert_eq!(serials.len(), 4);
}

#[test]
fn dropping_the_fixture_removes_the_token_from_disk() {
    let conf = sandbox::softhsm_conf_path().unwrap();
    let tokens = conf.parent().unwrap().join("tokens");
    let hsm = SoftHsm::new("it-drop");
    let serial = hsm.serial().to_owned();
    let has_token = || {
        std::fs::read_dir(&tokens).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .replace('-', "")
                .ends_with(&serial)
        })
    };
    assert!(has_token(), "token directory for {serial} not found");
    drop(hsm);
    assert!(!has_token(), "token directory for {serial} still present");
}

#[test]
fn user_pin_file_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let hsm = SoftHsm::new("it-pinfile");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pin");
    hsm.write_user_pin_file(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let pin = SecretString::from(std::fs::read_to_string(&path).unwrap());
    hsm.module().login_user(hsm.label(), &pin).unwrap();
}
