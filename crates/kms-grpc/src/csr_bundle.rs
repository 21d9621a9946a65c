//! The `encrypted_csr.json` document `decrypt-csr` reads: the `.data` of Secret
//! `istio-ca-cert-csr`, four fields of standard base64 (KMS-PROTOCOL §4.3).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::error::{Error, Result};

/// The four values of the `istio-ca-cert-csr` Secret, decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptedCsr {
    /// `kek-id`.
    pub kek_id: Vec<u8>,
    /// `encrypted-dek`.
    pub encrypted_dek: Vec<u8>,
    /// `csr-id` (the AAD).
    pub csr_id: Vec<u8>,
    /// `encrypted-csr`.
    pub encrypted_csr: Vec<u8>,
}

impl std::fmt::Debug for EncryptedCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedCsr")
            .field("kek_id", &String::from_utf8_lossy(&self.kek_id))
            .field("csr_id", &String::from_utf8_lossy(&self.csr_id))
            .field("encrypted_dek_len", &self.encrypted_dek.len())
            .field("encrypted_csr_len", &self.encrypted_csr.len())
            .finish()
    }
}

const FIELDS: [&str; 4] = ["kek-id", "encrypted-dek", "csr-id", "encrypted-csr"];

impl EncryptedCsr {
    /// Parses the JSON object; unknown fields are ignored, every base64 error is reported
    /// with its field (the Thales plugin ignored them).
    ///
    /// # Errors
    /// [`Error::CsrDocument`] naming the field.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let doc: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| Error::CsrDocument {
                reason: format!("not JSON ({e})"),
            })?;
        let mut values = Vec::with_capacity(4);
        for field in FIELDS {
            let text = doc
                .get(field)
                .ok_or_else(|| Error::CsrDocument {
                    reason: format!("field {field:?} is missing"),
                })?
                .as_str()
                .ok_or_else(|| Error::CsrDocument {
                    reason: format!("field {field:?} is not a string"),
                })?;
            let value = STANDARD
                .decode(text.trim())
                .map_err(|e| Error::CsrDocument {
                    reason: format!("field {field:?} is not standard base64 ({e})"),
                })?;
            if value.is_empty() {
                return Err(Error::CsrDocument {
                    reason: format!("field {field:?} is empty"),
                });
            }
            values.push(value);
        }
        let mut values = values.into_iter();
        let mut next = || values.next().unwrap_or_default();
        Ok(Self {
            kek_id: next(),
            encrypted_dek: next(),
            csr_id: next(),
            encrypted_csr: next(),
        })
    }

    /// The JSON document (standard base64 values), as `kubectl get secret -o jsonpath='{.data}'`
    /// prints it.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "kek-id": STANDARD.encode(&self.kek_id),
            "encrypted-dek": STANDARD.encode(&self.encrypted_dek),
            "csr-id": STANDARD.encode(&self.csr_id),
            "encrypted-csr": STANDARD.encode(&self.encrypted_csr),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_the_bad_field() {
        let doc = EncryptedCsr {
            kek_id: b"kek".to_vec(),
            encrypted_dek: b"a.b.c.d.e".to_vec(),
            csr_id: b"csr-1".to_vec(),
            encrypted_csr: b"x".to_vec(),
        };
        assert_eq!(
            EncryptedCsr::from_json(doc.to_json().as_bytes()).unwrap(),
            doc
        );
        let bad =
            r#"{"kek-id":"a2Vr","encrypted-dek":"***","csr-id":"eA==","encrypted-csr":"eA=="}"#;
        let err = EncryptedCsr::from_json(bad.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("encrypted-dek"), "{err}");
        let missing = r#"{"kek-id":"a2Vr"}"#;
        let err = EncryptedCsr::from_json(missing.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("encrypted-dek") && err.contains("missing"),
            "{err}"
        );
    }
}
