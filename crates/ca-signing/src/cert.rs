//! A parsed X.509 certificate with the facts issuing and verification need.

use std::fmt;

use openssl::x509::{X509, X509Ref};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

use crate::csr::{San, san_from};
use crate::error::{Error, Result};
use crate::pubkey::{colon_hex, sha256_fingerprint};

/// A certificate this crate issued; the same type as any parsed [`Certificate`].
pub type IssuedCert = Certificate;

/// The `basicConstraints` of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BasicConstraints {
    /// `CA:TRUE`.
    pub ca: bool,
    /// `pathLenConstraint`, if any.
    pub path_len: Option<u32>,
    /// Marked critical.
    pub critical: bool,
}

/// An X.509 certificate (DER) with its parsed facts.
#[derive(Clone)]
pub struct Certificate {
    der: Vec<u8>,
    x509: X509,
    subject: String,
    subject_der: Vec<u8>,
    issuer_der: Vec<u8>,
    spki_der: Vec<u8>,
    serial: Vec<u8>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    basic_constraints: Option<BasicConstraints>,
    key_cert_sign: Option<bool>,
    subject_key_id: Option<Vec<u8>>,
    sans: Vec<San>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("subject", &self.subject)
            .field("serial", &self.serial_hex())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("basic_constraints", &self.basic_constraints)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// Parses one certificate, PEM (`CERTIFICATE`) or DER.
    ///
    /// # Errors
    /// [`Error::Encoding`] or [`Error::CertParse`].
    pub fn parse(input: &[u8]) -> Result<Self> {
        let der = crate::encoding::pem_or_der(input, "the certificate", &["CERTIFICATE"])?;
        Self::from_der(der)
    }

    /// Parses every `CERTIFICATE` block of a PEM bundle, in order.
    ///
    /// # Errors
    /// [`Error::Encoding`] or [`Error::CertParse`].
    pub fn parse_pem_bundle(input: &[u8]) -> Result<Vec<Self>> {
        crate::encoding::pem_blocks(input, "the certificate chain", &["CERTIFICATE"])?
            .into_iter()
            .map(Self::from_der)
            .collect()
    }

    /// Parses a DER certificate.
    ///
    /// # Errors
    /// [`Error::CertParse`].
    pub fn from_der(der: Vec<u8>) -> Result<Self> {
        let bad = |reason: String| Error::CertParse {
            what: "a certificate".to_owned(),
            reason,
        };
        let (rest, c) = X509Certificate::from_der(&der).map_err(|e| bad(e.to_string()))?;
        if !rest.is_empty() {
            return Err(bad(format!("{} trailing bytes", rest.len())));
        }
        let subject = c.subject().to_string();
        let bad = |reason: String| Error::CertParse {
            what: format!("certificate `{subject}`"),
            reason,
        };
        let mut basic_constraints = None;
        let mut key_cert_sign = None;
        let mut subject_key_id = None;
        let mut sans = Vec::new();
        for ext in c.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::BasicConstraints(bc) => {
                    basic_constraints = Some(BasicConstraints {
                        ca: bc.ca,
                        path_len: bc.path_len_constraint,
                        critical: ext.critical,
                    });
                }
                ParsedExtension::KeyUsage(ku) => key_cert_sign = Some(ku.key_cert_sign()),
                ParsedExtension::SubjectKeyIdentifier(id) => subject_key_id = Some(id.0.to_vec()),
                ParsedExtension::SubjectAlternativeName(san) => {
                    for n in &san.general_names {
                        sans.push(san_from(n).map_err(|e| bad(e.to_string()))?);
                    }
                }
                ParsedExtension::ParseError { error } => {
                    return Err(bad(format!("malformed extension {}: {error}", ext.oid)));
                }
                _ => {}
            }
        }
        let x509 = X509::from_der(&der).map_err(|e| bad(e.to_string()))?;
        let facts = Self {
            subject_der: c.subject().as_raw().to_vec(),
            issuer_der: c.issuer().as_raw().to_vec(),
            spki_der: c.public_key().raw.to_vec(),
            serial: c.raw_serial().to_vec(),
            not_before: c.validity().not_before.to_datetime(),
            not_after: c.validity().not_after.to_datetime(),
            basic_constraints,
            key_cert_sign,
            subject_key_id,
            sans,
            subject,
            x509,
            der: Vec::new(),
        };
        Ok(Self { der, ..facts })
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The PEM encoding (`CERTIFICATE`).
    pub fn pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.der.clone()))
    }

    /// The OpenSSL view, for callers that verify or inspect further.
    pub fn openssl(&self) -> &X509Ref {
        &self.x509
    }

    /// The subject, e.g. `O=Istio, CN=Root CA`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The subject name, DER encoded.
    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }

    /// The issuer name, DER encoded.
    pub fn issuer_der(&self) -> &[u8] {
        &self.issuer_der
    }

    /// The DER `SubjectPublicKeyInfo`.
    pub fn public_key_spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The serial number as colon-separated hex.
    pub fn serial_hex(&self) -> String {
        colon_hex(&self.serial)
    }

    /// The serial number's big-endian bytes as encoded (a leading zero byte keeps it positive).
    pub fn serial_bytes(&self) -> &[u8] {
        &self.serial
    }

    /// Start of validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// End of validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// `basicConstraints`, if present.
    pub fn basic_constraints(&self) -> Option<BasicConstraints> {
        self.basic_constraints
    }

    /// Whether the certificate is a CA (`CA:TRUE`).
    pub fn is_ca(&self) -> bool {
        self.basic_constraints.is_some_and(|b| b.ca)
    }

    /// `keyUsage` keyCertSign: `None` when the certificate has no keyUsage extension.
    pub fn key_cert_sign(&self) -> Option<bool> {
        self.key_cert_sign
    }

    /// The subject key identifier, if present.
    pub fn subject_key_id(&self) -> Option<&[u8]> {
        self.subject_key_id.as_deref()
    }

    /// The subject alternative names.
    pub fn sans(&self) -> &[San] {
        &self.sans
    }

    /// SHA-256 over the DER certificate, colon-separated hex.
    ///
    /// # Errors
    /// [`Error::OpenSsl`] if hashing fails.
    pub fn sha256_fingerprint(&self) -> Result<String> {
        sha256_fingerprint(&self.der)
    }

    /// Whether `self` names `issuer` as its issuer and carries a signature by its key.
    pub fn is_issued_by(&self, issuer: &Self) -> bool {
        self.issuer_der == issuer.subject_der
            && issuer
                .x509
                .public_key()
                .ok()
                .and_then(|k| self.x509.verify(&k).ok())
                .unwrap_or(false)
    }

    /// Whether the certificate is self-issued and its signature verifies under its own key.
    pub fn is_self_signed(&self) -> bool {
        self.is_issued_by(self)
    }

    /// Whether the certificate carries the public key `spki_der`.
    pub fn has_public_key(&self, spki_der: &[u8]) -> bool {
        same_public_key(&self.spki_der, spki_der)
    }
}

/// Compares two DER `SubjectPublicKeyInfo`s as keys (OpenSSL's comparison, so equivalent
/// encodings of the same key match).
pub(crate) fn same_public_key(a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return true;
    }
    match (
        openssl::pkey::PKey::public_key_from_der(a),
        openssl::pkey::PKey::public_key_from_der(b),
    ) {
        (Ok(a), Ok(b)) => a.public_eq(&b),
        _ => false,
    }
}
