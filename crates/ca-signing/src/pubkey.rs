//! Public-key facts an administrator checks before signing: type, size and fingerprint.

use std::fmt;

use openssl::hash::{MessageDigest, hash};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use serde::Serialize;

use crate::error::{Error, Result};

/// The kind and size of a public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum KeyKind {
    /// RSA with a modulus of `bits` bits.
    Rsa {
        /// Modulus size.
        bits: u32,
    },
    /// ECDSA on a named curve.
    Ec {
        /// The curve (`P-256`, `P-384`, or the OpenSSL name of another curve).
        curve: String,
        /// Field size in bits.
        bits: u32,
    },
    /// Anything else (Ed25519, DSA, ...), named as OpenSSL names it.
    Other {
        /// The algorithm name.
        name: String,
        /// Key size in bits as OpenSSL reports it.
        bits: u32,
    },
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rsa { bits } => write!(f, "RSA {bits} bits"),
            Self::Ec { curve, .. } => write!(f, "ECDSA {curve}"),
            Self::Other { name, bits } => write!(f, "{name} {bits} bits"),
        }
    }
}

/// A public key with the facts a reviewer needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicKeyInfo {
    /// Type and size.
    pub kind: KeyKind,
    /// SHA-256 over the DER `SubjectPublicKeyInfo`, as colon-separated upper-case hex (the
    /// form `openssl pkey -pubin -outform DER | openssl dgst -sha256 -c` prints, upper-cased).
    pub sha256_fingerprint: String,
    /// The DER `SubjectPublicKeyInfo`.
    #[serde(skip)]
    pub spki_der: Vec<u8>,
}

impl PublicKeyInfo {
    /// Describes a DER `SubjectPublicKeyInfo`.
    ///
    /// # Errors
    /// [`Error::OpenSsl`] when the key cannot be parsed.
    pub fn from_spki_der(spki_der: &[u8]) -> Result<Self> {
        let key =
            PKey::public_key_from_der(spki_der).map_err(Error::openssl("parsing a public key"))?;
        Self::from_pkey(&key)
    }

    pub(crate) fn from_pkey(key: &PKey<Public>) -> Result<Self> {
        let spki_der = key
            .public_key_to_der()
            .map_err(Error::openssl("encoding a public key"))?;
        let kind = match key.id() {
            Id::RSA => KeyKind::Rsa { bits: key.bits() },
            Id::EC => {
                let ec = key.ec_key().map_err(Error::openssl("reading an EC key"))?;
                let curve = match ec.group().curve_name() {
                    Some(Nid::X9_62_PRIME256V1) => "P-256".to_owned(),
                    Some(Nid::SECP384R1) => "P-384".to_owned(),
                    Some(Nid::SECP521R1) => "P-521".to_owned(),
                    Some(nid) => nid.short_name().unwrap_or("unknown curve").to_owned(),
                    None => "explicit curve parameters".to_owned(),
                };
                KeyKind::Ec {
                    curve,
                    bits: key.bits(),
                }
            }
            other => KeyKind::Other {
                name: Nid::from_raw(other.as_raw())
                    .short_name()
                    .unwrap_or("unknown")
                    .to_owned(),
                bits: key.bits(),
            },
        };
        Ok(Self {
            kind,
            sha256_fingerprint: sha256_fingerprint(&spki_der)?,
            spki_der,
        })
    }
}

/// SHA-256 of `bytes` as colon-separated upper-case hex.
pub(crate) fn sha256_fingerprint(bytes: &[u8]) -> Result<String> {
    let digest = hash(MessageDigest::sha256(), bytes).map_err(Error::openssl("hashing"))?;
    Ok(colon_hex(&digest))
}

/// Bytes as colon-separated upper-case hex.
pub(crate) fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
