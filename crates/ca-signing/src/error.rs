//! The crate's error type.

use std::path::PathBuf;

use crate::policy::PolicyViolation;
use crate::signer::SignError;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reviewing, signing, verifying or writing CA material.
///
/// Messages name the operation and the input, never key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is neither the expected PEM block nor DER.
    #[error("cannot read {what}: expected a PEM `{pem_label}` block or DER ({reason})")]
    Encoding {
        /// What was being read (a CSR, a certificate, a chain, ...).
        what: &'static str,
        /// The PEM label that was expected.
        pem_label: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The CSR is not a well-formed PKCS#10 request.
    #[error("cannot parse the CSR: {reason}; ask the requester for a fresh PKCS#10 request")]
    CsrParse {
        /// What is wrong.
        reason: String,
    },
    /// The CSR's self-signature does not verify against its own public key.
    #[error(
        "the CSR signature does not verify against the CSR's public key; it was altered or damaged in transit, ask for a fresh CSR"
    )]
    CsrSignature,
    /// The CSR breaks the signing policy.
    #[error("the CSR breaks the signing policy: {}", join(violations))]
    PolicyRejected {
        /// Every violation found.
        violations: Vec<PolicyViolation>,
    },
    /// A certificate could not be parsed.
    #[error("cannot parse {what}: {reason}")]
    CertParse {
        /// Which certificate.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A distinguished name cannot be reproduced exactly in an issued certificate.
    #[error("cannot copy the {what} name `{name}`: {reason}")]
    UnsupportedName {
        /// Which name (subject of the CSR, subject of the root, ...).
        what: &'static str,
        /// The name as text.
        name: String,
        /// Why it cannot be copied.
        reason: String,
    },
    /// A profile value is out of range.
    #[error("invalid profile value {field}: {reason}")]
    InvalidProfile {
        /// The field.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The signer's public key is malformed or does not fit its declared algorithm.
    #[error("the signer's public key is unusable for {algorithm}: {reason}")]
    SignerKey {
        /// The algorithm the signer declared.
        algorithm: crate::SignatureAlgorithm,
        /// What is wrong.
        reason: String,
    },
    /// The signer's key is not the key of the issuing certificate.
    #[error(
        "the signing key does not belong to the issuer certificate `{issuer}`; use the key the issuer certificate was made for"
    )]
    SignerMismatch {
        /// Subject of the issuer certificate.
        issuer: String,
    },
    /// The issuer certificate cannot issue CA certificates.
    #[error("the issuer certificate `{issuer}` cannot sign CA certificates: {reason}")]
    IssuerNotCa {
        /// Subject of the issuer certificate.
        issuer: String,
        /// What is missing (CA flag, keyCertSign, path length).
        reason: String,
    },
    /// The issuer certificate is expired or not yet valid.
    #[error(
        "the issuer certificate `{issuer}` is not valid now (valid {not_before} to {not_after}); renew the root first"
    )]
    IssuerNotValidNow {
        /// Subject of the issuer certificate.
        issuer: String,
        /// Start of its validity.
        not_before: String,
        /// End of its validity.
        not_after: String,
    },
    /// The requested validity would outlast the issuer.
    #[error(
        "the issuer certificate `{issuer}` expires {issuer_not_after}, before the requested end of validity {requested_not_after}; request at most {max_days} days or renew the root"
    )]
    IssuerExpiresTooSoon {
        /// Subject of the issuer certificate.
        issuer: String,
        /// End of the issuer's validity.
        issuer_not_after: String,
        /// The end of validity that was asked for.
        requested_not_after: String,
        /// The longest validity that would fit, in whole days.
        max_days: i64,
    },
    /// The signer failed.
    #[error("signing the certificate failed")]
    Sign(#[source] SignError),
    /// rcgen refused to build the certificate or request.
    #[error("cannot encode the {what}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
    /// The certificate just signed does not verify under the issuer's key: the signer produced a
    /// bad signature.
    #[error(
        "the signature made by the signer does not verify under the issuer's public key; check that the signer's algorithm matches its key"
    )]
    BadSignature,
    /// A certificate does not carry the expected public key.
    #[error("the certificate `{subject}` does not carry the {expected} public key")]
    KeyMismatch {
        /// Subject of the certificate.
        subject: String,
        /// Which key was expected (the CSR's, the signer's, ...).
        expected: &'static str,
    },
    /// The chain is empty.
    #[error(
        "the certificate chain is empty; expected the istiod CA certificate followed by the root"
    )]
    ChainEmpty,
    /// The chain does not end in a self-signed root.
    #[error(
        "the certificate chain does not end with a self-signed root (last: `{last}`); append the root certificate"
    )]
    ChainMissingRoot {
        /// Subject of the last certificate.
        last: String,
    },
    /// A certificate in the chain is not issued by the next one.
    #[error(
        "the certificate chain is out of order: certificate {index} (`{subject}`) is not issued by the next one (`{next}`); order it leaf first, root last"
    )]
    ChainOrder {
        /// Zero-based index of the certificate.
        index: usize,
        /// Its subject.
        subject: String,
        /// Subject of the certificate that follows it.
        next: String,
    },
    /// The chain holds only the root.
    #[error(
        "the certificate chain has {found} certificate(s), only the root; put the istiod CA certificate before it"
    )]
    ChainTooShort {
        /// How many certificates it holds.
        found: usize,
    },
    /// The chain's root is not the expected trust anchor.
    #[error("the chain's root `{found}` is not the expected root `{expected}`")]
    ChainRootMismatch {
        /// Subject of the expected root.
        expected: String,
        /// Subject of the chain's root.
        found: String,
    },
    /// A certificate in the chain should be a CA and is not.
    #[error("certificate {index} (`{subject}`) in the chain is not a CA certificate")]
    ChainNotCa {
        /// Zero-based index of the certificate.
        index: usize,
        /// Its subject.
        subject: String,
    },
    /// Path validation ([`crate::verify_path`]) rejected the chain.
    #[error(
        "the certificate chain is rejected: {}",
        crate::verify::render_problems(problems)
    )]
    ChainRejected {
        /// The findings.
        problems: Vec<crate::ChainProblem>,
    },
    /// OpenSSL's path validation rejected the chain.
    #[error("the certificate chain does not verify (depth {depth}, `{subject}`): {reason}")]
    ChainVerify {
        /// Depth of the failing certificate (0 = first).
        depth: u32,
        /// Its subject.
        subject: String,
        /// OpenSSL's verdict.
        reason: String,
    },
    /// A key file or passphrase file could not be read.
    #[error("cannot read {what} {}", path.display())]
    ReadFile {
        /// What the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The private key could not be parsed.
    #[error(
        "cannot parse the private key {source_name}: expected PEM or DER (PKCS#8, SEC1 or PKCS#1)"
    )]
    KeyParse {
        /// Where the key came from.
        source_name: String,
    },
    /// The private key is encrypted and no passphrase was given.
    #[error("the private key {source_name} is encrypted; pass a passphrase file")]
    KeyPassphraseNeeded {
        /// Where the key came from.
        source_name: String,
    },
    /// The passphrase does not decrypt the private key.
    #[error("the passphrase does not decrypt the private key {source_name}")]
    KeyPassphraseWrong {
        /// Where the key came from.
        source_name: String,
    },
    /// The passphrase file is empty.
    #[error("the passphrase file {} is empty", path.display())]
    PassphraseEmpty {
        /// The file.
        path: PathBuf,
    },
    /// The private key is of a kind this crate does not sign with.
    #[error(
        "the private key {source_name} is {kind}; use ECDSA P-256, ECDSA P-384 or RSA of at least 2048 bits"
    )]
    KeyUnsupported {
        /// Where the key came from.
        source_name: String,
        /// What it is.
        kind: String,
    },
    /// Writing an output file failed.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An OpenSSL call failed.
    #[error("openssl failed while {operation}")]
    OpenSsl {
        /// What was being done.
        operation: &'static str,
        /// OpenSSL's error stack.
        #[source]
        source: openssl::error::ErrorStack,
    },
}

impl Error {
    /// Wraps an OpenSSL error with the operation it interrupted.
    pub(crate) fn openssl(
        operation: &'static str,
    ) -> impl FnOnce(openssl::error::ErrorStack) -> Self {
        move |source| Self::OpenSsl { operation, source }
    }

    /// The policy violations, when the CSR was rejected by policy.
    pub fn policy_violations(&self) -> &[PolicyViolation] {
        match self {
            Self::PolicyRejected { violations } => violations,
            _ => &[],
        }
    }
}

fn join(violations: &[PolicyViolation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
