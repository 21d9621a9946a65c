use std::path::PathBuf;

use cryptoki::error::RvError;

/// Errors of the PKCS#11 layer and of the KMS operations built on it.
///
/// Messages name the operation and the input; the cause (a cryptoki `(RvError, Function)`
/// pair, an OpenSSL error stack, an I/O error) stays reachable through
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
    /// The token stayed out of reach (not found by label, not present) through every allowed
    /// re-open, as during an HSM failover that takes longer than the retries.
    #[error(
        "{operation}: token {label:?} could not be reached in {attempts} attempts; check the HSM connection and failover"
    )]
    TokenUnavailable {
        /// What we were doing.
        operation: &'static str,
        /// Token label.
        label: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last failure.
        #[source]
        source: Box<Error>,
    },
    /// The HSM answered with output of the wrong size: a module or firmware that does not
    /// follow the mechanism's contract (for AES-GCM, one that appends its IV).
    #[error("{operation}: the HSM returned {actual} bytes where {expected} were due; {hint}")]
    HsmOutput {
        /// What we were doing.
        operation: &'static str,
        /// The size the mechanism defines.
        expected: usize,
        /// The size returned.
        actual: usize,
        /// The likely cause and what to do.
        hint: &'static str,
    },
    /// The session kept failing with session-loss errors after every allowed re-open.
    #[error(
        "{operation}: the HSM session was lost {attempts} times in a row; check the HSM connection"
    )]
    SessionLost {
        /// What we were doing.
        operation: &'static str,
        /// How many sessions were tried.
        attempts: u32,
        /// The last PKCS#11 error.
        #[source]
        source: cryptoki::error::Error,
    },

    /// A PIN source could not be read.
    #[error("cannot read the PIN from {source_name}")]
    PinRead {
        /// The source (file path, `stdin`).
        source_name: String,
        /// Cause reported by the file system.
        #[source]
        source: std::io::Error,
    },
    /// The PIN file is readable by group or others.
    #[error(
        "PIN file {path} has mode {mode:03o}, readable by group or others: run `chmod 600 {path}` (or opt out explicitly)"
    )]
    PinFileShared {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The PIN environment variable is not set.
    #[error("environment variable {var} holding the PIN is not set")]
    PinEnvMissing {
        /// Variable name.
        var: String,
    },
    /// The PIN source produced an empty PIN (or one that is not UTF-8).
    #[error("the PIN from {source_name} is {problem}")]
    PinInvalid {
        /// The source (file path, variable, `stdin`).
        source_name: String,
        /// What is wrong (`empty`, `not UTF-8`).
        problem: &'static str,
    },

    /// An object id or label was rejected before reaching the HSM.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidId {
        /// What kind of id (`KEK id`, `CA id`, `key label`).
        what: &'static str,
        /// The value as given (ids are not secret).
        value: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A request argument is invalid (key size, curve, empty input).
    #[error("{operation}: {reason}")]
    InvalidArgument {
        /// The operation asked for.
        operation: &'static str,
        /// What is wrong with the argument.
        reason: String,
    },
    /// No object of the kind with that id (and label) exists on the token.
    #[error("{what} {id:?} not found on token {token:?}")]
    ObjectNotFound {
        /// Kind of object (`KEK`, `CA anchor`, `key pair`).
        what: &'static str,
        /// The id looked up.
        id: String,
        /// Token label.
        token: String,
    },
    /// Several objects share the id, so the lookup is ambiguous. Never silently picked.
    #[error(
        "{count} {what} objects share id {id:?} on token {token:?}; remove the duplicates (another tool made them)"
    )]
    DuplicateObject {
        /// Kind of object.
        what: &'static str,
        /// The id looked up.
        id: String,
        /// Token label.
        token: String,
        /// How many objects matched.
        count: usize,
    },
    /// Creating an object was refused because one with that id already exists.
    #[error("{what} {id:?} already exists on token {token:?}; {hint}")]
    ObjectExists {
        /// Kind of object.
        what: &'static str,
        /// The id.
        id: String,
        /// Token label.
        token: String,
        /// What the caller can do.
        hint: &'static str,
    },
    /// An existing object does not have the attributes asked for.
    #[error("{what} {id:?} exists with different attributes: {difference}")]
    ObjectMismatch {
        /// Kind of object.
        what: &'static str,
        /// The id.
        id: String,
        /// What differs.
        difference: String,
    },
    /// An existing key does not have the protection mesh-hsm requires (it can be read out of
    /// the HSM, or is not the key type asked for). Never used: replacing it is the operator's call.
    #[error("{0}")]
    WeakObject(Box<WeakKey>),
    /// A destructive operation was not confirmed.
    #[error(
        "refusing to destroy {what} {id:?}: the confirmation names {confirmed:?}; pass the same id to confirm"
    )]
    NotConfirmed {
        /// Kind of object.
        what: &'static str,
        /// The id to destroy.
        id: String,
        /// The id that was confirmed.
        confirmed: String,
    },

    /// A certificate could not be parsed.
    #[error("cannot parse {what}: {reason}")]
    InvalidCertificate {
        /// Which certificate (`CA certificate`, `chain element 2`).
        what: String,
        /// Why.
        reason: String,
    },
    /// Chain verification failed; `problems` says why, one entry per finding.
    #[error(
        "certificate chain rejected: {}",
        crate::verify::render_problems(problems)
    )]
    ChainRejected {
        /// The findings.
        problems: Vec<crate::verify::ChainProblem>,
    },

    /// A JWE envelope is not well formed (wrong part count, bad base64, bad header JSON).
    #[error("malformed {what}: {reason}")]
    MalformedEnvelope {
        /// Which blob (`encrypted DEK`, `ciphertext`).
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A JWE envelope uses an algorithm or feature this implementation refuses.
    #[error("unsupported {what}: {reason}")]
    UnsupportedEnvelope {
        /// Which blob.
        what: &'static str,
        /// What is unsupported.
        reason: String,
    },
    /// The envelope was made with a different key than the one the request names.
    #[error("{what} was encrypted under key {found:?}, not the requested {expected:?}")]
    KeyMismatch {
        /// Which blob.
        what: &'static str,
        /// The key the request named.
        expected: String,
        /// The `kid` in the envelope.
        found: String,
    },
    /// The AES-GCM tag did not verify: the blob was tampered with or the key is wrong.
    #[error("{what} failed authentication: it was modified or made with a different key")]
    AuthenticationFailed {
        /// Which blob.
        what: &'static str,
    },
    /// The additional authenticated data in the envelope differs from the request's.
    #[error("AAD does not match the AAD the {what} was encrypted with")]
    AadMismatch {
        /// Which blob.
        what: &'static str,
    },
    /// A Kubernetes KMS request names a key id this plugin does not serve.
    #[error("unknown key id {key_id:?}; this plugin serves {known}")]
    UnknownKeyId {
        /// The key id from the request.
        key_id: String,
        /// The key ids that are served, comma separated.
        known: String,
    },
    /// A software cryptographic operation (OpenSSL) failed.
    #[error("{operation} failed in software crypto")]
    Crypto {
        /// What we were doing.
        operation: &'static str,
        /// The OpenSSL error stack.
        #[source]
        source: openssl::error::ErrorStack,
    },
    /// The blocking task running an HSM operation ended abnormally.
    #[error("{operation}: the HSM worker task ended abnormally")]
    Worker {
        /// What we were doing.
        operation: &'static str,
        /// The join error.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// The details of [`Error::WeakObject`]: which key, which attribute, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} {id:?} on token {token:?} is not safe to use: {attribute} is {found}, required {required}; {fix}"
)]
#[non_exhaustive]
pub struct WeakKey {
    /// Kind of object (`KEK`, `private key of key pair`).
    pub what: &'static str,
    /// The id.
    pub id: String,
    /// Token label.
    pub token: String,
    /// The PKCS#11 attribute (`CKA_EXTRACTABLE`).
    pub attribute: &'static str,
    /// Its value on the token (`true`, `not reported`).
    pub found: String,
    /// The value required.
    pub required: &'static str,
    /// What the operator can do.
    pub fix: &'static str,
}

