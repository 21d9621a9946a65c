//! The KEK layer: AES-GCM inside the HSM, in the JWE format of [`crate::jwe`].

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use zeroize::Zeroizing;

use crate::jwe::{self, Dek, TAG_LEN};
use crate::kek::find_key;
use crate::session::ObjectKey;
use crate::{Error, HsmToken, KekId, ObjectLabel, Result};

/// IV length of AES-GCM inside the HSM for new blobs. Decryption accepts whatever the JWE
/// carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IvLength {
    /// 12 bytes, the GCM standard.
    Bytes12,
    /// 16 bytes, what the Thales plugin (crypto11's default) uses in p11/softhsm mode.
    #[default]
    Bytes16,
}

impl IvLength {
    /// The length in bytes.
    pub fn bytes(self) -> usize {
        match self {
            Self::Bytes12 => 12,
            Self::Bytes16 => 16,
        }
    }
}

/// Which IV to use for an encryption inside the HSM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Iv {
    /// Random bytes from the HSM's generator (always, in production).
    Random(IvLength),
    /// These bytes. Only for interoperability tests: an IV must never repeat under one key.
    Fixed(Vec<u8>),
}

/// A secret key on the token named by id and label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    /// `CKA_ID`.
    pub id: KekId,
    /// `CKA_LABEL`.
    pub label: ObjectLabel,
}

impl KeyRef {
    /// A KEK: `id` with the label `k8s-kms-plugin-kek`.
    pub fn kek(id: KekId) -> Self {
        Self {
            id,
            label: ObjectLabel::kek(),
        }
    }

    pub(crate) fn object_key(&self) -> ObjectKey {
        ObjectKey::SecretKey {
            id: self.id.as_bytes().to_vec(),
            label: self.label.as_str().as_bytes().to_vec(),
        }
    }
}

/// A decrypted envelope.
pub struct Opened {
    /// The plaintext (zeroised on drop).
    pub plaintext: Zeroizing<Vec<u8>>,
    /// The `_thales_aad` the envelope carried (empty when none).
    pub aad: Vec<u8>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("plaintext_len", &self.plaintext.len())
            .field("aad", &self.aad)
            .finish()
    }
}

pub(crate) fn hsm_seal(
    session: &Session,
    key: ObjectHandle,
    kid: &str,
    aad: &[u8],
    iv: &Iv,
    plaintext: &[u8],
) -> Result<String> {
    let mut iv = match iv {
        Iv::Random(len) => {
            let mut iv = vec![0u8; len.bytes()];
            session
                .generate_random_slice(&mut iv)
                .map_err(Error::pkcs11("drawing a GCM IV from the HSM"))?;
            iv
        }
        Iv::Fixed(bytes) => bytes.clone(),
    };
    let protected = jwe::protected_header(kid, aad);
    let params = GcmParams::new(&mut iv, protected.as_bytes(), 128.into())
        .map_err(Error::pkcs11("preparing AES-GCM parameters"))?;
    let mut out = session
        .encrypt(&Mechanism::AesGcm(params), key, plaintext)
        .map_err(Error::pkcs11("AES-GCM encryption in the HSM"))?;
    if out.len() < TAG_LEN {
        return Err(Error::InvalidArgument {
            operation: "AES-GCM encryption in the HSM",
            reason: format!("the HSM returned {} bytes, shorter than a tag", out.len()),
        });
    }
    let tag = out.split_off(out.len() - TAG_LEN);
    Ok(jwe::compact(&protected, &iv, &out, &tag))
}

