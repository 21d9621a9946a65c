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

/// The PKCS#11 calls of the KEK layer on one key: the seam that lets tests stand in for a
/// token that misbehaves (appends its IV, returns a short or long output, fails mid-way).
#[cfg_attr(test, mockall::automock)]
pub(crate) trait GcmDevice {
    /// `C_GenerateRandom` into `buf`.
    fn random(&self, buf: &mut [u8]) -> std::result::Result<(), cryptoki::error::Error>;
    /// `C_Encrypt` with `CKM_AES_GCM` (128-bit tag): ciphertext followed by the tag.
    fn gcm_encrypt(
        &self,
        iv: &[u8],
        aad: &[u8],
        plaintext: &[u8],
    ) -> std::result::Result<Vec<u8>, cryptoki::error::Error>;
    /// `C_Decrypt` with `CKM_AES_GCM` (128-bit tag) of ciphertext followed by the tag.
    fn gcm_decrypt(
        &self,
        iv: &[u8],
        aad: &[u8],
        input: &[u8],
    ) -> std::result::Result<Vec<u8>, cryptoki::error::Error>;
}

/// A session and the AES key it encrypts with.
pub(crate) struct KeyedSession<'a> {
    pub(crate) session: &'a Session,
    pub(crate) key: ObjectHandle,
}

impl GcmDevice for KeyedSession<'_> {
    fn random(&self, buf: &mut [u8]) -> std::result::Result<(), cryptoki::error::Error> {
        self.session.generate_random_slice(buf)
    }

    fn gcm_encrypt(
        &self,
        iv: &[u8],
        aad: &[u8],
        plaintext: &[u8],
    ) -> std::result::Result<Vec<u8>, cryptoki::error::Error> {
        let mut iv = iv.to_vec();
        let params = GcmParams::new(&mut iv, aad, 128.into())?;
        self.session
            .encrypt(&Mechanism::AesGcm(params), self.key, plaintext)
    }

    fn gcm_decrypt(
        &self,
        iv: &[u8],
        aad: &[u8],
        input: &[u8],
    ) -> std::result::Result<Vec<u8>, cryptoki::error::Error> {
        let mut iv = iv.to_vec();
        let params = GcmParams::new(&mut iv, aad, 128.into())?;
        self.session
            .decrypt(&Mechanism::AesGcm(params), self.key, input)
    }
}

const SEAL: &str = "AES-GCM encryption in the HSM";
const OPEN: &str = "AES-GCM decryption in the HSM";

/// Why an output of `actual` bytes is wrong when `expected` were due, in words an operator
/// can act on.
fn output_hint(expected: usize, actual: usize, iv_len: usize) -> &'static str {
    if actual == expected + iv_len || actual == expected + 12 || actual == expected + 16 {
        "the token appends its own IV to the output (a Luna-style GCM convention); mesh-hsm \
         needs the token to use the IV it is given: configure the HSM's GCM mode accordingly"
    } else {
        "the token's AES-GCM output is not ciphertext plus a 16-byte tag; check the PKCS#11 \
         module and the HSM firmware"
    }
}

pub(crate) fn hsm_seal(
    device: &(impl GcmDevice + ?Sized),
    kid: &str,
    aad: &[u8],
    iv: &Iv,
    plaintext: &[u8],
) -> Result<String> {
    let iv = match iv {
        Iv::Random(len) => {
            let mut iv = vec![0u8; len.bytes()];
            device
                .random(&mut iv)
                .map_err(Error::pkcs11("drawing a GCM IV from the HSM"))?;
            iv
        }
        Iv::Fixed(bytes) => bytes.clone(),
    };
    let protected = jwe::protected_header(kid, aad);
    let mut out = device
        .gcm_encrypt(&iv, protected.as_bytes(), plaintext)
        .map_err(Error::pkcs11(SEAL))?;
    // Exactly ciphertext (as long as the plaintext) and the tag: anything else would be cut
    // at the wrong place and make a blob nobody can open.
    let expected = plaintext.len() + TAG_LEN;
    if out.len() != expected {
        return Err(Error::HsmOutput {
            operation: SEAL,
            expected,
            actual: out.len(),
            hint: output_hint(expected, out.len(), iv.len()),
        });
    }
    let tag = out.split_off(plaintext.len());
    Ok(jwe::compact(&protected, &iv, &out, &tag))
}

