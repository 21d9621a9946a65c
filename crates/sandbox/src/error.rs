use std::path::PathBuf;

/// Errors of the sandbox fixtures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tool the fixture needs is not installed.
    #[error("{tool} is not available ({detail}); run `cargo xtask setup` to install it")]
    MissingTool {
        /// The tool (`softhsm2`, `bao`).
        tool: &'static str,
        /// What was looked for.
        detail: String,
    },
    /// A required environment variable is not set.
    #[error("{var} is not set: {hint}")]
    MissingEnv {
        /// Variable name.
        var: &'static str,
        /// How to set it.
        hint: &'static str,
    },
    /// A file-system operation failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A PKCS#11 call failed.
    #[error("SoftHSM2: {0}")]
    Hsm(#[from] hsm_core::Error),
    /// A PKCS#11 call made directly by the sandbox failed.
    #[error("SoftHSM2: {operation} failed")]
    Pkcs11 {
        /// What was being done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: cryptoki::error::Error,
    },
    /// The OpenBao server did not come up.
    #[error("OpenBao did not start: {reason}; server log: {log}")]
    OpenBaoStart {
        /// What went wrong.
        reason: String,
        /// The last lines of the server's output.
        log: String,
    },
    /// A call to the OpenBao API failed.
    #[error("OpenBao {operation} failed")]
    OpenBaoApi {
        /// What was being done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The emulated Kubernetes API server could not do what a fixture asked.
    #[error("emulated Kubernetes API server: {operation} failed: {detail}")]
    KubeEmulator {
        /// What was being done.
        operation: &'static str,
        /// What went wrong (the API server's answer, when there is one).
        detail: String,
    },
    /// A component of the local Kubernetes cluster did not come up.
    #[error("the local Kubernetes cluster did not start: {reason}; log: {log}")]
    ClusterStart {
        /// What went wrong.
        reason: String,
        /// The last lines of the failing component's log.
        log: String,
    },
    /// A call to the local cluster's API server failed.
    #[error("local Kubernetes cluster: {operation} failed: {detail}")]
    ClusterApi {
        /// What was being done.
        operation: &'static str,
        /// The API server's answer or the client's error.
        detail: String,
    },
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

/// Result type of the sandbox.
pub type Result<T, E = Error> = std::result::Result<T, E>;
