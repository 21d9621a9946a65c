//! Step 9: the install specification and the port that installs it.
//!
//! [`istio_operator`] renders the guide's `IstioOperator` (profile `asm-multicloud`, the
//! revision, `values.hsm.*` and `values.global.jwtPolicy=first-party-jwt`);
//! [`upstream_overlay`] renders the same control plane for upstream Istio, whose charts have no
//! `values.hsm`, by overlaying the `hsm-plugin` and `vault-client` sidecars, their volumes and
//! the plugin socket onto the istiod Deployment. An [`Installer`] applies the rendering:
//! [`Istioctl`] runs `istioctl install`, and the sandbox's emulated istiod implements the same
//! port for the demo.
//!
//! The installed state is read back from the cluster (the `IstioOperator` that `istioctl`
//! records as `installed-state-<revision>` in `istio-system`), so a re-run with the same values
//! installs nothing.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};

use crate::config::{HsmMode, InstallFlavour};

/// The `IstioOperator` profile of the guide.
pub const DEFAULT_PROFILE: &str = "asm-multicloud";
/// Where istiod's service-account token is mounted (`values.hsm.vaultAuthJwtPath`).
pub const SERVICE_ACCOUNT_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// The directory shared by istiod and the plugin sidecar for the Unix socket.
pub const PLUGIN_SOCKET_DIR: &str = "/var/run/hsm";
/// The plugin socket, in a directory of its own inside [`PLUGIN_SOCKET_DIR`]: the shared
/// `emptyDir` is world-writable, and the plugin refuses to serve in such a directory, so it
/// creates `plugin/` itself (owned by it, not writable by others) and binds there.
pub const PLUGIN_SOCKET: &str = "/var/run/hsm/plugin/plugin.sock";
/// Where `vault-client` writes the HSM credentials for the plugin (a memory volume).
pub const CREDENTIALS_DIR: &str = "/var/run/secrets/hsm";
/// Annotation recording which CA-key mode the control plane was installed for.
pub const MODE_ANNOTATION: &str = "mesh-hsm.io/ca-key-mode";
/// Annotation recording the root anchor id the plugin verifies the CA chain against.
pub const CA_ID_ANNOTATION: &str = "mesh-hsm.io/ca-id";

/// The name under which the installed `IstioOperator` of `revision` is recorded.
pub fn installed_state_name(revision: &str) -> String {
    format!("installed-state-{revision}")
}

/// Everything the rendering needs, resolved from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallValues {
    /// `--set profile=`.
    pub profile: String,
    /// `--set revision=`.
    pub revision: String,
    /// `values.hsm.hsmKEKID`.
    pub kek_id: String,
    /// `values.hsm.hsmSlotLabel`.
    pub slot_label: String,
    /// The root anchor id on the token.
    pub ca_id: String,
    /// compat or hsm-key.
    pub mode: HsmMode,
    /// `values.hsm.hsmPluginImage`.
    pub plugin_image: String,
    /// `values.hsm.vaultClientImage`.
    pub vault_client_image: String,
    /// `values.hsm.vaultAddr`.
    pub vault_addr: String,
    /// `values.hsm.vaultAuthPath` (`auth/asm-<suffix>/hsm/login`).
    pub vault_auth_path: String,
    /// `values.hsm.vaultAuthRole` (`istiod`).
    pub vault_auth_role: String,
    /// `values.hsm.vaultSecretPath` (`asm-<suffix>/hsm`).
    pub vault_secret_path: String,
}

/// The guide's `IstioOperator`, as recorded in the cluster after the install.
pub fn istio_operator(v: &InstallValues) -> Value {
    json!({
        "apiVersion": "install.istio.io/v1alpha1",
        "kind": "IstioOperator",
        "metadata": operator_metadata(v),
        "spec": {
            "profile": v.profile,
            "revision": v.revision,
            "values": {
                "global": { "jwtPolicy": "first-party-jwt" },
                "hsm": {
                    "enabled": true,
                    "hsmKEKID": v.kek_id,
                    "hsmPluginImage": v.plugin_image,
                    "hsmSlotLabel": v.slot_label,
                    "vaultClientImage": v.vault_client_image,
                    "vaultAddr": v.vault_addr,
                    "vaultAuthPath": v.vault_auth_path,
                    "vaultAuthRole": v.vault_auth_role,
                    "vaultAuthJwtPath": SERVICE_ACCOUNT_TOKEN_PATH,
                    "vaultSecretPath": v.vault_secret_path,
                },
            },
        },
    })
}

