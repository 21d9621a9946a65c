//! Kubernetes KMS operations: v2 (Status/Encrypt/Decrypt with key ids) and the Thales
//! plugin's v1beta1 (KMS-PROTOCOL §2.4).

use std::collections::BTreeMap;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::envelope::{KeyedSession, hsm_open, hsm_seal};
use crate::kek::find_key_by_label;
use crate::{Error, HsmToken, Iv, IvLength, KeyRef, ObjectLabel, Result};

/// A key serving Kubernetes KMS v2, with the version marker that goes into its key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeKey {
    /// The AES key on the token.
    pub key: KeyRef,
    /// Version marker (for example `v1`); bump it when the key is replaced.
    pub version: String,
}

impl KubeKey {
    /// The key id reported to the API server: `<KEK id>:<version>`.
    pub fn key_id(&self) -> String {
        format!("{}:{}", self.key.id, self.version)
    }
}

/// Settings of the Kubernetes KMS operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeKmsConfig {
    /// The key new v2 ciphertexts are made with.
    pub current: KubeKey,
    /// Older keys still accepted for v2 decryption (rotation).
    pub retired: Vec<KubeKey>,
    /// IV length for new v2 ciphertexts (12, the GCM standard, by default).
    pub iv: IvLength,
    /// Label of the v1beta1 key (`k8s-dek` in the plugin).
    pub v1_label: ObjectLabel,
}

impl KubeKmsConfig {
    /// v2 with `current` (version `v1`), no retired keys, v1beta1 on `k8s-dek`.
    pub fn new(current: KeyRef) -> Self {
        Self {
            current: KubeKey {
                key: current,
                version: "v1".to_owned(),
            },
            retired: Vec::new(),
            iv: IvLength::Bytes12,
            v1_label: ObjectLabel::new(ObjectLabel::K8S_KEY).unwrap_or_else(|_| ObjectLabel::kek()),
        }
    }
}

/// KMS v2 Status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeStatus {
    /// API version, `v2`.
    pub version: String,
    /// `ok` when a probe encrypt/decrypt round trip succeeded.
    pub healthz: String,
    /// The current key id.
    pub key_id: String,
}

/// KMS v2 Encrypt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeEncryptRequest {
    /// The API server's DEK (or, for v1beta1-style use, any data).
    pub plaintext: Zeroizing<Vec<u8>>,
    /// Request id, for logs.
    pub uid: String,
}

/// KMS v2 Encrypt's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeEncryptResponse {
    /// The compact JWE.
    pub ciphertext: Vec<u8>,
    /// The key that made it.
    pub key_id: String,
    /// Annotations (none today).
    pub annotations: BTreeMap<String, Vec<u8>>,
}

/// KMS v2 Decrypt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeDecryptRequest {
    /// The ciphertext from Encrypt.
    pub ciphertext: Vec<u8>,
    /// Request id, for logs.
    pub uid: String,
    /// The key id Encrypt returned; it selects the key (never guessed).
    pub key_id: String,
    /// Annotations Encrypt returned.
    pub annotations: BTreeMap<String, Vec<u8>>,
}

/// v1beta1 Version answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Version {
    /// `v1beta1`.
    pub version: String,
    /// Runtime name.
    pub runtime_name: String,
    /// Runtime version.
    pub runtime_version: String,
}

/// The Kubernetes KMS operations on one token. Cheap to clone; the methods block (the
/// [`crate::KubeKms`] implementation runs them on tokio's blocking pool, or on the calling
/// task when the token answers in microseconds).
#[derive(Debug, Clone)]
pub struct HsmKubeKms {
    pub(crate) token: Arc<HsmToken>,
    pub(crate) config: Arc<KubeKmsConfig>,
}

const V2: &str = "KMS v2 ciphertext";
const V1: &str = "KMS v1beta1 ciphertext";

impl HsmKubeKms {
    /// The operations on `token` with `config`.
    pub fn new(token: Arc<HsmToken>, config: KubeKmsConfig) -> Self {
        Self {
            token,
            config: Arc::new(config),
        }
    }

