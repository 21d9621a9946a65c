//! The async ports transports call (kms-grpc, meshca), and their HSM implementations.
//!
//! A PKCS#11 call blocks. On a token that answers in microseconds (SoftHSM2, a local HSM) the
//! hop to tokio's blocking pool and back costs more than the call itself (two thread wake-ups),
//! so such calls run on the calling task; on a token whose calls take longer on average (a
//! network HSM answers in milliseconds), every call goes to the blocking pool so no async
//! worker waits on the network. [`HsmToken::typical_call`] is what decides.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use zeroize::Zeroizing;

use crate::session::lock;
use crate::{
    AnchorInfo, AuthenticatedDecryptRequest, AuthenticatedEncryptRequest, CaId, Error,
    GenerateDekRequest, GenerateSKeyRequest, Health, HsmIstioKms, HsmKey, HsmKubeKms, HsmToken,
    ImportCaCertRequest, ImportPolicy, KekId, KekInfo, KeyAlgorithm, KeyPairId, KubeDecryptRequest,
    KubeEncryptRequest, KubeEncryptResponse, KubeStatus, LoadSKeyRequest, Mode, ObjectLabel,
    Outcome, Result, SecretPem, V1Version, VerifiedChain, VerifyCertChainRequest,
};

/// Runs blocking HSM work on tokio's blocking pool (key generation, imports, listings: calls
/// that may take long on any token).
async fn blocking<T, F>(operation: &'static str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| Error::Worker { operation, source })?
}