pub(crate) fn hsm_open(
    device: &(impl GcmDevice + ?Sized),
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
    let ciphertext_len = parsed.ciphertext.len();
    let mut input = Zeroizing::new(std::mem::take(&mut parsed.ciphertext));
    input.extend_from_slice(&parsed.tag);
    match device.gcm_decrypt(&parsed.iv, parsed.protected.as_bytes(), &input) {
        Ok(plaintext) => {
            let plaintext = Zeroizing::new(plaintext);
            if plaintext.len() != ciphertext_len {
                return Err(Error::HsmOutput {
                    operation: OPEN,
                    expected: ciphertext_len,
                    actual: plaintext.len(),
                    hint: output_hint(ciphertext_len, plaintext.len(), parsed.iv.len()),
                });
            }
            Ok(Opened {
                plaintext,
                aad: parsed.thales_aad,
            })
        }
        // The standard codes for a tag that does not verify.
        Err(cryptoki::error::Error::Pkcs11(
            RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
            _,
        )) => Err(Error::AuthenticationFailed { what }),
        // SoftHSM2 reports a tag mismatch as CKR_GENERAL_ERROR, which is also what a failing
        // device says. A round trip of a probe under the same key tells them apart: when it
        // works the device is sound and the blob did not authenticate.
        Err(source @ cryptoki::error::Error::Pkcs11(RvError::GeneralError, _)) => {
            if device_round_trips(device) {
                Err(Error::AuthenticationFailed { what })
            } else {
                Err(Error::Pkcs11 {
                    operation: OPEN,
                    source,
                })
            }
        }
        Err(source) => Err(Error::Pkcs11 {
            operation: OPEN,
            source,
        }),
    }
}

/// True when `key` encrypts and decrypts a random probe correctly on `device`.
fn device_round_trips(device: &(impl GcmDevice + ?Sized)) -> bool {
    let mut iv = [0u8; 12];
    let mut probe = [0u8; 16];
    if device.random(&mut iv).is_err() || device.random(&mut probe).is_err() {
        return false;
    }
    let aad = b"mesh-hsm device probe";
    let Ok(sealed) = device.gcm_encrypt(&iv, aad, &probe) else {
        return false;
    };
    if sealed.len() != probe.len() + TAG_LEN {
        return false;
    }
    device
        .gcm_decrypt(&iv, aad, &sealed)
        .is_ok_and(|opened| opened == probe)
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
                |key| hsm_seal(&KeyedSession { session, key }, kid, aad, iv, plaintext),
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
                |key| hsm_open(&KeyedSession { session, key }, what, kid, blob),
            )
        })
    }

    /// A new DEK: 32 bytes from the HSM's generator, and a kid of 32 more random bytes
    /// (never derived from the key, KMS-PROTOCOL W4).
    ///
    /// # Errors
    /// [`Error::Pkcs11`].
    pub fn random_dek(&self) -> Result<Dek> {
        self.with_session("generating a DEK", |session| {
            let mut bytes = Zeroizing::new([0u8; 64]);
            session
                .generate_random_slice(bytes.as_mut_slice())
                .map_err(Error::pkcs11("drawing DEK bytes from the HSM"))?;
            let (key, kid) = bytes.split_at(32);
            let mut key_bytes = Zeroizing::new([0u8; 32]);
            key_bytes.copy_from_slice(key);
            let mut kid_bytes = [0u8; 32];
            kid_bytes.copy_from_slice(kid);
            Ok(Dek::with_random_kid(*key_bytes, &kid_bytes))
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

#[cfg(test)]
mod tests;