/// Broad classes of [`Error`], for callers that map errors to protocol codes (gRPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request is wrong (bad id, tampered or malformed blob, wrong AAD).
    InvalidArgument,
    /// The named object does not exist.
    NotFound,
    /// The object already exists.
    AlreadyExists,
    /// The system is not in a state to serve this (duplicates, unconfirmed destroy).
    FailedPrecondition,
    /// The PIN was rejected; operator action is needed.
    Unauthenticated,
    /// The HSM or module is unreachable or failing; retrying later may help.
    Unavailable,
    /// A bug or an unexpected failure.
    Internal,
}

impl Error {
    /// Wraps a cryptoki error with the operation that produced it.
    pub(crate) fn pkcs11(operation: &'static str) -> impl FnOnce(cryptoki::error::Error) -> Self {
        move |source| Self::Pkcs11 { operation, source }
    }

    /// Wraps an OpenSSL error with the operation that produced it.
    pub(crate) fn crypto(
        operation: &'static str,
    ) -> impl FnOnce(openssl::error::ErrorStack) -> Self {
        move |source| Self::Crypto { operation, source }
    }

    /// The PKCS#11 return value, when the failure came from the module.
    pub fn rv(&self) -> Option<RvError> {
        match self {
            Self::PinRejected { rv, .. } => Some(*rv),
            Self::TokenUnavailable { source, .. } => source.rv(),
            Self::Pkcs11 { source, .. }
            | Self::SessionLost { source, .. }
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
            Self::TokenNotFound { .. } | Self::ModuleMissing { .. } | Self::ObjectNotFound { .. }
        )
    }

