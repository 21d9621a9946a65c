//! The plugin as a child process: `serve` on a socket with its operations port, and the
//! client subcommands.

#![allow(dead_code, reason = "each test binary uses part of the helpers")]

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use assert_cmd::cargo::CommandCargoExt as _;
use sandbox::SoftHsm;

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) struct Plugin {
    pub(crate) child: Child,
    pub(crate) port: u16,
}

impl Plugin {
    pub(crate) fn start(
        hsm: &SoftHsm,
        pin_file: &Path,
        socket: &Path,
        extra: &[(&str, &str)],
    ) -> Self {
        Self::start_with(hsm, pin_file, socket, extra, &[])
    }

    /// `serve` with extra environment variables and extra arguments after `serve`.
    pub(crate) fn start_with(
        hsm: &SoftHsm,
        pin_file: &Path,
        socket: &Path,
        extra: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        let port = free_port();
        let mut cmd = StdCommand::cargo_bin("hsm-plugin").unwrap();
        cmd.arg("serve")
            // A workstation unless a test says otherwise (the default profile depends on it).
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("HSM_PLUGIN_PROFILE")
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
        cmd.args(args);
        let child = cmd.spawn().unwrap();
        let plugin = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(socket.exists() && plugin.get("/healthz").is_some()) {
            assert!(Instant::now() < deadline, "the plugin did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        plugin
    }

    pub(crate) fn get(&self, path: &str) -> Option<(u16, String)> {
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
    pub(crate) fn terminate(mut self) -> (Duration, bool, String) {
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

pub(crate) fn client(socket: &Path) -> Command {
    let mut cmd = Command::cargo_bin("hsm-plugin").unwrap();
    cmd.env("SOCKET", socket);
    cmd
}

pub(crate) fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
