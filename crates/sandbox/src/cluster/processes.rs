//! The processes of one cluster: one process group, stopped together, and a watchdog that stops
//! the group when the process that started it is gone (a test binary killed, a demo interrupted
//! before its destructors ran), so no component outlives its owner.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{Error, Result};

/// One running component.
struct Component {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// Every process of a cluster, in one process group whose leader is the watchdog.
pub(crate) struct ProcessGroup {
    watchdog: Child,
    components: Vec<Component>,
}

impl ProcessGroup {
    /// Starts the watchdog: a shell that polls this process once a second and, when it is gone,
    /// kills its own process group (which every component joins).
    pub(crate) fn new() -> Result<Self> {
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; kill -KILL 0"#)
            .arg("sandbox-cluster-watchdog")
            .arg(std::process::id().to_string())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(Error::io("starting the cluster watchdog", Path::new("sh")))?;
        Ok(Self {
            watchdog,
            components: Vec::new(),
        })
    }

    /// Spawns `cmd` in the group, its output appended to `log`.
    pub(crate) fn spawn(
        &mut self,
        name: &'static str,
        cmd: &mut Command,
        log: &Path,
    ) -> Result<()> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(Error::io("opening a component log", log))?;
        let err = out
            .try_clone()
            .map_err(Error::io("opening a component log", log))?;
        let pgid = i32::try_from(self.watchdog.id()).unwrap_or(0);
        let child = cmd
            .process_group(pgid)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(Error::io("spawning a cluster component", cmd.get_program()))?;
        self.components.push(Component {
            name,
            child,
            log: log.to_owned(),
        });
        Ok(())
    }

    /// An error for the first component that has exited, with the end of its log.
    pub(crate) fn check_running(&mut self) -> Result<()> {
        for component in &mut self.components {
            if let Ok(Some(status)) = component.child.try_wait() {
                return Err(Error::ClusterStart {
                    reason: format!("{} exited ({status})", component.name),
                    log: log_tail(&component.log),
                });
            }
        }
        Ok(())
    }

    /// The process ids of the components, by name (for tests that check nothing is left).
    pub(crate) fn pids(&self) -> Vec<(&'static str, u32)> {
        self.components
            .iter()
            .map(|c| (c.name, c.child.id()))
            .collect()
    }

    /// The log file of a component.
    pub(crate) fn log_of(&self, name: &str) -> Option<&Path> {
        self.components
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.log.as_path())
    }

    /// Stops the components in the reverse order of their start, then the watchdog, and reaps
    /// them all.
    pub(crate) fn stop(&mut self) {
        for component in self.components.iter_mut().rev() {
            let _ = component.child.kill();
            let _ = component.child.wait();
        }
        self.components.clear();
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last lines of a log file.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(12).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}