/// The recorded name and our two annotations.
fn operator_metadata(v: &InstallValues) -> Value {
    json!({
        "name": installed_state_name(&v.revision),
        "namespace": crate::flow::ISTIO_NAMESPACE,
        "annotations": {
            MODE_ANNOTATION: mode_name(v.mode),
            CA_ID_ANNOTATION: v.ca_id,
        },
    })
}

fn mode_name(mode: HsmMode) -> &'static str {
    match mode {
        HsmMode::Compat => "compat",
        HsmMode::HsmKey => "hsm-key",
    }
}

/// The same control plane for upstream Istio: no `values.hsm` (its charts do not know them);
/// instead a `components.pilot.k8s.overlays` patch adds the `hsm-plugin` and `vault-client`
/// sidecars, the shared socket and credential volumes and the Vault CA ConfigMap to the istiod
/// Deployment.
pub fn upstream_overlay(v: &InstallValues) -> Value {
    let deployment = format!("istiod-{}", v.revision);
    let plugin_args = json!([
        "serve",
        "--socket",
        PLUGIN_SOCKET,
        "--p11-token",
        v.slot_label,
        "--p11-pin-file",
        format!("{CREDENTIALS_DIR}/pin"),
        "--allow-shared-pin-file",
        "--ca-id",
        v.ca_id,
        "--ca-key-mode",
        mode_name(v.mode),
        "--profile",
        "sidecar",
    ]);
    let vault_args = json!([
        "run",
        "--vault-addr",
        v.vault_addr,
        "--vault-cacert",
        "/etc/vault-tls/cert",
        "--auth-path",
        v.vault_auth_path,
        "--role",
        v.vault_auth_role,
        "--jwt-path",
        SERVICE_ACCOUNT_TOKEN_PATH,
        "--secret-path",
        v.vault_secret_path,
        "--output-dir",
        CREDENTIALS_DIR,
    ]);
    let patches = json!([
        { "path": "spec.template.spec.volumes[-1]",
          "value": { "name": "hsm-socket", "emptyDir": { "medium": "Memory" } } },
        { "path": "spec.template.spec.volumes[-1]",
          "value": { "name": "hsm-credentials", "emptyDir": { "medium": "Memory" } } },
        { "path": "spec.template.spec.volumes[-1]",
          "value": { "name": "vault-tls", "configMap": { "name": "vault-tls-cert" } } },
        { "path": "spec.template.spec.containers[name:discovery].volumeMounts[-1]",
          "value": { "name": "hsm-socket", "mountPath": PLUGIN_SOCKET_DIR } },
        { "path": "spec.template.spec.containers[-1]",
          "value": {
              "name": "hsm-plugin",
              "image": v.plugin_image,
              "args": plugin_args,
              "volumeMounts": [
                  { "name": "hsm-socket", "mountPath": PLUGIN_SOCKET_DIR },
                  { "name": "hsm-credentials", "mountPath": CREDENTIALS_DIR, "readOnly": true },
              ],
              "readinessProbe": { "httpGet": { "path": "/readyz", "port": 9402 } },
          } },
        { "path": "spec.template.spec.containers[-1]",
          "value": {
              "name": "vault-client",
              "image": v.vault_client_image,
              "args": vault_args,
              "volumeMounts": [
                  { "name": "hsm-credentials", "mountPath": CREDENTIALS_DIR },
                  { "name": "vault-tls", "mountPath": "/etc/vault-tls", "readOnly": true },
              ],
          } },
    ]);
    json!({
        "apiVersion": "install.istio.io/v1alpha1",
        "kind": "IstioOperator",
        "metadata": operator_metadata(v),
        "spec": {
            "profile": "default",
            "revision": v.revision,
            "values": {
                "global": { "jwtPolicy": "first-party-jwt" },
                "pilot": { "env": { "HSM_PLUGIN_SOCKET": PLUGIN_SOCKET, "HSM_KEK_ID": v.kek_id } },
            },
            "components": {
                "pilot": {
                    "k8s": {
                        "overlays": [{
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": deployment,
                            "patches": patches,
                        }],
                    },
                },
            },
        },
    })
}