    fn key_for(&self, key_id: &str) -> Result<&KubeKey> {
        std::iter::once(&self.config.current)
            .chain(&self.config.retired)
            .find(|k| k.key_id() == key_id)
            .ok_or_else(|| Error::UnknownKeyId {
                key_id: key_id.to_owned(),
                known: std::iter::once(&self.config.current)
                    .chain(&self.config.retired)
                    .map(KubeKey::key_id)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Status: a probe round trip under the current key.
    ///
    /// # Errors
    /// Whatever the probe hit (missing key, PIN rejected, session lost).
    pub fn status_blocking(&self) -> Result<KubeStatus> {
        let probe = self.encrypt_blocking(&KubeEncryptRequest {
            plaintext: Zeroizing::new(b"healthz".to_vec()),
            uid: "healthz".to_owned(),
        })?;
        let back = self.decrypt_blocking(&KubeDecryptRequest {
            ciphertext: probe.ciphertext,
            uid: "healthz".to_owned(),
            key_id: probe.key_id.clone(),
            annotations: BTreeMap::new(),
        })?;
        let healthz = if back.as_slice() == b"healthz" {
            "ok"
        } else {
            "probe round trip returned different bytes"
        };
        Ok(KubeStatus {
            version: "v2".to_owned(),
            healthz: healthz.to_owned(),
            key_id: probe.key_id,
        })
    }

    /// Encrypt under the current key (AES-GCM in the HSM, JWE with kid = KEK id).
    ///
    /// # Errors
    /// The key lookup errors; [`Error::Pkcs11`].
    pub fn encrypt_blocking(&self, req: &KubeEncryptRequest) -> Result<KubeEncryptResponse> {
        let current = &self.config.current;
        let ciphertext = self.token.seal(
            &current.key,
            &current.key.id.to_text(),
            &[],
            &Iv::Random(self.config.iv),
            &req.plaintext,
        )?;
        tracing::debug!(kms.uid = %req.uid, kms.key_id = %current.key_id(), "KMS v2 encrypt");
        Ok(KubeEncryptResponse {
            ciphertext: ciphertext.into_bytes(),
            key_id: current.key_id(),
            annotations: BTreeMap::new(),
        })
    }

    /// Decrypt with the key the request's key id names.
    ///
    /// # Errors
    /// [`Error::UnknownKeyId`]; the envelope errors ([`Error::KeyMismatch`],
    /// [`Error::AuthenticationFailed`], ...).
    pub fn decrypt_blocking(&self, req: &KubeDecryptRequest) -> Result<Zeroizing<Vec<u8>>> {
        let key = self.key_for(&req.key_id)?;
        let opened = self
            .token
            .open_with(&key.key, V2, &key.key.id.to_text(), &req.ciphertext)?;
        tracing::debug!(kms.uid = %req.uid, kms.key_id = %req.key_id, "KMS v2 decrypt");
        Ok(opened.plaintext)
    }

    /// v1beta1 Version.
    pub fn v1_version(&self) -> V1Version {
        V1Version {
            version: "v1beta1".to_owned(),
            runtime_name: "mesh-hsm hsm-plugin".to_owned(),
            runtime_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// v1beta1 Encrypt: the key labelled `v1_label` (its `CKA_ID` must equal `key_id` when
    /// one is given); JWE kid = the label, no AAD, 16-byte IV as the plugin makes.
    ///
    /// # Errors
    /// [`Error::UnknownKeyId`], the lookup errors, [`Error::Pkcs11`].
    pub fn v1_encrypt_blocking(&self, plain: &[u8], key_id: Option<&[u8]>) -> Result<Vec<u8>> {
        let label = &self.config.v1_label;
        self.token
            .with_session("KMS v1beta1 encrypt", |session| {
                let (handle, id) = find_key_by_label(&self.token, session, label)?;
                check_v1_key_id(&id, key_id)?;
                hsm_seal(
                    &KeyedSession {
                        session,
                        key: handle,
                    },
                    label.as_str(),
                    &[],
                    &Iv::Random(IvLength::Bytes16),
                    plain,
                )
            })
            .map(String::into_bytes)
    }

    /// v1beta1 Decrypt: the JWE kid must be the label.
    ///
    /// # Errors
    /// As [`HsmKubeKms::v1_encrypt_blocking`]; the envelope errors.
    pub fn v1_decrypt_blocking(
        &self,
        cipher: &[u8],
        key_id: Option<&[u8]>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let label = &self.config.v1_label;
        self.token.with_session("KMS v1beta1 decrypt", |session| {
            let (handle, id) = find_key_by_label(&self.token, session, label)?;
            check_v1_key_id(&id, key_id)?;
            let device = KeyedSession {
                session,
                key: handle,
            };
            Ok(hsm_open(&device, V1, label.as_str(), cipher)?.plaintext)
        })
    }
}

fn check_v1_key_id(id: &crate::KekId, requested: Option<&[u8]>) -> Result<()> {
    match requested {
        Some(requested) if !requested.is_empty() && requested != id.as_bytes() => {
            Err(Error::UnknownKeyId {
                key_id: String::from_utf8_lossy(requested).into_owned(),
                known: id.to_text(),
            })
        }
        _ => Ok(()),
    }
}
