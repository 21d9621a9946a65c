//! The Kubernetes Secret layouts istiod reads: `istio-ca-cert` (HSM mode) and Istio's own
//! `cacerts` (plugged-in CA, for comparison users).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use zeroize::Zeroizing;

use crate::cert::same_public_key;
use crate::chain::CertChain;
use crate::encoding::{FileMode, write_file_atomic};
use crate::error::{Error, Result};
use crate::signer::Signer;
use crate::software::SoftwareSigner;

/// Namespace of istiod's CA Secrets.
pub const ISTIO_NAMESPACE: &str = "istio-system";

/// One Secret value; private keys are zeroed on drop and hidden from `Debug`.
#[derive(Clone)]
enum Value {
    Public(Vec<u8>),
    Private(Zeroizing<Vec<u8>>),
}

impl Value {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Public(v) => v,
            Self::Private(v) => v,
        }
    }
}

/// A Secret's name, namespace, type and data, ready to write as files or a manifest.
#[derive(Clone)]
pub struct SecretLayout {
    name: String,
    namespace: String,
    kind: String,
    data: BTreeMap<String, Value>,
}

impl fmt::Debug for SecretLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self
            .data
            .iter()
            .map(|(k, v)| match v {
                Value::Public(b) => format!("{k} ({} bytes)", b.len()),
                Value::Private(_) => format!("{k} (redacted)"),
            })
            .collect();
        f.debug_struct("SecretLayout")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("type", &self.kind)
            .field("data", &keys)
            .finish()
    }
}

impl SecretLayout {
    /// Secret `istio-ca-cert` in `istio-system` with key `cert-chain.pem`: the istiod CA
    /// certificate first, then the root. The chain is verified first.
    ///
    /// # Errors
    /// Those of [`CertChain::verify`].
    pub fn istio_ca_cert(chain: &CertChain) -> Result<Self> {
        chain.verify(None)?;
        let mut data = BTreeMap::new();
        data.insert(
            "cert-chain.pem".to_owned(),
            Value::Public(chain.to_pem().into_bytes()),
        );
        Ok(Self {
            name: "istio-ca-cert".to_owned(),
            namespace: ISTIO_NAMESPACE.to_owned(),
            kind: "Opaque".to_owned(),
            data,
        })
    }

    /// Istio's plugged-in CA Secret `cacerts`: `ca-cert.pem` (first of the chain),
    /// `root-cert.pem` (last), `cert-chain.pem` (all) and, for a software key only,
    /// `ca-key.pem`. The chain is verified and the key checked against `ca-cert.pem`.
    ///
    /// # Errors
    /// Those of [`CertChain::verify`]; [`Error::KeyMismatch`] when `ca_key` is not the CA
    /// certificate's key.
    pub fn cacerts(chain: &CertChain, ca_key: Option<&SoftwareSigner>) -> Result<Self> {
        chain.verify(None)?;
        let mut data = BTreeMap::new();
        data.insert(
            "ca-cert.pem".to_owned(),
            Value::Public(chain.first().pem().into_bytes()),
        );
        data.insert(
            "root-cert.pem".to_owned(),
            Value::Public(chain.last().pem().into_bytes()),
        );
        data.insert(
            "cert-chain.pem".to_owned(),
            Value::Public(chain.to_pem().into_bytes()),
        );
        if let Some(key) = ca_key {
            if !same_public_key(
                chain.first().public_key_spki_der(),
                &key.public_key_spki_der(),
            ) {
                return Err(Error::KeyMismatch {
                    subject: chain.first().subject().to_owned(),
                    expected: "ca-key.pem",
                });
            }
            data.insert(
                "ca-key.pem".to_owned(),
                Value::Private(key.private_key_pkcs8_pem()?),
            );
        }
        Ok(Self {
            name: "cacerts".to_owned(),
            namespace: ISTIO_NAMESPACE.to_owned(),
            kind: "Opaque".to_owned(),
            data,
        })
    }

    /// The Secret's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Its data keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.data.keys().map(String::as_str)
    }

    /// One data value.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.data.get(key).map(Value::bytes)
    }

    /// Whether any value is private (a key), so the manifest must be handled as a secret.
    pub fn holds_private_key(&self) -> bool {
        self.data.values().any(|v| matches!(v, Value::Private(_)))
    }

    /// The `v1/Secret` manifest as JSON (`kubectl apply -f` accepts it); zeroed on drop.
    pub fn to_manifest_json(&self) -> Zeroizing<String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let data: serde_json::Map<String, serde_json::Value> = self
            .data
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(b64.encode(v.bytes()))))
            .collect();
        let manifest = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": self.name, "namespace": self.namespace },
            "type": self.kind,
            "data": data,
        });
        Zeroizing::new(format!("{manifest:#}\n"))
    }

    /// Writes each key as a file in `dir` (private keys 0600, the rest 0644), atomically.
    ///
    /// # Errors
    /// [`Error::Write`].
    pub fn write_files(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        for (k, v) in &self.data {
            let path = dir.join(k);
            let mode = match v {
                Value::Public(_) => FileMode::Public,
                Value::Private(_) => FileMode::Secret,
            };
            write_file_atomic(&path, v.bytes(), mode)?;
            written.push(path);
        }
        Ok(written)
    }
}