/// The rendering for `flavour`: [`istio_operator`] or [`upstream_overlay`].
pub fn operator_for(flavour: InstallFlavour, values: &InstallValues) -> Value {
    match flavour {
        InstallFlavour::Asm => istio_operator(values),
        InstallFlavour::Upstream => upstream_overlay(values),
    }
}

/// The rendering as YAML (what `istioctl install -f` reads and `meshca mesh render` writes).
///
/// # Errors
/// [`InstallError::Render`] when the document cannot be serialised (never for
/// [`istio_operator`]'s output).
pub fn to_yaml(document: &Value) -> Result<String, InstallError> {
    serde_saphyr::to_string(document).map_err(|e| InstallError::Render {
        reason: e.to_string(),
    })
}

/// What an installed `IstioOperator` is compared on: its `spec` and the two annotations.
pub fn install_differences(desired: &Value, installed: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if desired.get("spec") != installed.get("spec") {
        let (d, i) = (&desired["spec"], &installed["spec"]);
        for key in ["profile", "revision"] {
            if d.get(key) != i.get(key) {
                out.push(format!("spec.{key}"));
            }
        }
        let (dv, iv) = (&d["values"]["hsm"], &i["values"]["hsm"]);
        if let Some(fields) = dv.as_object() {
            for (k, val) in fields {
                if iv.get(k) != Some(val) {
                    out.push(format!("values.hsm.{k}"));
                }
            }
        }
        if out.is_empty() {
            out.push("spec".to_owned());
        }
    }
    for key in [MODE_ANNOTATION, CA_ID_ANNOTATION] {
        if desired["metadata"]["annotations"].get(key)
            != installed["metadata"]["annotations"].get(key)
        {
            out.push(format!("metadata.annotations.{key}"));
        }
    }
    out
}

/// Why an install failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// The install tool is not installed.
    #[error("{tool} not found{}; {hint}", searched.as_ref().map(|p| format!(" (looked in {})", p.display())).unwrap_or_default())]
    ToolMissing {
        /// The program.
        tool: &'static str,
        /// Where it was looked for, when a path was given.
        searched: Option<PathBuf>,
        /// How to get it.
        hint: &'static str,
    },
    /// The install tool ran and failed.
    #[error("`{command}` exited with {status}: {output}")]
    Failed {
        /// The command line (never holds a secret).
        command: String,
        /// The exit status.
        status: String,
        /// The end of its output.
        output: String,
    },
    /// Writing the rendered file or starting the tool failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The rendering could not be serialised.
    #[error("rendering the IstioOperator failed: {reason}")]
    Render {
        /// The serialiser's message.
        reason: String,
    },
    /// The installer's own backend failed (the emulated istiod of the sandbox).
    #[error("{reason}")]
    Backend {
        /// What failed, with its causes.
        reason: String,
    },
    /// The TLS probe of step 11 failed.
    #[error("TLS probe of {target} failed: {reason}")]
    Probe {
        /// What was connected to.
        target: String,
        /// Why it failed.
        reason: String,
    },
}

impl InstallError {
    /// True when the installer's tool or backend is not there.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::ToolMissing { .. })
    }
}

/// Installs a rendered `IstioOperator` into the cluster.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait::async_trait]
pub trait Installer: Send + Sync {
    /// What installs (`istioctl /usr/local/bin/istioctl`), for reports.
    fn describe(&self) -> String;

    /// Installs (or upgrades to) `operator`. On success the cluster records it as the
    /// installed state (`istioctl` does; so must every implementation).
    async fn install(&self, operator: &Value) -> Result<(), InstallError>;
}

/// The chain a workload's sidecar presents, as the guide's
/// `openssl s_client -alpn istio -showcerts -connect <svc>:9080` shows it.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait::async_trait]
pub trait MeshProbe: Send + Sync {
    /// What is probed (`productpage.demo-app:9080`), for reports.
    fn target(&self) -> String;

    /// Connects with ALPN `istio` and returns the server's certificate chain (PEM, leaf
    /// first).
    async fn server_chain(&self) -> Result<String, InstallError>;
}

/// `istioctl install` as a process.
#[derive(Clone, Debug)]
pub struct Istioctl {
    program: PathBuf,
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
}

