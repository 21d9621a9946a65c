//! CSR parsing and review: what the security admin sees before signing, and the policy gate.

use std::fmt;
use std::net::IpAddr;

use openssl::x509::X509Req;
use serde::Serialize;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::{GeneralName, ParsedExtension, X509Extension};
use x509_parser::objects::{oid_registry, oid2sn};
use x509_parser::prelude::FromDer;

use crate::error::{Error, Result};
use crate::policy::{CsrPolicy, CsrPurpose, signature_algorithm_name};
use crate::pubkey::PublicKeyInfo;

/// A subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum San {
    /// `DNS:<name>`.
    Dns(String),
    /// `URI:<uri>` (SPIFFE IDs).
    Uri(String),
    /// `IP:<address>`.
    Ip(IpAddr),
    /// `email:<address>`.
    Email(String),
    /// Any other kind, described.
    Other(String),
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(v) => write!(f, "DNS:{v}"),
            Self::Uri(v) => write!(f, "URI:{v}"),
            Self::Ip(v) => write!(f, "IP:{v}"),
            Self::Email(v) => write!(f, "email:{v}"),
            Self::Other(v) => write!(f, "{v}"),
        }
    }
}

/// A requested `basicConstraints` extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RequestedBasicConstraints {
    /// `CA:TRUE` was asked for.
    pub ca: bool,
    /// The `pathLenConstraint`, if any.
    pub path_len: Option<u32>,
}

/// An extension in the CSR's `extensionRequest` attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestedExtension {
    /// Dotted OID.
    pub oid: String,
    /// Short name (`subjectAltName`, `basicConstraints`, ...) or the OID.
    pub name: String,
    /// Marked critical.
    pub critical: bool,
    /// Its value, readable.
    pub value: String,
}

/// What an admin must see before signing a CSR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CsrReport {
    /// The subject, e.g. `O=Istio, CN=Intermediate CA`.
    pub subject: String,
    /// Requested SANs.
    pub sans: Vec<San>,
    /// The public key: type, size, SHA-256 fingerprint.
    pub public_key: PublicKeyInfo,
    /// Name of the CSR's signature algorithm.
    pub signature_algorithm: String,
    /// Its dotted OID.
    pub signature_algorithm_oid: String,
    /// Every requested extension.
    pub requested_extensions: Vec<RequestedExtension>,
    /// The requested basic constraints, if any.
    pub requested_basic_constraints: Option<RequestedBasicConstraints>,
}

impl fmt::Display for CsrReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "subject:             {}", self.subject)?;
        let sans = if self.sans.is_empty() {
            "(none)".to_owned()
        } else {
            self.sans
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(f, "subject alt names:   {sans}")?;
        writeln!(f, "public key:          {}", self.public_key.kind)?;
        writeln!(
            f,
            "public key SHA-256:  {}",
            self.public_key.sha256_fingerprint
        )?;
        writeln!(f, "signature algorithm: {}", self.signature_algorithm)?;
        if self.requested_extensions.is_empty() {
            writeln!(f, "requested extensions: (none)")?;
        } else {
            writeln!(f, "requested extensions:")?;
            for ext in &self.requested_extensions {
                let critical = if ext.critical { " (critical)" } else { "" };
                writeln!(f, "  {}{critical}: {}", ext.name, ext.value)?;
            }
        }
        Ok(())
    }
}

/// A parsed PKCS#10 CSR whose self-signature verified.
#[derive(Debug, Clone)]
pub struct Csr {
    der: Vec<u8>,
    subject_der: Vec<u8>,
    report: CsrReport,
}

impl Csr {
    /// Parses a PEM (`CERTIFICATE REQUEST`) or DER CSR and verifies its signature.
    ///
    /// # Errors
    /// [`Error::Encoding`] for input that is neither, [`Error::CsrParse`] for a malformed
    /// request, [`Error::CsrSignature`] when the signature does not verify.
    pub fn parse(input: &[u8]) -> Result<Self> {
        let der = crate::encoding::pem_or_der(
            input,
            "the CSR",
            &["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"],
        )?;
        Self::from_der(der)
    }

    /// Parses a DER CSR and verifies its signature.
    ///
    /// # Errors
    /// As [`Csr::parse`].
    pub fn from_der(der: Vec<u8>) -> Result<Self> {
        let (rest, parsed) =
            X509CertificationRequest::from_der(&der).map_err(|e| Error::CsrParse {
                reason: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(Error::CsrParse {
                reason: format!("{} trailing bytes after the request", rest.len()),
            });
        }
        let req = X509Req::from_der(&der).map_err(|e| Error::CsrParse {
            reason: e.to_string(),
        })?;
        let key = req.public_key().map_err(|e| Error::CsrParse {
            reason: format!("unreadable public key: {e}"),
        })?;
        // A malformed signature is an error, a wrong one is `false`: both mean "not signed by
        // this key".
        if !req.verify(&key).unwrap_or(false) {
            return Err(Error::CsrSignature);
        }
        let public_key = PublicKeyInfo::from_pkey(&key)?;

        let info = &parsed.certification_request_info;
        let mut sans = Vec::new();
        let mut requested_extensions = Vec::new();
        let mut requested_basic_constraints = None;
        for attr in info.iter_attributes() {
            if let ParsedCriAttribute::ExtensionRequest(req) = attr.parsed_attribute() {
                for ext in &req.extensions {
                    requested_extensions.push(describe_extension(ext)?);
                    match ext.parsed_extension() {
                        ParsedExtension::SubjectAlternativeName(san) => {
                            for name in &san.general_names {
                                sans.push(san_from(name)?);
                            }
                        }
                        ParsedExtension::BasicConstraints(bc) => {
                            requested_basic_constraints = Some(RequestedBasicConstraints {
                                ca: bc.ca,
                                path_len: bc.path_len_constraint,
                            });
                        }
                        _ => {}
                    }
                }
            }
        }
        let oid = parsed.signature_algorithm.algorithm.to_id_string();
        let report = CsrReport {
            subject: info.subject.to_string(),
            sans,
            public_key,
            signature_algorithm: signature_algorithm_name(&oid),
            signature_algorithm_oid: oid,
            requested_extensions,
            requested_basic_constraints,
        };
        let subject_der = info.subject.as_raw().to_vec();
        Ok(Self {
            der,
            subject_der,
            report,
        })
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The PEM encoding (`CERTIFICATE REQUEST`).
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", self.der.clone()))
    }

    /// What the admin reviews.
    pub fn report(&self) -> &CsrReport {
        &self.report
    }

    /// The subject name, DER encoded.
    pub(crate) fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }

