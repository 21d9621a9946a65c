/// Errors of the Vault layer. Messages name the server address; no token ever appears.
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
    #[error("invalid Vault CA certificate: {reason}")]
    InvalidCaCert {
        /// What is wrong with it.
        reason: String,
    },
    /// The server could not be reached (connection refused, TLS failure, timeout).
    #[error("Vault at {addr} is unavailable")]
    Unavailable {
        /// Server address.
        addr: String,
        /// Transport cause.
        #[source]
        source: reqwest::Error,
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
}

impl Error {
    /// True when the server is down, unreachable or sealed: a dependency problem, not ours.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