impl Istioctl {
    /// Finds `istioctl`: `explicit` when given, else on `path` (a `PATH`-style list).
    ///
    /// # Errors
    /// [`InstallError::ToolMissing`] with the download hint.
    pub fn find(explicit: Option<&Path>, path: &std::ffi::OsStr) -> Result<Self, InstallError> {
        const HINT: &str = "download and verify the release (step 6, `meshca mesh verify-release`), \
                            put bin/istioctl on PATH or set install.istioctl; or set \
                            install.method = \"manual\" and install the rendered file yourself";
        let program = match explicit {
            Some(p) if p.is_file() => p.to_owned(),
            Some(p) => {
                return Err(InstallError::ToolMissing {
                    tool: "istioctl",
                    searched: Some(p.to_owned()),
                    hint: HINT,
                });
            }
            None => std::env::split_paths(path)
                .map(|dir| dir.join("istioctl"))
                .find(|p| p.is_file())
                .ok_or(InstallError::ToolMissing {
                    tool: "istioctl",
                    searched: None,
                    hint: HINT,
                })?,
        };
        Ok(Self {
            program,
            kubeconfig: None,
            context: None,
        })
    }

    /// Passes `--kubeconfig` and `--context`.
    #[must_use]
    pub fn with_cluster(mut self, kubeconfig: Option<PathBuf>, context: Option<String>) -> Self {
        self.kubeconfig = kubeconfig;
        self.context = context;
        self
    }

    /// The command line `install` runs for `file`.
    pub fn command_line(&self, file: &Path) -> Vec<String> {
        let mut args = vec![
            self.program.display().to_string(),
            "install".to_owned(),
            "-y".to_owned(),
            "-f".to_owned(),
            file.display().to_string(),
        ];
        if let Some(k) = &self.kubeconfig {
            args.extend(["--kubeconfig".to_owned(), k.display().to_string()]);
        }
        if let Some(c) = &self.context {
            args.extend(["--context".to_owned(), c.clone()]);
        }
        args
    }
}

#[async_trait::async_trait]
impl Installer for Istioctl {
    fn describe(&self) -> String {
        format!("istioctl {}", self.program.display())
    }

