//! The Go programs mesh-hsm's sandbox runs beside its own code: the Kubernetes control plane
//! (`kube-apiserver`, `kube-controller-manager`, `kube-scheduler`), `kubectl`, `etcd`, and
//! `kwok`, the node simulator that makes pods Running without a kubelet.
//!
//! Each [`Component`] is a wrapper Go module under `go/` in the workspace (only `go.mod` and
//! `go.sum`; the programs are `tool` directives), so its version is pinned by the module graph
//! and read from that `go.mod`. [`Component::build`] compiles it through the Go module proxy into
//! a cache outside the work tree, one directory per component and version
//! ([`Component::bin_dir`]); a stamp of the module files and linker flags decides whether a
//! cached build is current. `cargo xtask setup` builds; the sandbox only looks binaries up
//! ([`Component::binary`]).
//!
//! Only the standard library is used: `cargo xtask` links this crate.
//!
//! ```no_run
//! let apiserver = go_components::KUBERNETES.binary("kube-apiserver")?;
//! println!("{} {}", apiserver.display(), go_components::KUBERNETES.version());
//! # Ok::<(), go_components::Missing>(())
//! ```

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;

mod cache;

pub use cache::cache_root;

/// One wrapper module and the programs built from it.
#[derive(Debug)]
pub struct Component {
    /// Short name, also the cache directory's prefix (`kubernetes`, `etcd`, `kwok`).
    pub name: &'static str,
    /// The wrapper module's directory, relative to the workspace root.
    pub module_dir: &'static str,
    /// The module whose version names the component (`k8s.io/kubernetes`).
    pub versioned_module: &'static str,
    /// `(binary name, Go package)` for every program built.
    pub programs: &'static [(&'static str, &'static str)],
    go_mod: &'static str,
    go_sum: &'static str,
    /// Go packages whose version variables (`gitVersion`, `gitMajor`, ...) are set at link time,
    /// so the binaries report the real release instead of `v0.0.0-master`.
    version_packages: &'static [&'static str],
    /// Files of the versioned module's source that its programs need at run time, copied into
    /// the cache entry at build time: `(file name in the cache, sources joined as one YAML
    /// stream)`.
    data: &'static [(&'static str, &'static [&'static str])],
}

/// kube-apiserver, kube-controller-manager, kube-scheduler and kubectl, one release.
pub const KUBERNETES: Component = Component {
    name: "kubernetes",
    module_dir: "go/kubernetes",
    versioned_module: "k8s.io/kubernetes",
    programs: &[
        ("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
        (
            "kube-controller-manager",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
        ),
        ("kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"),
        ("kubectl", "k8s.io/kubernetes/cmd/kubectl"),
    ],
    go_mod: include_str!("../../../go/kubernetes/go.mod"),
    go_sum: include_str!("../../../go/kubernetes/go.sum"),
    version_packages: &[
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ],
    data: &[],
};

/// etcd, the API server's store.
pub const ETCD: Component = Component {
    name: "etcd",
    module_dir: "go/etcd",
    versioned_module: "go.etcd.io/etcd/server/v3",
    programs: &[("etcd", "go.etcd.io/etcd/server/v3")],
    go_mod: include_str!("../../../go/etcd/go.mod"),
    go_sum: include_str!("../../../go/etcd/go.sum"),
    version_packages: &[],
    data: &[],
};

/// kwok's controller: registers nothing itself, but keeps the nodes annotated for it Ready and
/// takes the pods bound to them through their lifecycle (Running, Ready, deletion).
pub const KWOK: Component = Component {
    name: "kwok",
    module_dir: "go/kwok",
    versioned_module: "sigs.k8s.io/kwok",
    programs: &[("kwok", "sigs.k8s.io/kwok/cmd/kwok")],
    go_mod: include_str!("../../../go/kwok/go.mod"),
    go_sum: include_str!("../../../go/kwok/go.sum"),
    version_packages: &[],
    // kwok's controller has no built-in lifecycle: it needs Stage objects. These are the ones
    // kwok's own cluster tool uses by default (node initialisation, heartbeat with leases, pod
    // ready / complete / delete), taken from the pinned module's source.
    data: &[(
        KWOK_STAGES,
        &[
            "kustomize/stage/node/fast/node-initialize.yaml",
            "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
            "kustomize/stage/pod/fast/pod-ready.yaml",
            "kustomize/stage/pod/fast/pod-complete.yaml",
            "kustomize/stage/pod/fast/pod-delete.yaml",
        ],
    )],
};

/// The file in [`KWOK`]'s cache entry holding the Stage objects its controller is started with
/// (`kwok --config <file>`).
pub const KWOK_STAGES: &str = "stages.yaml";

/// Every component, in build order (the cheapest first, so a failure shows early).
pub const ALL: [&Component; 3] = [&ETCD, &KWOK, &KUBERNETES];

/// A binary that is not in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The program looked for.
    pub program: String,
    /// Where it was expected.
    pub path: PathBuf,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not built (expected at {}): run `cargo xtask setup`, which builds the pinned \
             Go components from the Go module proxy (Go 1.26 needed; about 20 minutes once on \
             2 cores)",
            self.program,
            self.path.display()
        )
    }
}

