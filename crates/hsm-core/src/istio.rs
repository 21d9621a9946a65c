//! The Istio KMS operations (KMS-PROTOCOL §2.2) with the fixes of §5.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::jwe::Dek;
use crate::{
    CaId, Error, HsmToken, ImportPolicy, Iv, IvLength, KekId, Mode, Outcome, Result, SKeySpec,
    SecretPem, VerifiedChain, VerifyPolicy,
};

/// Settings of the Istio KMS operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IstioConfig {
    /// IV length of the KEK layer for new `encrypted-dek` blobs (16 = plugin compatible).
    pub kek_iv: IvLength,
    /// CA id used by ImportCACert when the request names none.
    pub default_ca_id: CaId,
    /// Anchors VerifyCertChain trusts (several during a root rotation).
    pub trusted_ca_ids: Vec<CaId>,
    /// Extra checks of VerifyCertChain.
    pub verify: VerifyPolicy,
}

impl Default for IstioConfig {
    fn default() -> Self {
        Self {
            kek_iv: IvLength::default(),
            default_ca_id: CaId::default(),
            trusted_ca_ids: vec![CaId::default()],
            verify: VerifyPolicy::default(),
        }
    }
}

/// GenerateDEK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateDekRequest {
    /// The KEK to wrap the new DEK under.
    pub kek_id: KekId,
}

/// GenerateSKey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateSKeyRequest {
    /// The KEK the DEK is wrapped under.
    pub kek_id: KekId,
    /// The `encrypted-dek` blob.
    pub encrypted_dek: Vec<u8>,
    /// The key to make.
    pub spec: SKeySpec,
}

/// LoadSKey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadSKeyRequest {
    /// The KEK the DEK is wrapped under.
    pub kek_id: KekId,
    /// The `encrypted-dek` blob.
    pub encrypted_dek: Vec<u8>,
    /// The `encrypted-skey` blob.
    pub encrypted_skey: Vec<u8>,
}

/// AuthenticatedEncrypt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedEncryptRequest {
    /// The KEK the DEK is wrapped under.
    pub kek_id: KekId,
    /// The `encrypted-dek` blob.
    pub encrypted_dek: Vec<u8>,
    /// What to encrypt (the CSR).
    pub plaintext: Vec<u8>,
    /// Additional authenticated data (the csr-id), carried in the header.
    pub aad: Vec<u8>,
}

/// AuthenticatedDecrypt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedDecryptRequest {
    /// The KEK the DEK is wrapped under.
    pub kek_id: KekId,
    /// The `encrypted-dek` blob.
    pub encrypted_dek: Vec<u8>,
    /// The blob AuthenticatedEncrypt made.
    pub ciphertext: Vec<u8>,
    /// The AAD it must have been encrypted with, byte for byte.
    pub aad: Vec<u8>,
}

/// ImportCACert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportCaCertRequest {
    /// The CA id (the configured default when `None`).
    pub ca_id: Option<CaId>,
    /// The root certificate: PEM (first block used) or DER.
    pub cert: Vec<u8>,
    /// What to do when a different certificate holds the id.
    pub policy: ImportPolicy,
}

/// VerifyCertChain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyCertChainRequest {
    /// The chain, any order, each element DER or PEM (the ASM adapter sends one DER element).
    pub certificates: Vec<Vec<u8>>,
    /// When set, the target's `SubjectPublicKeyInfo` (DER) must equal it.
    pub expected_spki: Option<Vec<u8>>,
}

/// The Istio KMS operations on one token. Cheap to clone.
///
/// The methods here block on the HSM; the [`crate::IstioKms`] implementation runs them on
/// tokio's blocking pool, or on the calling task when the token answers in microseconds.
#[derive(Debug, Clone)]
pub struct HsmIstioKms {
    pub(crate) token: Arc<HsmToken>,
    pub(crate) config: Arc<IstioConfig>,
}

const SKEY: &str = "encrypted SKey";
const CIPHERTEXT: &str = "ciphertext";

impl HsmIstioKms {
    /// The operations on `token` with `config`.
    pub fn new(token: Arc<HsmToken>, config: IstioConfig) -> Self {
        Self {
            token,
            config: Arc::new(config),
        }
    }

    /// The token.
    pub fn token(&self) -> &Arc<HsmToken> {
        &self.token
    }