    async fn install(&self, operator: &Value) -> Result<(), InstallError> {
        let io = |what: String| move |source| InstallError::Io { what, source };
        let yaml = to_yaml(operator)?;
        let dir = tempfile::tempdir()
            .map_err(io("creating a directory for the install file".to_owned()))?;
        let file = dir.path().join("istio-operator.yaml");
        std::fs::write(&file, yaml).map_err(io(format!("writing {}", file.display())))?;
        let argv = self.command_line(&file);
        let output = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            // istiod stays not ready until its CA certificate exists (step 10).
            .env("WAIT_FOR_RESOURCES_TIMEOUT", "10s")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(io(format!("running {}", argv[0])))?;
        if output.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stdout));
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        Err(InstallError::Failed {
            command: argv.join(" "),
            status: output.status.to_string(),
            output: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> InstallValues {
        InstallValues {
            profile: DEFAULT_PROFILE.to_owned(),
            revision: "asm-183-2".to_owned(),
            kek_id: "asm-kek".to_owned(),
            slot_label: "asm-ca".to_owned(),
            ca_id: "root-1".to_owned(),
            mode: HsmMode::HsmKey,
            plugin_image: "reg/hsm-plugin:1".to_owned(),
            vault_client_image: "reg/vault-client:1".to_owned(),
            vault_addr: "https://vault:8200".to_owned(),
            vault_auth_path: "auth/asm-c1/hsm/login".to_owned(),
            vault_auth_role: "istiod".to_owned(),
            vault_secret_path: "asm-c1/hsm".to_owned(),
        }
    }

    #[test]
    fn the_operator_carries_the_guides_hsm_values() {
        let op = istio_operator(&values());
        let hsm = &op["spec"]["values"]["hsm"];
        assert_eq!(op["spec"]["profile"], "asm-multicloud");
        assert_eq!(op["spec"]["revision"], "asm-183-2");
        assert_eq!(hsm["enabled"], true);
        assert_eq!(hsm["hsmKEKID"], "asm-kek");
        assert_eq!(hsm["hsmSlotLabel"], "asm-ca");
        assert_eq!(hsm["vaultAuthPath"], "auth/asm-c1/hsm/login");
        assert_eq!(hsm["vaultAuthRole"], "istiod");
        assert_eq!(hsm["vaultSecretPath"], "asm-c1/hsm");
        assert_eq!(hsm["vaultAuthJwtPath"], SERVICE_ACCOUNT_TOKEN_PATH);
        assert_eq!(
            op["spec"]["values"]["global"]["jwtPolicy"],
            "first-party-jwt"
        );
        assert_eq!(op["metadata"]["name"], "installed-state-asm-183-2");
    }

    #[test]
    fn the_yaml_parses_back_to_the_same_document() {
        for doc in [istio_operator(&values()), upstream_overlay(&values())] {
            let yaml = to_yaml(&doc).unwrap();
            assert!(yaml.contains("kind: IstioOperator"), "{yaml}");
            let back: Value = serde_saphyr::from_str(&yaml).unwrap();
            assert_eq!(back, doc);
        }
    }

    #[test]
    fn the_upstream_overlay_adds_both_sidecars_and_the_socket() {
        let op = upstream_overlay(&values());
        assert!(op["spec"]["values"].get("hsm").is_none());
        let overlay = &op["spec"]["components"]["pilot"]["k8s"]["overlays"][0];
        assert_eq!(overlay["name"], "istiod-asm-183-2");
        let patches = overlay["patches"].as_array().unwrap();
        let containers: Vec<&str> = patches
            .iter()
            .filter(|p| p["path"] == "spec.template.spec.containers[-1]")
            .map(|p| p["value"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(containers, ["hsm-plugin", "vault-client"]);
        let plugin = &patches
            .iter()
            .find(|p| p["value"]["name"] == "hsm-plugin")
            .unwrap()["value"];
        let args: Vec<&str> = plugin["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            args.windows(2).any(|w| w == ["--p11-token", "asm-ca"]),
            "{args:?}"
        );
        assert!(
            args.windows(2).any(|w| w == ["--ca-key-mode", "hsm-key"]),
            "{args:?}"
        );
        assert!(args.windows(2).any(|w| w == ["--socket", PLUGIN_SOCKET]));
        assert!(patches.iter().any(|p| p["path"]
            == "spec.template.spec.containers[name:discovery].volumeMounts[-1]"
            && p["value"]["mountPath"] == PLUGIN_SOCKET_DIR));
    }

    #[test]
    fn differences_name_the_changed_values_only() {
        let desired = istio_operator(&values());
        assert!(install_differences(&desired, &desired).is_empty());
        let mut other = values();
        other.kek_id = "kek-2".to_owned();
        other.mode = HsmMode::Compat;
        let installed = istio_operator(&other);
        assert_eq!(
            install_differences(&desired, &installed),
            [
                "values.hsm.hsmKEKID".to_owned(),
                format!("metadata.annotations.{MODE_ANNOTATION}")
            ]
        );
    }

    #[test]
    fn a_missing_istioctl_is_a_clear_unavailable_error() {
        let err = Istioctl::find(None, std::ffi::OsStr::new("/nonexistent-dir")).unwrap_err();
        assert!(err.is_unavailable());
        let text = err.to_string();
        assert!(text.contains("istioctl not found"), "{text}");
        assert!(text.contains("install.method"), "{text}");
        let err = Istioctl::find(
            Some(Path::new("/nonexistent/istioctl")),
            std::ffi::OsStr::new(""),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/istioctl"));
    }

    #[tokio::test]
    async fn istioctl_runs_install_with_the_rendered_file_and_reports_failure() {
        let dir = tempfile::tempdir().unwrap();
        // A stand-in istioctl that records its arguments and the file it was given, then fails
        // the way istioctl does when the cluster refuses.
        let script = dir.path().join("istioctl");
        let record = dir.path().join("record");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$@\" > {rec}\ncat \"$4\" >> {rec}\necho \"WAIT=$WAIT_FOR_RESOURCES_TIMEOUT\" >> {rec}\necho 'Error: failed to install manifests' >&2\nexit 1\n",
                rec = record.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let istioctl = Istioctl::find(None, dir.path().as_os_str())
            .unwrap()
            .with_cluster(Some(PathBuf::from("/k/config")), Some("ctx".to_owned()));
        let err = istioctl
            .install(&istio_operator(&values()))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("failed to install manifests"), "{text}");
        assert!(text.contains("--context ctx"), "{text}");
        let recorded = std::fs::read_to_string(&record).unwrap();
        assert!(recorded.starts_with("install -y -f "), "{recorded}");
        assert!(recorded.contains("hsmKEKID: asm-kek"), "{recorded}");
        assert!(recorded.contains("WAIT=10s"), "{recorded}");
    }
}
