use std::path::PathBuf;

use cryptoki::error::RvError;

/// Errors of the PKCS#11 layer.
///
/// Messages name the operation and the input; the PKCS#11 cause stays reachable through
/// [`std::error::Error::source`]. No variant ever carries a PIN or key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The PKCS#11 module file does not exist or cannot be read.
    #[error(
        "PKCS#11 module {path} is not readable: check the path (for SoftHSM2 install the softhsm2 package)"
    )]
    ModuleMissing {
        /// Path that was given.
        path: PathBuf,
        /// Cause reported by the file system.
        #[source]
        source: std::io::Error,
    },
    /// The PKCS#11 module could not be loaded (missing file, wrong architecture, not PKCS#11).
    #[error("cannot load PKCS#11 module {path}: is it a PKCS#11 library for this architecture?")]
    ModuleLoad {
        /// Path that was given.
        path: PathBuf,
        /// Cause reported by the loader.
        #[source]
        source: cryptoki::error::Error,
    },
    /// `C_Initialize` failed.
    #[error("cannot initialise PKCS#11 module {path}")]
    Initialize {
        /// Path of the module.
        path: PathBuf,
        /// Cause reported by the module.
        #[source]
        source: cryptoki::error::Error,
    },
    /// A token label was rejected before reaching the HSM.
    #[error("invalid token label {label:?}: {reason}")]
    InvalidLabel {
        /// The label as given.
        label: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// No initialised token carries the label.
    #[error("no token labelled {label:?} in {module}; tokens present: {available}")]
    TokenNotFound {
        /// Label looked up.
        label: String,
        /// Module path.
        module: PathBuf,
        /// Labels of the tokens that do exist, comma separated (or `none`).
        available: String,
    },
    /// More than one token carries the label, so the lookup is ambiguous.
    #[error("{count} tokens are labelled {label:?} in {module}; relabel or remove the duplicates")]
    DuplicateToken {
        /// Label looked up.
        label: String,
        /// Module path.
        module: PathBuf,
        /// How many tokens matched.
        count: usize,
    },
    /// The HSM rejected the PIN. Never retried automatically: HSMs lock after a few failures.
    #[error("the HSM rejected the PIN for token {label:?} ({rv:?})")]
    PinRejected {
        /// Token label.
        label: String,
        /// The PKCS#11 return value (`CKR_PIN_INCORRECT`, `CKR_PIN_LOCKED`, ...).
        rv: RvError,
    },
    /// Any other PKCS#11 failure, with the operation that failed.
    #[error("PKCS#11 operation failed: {operation}")]
    Pkcs11 {
        /// What we were doing.
        operation: &'static str,
        /// The PKCS#11 error (function and return value).
        #[source]
        source: cryptoki::error::Error,
    },
}

impl Error {
    /// Wraps a cryptoki error with the operation that produced it.
    pub(crate) fn pkcs11(operation: &'static str) -> impl FnOnce(cryptoki::error::Error) -> Self {
        move |source| Self::Pkcs11 { operation, source }
    }

    /// The PKCS#11 return value, when the failure came from the module.
    pub fn rv(&self) -> Option<RvError> {
        match self {
            Self::PinRejected { rv, .. } => Some(*rv),
            Self::Pkcs11 { source, .. }
            | Self::Initialize { source, .. }
            | Self::ModuleLoad { source, .. } => match source {
                cryptoki::error::Error::Pkcs11(rv, _) => Some(*rv),
                _ => None,
            },
            _ => None,
        }
    }

    /// True when the PIN was rejected, which callers must never retry automatically.
    pub fn is_pin_rejected(&self) -> bool {
        matches!(self, Self::PinRejected { .. })
    }

    /// True when the token (or module) is missing rather than failing.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::TokenNotFound { .. } | Self::ModuleMissing { .. }
        )
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
