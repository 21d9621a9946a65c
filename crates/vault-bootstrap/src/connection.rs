use std::time::Duration;

use serde::Deserialize;

use crate::{Error, Result, VaultAddr};

/// How to reach one Vault/OpenBao server. TLS verification is always on, with the system roots
/// plus an optional CA certificate.
#[derive(Clone, Debug)]
pub struct Connection {
    addr: VaultAddr,
    ca_cert_pem: Option<Vec<u8>>,
    timeout: Duration,
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
    /// A connection to `addr` with a 10 s request timeout.
    pub fn new(addr: VaultAddr) -> Self {
        Self {
            addr,
            ca_cert_pem: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// Trusts this PEM CA certificate (bundle) in addition to the system roots.
    #[must_use]
    pub fn with_ca_cert_pem(mut self, pem: Vec<u8>) -> Self {
        self.ca_cert_pem = Some(pem);
        self
    }

    /// Per-request timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server address.
    pub fn addr(&self) -> &VaultAddr {
        &self.addr
    }

    /// An HTTP client configured for this server (CA, timeout).
    ///
    /// # Errors
    /// [`Error::InvalidCaCert`] when the CA PEM holds no usable certificate.
    pub fn http_client(&self) -> Result<reqwest::Client> {
        crate::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout);
        if let Some(pem) = &self.ca_cert_pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| Error::InvalidCaCert {
                    reason: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(Error::InvalidCaCert {
                    reason: "the PEM holds no certificate".to_owned(),
                });
            }
            builder = builder.tls_certs_merge(certs);
        }
        builder.build().map_err(|source| Error::Unavailable {
            addr: self.addr.to_string(),
            source,
        })
    }

    /// Asks the server for its health, accepting sealed and uninitialised servers as answers
    /// (they are states, not failures).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server cannot be reached,
    /// [`Error::UnexpectedResponse`] when the answer is not a Vault health document.
    pub async fn health(&self) -> Result<Health> {
        const PATH: &str = "v1/sys/health";
        let http = self.http_client()?;
        let url = self.addr.api(&format!(
            "{PATH}?standbyok=true&perfstandbyok=true&sealedcode=200&uninitcode=200"
        ));
        let unavailable = |source| Error::Unavailable {
            addr: self.addr.to_string(),
            source,
        };
        let response = http.get(url).send().await.map_err(unavailable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(Error::UnexpectedResponse {
                addr: self.addr.to_string(),
                path: PATH,
                detail: format!("HTTP {status}"),
            });
        }
        let body = response.bytes().await.map_err(unavailable)?;
        serde_json::from_slice(&body).map_err(|e| Error::UnexpectedResponse {
            addr: self.addr.to_string(),
            path: PATH,
            detail: format!("a body that is not a health document ({e})"),
        })
    }
}
