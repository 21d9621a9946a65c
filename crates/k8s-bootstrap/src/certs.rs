//! PEM certificate input, validated and normalised.

use std::path::Path;

use crate::{Error, Result};

/// One or more X.509 certificates in PEM, each checked to parse, re-encoded with `\n` line
/// endings and 64-column lines (so the same input always yields the same bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificatePem {
    pem: String,
    count: usize,
}

impl CertificatePem {
    /// Validates `input`; `what` names its origin in errors (`"the kubeconfig's CA"`).
    ///
    /// # Errors
    /// [`Error::InvalidCertificate`] when there is no PEM block, a block is not a
    /// `CERTIFICATE`, or a certificate does not parse as X.509.
    pub fn parse(input: impl AsRef<[u8]>, what: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidCertificate {
            what: what.to_owned(),
            reason,
        };
        let blocks =
            pem::parse_many(input.as_ref()).map_err(|e| invalid(format!("malformed PEM ({e})")))?;
        if blocks.is_empty() {
            return Err(invalid("no PEM block found".into()));
        }
        for (i, block) in blocks.iter().enumerate() {
            if block.tag() != "CERTIFICATE" {
                return Err(invalid(format!(
                    "block {} is a {:?}, not a CERTIFICATE",
                    i + 1,
                    block.tag()
                )));
            }
            match x509_parser::parse_x509_certificate(block.contents()) {
                Ok(([], _)) => {}
                Ok(_) => {
                    return Err(invalid(format!(
                        "certificate {} has trailing bytes after its DER",
                        i + 1
                    )));
                }
                Err(e) => {
                    return Err(invalid(format!(
                        "certificate {} does not parse ({e})",
                        i + 1
                    )));
                }
            }
        }
        let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
        Ok(Self {
            pem: pem::encode_many_config(&blocks, config),
            count: blocks.len(),
        })
    }

    /// Reads and validates a PEM file.
    ///
    /// # Errors
    /// [`Error::ReadFile`], or [`Error::InvalidCertificate`] naming the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(bytes, &path.display().to_string())
    }

    /// The normalised PEM text.
    pub fn as_str(&self) -> &str {
        &self.pem
    }

    /// How many certificates it holds.
    pub fn count(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn self_signed(cn: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![cn.to_owned()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn certificates_are_normalised_to_lf_pem() {
        let one = self_signed("a");
        let two = self_signed("b");
        let crlf = format!("{one}\n{two}").replace('\n', "\r\n");
        let parsed = CertificatePem::parse(&crlf, "chain").unwrap();
        assert_eq!(parsed.count(), 2);
        assert!(!parsed.as_str().contains('\r'));
        assert_eq!(
            parsed,
            CertificatePem::parse(parsed.as_str(), "again").unwrap()
        );
    }

    #[test]
    fn non_certificates_are_refused_with_the_origin_named() {
        let err = CertificatePem::parse("hello", "ca.pem").unwrap_err();
        assert_eq!(
            err.to_string(),
            "ca.pem is not a valid PEM certificate: no PEM block found"
        );

        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let err = CertificatePem::parse(key, "ca.pem")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"PRIVATE KEY\", not a CERTIFICATE"), "{err}");

        let junk = pem::encode(&pem::Pem::new("CERTIFICATE", vec![1, 2, 3]));
        let err = CertificatePem::parse(junk, "ca.pem")
            .unwrap_err()
            .to_string();
        assert!(err.contains("certificate 1 does not parse"), "{err}");
    }
}
