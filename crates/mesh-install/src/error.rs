//! Errors of the install flow.

use std::path::PathBuf;

use crate::steps::Step;

/// What went wrong while loading the configuration or running a step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("failed to read {what} from {path}")]
    ReadFile {
        /// What the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is not valid TOML for [`crate::config::Config`].
    #[error("invalid configuration {path}; `meshca init` writes a commented sample")]
    ParseConfig {
        /// The file.
        path: PathBuf,
        /// The parser's report (names the field and line).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A configuration value failed validation.
    #[error("invalid configuration: {field}: {reason}")]
    InvalidConfig {
        /// The field, as written in the file (`hsm.kek-id`).
        field: String,
        /// Why, and what is expected.
        reason: String,
    },
    /// A secret's environment variable is not set.
    #[error(
        "{field}: environment variable {var} is not set; export it or use {{ file = \"...\" }}"
    )]
    SecretEnvMissing {
        /// The configuration field.
        field: &'static str,
        /// The variable.
        var: String,
    },
    /// A step needs an input the configuration does not give.
    #[error("{step} needs {what}: {hint}")]
    MissingInput {
        /// The step.
        step: Step,
        /// The input.
        what: &'static str,
        /// How to provide it.
        hint: &'static str,
    },
    /// The caller did not connect the backend a selected step needs.
    #[error("{step} needs {backend}, which this command does not connect")]
    NotConnected {
        /// The step.
        step: Step,
        /// The backend.
        backend: &'static str,
    },
    /// An HSM operation failed.
    #[error("{step} failed on the HSM")]
    Hsm {
        /// The step.
        step: Step,
        /// The cause.
        #[source]
        source: hsm_core::Error,
    },
    /// A Vault operation failed.
    #[error("{step} failed on Vault")]
    Vault {
        /// The step.
        step: Step,
        /// The cause.
        #[source]
        source: vault_bootstrap::Error,
    },
    /// The release does not match its signature, or a release file is unreadable.
    #[error("{step}: release check of {path} failed; download the release and its signature again")]
    Release {
        /// The step.
        step: Step,
        /// The release file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ca_signing::release::Error,
    },
    /// A required pre-flight check failed.
    #[error("{step}: required checks failed: {}; fix them and run again", failed.join(", "))]
    Preflight {
        /// The step.
        step: Step,
        /// The names of the failed checks.
        failed: Vec<String>,
        /// What the gravest of them means.
        failure: crate::flow::CheckFailure,
    },
    /// Installing the control plane failed.
    #[error("{step}: the control-plane install failed")]
    Install {
        /// The step.
        step: Step,
        /// The cause.
        #[source]
        source: crate::install::InstallError,
    },
    /// Reviewing, signing or verifying a certificate failed.
    #[error("{step}: certificate check failed")]
    Ca {
        /// The step.
        step: Step,
        /// The cause.
        #[source]
        source: ca_signing::Error,
    },
    /// A file the step writes could not be written.
    #[error("{step}: cannot write {path}")]
    WriteFile {
        /// The step.
        step: Step,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A cluster operation failed.
    #[error("{step} failed on the cluster")]
    Kube {
        /// The step.
        step: Step,
        /// The cause.
        #[source]
        source: k8s_bootstrap::Error,
    },
}

impl Error {
    /// True for problems the operator fixes in the configuration or its input files.
    pub fn is_config(&self) -> bool {
        match self {
            Self::ReadFile { .. }
            | Self::ParseConfig { .. }
            | Self::InvalidConfig { .. }
            | Self::SecretEnvMissing { .. }
            | Self::MissingInput { .. } => true,
            Self::Vault { source, .. } => source.is_config(),
            Self::Preflight { failure, .. } => *failure == crate::flow::CheckFailure::Config,
            Self::Hsm { source, .. } => matches!(
                source,
                hsm_core::Error::PinFileShared { .. }
                    | hsm_core::Error::PinEnvMissing { .. }
                    | hsm_core::Error::PinInvalid { .. }
                    | hsm_core::Error::PinRejected { .. }
                    | hsm_core::Error::WeakObject(_)
            ),
            Self::Kube { .. }
            | Self::Install { .. }
            | Self::Ca { .. }
            | Self::WriteFile { .. }
            | Self::NotConnected { .. }
            | Self::Release { .. } => false,
        }
    }

    /// True when a dependency (PKCS#11 module, Vault, API server) is missing or unreachable.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Hsm { source, .. } => {
                source.kind() == hsm_core::ErrorKind::Unavailable
                    || matches!(source, hsm_core::Error::TokenNotFound { .. })
            }
            Self::Vault { source, .. } => source.is_unavailable(),
            Self::Kube { source, .. } => source.is_unavailable(),
            Self::Install { source, .. } => source.is_unavailable(),
            Self::Preflight { failure, .. } => *failure == crate::flow::CheckFailure::Unavailable,
            _ => false,
        }
    }

    /// The step that failed, if the error comes from one.
    pub fn step(&self) -> Option<Step> {
        match self {
            Self::MissingInput { step, .. }
            | Self::NotConnected { step, .. }
            | Self::Hsm { step, .. }
            | Self::Vault { step, .. }
            | Self::Kube { step, .. }
            | Self::Release { step, .. }
            | Self::Install { step, .. }
            | Self::Ca { step, .. }
            | Self::WriteFile { step, .. }
            | Self::Preflight { step, .. } => Some(*step),
            _ => None,
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
