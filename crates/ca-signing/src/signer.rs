//! The signing port: anything that can sign a certificate or CSR for the mesh CA.
//!
//! ca-signing owns the trait (as rcgen owns `SigningKey`); implementations live with their
//! keys: a software key here, an HSM key in `hsm-core` behind its `signer` feature.

use std::fmt;

/// Signature algorithms a [`Signer`] produces, named as X.509 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureAlgorithm {
    /// `ecdsa-with-SHA256` with a P-256 key.
    EcdsaP256Sha256,
    /// `ecdsa-with-SHA384` with a P-384 key.
    EcdsaP384Sha384,
    /// `sha256WithRSAEncryption` (PKCS#1 v1.5).
    RsaPkcs1Sha256,
}

impl fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EcdsaP256Sha256 => "ECDSA P-256 with SHA-256",
            Self::EcdsaP384Sha384 => "ECDSA P-384 with SHA-384",
            Self::RsaPkcs1Sha256 => "RSA PKCS#1 v1.5 with SHA-256",
        })
    }
}

/// A signing failure. `key` names the key (label, id or file), never its material.
#[derive(Debug, thiserror::Error)]
#[error("signing with {key} failed")]
pub struct SignError {
    /// Which key was asked to sign.
    pub key: String,
    /// The backend's cause (a PKCS#11 error, an OpenSSL error, ...).
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// A key that signs certificates and CSRs.
///
/// `sign` may block (an HSM answers in milliseconds); async callers run it on a blocking
/// thread.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait Signer: Send + Sync {
    /// The algorithm `sign` produces.
    fn algorithm(&self) -> SignatureAlgorithm;

    /// The key's `SubjectPublicKeyInfo`, DER encoded.
    fn public_key_spki_der(&self) -> Vec<u8>;

    /// Signs `message` (hashing included) and returns the signature as X.509 carries it:
    /// a DER `ECDSA-Sig-Value` for ECDSA, the raw PKCS#1 v1.5 signature for RSA.
    ///
    /// # Errors
    /// [`SignError`] naming the key when the backend fails.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;
}
