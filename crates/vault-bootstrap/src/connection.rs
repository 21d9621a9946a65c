use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::error::BoxError;
use crate::{Error, Result, RetryPolicy, VaultAddr};

/// How to reach one Vault/OpenBao server: address, trusted CA, namespace, timeout and retry
/// policy. TLS verification is on (system roots plus the optional CA) unless
/// [`Connection::with_insecure_skip_verify`] turns it off explicitly.
#[derive(Clone)]
pub struct Connection {
    addr: VaultAddr,
    ca: Option<CaBundle>,
    timeout: Duration,
    namespace: Option<String>,
    skip_verify: bool,
    retry: RetryPolicy,
}

#[derive(Clone)]
struct CaBundle {
    pem: Vec<u8>,
    origin: String,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .field("ca", &self.ca.as_ref().map(|c| &c.origin))
            .field("timeout", &self.timeout)
            .field("namespace", &self.namespace)
            .field("skip_verify", &self.skip_verify)
            .field("retry", &self.retry)
            .finish()
    }
}

/// What `GET /v1/sys/health` reports. Parsed leniently: OpenBao omits Vault Enterprise fields
/// (which is why vaultrs' own health call fails against it).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Health {
    /// Whether the server has been initialised.
    pub initialized: bool,
    /// Whether it is sealed.
    pub sealed: bool,
    /// Whether it is a standby node.
    #[serde(default)]
    pub standby: bool,
    /// Server version string.
    #[serde(default)]
    pub version: String,
}

impl Connection {
    /// A connection to `addr` with a 10 s request timeout and the default [`RetryPolicy`].
    pub fn new(addr: VaultAddr) -> Self {
        Self {
            addr,
            ca: None,
            timeout: Duration::from_secs(10),
            namespace: None,
            skip_verify: false,
            retry: RetryPolicy::default(),
        }
    }

    /// Trusts this PEM CA certificate (bundle) in addition to the system roots.
    #[must_use]
    pub fn with_ca_cert_pem(mut self, pem: Vec<u8>) -> Self {
        self.ca = Some(CaBundle {
            pem,
            origin: "the CA PEM given".to_owned(),
        });
        self
    }

    /// Trusts the PEM CA certificate(s) in this file (`VAULT_CACERT`). Errors name the file.
    ///
    /// # Errors
    /// [`Error::ReadFile`] when it cannot be read, [`Error::InvalidCaCert`] when it holds no
    /// certificate.
    pub fn with_ca_cert_file(mut self, path: &Path) -> Result<Self> {
        let pem = std::fs::read(path).map_err(|source| Error::ReadFile {
            what: "the Vault CA certificate",
            path: path.to_owned(),
            source,
        })?;
        let bundle = CaBundle {
            pem,
            origin: format!("CA file {}", path.display()),
        };
        bundle.certificates()?;
        self.ca = Some(bundle);
        Ok(self)
    }