/// Runs one of the per-request operations (encrypt, decrypt, sign): on the calling task when
/// `token` answers fast, else on tokio's blocking pool; either way its duration is recorded.
///
/// On the calling task no backoff pause may run (it would stall every task of that worker
/// thread): when a session loss needs one, the operation is run again on the blocking pool,
/// after the first pause there.
async fn quick<T, F>(token: &Arc<HsmToken>, operation: &'static str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: Fn() -> Result<T> + Send + Sync + 'static,
{
    let timed = {
        let token = Arc::clone(token);
        let f = Arc::new(f);
        move || {
            let started = std::time::Instant::now();
            let result = f();
            token.record_call(started.elapsed());
            result
        }
    };
    if token.answers_fast() {
        let (result, deferred) = crate::session::inline::run(&timed);
        if !deferred {
            return result;
        }
        let pause = token.options().initial_backoff;
        return blocking(operation, move || {
            std::thread::sleep(pause);
            timed()
        })
        .await;
    }
    blocking(operation, timed).await
}

/// The Istio KMS service (`thalescpl.io.ekms.istio.v1.KeyManagementService`) as domain calls.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait::async_trait]
pub trait IstioKms: Send + Sync {
    /// GenerateKEK: a new KEK (random UUIDv4 text id when `None`); an existing id is refused.
    async fn generate_kek(&self, kek_id: Option<KekId>) -> Result<KekId>;
    /// GenerateDEK: a new DEK wrapped under the KEK (`encrypted-dek`).
    async fn generate_dek(&self, req: GenerateDekRequest) -> Result<Vec<u8>>;
    /// GenerateSKey: a software signing key encrypted under the DEK (`encrypted-skey`).
    async fn generate_skey(&self, req: GenerateSKeyRequest) -> Result<Vec<u8>>;
    /// LoadSKey: the plaintext PEM of the signing key.
    async fn load_skey(&self, req: LoadSKeyRequest) -> Result<SecretPem>;
    /// AuthenticatedEncrypt: JWE under the DEK with the AAD in the header.
    async fn authenticated_encrypt(&self, req: AuthenticatedEncryptRequest) -> Result<Vec<u8>>;
    /// AuthenticatedDecrypt: decrypts; the AAD must match.
    async fn authenticated_decrypt(
        &self,
        req: AuthenticatedDecryptRequest,
    ) -> Result<Zeroizing<Vec<u8>>>;
    /// ImportCACert: stores a root as a CA anchor.
    async fn import_ca_cert(&self, req: ImportCaCertRequest) -> Result<Outcome>;
    /// VerifyCertChain: verifies against the anchors on the token.
    async fn verify_cert_chain(&self, req: VerifyCertChainRequest) -> Result<VerifiedChain>;
}

#[async_trait::async_trait]
impl IstioKms for HsmIstioKms {
    async fn generate_kek(&self, kek_id: Option<KekId>) -> Result<KekId> {
        let this = self.clone();
        blocking("GenerateKEK", move || this.generate_kek_blocking(kek_id)).await
    }

    async fn generate_dek(&self, req: GenerateDekRequest) -> Result<Vec<u8>> {
        let this = self.clone();
        quick(&self.token, "GenerateDEK", move || {
            this.generate_dek_blocking(&req)
        })
        .await
    }

    async fn generate_skey(&self, req: GenerateSKeyRequest) -> Result<Vec<u8>> {
        let this = self.clone();
        blocking("GenerateSKey", move || this.generate_skey_blocking(&req)).await
    }

    async fn load_skey(&self, req: LoadSKeyRequest) -> Result<SecretPem> {
        let this = self.clone();
        quick(&self.token, "LoadSKey", move || {
            this.load_skey_blocking(&req)
        })
        .await
    }

    async fn authenticated_encrypt(&self, req: AuthenticatedEncryptRequest) -> Result<Vec<u8>> {
        let this = self.clone();
        quick(&self.token, "AuthenticatedEncrypt", move || {
            this.authenticated_encrypt_blocking(&req)
        })
        .await
    }

    async fn authenticated_decrypt(
        &self,
        req: AuthenticatedDecryptRequest,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let this = self.clone();
        quick(&self.token, "AuthenticatedDecrypt", move || {
            this.authenticated_decrypt_blocking(&req)
        })
        .await
    }

    async fn import_ca_cert(&self, req: ImportCaCertRequest) -> Result<Outcome> {
        let this = self.clone();
        blocking("ImportCACert", move || this.import_ca_cert_blocking(&req)).await
    }

    async fn verify_cert_chain(&self, req: VerifyCertChainRequest) -> Result<VerifiedChain> {
        let this = self.clone();
        blocking("VerifyCertChain", move || {
            this.verify_cert_chain_blocking(&req)
        })
        .await
    }
}

/// The Kubernetes KMS services (v2, and the plugin's v1beta1) as domain calls.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait::async_trait]
pub trait KubeKms: Send + Sync {
    /// v2 Status.
    async fn status(&self) -> Result<KubeStatus>;
    /// v2 Encrypt.
    async fn encrypt(&self, req: KubeEncryptRequest) -> Result<KubeEncryptResponse>;
    /// v2 Decrypt (the request's key id selects the key).
    async fn decrypt(&self, req: KubeDecryptRequest) -> Result<Zeroizing<Vec<u8>>>;
    /// v1beta1 Version.
    async fn v1_version(&self) -> Result<V1Version>;
    /// v1beta1 Encrypt (`key_id` is the Thales extension field; empty means the default key).
    async fn v1_encrypt(&self, plain: Zeroizing<Vec<u8>>, key_id: Vec<u8>) -> Result<Vec<u8>>;
    /// v1beta1 Decrypt.
    async fn v1_decrypt(&self, cipher: Vec<u8>, key_id: Vec<u8>) -> Result<Zeroizing<Vec<u8>>>;
}

#[async_trait::async_trait]
impl KubeKms for HsmKubeKms {
    async fn status(&self) -> Result<KubeStatus> {
        let this = self.clone();
        blocking("KMS v2 Status", move || this.status_blocking()).await
    }

    async fn encrypt(&self, req: KubeEncryptRequest) -> Result<KubeEncryptResponse> {
        let this = self.clone();
        quick(&self.token, "KMS v2 Encrypt", move || {
            this.encrypt_blocking(&req)
        })
        .await
    }

    async fn decrypt(&self, req: KubeDecryptRequest) -> Result<Zeroizing<Vec<u8>>> {
        let this = self.clone();
        quick(&self.token, "KMS v2 Decrypt", move || {
            this.decrypt_blocking(&req)
        })
        .await
    }

    async fn v1_version(&self) -> Result<V1Version> {
        Ok(HsmKubeKms::v1_version(self))
    }

    async fn v1_encrypt(&self, plain: Zeroizing<Vec<u8>>, key_id: Vec<u8>) -> Result<Vec<u8>> {
        let this = self.clone();
        quick(&self.token, "KMS v1beta1 Encrypt", move || {
            this.v1_encrypt_blocking(&plain, Some(&key_id))
        })
        .await
    }

    async fn v1_decrypt(&self, cipher: Vec<u8>, key_id: Vec<u8>) -> Result<Zeroizing<Vec<u8>>> {
        let this = self.clone();
        quick(&self.token, "KMS v1beta1 Decrypt", move || {
            this.v1_decrypt_blocking(&cipher, Some(&key_id))
        })
        .await
    }
}

/// Operator-side HSM administration (meshca, hsm-plugin's workstation commands).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait::async_trait]
pub trait HsmAdmin: Send + Sync {
    /// Whether the token serves or waits for a PIN reset.
    async fn health(&self) -> Health;
    /// Idempotent KEK creation.
    async fn ensure_kek(&self, id: KekId, mode: Mode) -> Result<Outcome>;
    /// Every KEK on the token.
    async fn list_keks(&self) -> Result<Vec<KekInfo>>;
    /// One KEK's attributes.
    async fn describe_kek(&self, id: KekId) -> Result<KekInfo>;
    /// Destroys a KEK; `confirm` must repeat the id.
    async fn destroy_kek(&self, id: KekId, confirm: KekId) -> Result<()>;
    /// Imports a root as a CA anchor.
    async fn import_ca_cert(
        &self,
        ca_id: CaId,
        cert: Vec<u8>,
        policy: ImportPolicy,
        mode: Mode,
    ) -> Result<Outcome>;
    /// Every CA anchor on the token.
    async fn list_anchors(&self) -> Result<Vec<AnchorInfo>>;
    /// Idempotent in-HSM key pair creation (hsm-key mode).
    async fn ensure_key_pair(
        &self,
        id: KeyPairId,
        label: ObjectLabel,
        algorithm: KeyAlgorithm,
        mode: Mode,
    ) -> Result<Outcome>;
    /// A key pair's public key, SPKI DER.
    async fn public_key(&self, id: KeyPairId) -> Result<Vec<u8>>;
    /// Signs with a key pair (see [`HsmKey::sign`]).
    async fn sign(&self, id: KeyPairId, message: Vec<u8>) -> Result<Vec<u8>>;
}

/// [`HsmAdmin`] on a token. Key pairs are opened once (their public keys read) and kept; a
/// key pair that is gone or was replaced on the token is opened again on its next use.
#[derive(Debug, Clone)]
pub struct HsmAdminService {
    token: Arc<HsmToken>,
    keys: Arc<Mutex<HashMap<KeyPairId, HsmKey>>>,
}

impl HsmAdminService {
    /// Administration of `token`.
    pub fn new(token: Arc<HsmToken>) -> Self {
        Self {
            token,
            keys: Arc::default(),
        }
    }

    fn cached_key(&self, id: &KeyPairId) -> Option<HsmKey> {
        lock(&self.keys).get(id).cloned()
    }

    /// Opens the key pair (blocking) and keeps it.
    fn open_key(
        token: &Arc<HsmToken>,
        keys: &Mutex<HashMap<KeyPairId, HsmKey>>,
        id: &KeyPairId,
    ) -> Result<HsmKey> {
        let key = HsmKey::open(Arc::clone(token), id)?;
        lock(keys).insert(id.clone(), key.clone());
        Ok(key)
    }
}

#[async_trait::async_trait]
impl HsmAdmin for HsmAdminService {
    async fn health(&self) -> Health {
        self.token.health()
    }

    async fn ensure_kek(&self, id: KekId, mode: Mode) -> Result<Outcome> {
        let t = Arc::clone(&self.token);
        blocking("ensuring a KEK", move || t.ensure_kek(&id, mode)).await
    }

    async fn list_keks(&self) -> Result<Vec<KekInfo>> {
        let t = Arc::clone(&self.token);
        blocking("listing KEKs", move || t.list_keks()).await
    }

    async fn describe_kek(&self, id: KekId) -> Result<KekInfo> {
        let t = Arc::clone(&self.token);
        blocking("describing a KEK", move || t.describe_kek(&id)).await
    }

    async fn destroy_kek(&self, id: KekId, confirm: KekId) -> Result<()> {
        let t = Arc::clone(&self.token);
        blocking("destroying a KEK", move || t.destroy_kek(&id, &confirm)).await
    }

    async fn import_ca_cert(
        &self,
        ca_id: CaId,
        cert: Vec<u8>,
        policy: ImportPolicy,
        mode: Mode,
    ) -> Result<Outcome> {
        let t = Arc::clone(&self.token);
        blocking("importing a CA certificate", move || {
            t.import_ca_cert(&ca_id, &cert, policy, mode)
        })
        .await
    }

    async fn list_anchors(&self) -> Result<Vec<AnchorInfo>> {
        let t = Arc::clone(&self.token);
        blocking("listing CA anchors", move || t.list_anchors()).await
    }

    async fn ensure_key_pair(
        &self,
        id: KeyPairId,
        label: ObjectLabel,
        algorithm: KeyAlgorithm,
        mode: Mode,
    ) -> Result<Outcome> {
        let t = Arc::clone(&self.token);
        blocking("ensuring a key pair", move || {
            t.ensure_key_pair(&id, &label, algorithm, mode)
        })
        .await
    }

    async fn public_key(&self, id: KeyPairId) -> Result<Vec<u8>> {
        if let Some(key) = self.cached_key(&id) {
            return Ok(key.spki_der().to_vec());
        }
        let (t, keys) = (Arc::clone(&self.token), Arc::clone(&self.keys));
        quick(&self.token, "reading a public key", move || {
            Ok(Self::open_key(&t, &keys, &id)?.spki_der().to_vec())
        })
        .await
    }

    async fn sign(&self, id: KeyPairId, message: Vec<u8>) -> Result<Vec<u8>> {
        let cached = self.cached_key(&id);
        let (t, keys) = (Arc::clone(&self.token), Arc::clone(&self.keys));
        quick(&self.token, "signing with an HSM key", move || {
            let key = match cached.clone() {
                Some(key) => key,
                None => Self::open_key(&t, &keys, &id)?,
            };
            let signed = key.sign(&message);
            if matches!(
                signed,
                Err(Error::ObjectNotFound { .. } | Error::ObjectMismatch { .. })
            ) {
                // Gone or replaced: the next call opens the pair again.
                lock(&keys).remove(&id);
            }
            signed
        })
        .await
    }
}

#[cfg(test)]
mod tests;
