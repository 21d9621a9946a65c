//! Software CA signing keys of the compat mode (GenerateSKey / LoadSKey).

use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::rsa::Rsa;
use zeroize::Zeroizing;

use crate::{Error, Result};

/// The key GenerateSKey makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SKeySpec {
    /// RSA with 2048, 3072 or 4096 bits; PKCS#1 PEM (`RSA PRIVATE KEY`), as the plugin makes.
    Rsa {
        /// Modulus size in bits.
        bits: u32,
    },
    /// ECDSA P-256; SEC 1 PEM (`EC PRIVATE KEY`).
    EcdsaP256,
    /// ECDSA P-384; SEC 1 PEM (`EC PRIVATE KEY`).
    EcdsaP384,
}

impl SKeySpec {
    /// Maps the wire request (`kind`: 2 = RSA, 3 = ECC of the Istio proto's `KeyKind`; `size`
    /// in bits) to a validated spec.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the unsupported kind or size.
    pub fn from_wire(kind: i32, size: i64) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidArgument {
            operation: "GenerateSKey",
            reason,
        };
        let spec = match (kind, size) {
            (2, 2048 | 3072 | 4096) => Self::Rsa {
                bits: u32::try_from(size).unwrap_or(2048),
            },
            (2, other) => {
                return Err(invalid(format!(
                    "RSA size {other} is not supported; use 2048, 3072 or 4096"
                )));
            }
            (3, 256) => Self::EcdsaP256,
            (3, 384) => Self::EcdsaP384,
            (3, other) => {
                return Err(invalid(format!(
                    "ECC size {other} is not supported; use 256 (P-256) or 384 (P-384)"
                )));
            }
            (other, _) => {
                return Err(invalid(format!(
                    "key kind {other} is not supported; use RSA (2) or ECC (3)"
                )));
            }
        };
        Ok(spec)
    }

    pub(crate) fn validate(self) -> Result<Self> {
        match self {
            Self::Rsa { bits } if !matches!(bits, 2048 | 3072 | 4096) => {
                Err(Error::InvalidArgument {
                    operation: "GenerateSKey",
                    reason: format!("RSA size {bits} is not supported; use 2048, 3072 or 4096"),
                })
            }
            other => Ok(other),
        }
    }

    /// Generates the key in software and returns its private PEM.
    pub(crate) fn generate(self) -> Result<SecretPem> {
        let pem = match self.validate()? {
            Self::Rsa { bits } => Rsa::generate(bits)
                .and_then(|k| k.private_key_to_pem())
                .map_err(Error::crypto("generating an RSA key"))?,
            Self::EcdsaP256 | Self::EcdsaP384 => {
                let nid = if self == Self::EcdsaP256 {
                    Nid::X9_62_PRIME256V1
                } else {
                    Nid::SECP384R1
                };
                EcGroup::from_curve_name(nid)
                    .and_then(|g| EcKey::generate(&g))
                    .and_then(|k| k.private_key_to_pem())
                    .map_err(Error::crypto("generating an ECDSA key"))?
            }
        };
        Ok(SecretPem(Zeroizing::new(pem)))
    }
}

/// A private key in PEM, zeroised on drop and redacted in `Debug`.
#[derive(Clone)]
pub struct SecretPem(pub Zeroizing<Vec<u8>>);

impl SecretPem {
    /// The PEM bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretPem(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_sizes_are_validated() {
        assert_eq!(
            SKeySpec::from_wire(2, 3072).unwrap(),
            SKeySpec::Rsa { bits: 3072 }
        );
        assert_eq!(SKeySpec::from_wire(3, 384).unwrap(), SKeySpec::EcdsaP384);
        assert!(SKeySpec::from_wire(2, 1024).is_err());
        assert!(SKeySpec::from_wire(3, 521).is_err());
        assert!(SKeySpec::from_wire(1, 256).is_err());
        assert!(SKeySpec::Rsa { bits: 1000 }.generate().is_err());
    }

    #[test]
    fn generated_keys_use_the_pem_types_istio_reads() {
        let pem = SKeySpec::Rsa { bits: 2048 }.generate().unwrap();
        assert!(pem.expose().starts_with(b"-----BEGIN RSA PRIVATE KEY-----"));
        let pem = SKeySpec::EcdsaP256.generate().unwrap();
        assert!(pem.expose().starts_with(b"-----BEGIN EC PRIVATE KEY-----"));
        assert_eq!(format!("{pem:?}"), "SecretPem(..)");
    }
}