    /// The broad class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            // No anchor to verify against is a missing object, not a bad chain.
            Self::ChainRejected { problems }
                if problems
                    .iter()
                    .any(|p| matches!(p, crate::verify::ChainProblem::NoAnchors)) =>
            {
                ErrorKind::NotFound
            }
            Self::InvalidLabel { .. }
            | Self::InvalidId { .. }
            | Self::InvalidArgument { .. }
            | Self::InvalidCertificate { .. }
            | Self::ChainRejected { .. }
            | Self::MalformedEnvelope { .. }
            | Self::UnsupportedEnvelope { .. }
            | Self::KeyMismatch { .. }
            | Self::AuthenticationFailed { .. }
            | Self::AadMismatch { .. }
            | Self::UnknownKeyId { .. } => ErrorKind::InvalidArgument,
            Self::TokenNotFound { .. } | Self::ObjectNotFound { .. } => ErrorKind::NotFound,
            Self::ObjectExists { .. } => ErrorKind::AlreadyExists,
            Self::DuplicateToken { .. }
            | Self::DuplicateObject { .. }
            | Self::ObjectMismatch { .. }
            | Self::NotConfirmed { .. }
            | Self::WeakObject(_)
            | Self::PinFileShared { .. }
            | Self::PinEnvMissing { .. }
            | Self::PinInvalid { .. } => ErrorKind::FailedPrecondition,
            Self::PinRejected { .. } => ErrorKind::Unauthenticated,
            Self::ModuleMissing { .. }
            | Self::ModuleLoad { .. }
            | Self::Initialize { .. }
            | Self::SessionLost { .. }
            | Self::TokenUnavailable { .. }
            | Self::PinRead { .. } => ErrorKind::Unavailable,
            Self::Pkcs11 { source, .. } => match source {
                cryptoki::error::Error::Pkcs11(rv, _) if is_device_fault(*rv) => {
                    ErrorKind::Unavailable
                }
                _ => ErrorKind::Internal,
            },
            Self::HsmOutput { .. } | Self::Crypto { .. } | Self::Worker { .. } => {
                ErrorKind::Internal
            }
        }
    }
}

/// Return values meaning the device, the token or the session failed, not the request: the
/// same call may work later (after a re-open, a failover, a restart of the HSM).
pub(crate) fn is_device_fault(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::DeviceError
            | RvError::DeviceMemory
            | RvError::DeviceRemoved
            | RvError::GeneralError
            | RvError::FunctionFailed
            | RvError::HostMemory
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::SessionCount
            | RvError::UserNotLoggedIn
            | RvError::CryptokiNotInitialized
            | RvError::SlotIdInvalid
    )
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
