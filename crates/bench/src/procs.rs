//! Child processes: the workspace binaries next to the bench, their memory, their end.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// The directory of the bench executable: `target/<profile>/`, where cargo puts the other
/// binaries of the same profile.
pub(crate) fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the mesh-bench executable")?;
    exe.parent()
        .map(Path::to_path_buf)
        .with_context(|| format!("{} has no parent directory", exe.display()))
}

/// The build profile the bench runs in (the name of its directory: `release`, `debug`).
pub(crate) fn profile() -> String {
    bin_dir()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A workspace binary built in the same profile as the bench.
pub(crate) fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let dir = bin_dir()?;
    let path = dir.join(name);
    if path.is_file() {
        return Ok(path);
    }
    let flag = if profile() == "release" {
        " --release"
    } else {
        ""
    };
    anyhow::bail!(
        "{} is missing: the bench runs the {name} binary of its own profile; build it with \
         `cargo build{flag} -p {name}` (cargo xtask bench does this)",
        path.display()
    )
}

/// A child process killed (and reaped) when dropped.
pub(crate) struct Guard {
    child: Option<Child>,
    what: &'static str,
    log: Option<PathBuf>,
}

impl Guard {
    pub(crate) fn new(child: Child, what: &'static str, log: Option<PathBuf>) -> Self {
        Self {
            child: Some(child),
            what,
            log,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails, with the tail of the log, when the process has ended.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            anyhow::bail!("{} was already stopped", self.what);
        };
        if let Some(status) = child.try_wait().context("polling a child process")? {
            anyhow::bail!(
                "{} exited early ({status}); its log ends with:\n{}",
                self.what,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// The last lines of the child's log file.
    pub(crate) fn log_tail(&self) -> String {
        let Some(path) = &self.log else {
            return "(no log)".to_owned();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Stops the process.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Peak resident set size (`VmHWM`) of a live process, in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_field_kib(pid, "VmHWM:")
}

fn status_field_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("{path} has no {field} line"))?;
    line.trim_start_matches(field)
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{path}: cannot read {line:?} as kB"))
}

/// Polls `ready` every 20 ms until it returns true or `timeout` passes.
pub(crate) fn wait_until(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A plain HTTP/1.1 GET on 127.0.0.1; the body when the status is 200.
pub(crate) fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    if raw.get(9..12)? != "200" {
        return None;
    }
    Some(raw.split_once("\r\n\r\n")?.1.to_owned())
}

/// A free TCP port on 127.0.0.1.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .context("finding a free port")?
        .local_addr()
        .context("finding a free port")?
        .port())
}

/// A log file for a child's stderr.
pub(crate) fn log_file(dir: &Path, name: &str) -> anyhow::Result<(PathBuf, std::fs::File)> {
    let path = dir.join(name);
    let file = std::fs::File::create(&path)
        .with_context(|| format!("creating the log file {}", path.display()))?;
    Ok((path, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_peak_rss_is_readable() {
        // The resident size now can only be at or below the peak read after it.
        let now = status_field_kib(std::process::id(), "VmRSS:").unwrap();
        let peak = peak_rss_kib(std::process::id()).unwrap();
        assert!(now > 0);
        assert!(now <= peak, "VmRSS {now} KiB above VmHWM {peak} KiB");
    }
}