    /// The settings.
    pub fn config(&self) -> &IstioConfig {
        &self.config
    }

    fn dek(&self, kek: &KekId, blob: &[u8]) -> Result<(Dek, String)> {
        self.token.unwrap_dek(kek, blob)
    }

    /// GenerateKEK: a new KEK with `kek_id`, or a random UUIDv4 text id. An existing id is
    /// refused (W6).
    ///
    /// # Errors
    /// See [`HsmToken::generate_kek`].
    pub fn generate_kek_blocking(&self, kek_id: Option<KekId>) -> Result<KekId> {
        self.token.generate_kek(kek_id)
    }

    /// GenerateDEK: 32 random bytes from the HSM, as a JWK, wrapped under the KEK.
    ///
    /// # Errors
    /// [`Error::ObjectNotFound`] for an unknown KEK; see [`HsmToken::wrap_dek`].
    pub fn generate_dek_blocking(&self, req: &GenerateDekRequest) -> Result<Vec<u8>> {
        let dek = self.token.random_dek()?;
        self.token
            .wrap_dek(&req.kek_id, &dek, &Iv::Random(self.config.kek_iv))
    }

    /// GenerateSKey: a software key of `spec`, PEM, encrypted under the DEK.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unsupported spec; the DEK errors.
    pub fn generate_skey_blocking(&self, req: &GenerateSKeyRequest) -> Result<Vec<u8>> {
        let spec = req.spec.validate()?;
        let (dek, kid) = self.dek(&req.kek_id, &req.encrypted_dek)?;
        let pem = spec.generate()?;
        Ok(dek.seal(&kid, &[], pem.expose())?.into_bytes())
    }

    /// LoadSKey: the plaintext PEM of a key GenerateSKey made.
    ///
    /// # Errors
    /// The DEK errors; [`Error::AuthenticationFailed`] and friends for the SKey blob.
    pub fn load_skey_blocking(&self, req: &LoadSKeyRequest) -> Result<SecretPem> {
        let (dek, kid) = self.dek(&req.kek_id, &req.encrypted_dek)?;
        let (pem, _) = dek.open(SKEY, &kid, &req.encrypted_skey)?;
        Ok(SecretPem(pem))
    }

    /// AuthenticatedEncrypt: a JWE under the DEK with the AAD in `_thales_aad`.
    ///
    /// # Errors
    /// The DEK errors.
    pub fn authenticated_encrypt_blocking(
        &self,
        req: &AuthenticatedEncryptRequest,
    ) -> Result<Vec<u8>> {
        let (dek, kid) = self.dek(&req.kek_id, &req.encrypted_dek)?;
        Ok(dek.seal(&kid, &req.aad, &req.plaintext)?.into_bytes())
    }

    /// AuthenticatedDecrypt: decrypts and requires the header AAD to equal the request's.
    ///
    /// # Errors
    /// The DEK errors; the envelope errors; [`Error::AadMismatch`].
    pub fn authenticated_decrypt_blocking(
        &self,
        req: &AuthenticatedDecryptRequest,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let (dek, kid) = self.dek(&req.kek_id, &req.encrypted_dek)?;
        let (plaintext, aad) = dek.open(CIPHERTEXT, &kid, &req.ciphertext)?;
        if aad != req.aad {
            return Err(Error::AadMismatch { what: CIPHERTEXT });
        }
        Ok(plaintext)
    }

    /// ImportCACert: stores the root as an anchor (idempotent; replacement only on request).
    ///
    /// # Errors
    /// See [`HsmToken::import_ca_cert`].
    pub fn import_ca_cert_blocking(&self, req: &ImportCaCertRequest) -> Result<Outcome> {
        let ca_id = req
            .ca_id
            .clone()
            .unwrap_or_else(|| self.config.default_ca_id.clone());
        self.token
            .import_ca_cert(&ca_id, &req.cert, req.policy, Mode::Apply)
    }

    /// VerifyCertChain against the configured anchors, read from the token now.
    ///
    /// # Errors
    /// See [`HsmToken::verify_chain`].
    pub fn verify_cert_chain_blocking(
        &self,
        req: &VerifyCertChainRequest,
    ) -> Result<VerifiedChain> {
        self.token.verify_chain(
            &self.config.trusted_ca_ids,
            &req.certificates,
            req.expected_spki.as_deref(),
            &self.config.verify,
        )
    }
}
