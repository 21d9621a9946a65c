//! The socket's directory must be private to the server's user.

use std::os::unix::fs::PermissionsExt as _;

use hsm_core::MockIstioKms;

use super::backends;
use crate::{KmsServer, ServerConfig};

fn bind_in(
    mode: u32,
    owner: Option<u32>,
) -> (tempfile::TempDir, crate::Result<crate::BoundServer>) {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(mode)).unwrap();
    if let Some(uid) = owner {
        std::os::unix::fs::chown(&run, Some(uid), None).unwrap();
    }
    let config = ServerConfig::new(run.join("kms.sock"));
    let bound = KmsServer::new(config, backends(MockIstioKms::new())).bind();
    (dir, bound)
}

#[tokio::test]
async fn a_group_or_world_writable_directory_is_refused() {
    for mode in [0o777, 0o770, 0o1777, 0o722] {
        let (dir, bound) = bind_in(mode, None);
        let err = bound.expect_err("a writable socket directory must be refused");
        let text = crate::error::chain(&err);
        assert!(
            text.contains(&dir.path().join("run").display().to_string()),
            "{text}"
        );
        assert!(text.contains("chmod"), "{text}");
        assert!(!dir.path().join("run/kms.sock").exists());
    }
}

#[tokio::test]
async fn a_directory_owned_by_another_user_is_refused() {
    // 65534 (nobody) is never the test's user; root may hand a directory to it.
    let (dir, bound) = bind_in(0o755, Some(65534));
    let Err(err) = bound else {
        panic!("a directory owned by uid 65534 must be refused");
    };
    let text = crate::error::chain(&err);
    assert!(
        text.contains(&dir.path().join("run").display().to_string()),
        "{text}"
    );
    assert!(text.contains("65534"), "{text}");
}

#[tokio::test]
async fn a_private_directory_is_served_with_the_socket_mode_and_nothing_left_behind() {
    let (dir, bound) = bind_in(0o750, None);
    let bound = bound.unwrap();
    let meta = std::fs::metadata(dir.path().join("run/kms.sock")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let entries: Vec<_> = std::fs::read_dir(dir.path().join("run"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("kms.sock")]);
    drop(bound);
}

#[tokio::test]
async fn a_missing_directory_under_a_shared_volume_is_made_private_and_served() {
    // As in the istiod pod: the volume (an emptyDir) is world-writable; the socket goes into a
    // directory of the plugin's own below it (mesh-install's PLUGIN_SOCKET).
    let volume = tempfile::tempdir().unwrap();
    std::fs::set_permissions(volume.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = volume.path().join("plugin").join("plugin.sock");
    let config = ServerConfig::new(socket.clone());
    let bound = KmsServer::new(config, backends(MockIstioKms::new()))
        .bind()
        .unwrap();
    let mode = std::fs::metadata(volume.path().join("plugin"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o022,
        0,
        "the plugin's directory is writable by others: {mode:o}"
    );
    assert!(socket.exists());
    drop(bound);
}
