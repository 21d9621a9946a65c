//! A [`Signer`] over a private key held in memory: loaded from PEM (SEC1, PKCS#1, PKCS#8,
//! encrypted with a passphrase read from a file) or DER, or generated.

use std::cell::Cell;
use std::fmt;
use std::path::{Path, PathBuf};

use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private};
use openssl::rsa::Rsa;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::profile::KeyAlgorithm;
use crate::signer::{SignError, SignatureAlgorithm, Signer};

/// A private key in process memory that signs certificates.
///
/// `Debug` shows the key's name and algorithm only.
pub struct SoftwareSigner {
    key: PKey<Private>,
    algorithm: SignatureAlgorithm,
    name: String,
}

impl fmt::Debug for SoftwareSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftwareSigner")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl SoftwareSigner {
    /// Generates a fresh key of `algorithm`, named `name` in errors.
    ///
    /// # Errors
    /// [`Error::OpenSsl`] when key generation fails.
    pub fn generate(algorithm: KeyAlgorithm, name: &str) -> Result<Self> {
        let gen_err = Error::openssl("generating a key");
        let key = match algorithm {
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
                let nid = if algorithm == KeyAlgorithm::EcdsaP256 {
                    Nid::X9_62_PRIME256V1
                } else {
                    Nid::SECP384R1
                };
                let group =
                    EcGroup::from_curve_name(nid).map_err(Error::openssl("generating a key"))?;
                let ec = EcKey::generate(&group).map_err(Error::openssl("generating a key"))?;
                PKey::from_ec_key(ec).map_err(Error::openssl("generating a key"))?
            }
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                let bits = match algorithm {
                    KeyAlgorithm::Rsa2048 => 2048,
                    KeyAlgorithm::Rsa3072 => 3072,
                    _ => 4096,
                };
                let rsa = Rsa::generate(bits).map_err(Error::openssl("generating a key"))?;
                PKey::from_rsa(rsa).map_err(gen_err)?
            }
        };
        Self::from_pkey(key, name.to_owned())
    }

    /// Loads a key from PEM or DER bytes; an encrypted key needs `passphrase`.
    ///
    /// `name` identifies the key in errors (a path or a label).
    ///
    /// # Errors
    /// [`Error::KeyParse`], [`Error::KeyPassphraseNeeded`], [`Error::KeyPassphraseWrong`],
    /// [`Error::KeyUnsupported`].
    pub fn from_bytes(bytes: &[u8], passphrase: Option<&SecretString>, name: &str) -> Result<Self> {
        let asked = Cell::new(false);
        let callback = |buf: &mut [u8]| -> Result<usize, openssl::error::ErrorStack> {
            asked.set(true);
            let Some(p) = passphrase else {
                return Ok(0);
            };
            let p = p.expose_secret().as_bytes();
            if p.len() > buf.len() {
                return Ok(0);
            }
            buf[..p.len()].copy_from_slice(p);
            Ok(p.len())
        };
        let is_pem = bytes.windows(11).any(|w| w == b"-----BEGIN ");
        let parsed = if is_pem {
            PKey::private_key_from_pem_callback(bytes, callback)
        } else if bytes.first() == Some(&0x30) {
            // Unencrypted DER of any kind first; then (encrypted) PKCS#8.
            PKey::private_key_from_der(bytes)
                .or_else(|_| PKey::private_key_from_pkcs8_callback(bytes, callback))
        } else {
            return Err(Error::KeyParse {
                source_name: name.to_owned(),
            });
        };
        let key = match parsed {
            Ok(k) => k,
            Err(_) if asked.get() && passphrase.is_none() => {
                return Err(Error::KeyPassphraseNeeded {
                    source_name: name.to_owned(),
                });
            }
            Err(_) if asked.get() => {
                return Err(Error::KeyPassphraseWrong {
                    source_name: name.to_owned(),
                });
            }
            Err(_) => {
                return Err(Error::KeyParse {
                    source_name: name.to_owned(),
                });
            }
        };
        Self::from_pkey(key, name.to_owned())
    }

    /// Loads a key file; an encrypted key's passphrase is read from `passphrase_file` (one
    /// line; a trailing newline is ignored).
    ///
    /// # Errors
    /// [`Error::ReadFile`], [`Error::PassphraseEmpty`] and those of [`SoftwareSigner::from_bytes`].
    pub fn from_file(key_file: &Path, passphrase_file: Option<&Path>) -> Result<Self> {
        let bytes = Zeroizing::new(std::fs::read(key_file).map_err(|source| Error::ReadFile {
            what: "the private key",
            path: key_file.to_path_buf(),
            source,
        })?);
        let passphrase = passphrase_file.map(read_passphrase_file).transpose()?;
        Self::from_bytes(&bytes, passphrase.as_ref(), &key_file.display().to_string())
    }

    fn from_pkey(key: PKey<Private>, name: String) -> Result<Self> {
        let unsupported = |kind: String| Error::KeyUnsupported {
            source_name: name.clone(),
            kind,
        };
        let algorithm = match key.id() {
            Id::EC => {
                let curve = key
                    .ec_key()
                    .map_err(Error::openssl("reading an EC key"))?
                    .group()
                    .curve_name();
                match curve {
                    Some(Nid::X9_62_PRIME256V1) => SignatureAlgorithm::EcdsaP256Sha256,
                    Some(Nid::SECP384R1) => SignatureAlgorithm::EcdsaP384Sha384,
                    Some(nid) => {
                        return Err(unsupported(format!(
                            "an EC key on {}",
                            nid.short_name().unwrap_or("an unknown curve")
                        )));
                    }
                    None => {
                        return Err(unsupported("an EC key with explicit parameters".to_owned()));
                    }
                }
            }
            Id::RSA if key.bits() >= 2048 => SignatureAlgorithm::RsaPkcs1Sha256,
            Id::RSA => return Err(unsupported(format!("an RSA key of {} bits", key.bits()))),
            other => {
                return Err(unsupported(format!(
                    "a {} key",
                    Nid::from_raw(other.as_raw())
                        .short_name()
                        .unwrap_or("non-RSA, non-EC")
                )));
            }
        };
        Ok(Self {
            key,
            algorithm,
            name,
        })
    }

    /// The key's name (path or label) as used in errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The private key as unencrypted PKCS#8 PEM (for Istio's `ca-key.pem`); zeroed on drop.
    ///
    /// # Errors
    /// [`Error::OpenSsl`] when encoding fails.
    pub fn private_key_pkcs8_pem(&self) -> Result<Zeroizing<Vec<u8>>> {
        self.key
            .private_key_to_pem_pkcs8()
            .map(Zeroizing::new)
            .map_err(Error::openssl("encoding the private key"))
    }

    /// The private key as PKCS#8 PEM encrypted with AES-256-CBC under `passphrase`.
    ///
    /// # Errors
    /// [`Error::OpenSsl`] when encoding fails.
    pub fn encrypted_private_key_pem(
        &self,
        passphrase: &SecretString,
    ) -> Result<Zeroizing<Vec<u8>>> {
        self.key
            .private_key_to_pem_pkcs8_passphrase(
                openssl::symm::Cipher::aes_256_cbc(),
                passphrase.expose_secret().as_bytes(),
            )
            .map(Zeroizing::new)
            .map_err(Error::openssl("encrypting the private key"))
    }

    /// The public key as PEM `PUBLIC KEY`.
    ///
    /// # Errors
    /// [`Error::OpenSsl`] when encoding fails.
    pub fn public_key_pem(&self) -> Result<Vec<u8>> {
        self.key
            .public_key_to_pem()
            .map_err(Error::openssl("encoding the public key"))
    }
}