impl std::error::Error for Missing {}

impl Component {
    /// The pinned version of [`Self::versioned_module`], read from the wrapper's `go.mod`.
    ///
    /// # Panics
    ///
    /// When the `go.mod` compiled into this crate does not require the module: a broken checkout,
    /// caught by this crate's tests.
    #[must_use]
    pub fn version(&self) -> &'static str {
        required_version(self.go_mod, self.versioned_module).unwrap_or_else(|| {
            panic!(
                "{}/go.mod does not require {}",
                self.module_dir, self.versioned_module
            )
        })
    }

    /// The cache directory of this component at its pinned version.
    #[must_use]
    pub fn bin_dir(&self) -> PathBuf {
        cache_root()
            .join("bin")
            .join(format!("{}-{}", self.name, self.version()))
    }

    /// The path of one of this component's programs, if it has been built.
    ///
    /// # Errors
    ///
    /// [`Missing`] when the cache has no such binary (with the command that builds it).
    pub fn binary(&self, program: &str) -> Result<PathBuf, Missing> {
        let path = self.bin_dir().join(program);
        if path.is_file() {
            Ok(path)
        } else {
            Err(Missing {
                program: program.to_owned(),
                path,
            })
        }
    }

    /// The linker flags of the build: symbols stripped, version variables set.
    #[must_use]
    pub fn ldflags(&self) -> String {
        let mut flags = String::from("-s -w");
        let version = self.version();
        let mut parts = version.trim_start_matches('v').split('.');
        let major = parts.next().unwrap_or_default();
        let minor = parts.next().unwrap_or_default();
        for package in self.version_packages {
            for (var, value) in [
                ("gitVersion", version),
                ("gitMajor", major),
                ("gitMinor", minor),
                ("gitTreeState", "clean"),
            ] {
                let _ = write!(flags, " -X {package}.{var}={value}");
            }
        }
        flags
    }

    /// Whether the cache holds every program, built from the module files and flags of this
    /// checkout.
    #[must_use]
    pub fn is_current(&self) -> bool {
        let dir = self.bin_dir();
        self.programs.iter().all(|(bin, _)| dir.join(bin).is_file())
            && std::fs::read_to_string(dir.join(cache::STAMP)).is_ok_and(|s| s == self.stamp())
    }

    fn stamp(&self) -> String {
        format!(
            "ldflags: {}\ndata: {:?}\n--- go.mod\n{}\n--- go.sum\n{}",
            self.ldflags(),
            self.data,
            self.go_mod,
            self.go_sum
        )
    }

    /// Builds every program of the component into [`Self::bin_dir`] unless the cache is current.
    /// The build goes to a sibling directory first and replaces the cache entry when complete,
    /// so an interrupted build never leaves a half-filled entry that looks current.
    ///
    /// Returns `false` when nothing had to be built.
    ///
    /// # Errors
    ///
    /// A message naming the command that failed (with Go's output already on stderr).
    pub fn build(&self, workspace_root: &Path) -> Result<bool, String> {
        if self.is_current() {
            return Ok(false);
        }
        let module = workspace_root.join(self.module_dir);
        let dir = self.bin_dir();
        let staging = dir.with_extension(format!("partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)
            .map_err(|e| format!("creating {}: {e}", staging.display()))?;
        let mut cmd = Command::new("go");
        cmd.current_dir(&module)
            .env("CGO_ENABLED", "0")
            .env("GOFLAGS", "-mod=readonly")
            .args(["build", "-trimpath", "-ldflags", &self.ldflags(), "-o"]);
        // One program is written to the name given; several go to a directory under the names
        // Go derives from their packages, which must then be the names listed.
        match self.programs {
            [(bin, _)] => cmd.arg(staging.join(bin)),
            _ => cmd.arg(format!("{}/", staging.display())),
        };
        cmd.args(self.programs.iter().map(|(_, package)| *package));
        let status = cmd.status().map_err(|e| {
            format!(
                "cannot run `go build` in {}: {e} (Go 1.26 is needed)",
                module.display()
            )
        })?;
        if !status.success() {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(format!(
                "`go build` of {} in {} failed ({status})",
                self.name,
                module.display()
            ));
        }
        if let Some((bin, package)) = self
            .programs
            .iter()
            .find(|(bin, _)| !staging.join(bin).is_file())
        {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(format!("`go build` of {package} produced no {bin}"));
        }
        if let Err(err) = self.copy_data(&module, &staging) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(err);
        }
        std::fs::write(staging.join(cache::STAMP), self.stamp())
            .map_err(|e| format!("writing the build stamp: {e}"))?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&staging, &dir)
            .map_err(|e| format!("moving {} to {}: {e}", staging.display(), dir.display()))?;
        Ok(true)
    }
}