    /// Trusts every PEM certificate in the `.pem`/`.crt` files of this directory
    /// (`VAULT_CAPATH`).
    ///
    /// # Errors
    /// [`Error::ReadFile`] when the directory or a file cannot be read,
    /// [`Error::InvalidCaCert`] when no certificate is found.
    pub fn with_ca_path(mut self, dir: &Path) -> Result<Self> {
        let read_err = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::ReadFile {
                what: "the Vault CA directory",
                path,
                source,
            }
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(read_err(dir))?
            .filter_map(std::result::Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.extension().is_some_and(|e| {
                        e.eq_ignore_ascii_case("pem") || e.eq_ignore_ascii_case("crt")
                    })
            })
            .collect();
        files.sort();
        let mut pem = Vec::new();
        for file in &files {
            pem.extend(std::fs::read(file).map_err(read_err(file))?);
            pem.push(b'\n');
        }
        let bundle = CaBundle {
            pem,
            origin: format!("CA directory {}", dir.display()),
        };
        bundle.certificates()?;
        self.ca = Some(bundle);
        Ok(self)
    }

    /// Per-request timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The Vault Enterprise / OpenBao namespace every request is made in (`VAULT_NAMESPACE`).
    #[must_use]
    pub fn with_namespace(mut self, namespace: Option<String>) -> Self {
        self.namespace = namespace.filter(|n| !n.trim().is_empty());
        self
    }

    /// Turns TLS certificate verification off. Only for explicit operator requests; every
    /// client built from this connection logs a warning.
    #[must_use]
    pub fn with_insecure_skip_verify(mut self, skip: bool) -> Self {
        self.skip_verify = skip;
        self
    }

    /// How transient failures are retried.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The server address.
    pub fn addr(&self) -> &VaultAddr {
        &self.addr
    }

    /// The namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The retry policy.
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    /// What is trusted for TLS, for messages: the CA file or directory, or the system roots.
    pub fn trust(&self) -> String {
        match &self.ca {
            Some(ca) => ca.origin.clone(),
            None => "the system trust store".to_owned(),
        }
    }

    /// An HTTP client configured for this server (CA, timeout, verification).
    ///
    /// # Errors
    /// [`Error::InvalidCaCert`] when the CA PEM holds no usable certificate.
    pub fn http_client(&self) -> Result<reqwest::Client> {
        crate::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout);
        if let Some(ca) = &self.ca {
            builder = builder.tls_certs_merge(ca.certificates()?);
        }
        if self.skip_verify {
            tracing::warn!(vault.addr = %self.addr, "TLS certificate verification is disabled");
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        builder.build().map_err(|source| Error::Unavailable {
            addr: self.addr.to_string(),
            source: Box::new(source),
        })
    }

    /// Asks the server for its health, accepting sealed and uninitialised servers as answers
    /// (they are states, not failures). Not retried.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server cannot be reached, [`Error::Tls`] when the
    /// handshake fails, [`Error::UnexpectedResponse`] when the answer is not a Vault health
    /// document.
    pub async fn health(&self) -> Result<Health> {
        const PATH: &str = "v1/sys/health";
        let http = self.http_client()?;
        let url = self.addr.api(&format!(
            "{PATH}?standbyok=true&perfstandbyok=true&sealedcode=200&uninitcode=200"
        ));
        let response = http
            .get(url)
            .send()
            .await
            .map_err(|e| self.transport_error(Box::new(e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(Error::UnexpectedResponse {
                addr: self.addr.to_string(),
                path: PATH,
                detail: format!("HTTP {status}"),
            });
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(Box::new(e)))?;
        serde_json::from_slice(&body).map_err(|e| Error::UnexpectedResponse {
            addr: self.addr.to_string(),
            path: PATH,
            detail: format!("a body that is not a health document ({e})"),
        })
    }

    /// Classifies a transport failure: a TLS failure names what was trusted.
    pub(crate) fn transport_error(&self, source: BoxError) -> Error {
        if is_tls_failure(source.as_ref()) {
            Error::Tls {
                addr: self.addr.to_string(),
                trust: self.trust(),
                source,
            }
        } else {
            Error::Unavailable {
                addr: self.addr.to_string(),
                source,
            }
        }
    }
}

impl CaBundle {
    fn certificates(&self) -> Result<Vec<reqwest::Certificate>> {
        let invalid = |reason: String| Error::InvalidCaCert {
            ca: self.origin.clone(),
            reason,
        };
        let certs = reqwest::Certificate::from_pem_bundle(&self.pem)
            .map_err(|e| invalid(format!("not PEM certificates ({e})")))?;
        if certs.is_empty() {
            return Err(invalid("the PEM holds no certificate".to_owned()));
        }
        Ok(certs)
    }
}

/// True when a rustls error is somewhere in the cause chain. `io::Error::source` skips the
/// wrapped error, so wrapped errors are followed through `get_ref`.
fn is_tls_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<rustls::Error>() {
            return true;
        }
        cur = match e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner),
            None => e.source(),
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing-ca.pem");
        let addr = VaultAddr::parse("https://vault.example:8200").unwrap();
        let err = Connection::new(addr.clone())
            .with_ca_cert_file(&missing)
            .unwrap_err();
        assert!(err.to_string().contains("missing-ca.pem"), "{err}");
        assert!(err.is_config());

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let err = Connection::new(addr).with_ca_cert_file(&junk).unwrap_err();
        assert!(matches!(err, Error::InvalidCaCert { .. }), "{err}");
        assert!(err.to_string().contains("junk.pem"), "{err}");
    }

    #[test]
    fn blank_namespace_means_none() {
        let addr = VaultAddr::parse("http://127.0.0.1:8200").unwrap();
        let conn = Connection::new(addr).with_namespace(Some("  ".to_owned()));
        assert_eq!(conn.namespace(), None);
        assert_eq!(conn.trust(), "the system trust store");
    }
}
