//! The async ports transports call (kms-grpc, meshca), and their HSM implementations, which
//! run every PKCS#11 call on tokio's blocking pool so no async worker ever blocks.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::{
    AnchorInfo, AuthenticatedDecryptRequest, AuthenticatedEncryptRequest, CaId, Error,
    GenerateDekRequest, GenerateSKeyRequest, Health, HsmIstioKms, HsmKey, HsmKubeKms, HsmToken,
    ImportCaCertRequest, ImportPolicy, KekId, KekInfo, KeyAlgorithm, KeyPairId, KubeDecryptRequest,
    KubeEncryptRequest, KubeEncryptResponse, KubeStatus, LoadSKeyRequest, Mode, ObjectLabel,
    Outcome, Result, SecretPem, V1Version, VerifiedChain, VerifyCertChainRequest,
};

/// Runs blocking HSM work on tokio's blocking pool.
async fn blocking<T, F>(operation: &'static str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| Error::Worker { operation, source })?
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
        blocking("GenerateDEK", move || this.generate_dek_blocking(&req)).await
    }

    async fn generate_skey(&self, req: GenerateSKeyRequest) -> Result<Vec<u8>> {
        let this = self.clone();
        blocking("GenerateSKey", move || this.generate_skey_blocking(&req)).await
    }

    async fn load_skey(&self, req: LoadSKeyRequest) -> Result<SecretPem> {
        let this = self.clone();
        blocking("LoadSKey", move || this.load_skey_blocking(&req)).await
    }

    async fn authenticated_encrypt(&self, req: AuthenticatedEncryptRequest) -> Result<Vec<u8>> {
        let this = self.clone();
        blocking("AuthenticatedEncrypt", move || {
            this.authenticated_encrypt_blocking(&req)
        })
        .await
    }

    async fn authenticated_decrypt(
        &self,
        req: AuthenticatedDecryptRequest,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let this = self.clone();
        blocking("AuthenticatedDecrypt", move || {
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
        blocking("KMS v2 Encrypt", move || this.encrypt_blocking(&req)).await
    }

    async fn decrypt(&self, req: KubeDecryptRequest) -> Result<Zeroizing<Vec<u8>>> {
        let this = self.clone();
        blocking("KMS v2 Decrypt", move || this.decrypt_blocking(&req)).await
    }

    async fn v1_version(&self) -> Result<V1Version> {
        Ok(HsmKubeKms::v1_version(self))
    }

    async fn v1_encrypt(&self, plain: Zeroizing<Vec<u8>>, key_id: Vec<u8>) -> Result<Vec<u8>> {
        let this = self.clone();
        blocking("KMS v1beta1 Encrypt", move || {
            this.v1_encrypt_blocking(&plain, Some(&key_id))
        })
        .await
    }

    async fn v1_decrypt(&self, cipher: Vec<u8>, key_id: Vec<u8>) -> Result<Zeroizing<Vec<u8>>> {
        let this = self.clone();
        blocking("KMS v1beta1 Decrypt", move || {
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

/// [`HsmAdmin`] on a token.
#[derive(Debug, Clone)]
pub struct HsmAdminService {
    token: Arc<HsmToken>,
}

impl HsmAdminService {
    /// Administration of `token`.
    pub fn new(token: Arc<HsmToken>) -> Self {
        Self { token }
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
        let t = Arc::clone(&self.token);
        blocking("reading a public key", move || {
            Ok(HsmKey::open(t, &id)?.spki_der().to_vec())
        })
        .await
    }

    async fn sign(&self, id: KeyPairId, message: Vec<u8>) -> Result<Vec<u8>> {
        let t = Arc::clone(&self.token);
        blocking("signing with an HSM key", move || {
            HsmKey::open(t, &id)?.sign(&message)
        })
        .await
    }
}