pub(crate) fn hsm_open(
    session: &Session,
    key: ObjectHandle,
    what: &'static str,
    kid: &str,
    blob: &[u8],
) -> Result<Opened> {
    let mut parsed = jwe::parse(what, blob)?;
    if parsed.kid != kid {
        return Err(Error::KeyMismatch {
            what,
            expected: kid.to_owned(),
            found: parsed.kid,
        });
    }
    let mut input = Zeroizing::new(std::mem::take(&mut parsed.ciphertext));
    input.extend_from_slice(&parsed.tag);
    let params = GcmParams::new(&mut parsed.iv, parsed.protected.as_bytes(), 128.into())
        .map_err(Error::pkcs11("preparing AES-GCM parameters"))?;
    match session.decrypt(&Mechanism::AesGcm(params), key, &input) {
        Ok(plaintext) => Ok(Opened {
            plaintext: Zeroizing::new(plaintext),
            aad: parsed.thales_aad,
        }),
        // SoftHSM2 reports a tag mismatch as CKR_GENERAL_ERROR; the standard codes are the
        // ENCRYPTED_DATA ones.
        Err(cryptoki::error::Error::Pkcs11(
            RvError::GeneralError | RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
            _,
        )) => Err(Error::AuthenticationFailed { what }),
        Err(source) => Err(Error::Pkcs11 {
            operation: "AES-GCM decryption in the HSM",
            source,
        }),
    }
}

impl HsmToken {
    /// Encrypts `plaintext` inside the HSM under `key` as a compact JWE whose kid is `kid`
    /// and whose `_thales_aad` is `aad`.
    ///
    /// # Errors
    /// The lookup errors of the key; [`Error::Pkcs11`].
    pub fn seal(
        &self,
        key: &KeyRef,
        kid: &str,
        aad: &[u8],
        iv: &Iv,
        plaintext: &[u8],
    ) -> Result<String> {
        let object = key.object_key();
        self.with_session("encrypting with an HSM key", |session| {
            self.with_object(
                session,
                &object,
                |s| find_key(self, s, &key.id, &key.label),
                |handle| hsm_seal(session, handle, kid, aad, iv, plaintext),
            )
        })
    }

    /// Decrypts a JWE made by [`HsmToken::seal`] (or the Thales plugin) under `key`; its kid
    /// must be `kid`.
    ///
    /// # Errors
    /// The lookup errors of the key; the parse errors of [`jwe::parse`];
    /// [`Error::KeyMismatch`]; [`Error::AuthenticationFailed`]; [`Error::Pkcs11`].
    pub fn open_with(
        &self,
        key: &KeyRef,
        what: &'static str,
        kid: &str,
        blob: &[u8],
    ) -> Result<Opened> {
        let object = key.object_key();
        self.with_session("decrypting with an HSM key", |session| {
            self.with_object(
                session,
                &object,
                |s| find_key(self, s, &key.id, &key.label),
                |handle| hsm_open(session, handle, what, kid, blob),
            )
        })
    }

    /// A new DEK: 32 bytes from the HSM's generator.
    ///
    /// # Errors
    /// [`Error::Pkcs11`].
    pub fn random_dek(&self) -> Result<Dek> {
        self.with_session("generating a DEK", |session| {
            let mut key = Zeroizing::new([0u8; 32]);
            session
                .generate_random_slice(key.as_mut_slice())
                .map_err(Error::pkcs11("drawing DEK bytes from the HSM"))?;
            Ok(Dek::from_bytes(*key))
        })
    }

    /// Wraps `dek` under the KEK `kek` as an `encrypted-dek` blob (JWE, kid = KEK id).
    ///
    /// # Errors
    /// As [`HsmToken::seal`].
    pub fn wrap_dek(&self, kek: &KekId, dek: &Dek, iv: &Iv) -> Result<Vec<u8>> {
        let jwk = dek.to_jwk_json();
        let jwe = self.seal(&KeyRef::kek(kek.clone()), &kek.to_text(), &[], iv, &jwk)?;
        Ok(jwe.into_bytes())
    }

    /// Unwraps an `encrypted-dek` blob made under the KEK `kek`; returns the DEK and its
    /// JWK kid.
    ///
    /// # Errors
    /// As [`HsmToken::open_with`]; [`Error::MalformedEnvelope`] when the plaintext is not a JWK.
    pub fn unwrap_dek(&self, kek: &KekId, blob: &[u8]) -> Result<(Dek, String)> {
        let opened = self.open_with(
            &KeyRef::kek(kek.clone()),
            "encrypted DEK",
            &kek.to_text(),
            blob,
        )?;
        Dek::from_jwk_json(&opened.plaintext)
    }
}
