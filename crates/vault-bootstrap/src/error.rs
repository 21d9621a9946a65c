use std::path::PathBuf;

/// A boxed cause (transport errors come from reqwest, rustify or rustls).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of the Vault layer. Messages name the server address and the object; no token, PIN
/// or key ever appears in them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The address is not a usable Vault address.
    #[error("invalid Vault address {addr:?}: {reason}")]
    InvalidAddr {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The CA certificate for the server could not be used.
    #[error("invalid Vault CA certificate ({ca}): {reason}")]
    InvalidCaCert {
        /// Where the certificate came from (a file, a directory, or "PEM given in memory").
        ca: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server could not be reached (connection refused, timeout, broken connection).
    #[error("Vault at {addr} is unavailable")]
    Unavailable {
        /// Server address.
        addr: String,
        /// Transport cause.
        #[source]
        source: BoxError,
    },
    /// The TLS handshake failed, usually because the server certificate is not issued by the
    /// trusted CA.
    #[error(
        "TLS handshake with Vault at {addr} failed; check that {trust} holds the CA of the server certificate"
    )]
    Tls {
        /// Server address.
        addr: String,
        /// What was trusted: the CA file or directory, or the system roots.
        trust: String,
        /// The TLS cause.
        #[source]
        source: BoxError,
    },
    /// The server is sealed and cannot answer until it is unsealed.
    #[error("Vault at {addr} is sealed; unseal it and retry")]
    Sealed {
        /// Server address.
        addr: String,
    },
    /// The server answered with something a Vault server does not send.
    #[error("Vault at {addr} answered {path} with {detail}")]
    UnexpectedResponse {
        /// Server address.
        addr: String,
        /// API path.
        path: &'static str,
        /// Status or body problem.
        detail: String,
    },
    /// The server refused the request for lack of permission (HTTP 403).
    #[error("Vault at {addr} denied {operation} {object}: {message}")]
    PermissionDenied {
        /// Server address.
        addr: String,
        /// What was attempted (`read secret`, `kubernetes login`, ...).
        operation: &'static str,
        /// The object (path, policy name, role).
        object: String,
        /// The server's explanation.
        message: String,
    },
    /// The server rejected the request (any other HTTP error).
    #[error("Vault at {addr} rejected {operation} {object} with HTTP {code}: {message}")]
    Api {
        /// Server address.
        addr: String,
        /// What was attempted.
        operation: &'static str,
        /// The object (path, policy name, role).
        object: String,
        /// HTTP status code.
        code: u16,
        /// The server's explanation.
        message: String,
    },
    /// The request or its answer could not be handled by the client.
    #[error("{operation} {object} at Vault {addr} failed")]
    Client {
        /// Server address.
        addr: String,
        /// What was attempted.
        operation: &'static str,
        /// The object.
        object: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// An object exists in a shape that cannot be converged without destroying data.
    #[error("{object} exists but {detail}; change it by hand or choose another path")]
    Conflict {
        /// The object.
        object: String,
        /// What differs.
        detail: String,
    },
    /// A secret read from Vault lacks a field the agent needs.
    #[error("secret {path} has no field {field:?}; write it with the bootstrap")]
    MissingField {
        /// Secret path.
        path: String,
        /// The missing field name.
        field: String,
    },
    /// A local file could not be read.
    #[error("cannot read {what} from {}", path.display())]
    ReadFile {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A local file could not be written.
    #[error("cannot write {what} to {}", path.display())]
    WriteFile {
        /// What the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A setting is invalid.
    #[error("invalid setting {field}: {reason}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// True when the server is down, unreachable, sealed or cannot be talked to over TLS: a
    /// dependency problem, not ours.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::Sealed { .. } | Self::Tls { .. }
        )
    }

    /// True when trying again later may succeed: transport errors, a sealed server, HTTP 5xx
    /// and 429. Never 4xx or TLS failures.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { .. } | Self::Sealed { .. } => true,
            Self::Api { code, .. } => *code >= 500 || *code == 429,
            _ => false,
        }
    }

    /// True when the server refused for lack of permission (for the agent: log in again).
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Self::PermissionDenied { .. })
    }

    /// True for local configuration problems the operator must fix (bad address, CA, setting,
    /// unreadable input file).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Self::InvalidAddr { .. }
                | Self::InvalidCaCert { .. }
                | Self::InvalidConfig { .. }
                | Self::ReadFile { .. }
        )
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
