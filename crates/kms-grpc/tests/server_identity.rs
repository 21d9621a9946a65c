//! The typed client checks who serves the socket (`SO_PEERCRED`) before it sends anything.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::io::{BufRead as _, BufReader, Read as _};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};

/// A listener run as uid/gid 65534 (nobody) that reports how many bytes its first client sent.
const LISTENER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(1)
print("ready", flush=True)
c, _ = s.accept(); c.settimeout(2)
n = 0
try:
    while True:
        b = c.recv(65536)
        if not b: break
        n += len(b)
except socket.timeout:
    pass
print(n, flush=True)
"#;

#[tokio::test]
async fn a_server_run_by_another_user_is_refused_before_anything_is_sent() {
    assert!(
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout == b"0\n"),
        "this test runs a listener as another user and needs root (it runs as root in `cargo xtask test`)"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(65534), Some(65534)).unwrap();
    let path = run.join("kms.sock");
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", LISTENER])
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux) and /usr/bin/python3 are needed: apt-get install util-linux python3");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");

    let err = kms_grpc::KmsClient::connect(&path)
        .await
        .expect_err("a socket served by uid 65534 must be refused");
    let text = format!("{err:#}");
    let mut source: Option<&dyn std::error::Error> = Some(&err);
    let mut chain = String::new();
    while let Some(e) = source {
        chain.push_str(&e.to_string());
        chain.push_str(": ");
        source = e.source();
    }
    assert!(chain.contains("65534"), "{text} / {chain}");
    assert!(chain.contains(&path.display().to_string()), "{chain}");

    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(
        rest.trim(),
        "0",
        "the client sent bytes to an untrusted server"
    );
    let _ = child.wait();
}