impl Component {
    /// The path of a data file of this component (see [`KWOK_STAGES`]), if it has been built.
    ///
    /// # Errors
    ///
    /// [`Missing`] when the cache has no such file.
    pub fn data_file(&self, name: &str) -> Result<PathBuf, Missing> {
        self.binary(name)
    }

    fn copy_data(&self, module: &Path, into: &Path) -> Result<(), String> {
        if self.data.is_empty() {
            return Ok(());
        }
        let out = Command::new("go")
            .current_dir(module)
            .args(["list", "-m", "-f", "{{.Dir}}", self.versioned_module])
            .output()
            .map_err(|e| format!("cannot run `go list` in {}: {e}", module.display()))?;
        let source = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if !out.status.success() || !source.is_dir() {
            return Err(format!(
                "`go list -m {}` found no source directory: {}",
                self.versioned_module,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        for (name, parts) in self.data {
            let mut joined = String::new();
            for part in *parts {
                let path = source.join(part);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                joined.push_str("---\n");
                joined.push_str(&text);
                if !text.ends_with('\n') {
                    joined.push('\n');
                }
            }
            let path = into.join(name);
            std::fs::write(&path, joined)
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        Ok(())
    }
}

/// The version `go.mod` requires of `module` (`require m v1` or inside a `require (...)` block).
fn required_version<'a>(go_mod: &'a str, module: &str) -> Option<&'a str> {
    let mut in_block = false;
    for line in go_mod.lines() {
        let line = line.split("//").next().unwrap_or_default().trim();
        let spec = if in_block {
            if line == ")" {
                in_block = false;
                continue;
            }
            line
        } else if line == "require (" {
            in_block = true;
            continue;
        } else if let Some(rest) = line.strip_prefix("require ") {
            rest.trim()
        } else {
            continue;
        };
        let mut fields = spec.split_whitespace();
        if fields.next() == Some(module) {
            return fields.next();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_wrapper_modules() {
        assert_eq!(KUBERNETES.version(), "v1.37.2");
        assert!(ETCD.version().starts_with("v3.6."), "{}", ETCD.version());
        assert!(KWOK.version().starts_with("v0."), "{}", KWOK.version());
    }

    #[test]
    fn every_staging_module_is_pinned_to_the_matching_release() {
        // v1.37.2 of k8s.io/kubernetes goes with v0.37.2 of each staging module; a replace that
        // drifts would mix API types of two releases.
        let minor = KUBERNETES.version().trim_start_matches("v1.");
        let replaces: Vec<&str> = KUBERNETES
            .go_mod
            .lines()
            .filter(|l| l.contains("=>"))
            .collect();
        assert!(replaces.len() > 30, "{replaces:?}");
        for line in replaces {
            assert!(line.trim().ends_with(&format!("v0.{minor}")), "{line}");
        }
    }

    #[test]
    fn require_lines_single_and_in_blocks() {
        let go_mod = "module x\n\nrequire a.b/c v1.2.3\n\nrequire (\n\td.e/f v0.1.0 // indirect\n\tg.h/i v2.0.0\n)\n";
        assert_eq!(required_version(go_mod, "a.b/c"), Some("v1.2.3"));
        assert_eq!(required_version(go_mod, "d.e/f"), Some("v0.1.0"));
        assert_eq!(required_version(go_mod, "g.h/i"), Some("v2.0.0"));
        assert_eq!(required_version(go_mod, "g.h"), None);
    }

    #[test]
    fn ldflags_set_the_release_kubectl_reports() {
        let flags = KUBERNETES.ldflags();
        assert!(flags.contains("-X k8s.io/component-base/version.gitVersion=v1.37.2"));
        assert!(flags.contains("-X k8s.io/client-go/pkg/version.gitMinor=37"));
        assert_eq!(ETCD.ldflags(), "-s -w");
    }

    #[test]
    fn a_missing_binary_names_the_fix() {
        let err = ETCD.binary("no-such-program").unwrap_err();
        assert!(err.to_string().contains("cargo xtask setup"), "{err}");
        assert!(
            err.path
                .ends_with(format!("etcd-{}/no-such-program", ETCD.version()))
        );
    }
}
