//! Errors of the server set-up and of the client, and the mapping of hsm-core errors to gRPC
//! status codes.

use std::path::PathBuf;

use tonic::{Code, Status};

use crate::policy::Rpc;

/// Errors starting or running the server, or calling it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket path could not be prepared (stale socket, parent directory).
    #[error("cannot prepare the socket path")]
    Socket(#[from] crate::socket::Error),
    /// Binding the Unix socket failed.
    #[error("cannot listen on {path}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Setting the socket's mode or group failed.
    #[error("cannot set {what} of socket {path}")]
    SocketPermissions {
        /// `mode 0660`, `group 1337`.
        what: String,
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Binding the operations HTTP port failed.
    #[error("cannot listen on {addr} for /metrics, /healthz and /readyz")]
    OpsBind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("the gRPC server on {path} failed")]
    Serve {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// The client could not connect to the socket.
    #[error("cannot connect to the plugin socket {path}: is `hsm-plugin serve` running there?")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// The socket is served by a uid the client does not trust; nothing was sent.
    #[error(
        "refusing to talk to {path}: it is served by uid {uid}, not {expected}; check who runs `hsm-plugin serve` there, or give the client the uid it should expect"
    )]
    UntrustedServer {
        /// The socket path.
        path: PathBuf,
        /// The server's uid.
        uid: u32,
        /// Who was expected.
        expected: String,
    },
    /// The server answered a call with an error status.
    #[error("{rpc} failed: {} ({:?})", status.message(), status.code())]
    Rpc {
        /// The RPC.
        rpc: Rpc,
        /// The status the server returned.
        status: Box<Status>,
    },
    /// A `decrypt-csr` JSON document is invalid.
    #[error("invalid encrypted CSR document: {reason}")]
    CsrDocument {
        /// What is wrong (names the field).
        reason: String,
    },
}

impl Error {
    /// True when the server refused its socket directory (other users could write it): a
    /// configuration to fix, not a failure to retry.
    pub fn is_unsafe_socket_directory(&self) -> bool {
        matches!(
            self,
            Self::Socket(crate::socket::Error::UnsafeDirectory { .. })
        )
    }

    /// The gRPC code when the server answered with an error.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The gRPC code for an hsm-core error class.
pub fn code_for(kind: hsm_core::ErrorKind) -> Code {
    use hsm_core::ErrorKind as K;
    match kind {
        K::InvalidArgument => Code::InvalidArgument,
        K::NotFound => Code::NotFound,
        K::AlreadyExists => Code::AlreadyExists,
        K::FailedPrecondition => Code::FailedPrecondition,
        K::Unauthenticated => Code::Unauthenticated,
        K::Unavailable => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// The status for an hsm-core error: its class's code, and a message naming the RPC, the
/// input (hsm-core messages name ids and blobs) and the causes.
pub fn hsm_status(rpc: Rpc, err: &hsm_core::Error) -> Status {
    Status::new(code_for(err.kind()), format!("{rpc}: {}", chain(err)))
}

/// The status for a ca-signing error.
pub(crate) fn signing_status(rpc: Rpc, err: &ca_signing::Error) -> Status {
    use ca_signing::Error as E;
    let code = match err {
        E::Sign(_) => Code::Unavailable,
        E::SignerMismatch { .. }
        | E::IssuerNotCa { .. }
        | E::IssuerNotValidNow { .. }
        | E::IssuerExpiresTooSoon { .. } => Code::FailedPrecondition,
        E::OpenSsl { .. } | E::Encode { .. } | E::Write { .. } => Code::Internal,
        _ => Code::InvalidArgument,
    };
    Status::new(code, format!("{rpc}: {}", chain(err)))
}

/// An error and its causes, `: `-separated.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// InvalidArgument naming the RPC and the request field.
pub(crate) fn invalid_field(rpc: Rpc, field: &str, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{rpc}: field {field}: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsm_errors_map_by_kind_and_name_the_input() {
        let not_found = hsm_core::Error::ObjectNotFound {
            what: "KEK",
            id: "kek-7".into(),
            token: "asm".into(),
        };
        let s = hsm_status(Rpc::GenerateDek, &not_found);
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().starts_with("GenerateDEK: "));
        assert!(s.message().contains("kek-7"));

        let aad = hsm_core::Error::AadMismatch { what: "ciphertext" };
        assert_eq!(
            hsm_status(Rpc::AuthenticatedDecrypt, &aad).code(),
            Code::InvalidArgument
        );
        let pin = hsm_core::Error::PinRejected {
            label: "asm".into(),
            rv: cryptoki::error::RvError::PinIncorrect,
        };
        assert_eq!(
            hsm_status(Rpc::LoadSKey, &pin).code(),
            Code::Unauthenticated
        );
        let dup = hsm_core::Error::DuplicateObject {
            what: "KEK",
            id: "k".into(),
            token: "t".into(),
            count: 2,
        };
        assert_eq!(
            hsm_status(Rpc::GenerateDek, &dup).code(),
            Code::FailedPrecondition
        );
    }
}
