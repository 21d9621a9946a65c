use std::path::PathBuf;

/// Why the emulated istiod could not finish a step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IstiodError {
    /// A call to the emulated Kubernetes API failed.
    #[error("emulated istiod: {operation} failed")]
    Kube {
        /// What was being done.
        operation: String,
        /// The cause.
        #[source]
        source: crate::Error,
    },
    /// The vault-client logic could not fetch the HSM credentials.
    #[error(
        "emulated istiod: fetching the HSM credentials from Vault with role {role:?} failed; check the Kubernetes auth role and the secret path"
    )]
    Vault {
        /// The Vault role.
        role: String,
        /// The cause.
        #[source]
        source: vault_bootstrap::Error,
    },
    /// A local file could not be read or written.
    #[error("emulated istiod: {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The HSM could not be opened or a key could not be created on it.
    #[error("emulated istiod: {operation} on token {label} failed")]
    Hsm {
        /// What was being done.
        operation: &'static str,
        /// The token label.
        label: String,
        /// The cause.
        #[source]
        source: hsm_core::Error,
    },
    /// The plugin server could not start or a typed call on its socket failed.
    #[error("emulated istiod: {operation} over the plugin socket failed")]
    Plugin {
        /// What was being done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: kms_grpc::Error,
    },
    /// A raw gRPC call on the plugin socket failed.
    #[error("emulated istiod: {rpc} over the plugin socket failed with {code:?}: {message}")]
    Rpc {
        /// The RPC.
        rpc: &'static str,
        /// The gRPC code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// Building or checking a certificate or CSR failed.
    #[error("emulated istiod: {operation} failed")]
    Certificate {
        /// What was being done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: ca_signing::Error,
    },
    /// Secret `istio-ca-cert` is unusable.
    #[error(
        "emulated istiod: Secret istio-system/istio-ca-cert is unusable: {reason}; write the signed istiod CA certificate followed by the root under cert-chain.pem"
    )]
    CaSecret {
        /// What is wrong.
        reason: String,
    },
    /// The TLS handshake between the demo workloads failed.
    #[error("emulated istiod: the TLS handshake between the demo workloads failed: {reason}")]
    Handshake {
        /// What went wrong.
        reason: String,
    },
    /// A background task ended abnormally.
    #[error("emulated istiod: the {task} task ended abnormally")]
    Task {
        /// Which task.
        task: &'static str,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl IstiodError {
    pub(crate) fn kube(operation: impl Into<String>) -> impl FnOnce(crate::Error) -> Self {
        let operation = operation.into();
        move |source| Self::Kube { operation, source }
    }

    pub(crate) fn cert(operation: &'static str) -> impl FnOnce(ca_signing::Error) -> Self {
        move |source| Self::Certificate { operation, source }
    }

    pub(crate) fn plugin(operation: &'static str) -> impl FnOnce(kms_grpc::Error) -> Self {
        move |source| Self::Plugin { operation, source }
    }

    pub(crate) fn rpc(rpc: &'static str) -> impl FnOnce(tonic::Status) -> Self {
        move |status| Self::Rpc {
            rpc,
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// The result type of the emulated istiod.
pub type IstiodResult<T, E = IstiodError> = std::result::Result<T, E>;