/// Reads a passphrase from a file: the first line, without its line ending.
///
/// # Errors
/// [`Error::ReadFile`] or [`Error::PassphraseEmpty`].
pub fn read_passphrase_file(path: &Path) -> Result<SecretString> {
    let raw = Zeroizing::new(std::fs::read(path).map_err(|source| Error::ReadFile {
        what: "the passphrase file",
        path: path.to_path_buf(),
        source,
    })?);
    let text = std::str::from_utf8(&raw).map_err(|_| Error::ReadFile {
        what: "the passphrase file",
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
    })?;
    let line = text.split(['\n', '\r']).next().unwrap_or_default();
    if line.is_empty() {
        return Err(Error::PassphraseEmpty {
            path: PathBuf::from(path),
        });
    }
    Ok(SecretString::from(line.to_owned()))
}

impl Signer for SoftwareSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn public_key_spki_der(&self) -> Vec<u8> {
        // Encoding a valid in-memory key cannot fail short of allocation failure; an empty SPKI
        // is rejected by every caller with a named error.
        self.key.public_key_to_der().unwrap_or_default()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let digest = match self.algorithm {
            SignatureAlgorithm::EcdsaP384Sha384 => MessageDigest::sha384(),
            _ => MessageDigest::sha256(),
        };
        let wrap = |e: openssl::error::ErrorStack| SignError {
            key: self.name.clone(),
            source: Box::new(e),
        };
        let mut signer = openssl::sign::Signer::new(digest, &self.key).map_err(wrap)?;
        signer.update(message).map_err(wrap)?;
        signer.sign_to_vec().map_err(wrap)
    }
}
