use std::fmt;

use cryptoki::slot::Slot;

use crate::{Error, Result};

/// A PKCS#11 token label: 1 to 32 bytes of UTF-8, no leading or trailing spaces
/// (PKCS#11 pads labels with spaces, so those could never match).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenLabel(String);

impl TokenLabel {
    /// Maximum label length in bytes (`CK_TOKEN_INFO.label` is 32 bytes).
    pub const MAX_LEN: usize = 32;

    /// Validates a label.
    ///
    /// # Errors
    /// [`Error::InvalidLabel`] when the label is empty, longer than 32 bytes, or padded.
    pub fn new(label: impl Into<String>) -> Result<Self> {
        let label = label.into();
        let reason = if label.is_empty() {
            Some("a label must not be empty")
        } else if label.len() > Self::MAX_LEN {
            Some("a label is at most 32 bytes")
        } else if label.trim() != label {
            Some("a label must not start or end with whitespace")
        } else if label.chars().any(char::is_control) {
            Some("a label must not contain control characters")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidLabel { label, reason }),
            None => Ok(Self(label)),
        }
    }

    /// The label text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TokenLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::str::FromStr for TokenLabel {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

/// What the module reports about one initialised token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The slot the token is in *now*. Slot numbers change between process starts; never store one.
    pub slot: Slot,
    /// Token label (trimmed).
    pub label: String,
    /// Serial number (trimmed).
    pub serial: String,
    /// Model string (trimmed).
    pub model: String,
    /// Manufacturer (trimmed).
    pub manufacturer: String,
    /// Whether the user PIN has been set.
    pub user_pin_initialized: bool,
    /// Whether the user PIN is locked after too many failures.
    pub user_pin_locked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_accepts_guide_style_names() {
        assert_eq!(TokenLabel::new("asm-ca").unwrap().as_str(), "asm-ca");
        assert!(TokenLabel::new("x".repeat(32)).is_ok());
    }

    #[test]
    fn label_rejects_what_pkcs11_cannot_match() {
        for bad in ["", " padded", "padded ", "tab\tinside", &"y".repeat(33)] {
            let err = TokenLabel::new(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidLabel { .. }),
                "{bad:?} -> {err}"
            );
            assert!(err.to_string().contains("invalid token label"));
        }
    }

    #[test]
    fn label_length_is_counted_in_bytes() {
        // 11 three-byte characters = 33 bytes, over the PKCS#11 field size.
        assert!(TokenLabel::new("한".repeat(11)).is_err());
        assert!(TokenLabel::new("한".repeat(10)).is_ok());
    }
}
