//! Errors of the cluster-side operations.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The API verb a failed request used, as RBAC names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// Read one object.
    Get,
    /// List objects.
    List,
    /// Server-side apply (RBAC verb `patch`).
    Apply,
    /// Merge patch.
    Patch,
    /// Delete an object.
    Delete,
    /// Create (a TokenRequest).
    Create,
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Get => "get",
            Self::List => "list",
            Self::Apply => "patch (server-side apply)",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::Create => "create",
        })
    }
}

/// Boxed cause of a transport failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of k8s-bootstrap.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API server could not be reached (connection refused, TLS failure, timeout).
    #[error(
        "kubernetes API server unavailable: could not {verb} {resource}; check that the cluster is up and the kubeconfig's server address and CA"
    )]
    Unavailable {
        /// What was attempted.
        verb: Verb,
        /// The resource (`configmaps istio-system/vault-tls-cert`).
        resource: String,
        /// The transport error.
        #[source]
        source: BoxError,
    },

    /// 401: the API server did not accept the credentials.
    #[error(
        "unauthorized (401) to {verb} {resource}{}: the API server rejected the credentials; refresh the kubeconfig's token or certificate",
        in_namespace(namespace.as_deref())
    )]
    Unauthorized {
        /// What was attempted.
        verb: Verb,
        /// The resource type (plural) and name.
        resource: String,
        /// The namespace, for namespaced resources.
        namespace: Option<String>,
    },

    /// 403: RBAC denied the request.
    #[error(
        "forbidden (403) to {verb} {resource}{}: grant the operator's account this permission (docs/rbac/meshca-operator.yaml lists what meshca needs); server said: {message}",
        in_namespace(namespace.as_deref())
    )]
    Forbidden {
        /// What was attempted.
        verb: Verb,
        /// The resource type (plural) and name.
        resource: String,
        /// The namespace, for namespaced resources.
        namespace: Option<String>,
        /// The API server's message.
        message: String,
    },

    /// Any other error status from the API server.
    #[error("failed to {verb} {resource}{}: HTTP {code} {reason}: {message}", in_namespace(namespace.as_deref()))]
    Api {
        /// What was attempted.
        verb: Verb,
        /// The resource type (plural) and name.
        resource: String,
        /// The namespace, for namespaced resources.
        namespace: Option<String>,
        /// HTTP status code.
        code: u16,
        /// The `Status` reason (`Conflict`, `Invalid`, ...).
        reason: String,
        /// The API server's message.
        message: String,
    },

    /// The API server answered with something that is not what the API promises.
    #[error("unexpected answer to {verb} {resource}: {detail}")]
    Protocol {
        /// What was attempted.
        verb: Verb,
        /// The resource.
        resource: String,
        /// What was wrong.
        detail: String,
    },

    /// An object the operation needs does not exist.
    #[error("{object} not found; {hint}")]
    NotFound {
        /// The missing object.
        object: String,
        /// What creates it.
        hint: &'static str,
    },

    /// An object exists in a form the operation must not silently change.
    #[error("{object} conflicts with the desired state: {detail}")]
    Conflict {
        /// The object.
        object: String,
        /// What differs and how to resolve it.
        detail: String,
    },

    /// A Secret lacks a field the operation reads.
    #[error("{object} has no data field {field:?}; {hint}")]
    MissingField {
        /// The object.
        object: String,
        /// The missing `data` key.
        field: String,
        /// What writes it.
        hint: &'static str,
    },

    /// PEM input that is not a sequence of parseable X.509 certificates.
    #[error("{what} is not a valid PEM certificate: {reason}")]
    InvalidCertificate {
        /// Where the PEM came from.
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The kubeconfig lacks what the operation needs.
    #[error("kubeconfig: {detail}")]
    Kubeconfig {
        /// What is missing or wrong.
        detail: String,
    },

    /// A kube client could not be built from the configuration.
    #[error("failed to build a Kubernetes client from the kubeconfig")]
    Client {
        /// kube's error.
        #[source]
        source: kube::Error,
    },

    /// Reading an input file failed.
    #[error("failed to read {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// Writing an output file failed.
    #[error("failed to write {path}; check that the directory exists and is writable")]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A condition did not hold within the allowed time.
    #[error("timed out after {waited:?} waiting for {what}: {progress}")]
    Timeout {
        /// The condition.
        what: String,
        /// How long was waited.
        waited: Duration,
        /// The last observed progress.
        progress: String,
    },

    /// An input value was refused.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// Which input.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

fn in_namespace(namespace: Option<&str>) -> String {
    namespace.map_or_else(String::new, |ns| format!(" in namespace {ns}"))
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the API server could not be reached ("dependency unavailable", exit code 4).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// True for 401 and 403.
    pub fn is_denied(&self) -> bool {
        matches!(self, Self::Unauthorized { .. } | Self::Forbidden { .. })
    }

    /// The HTTP status code of an API error.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            Self::Unauthorized { .. } => Some(401),
            Self::Forbidden { .. } => Some(403),
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True for failures worth retrying: an unreachable server, 429, 500, 502, 503, 504.
    pub fn is_retryable(&self) -> bool {
        self.is_unavailable() || matches!(self.status_code(), Some(429 | 500 | 502 | 503 | 504))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_errors_name_verb_resource_and_namespace() {
        let e = Error::Forbidden {
            verb: Verb::Apply,
            resource: "configmaps/vault-tls-cert".into(),
            namespace: Some("istio-system".into()),
            message: "no".into(),
        };
        let text = e.to_string();
        assert!(text.contains("forbidden (403) to patch (server-side apply) configmaps/vault-tls-cert in namespace istio-system"), "{text}");
        assert!(e.is_denied() && !e.is_retryable());
        let e = Error::Unauthorized {
            verb: Verb::Get,
            resource: "namespaces/vault".into(),
            namespace: None,
        };
        assert!(
            e.to_string()
                .starts_with("unauthorized (401) to get namespaces/vault:")
        );
    }

    #[test]
    fn only_transient_failures_are_retryable() {
        let api = |code| Error::Api {
            verb: Verb::Get,
            resource: "x".into(),
            namespace: None,
            code,
            reason: String::new(),
            message: String::new(),
        };
        assert!(api(503).is_retryable());
        assert!(api(429).is_retryable());
        assert!(!api(409).is_retryable());
        assert!(!api(422).is_retryable());
    }
}