    /// Applies `policy` for `purpose`; only a reviewed CSR can be signed.
    ///
    /// # Errors
    /// [`Error::PolicyRejected`] listing every violation.
    pub fn review(self, policy: &CsrPolicy, purpose: CsrPurpose) -> Result<ReviewedCsr> {
        policy.enforce(&self.report, purpose)?;
        Ok(ReviewedCsr { csr: self, purpose })
    }
}

/// A CSR that passed the signing policy for a purpose.
#[derive(Debug, Clone)]
pub struct ReviewedCsr {
    csr: Csr,
    purpose: CsrPurpose,
}

impl ReviewedCsr {
    /// The CSR.
    pub fn csr(&self) -> &Csr {
        &self.csr
    }

    /// The purpose it was reviewed for.
    pub fn purpose(&self) -> CsrPurpose {
        self.purpose
    }

    /// The review report.
    pub fn report(&self) -> &CsrReport {
        &self.csr.report
    }
}

/// Parses and reviews a CSR in one step.
///
/// # Errors
/// As [`Csr::parse`] and [`Csr::review`].
pub fn review_csr(input: &[u8], policy: &CsrPolicy, purpose: CsrPurpose) -> Result<ReviewedCsr> {
    Csr::parse(input)?.review(policy, purpose)
}

fn describe_extension(ext: &X509Extension<'_>) -> Result<RequestedExtension> {
    let name =
        oid2sn(&ext.oid, oid_registry()).map_or_else(|_| ext.oid.to_id_string(), str::to_owned);
    let value = match ext.parsed_extension() {
        ParsedExtension::ParseError { error } => {
            return Err(Error::CsrParse {
                reason: format!("malformed requested extension {name}: {error}"),
            });
        }
        ParsedExtension::SubjectAlternativeName(san) => san
            .general_names
            .iter()
            .map(|n| san_from(n).map(|s| s.to_string()))
            .collect::<Result<Vec<_>>>()?
            .join(", "),
        ParsedExtension::BasicConstraints(bc) => match (bc.ca, bc.path_len_constraint) {
            (true, Some(n)) => format!("CA:TRUE, pathlen:{n}"),
            (true, None) => "CA:TRUE".to_owned(),
            (false, _) => "CA:FALSE".to_owned(),
        },
        ParsedExtension::KeyUsage(ku) => ku.to_string(),
        ParsedExtension::ExtendedKeyUsage(eku) => {
            let mut v = Vec::new();
            for (set, n) in [
                (eku.any, "anyExtendedKeyUsage"),
                (eku.server_auth, "serverAuth"),
                (eku.client_auth, "clientAuth"),
                (eku.code_signing, "codeSigning"),
                (eku.email_protection, "emailProtection"),
                (eku.time_stamping, "timeStamping"),
                (eku.ocsp_signing, "OCSPSigning"),
            ] {
                if set {
                    v.push(n.to_owned());
                }
            }
            v.extend(
                eku.other
                    .iter()
                    .map(x509_parser::der_parser::Oid::to_id_string),
            );
            v.join(", ")
        }
        _ => format!("{} bytes", ext.value.len()),
    };
    Ok(RequestedExtension {
        oid: ext.oid.to_id_string(),
        name,
        critical: ext.critical,
        value,
    })
}

pub(crate) fn san_from(name: &GeneralName<'_>) -> Result<San> {
    Ok(match name {
        GeneralName::DNSName(v) => San::Dns((*v).to_owned()),
        GeneralName::URI(v) => San::Uri((*v).to_owned()),
        GeneralName::RFC822Name(v) => San::Email((*v).to_owned()),
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => {
                let mut a = [0u8; 4];
                a.copy_from_slice(bytes);
                San::Ip(IpAddr::from(a))
            }
            16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(bytes);
                San::Ip(IpAddr::from(a))
            }
            n => {
                return Err(Error::CsrParse {
                    reason: format!("an IP address SAN has {n} bytes"),
                });
            }
        },
        GeneralName::Invalid(tag, _) => {
            return Err(Error::CsrParse {
                reason: format!("an invalid SAN entry (tag {tag})"),
            });
        }
        other => San::Other(format!("{other:?}")),
    })
}
