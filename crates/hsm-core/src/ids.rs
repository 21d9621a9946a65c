//! Identifiers of token objects and the outcome of idempotent operations.

use std::fmt;

use crate::{Error, Result};

/// Longest object id or label accepted, in bytes. PKCS#11 sets no limit; HSMs do, and the
/// Kubernetes KMS v2 key id (which embeds a KEK id) is capped at 1 KiB.
pub const MAX_ID_LEN: usize = 255;

fn check_bytes(what: &'static str, bytes: &[u8]) -> Result<()> {
    let reason = if bytes.is_empty() {
        Some("it must not be empty")
    } else if bytes.len() > MAX_ID_LEN {
        Some("it is longer than 255 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidId {
            what,
            value: String::from_utf8_lossy(bytes).into_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

macro_rules! byte_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Vec<u8>);

        impl $name {
            /// Validates an id: 1 to 255 bytes.
            ///
            /// # Errors
            /// [`Error::InvalidId`] when it is empty or too long.
            pub fn new(id: impl Into<Vec<u8>>) -> Result<Self> {
                let id = id.into();
                check_bytes($what, &id)?;
                Ok(Self(id))
            }

            /// A random UUIDv4 in its text form, as the Thales plugin makes when no id is given.
            pub fn random() -> Self {
                Self(uuid::Uuid::new_v4().to_string().into_bytes())
            }

            /// The id bytes, exactly as stored in `CKA_ID`.
            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }

            /// The id as text (lossy when the bytes are not UTF-8).
            pub fn to_text(&self) -> String {
                String::from_utf8_lossy(&self.0).into_owned()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&String::from_utf8_lossy(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&String::from_utf8_lossy(&self.0), f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                Self::new(s.as_bytes().to_vec())
            }
        }
    };
}

byte_id!(
    /// A KEK id: the bytes of the key's `CKA_ID`, which are also the JWE `kid` of every
    /// `encrypted-dek` made under it and the `kek-id` of the `istio-ca-cert-csr` Secret.
    KekId,
    "KEK id"
);

byte_id!(
    /// A CA anchor id: the `CKA_ID` of a root certificate object on the token.
    CaId,
    "CA id"
);

byte_id!(
    /// The id of an in-HSM key pair (hsm-key mode): the `CKA_ID` shared by its private and
    /// public key objects.
    KeyPairId,
    "key pair id"
);

impl CaId {
    /// The CA id the Thales plugin and the ASM guide use when none is given.
    pub const DEFAULT: &'static str = "1c3d30d5-dfa8-4167-a9f9-2c768464181b";
}

impl Default for CaId {
    fn default() -> Self {
        Self(Self::DEFAULT.as_bytes().to_vec())
    }
}

/// A token object label (`CKA_LABEL`): 1 to 255 bytes of UTF-8.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ObjectLabel(String);

impl ObjectLabel {
    /// The label the Thales plugin gives every KEK; KEK lookups match it together with the id.
    pub const KEK: &'static str = "k8s-kms-plugin-kek";
    /// The label of the Kubernetes KMS v1 key in the Thales plugin (`--p11-key-label`).
    pub const K8S_KEY: &'static str = "k8s-dek";

    /// Validates a label.
    ///
    /// # Errors
    /// [`Error::InvalidId`] when it is empty or too long.
    pub fn new(label: impl Into<String>) -> Result<Self> {
        let label = label.into();
        check_bytes("object label", label.as_bytes())?;
        Ok(Self(label))
    }

    /// The KEK label, `k8s-kms-plugin-kek`.
    pub fn kek() -> Self {
        Self(Self::KEK.to_owned())
    }

    /// The label text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

pub use mesh_common::{Mode, Outcome};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bounded_and_random_ids_are_uuid_text() {
        assert!(KekId::new(Vec::new()).is_err());
        assert!(KekId::new(vec![b'a'; 256]).is_err());
        assert!(KekId::new(vec![b'a'; 255]).is_ok());
        let id = KekId::random();
        let text = id.to_text();
        assert_eq!(text.len(), 36);
        assert_eq!(uuid::Uuid::parse_str(&text).unwrap().get_version_num(), 4);
        assert_eq!(CaId::default().to_text(), CaId::DEFAULT);
    }
}
