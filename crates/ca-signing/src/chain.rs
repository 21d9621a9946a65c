//! `cert-chain.pem`: building it (istiod CA first, root last) and verifying it (through
//! [`crate::verify_path`]).

use std::fmt;

use openssl::x509::X509;
use serde::Serialize;

use crate::cert::{Certificate, same_public_key};
use crate::csr::Csr;
use crate::error::{Error, Result};
use crate::signer::{SignatureAlgorithm, Signer};
use crate::verify::{PathPolicy, default_subject, verify_path};

/// A certificate chain, leaf (the istiod CA) first and the self-signed root last.
#[derive(Debug, Clone)]
pub struct CertChain {
    certs: Vec<Certificate>,
}

impl CertChain {
    /// `cert-chain.pem` for istiod: the istiod CA certificate, then the root. Checks the order.
    ///
    /// # Errors
    /// [`Error::ChainOrder`] when `istiod_ca` is not issued by `root`,
    /// [`Error::ChainMissingRoot`] when `root` is not self-signed.
    pub fn build(istiod_ca: &Certificate, root: &Certificate) -> Result<Self> {
        let chain = Self {
            certs: vec![istiod_ca.clone(), root.clone()],
        };
        chain.check_structure()?;
        Ok(chain)
    }

    /// Wraps certificates in the given order (not checked until [`CertChain::verify`]).
    ///
    /// # Errors
    /// [`Error::ChainEmpty`].
    pub fn from_certs(certs: Vec<Certificate>) -> Result<Self> {
        if certs.is_empty() {
            return Err(Error::ChainEmpty);
        }
        Ok(Self { certs })
    }

    /// Parses a PEM bundle in its order (not checked until [`CertChain::verify`]).
    ///
    /// # Errors
    /// [`Error::Encoding`], [`Error::CertParse`], [`Error::ChainEmpty`].
    pub fn parse_pem(input: &[u8]) -> Result<Self> {
        Self::from_certs(Certificate::parse_pem_bundle(input)?)
    }

    /// The PEM bundle, in order.
    pub fn to_pem(&self) -> String {
        self.certs.iter().map(Certificate::pem).collect()
    }

    /// The certificates, in order.
    pub fn certs(&self) -> &[Certificate] {
        &self.certs
    }

    /// The first certificate (the istiod CA in `cert-chain.pem`).
    pub fn first(&self) -> &Certificate {
        // invariant: constructors reject an empty chain
        &self.certs[0]
    }

    /// The last certificate (the root in a well-formed chain).
    pub fn last(&self) -> &Certificate {
        &self.certs[self.certs.len() - 1]
    }

    /// Order and termination: each certificate issued by the next, the last self-signed, at
    /// least one certificate before the root.
    fn check_structure(&self) -> Result<()> {
        for (index, pair) in self.certs.windows(2).enumerate() {
            if !pair[0].is_issued_by(&pair[1]) {
                return Err(Error::ChainOrder {
                    index,
                    subject: pair[0].subject().to_owned(),
                    next: pair[1].subject().to_owned(),
                });
            }
        }
        let last = self.last();
        if !last.is_self_signed() {
            return Err(Error::ChainMissingRoot {
                last: last.subject().to_owned(),
            });
        }
        if self.certs.len() < 2 {
            return Err(Error::ChainTooShort {
                found: self.certs.len(),
            });
        }
        Ok(())
    }

    /// Verifies the chain as istiod and the KMS plugin will: order, a self-signed root
    /// (optionally the expected one), every certificate CA:TRUE, then [`verify_path`] with the
    /// root as the only trust anchor (signatures, CA flags, pathlen, validity windows, strict
    /// X.509 checks) and the first certificate held to the istiod CA profile (CA:TRUE,
    /// pathlen:0, keyCertSign).
    ///
    /// # Errors
    /// [`Error::ChainOrder`], [`Error::ChainMissingRoot`], [`Error::ChainTooShort`],
    /// [`Error::ChainRootMismatch`], [`Error::ChainNotCa`], [`Error::ChainRejected`].
    pub fn verify(&self, expected_root: Option<&Certificate>) -> Result<ChainReport> {
        self.check_structure()?;
        let root = self.last();
        if let Some(expected) = expected_root
            && expected.der() != root.der()
        {
            return Err(Error::ChainRootMismatch {
                expected: expected.subject().to_owned(),
                found: root.subject().to_owned(),
            });
        }
        for (index, cert) in self.certs.iter().enumerate() {
            if !cert.is_ca() {
                return Err(Error::ChainNotCa {
                    index,
                    subject: cert.subject().to_owned(),
                });
            }
        }
        self.path_to_root(self.first(), 1, &PathPolicy::default())?;
        Ok(ChainReport {
            certs: self.certs.iter().map(ChainEntry::from).collect(),
        })
    }

    /// Verifies a leaf (e.g. a workload certificate) against this chain.
    ///
    /// # Errors
    /// As [`CertChain::verify`] for the chain itself, then [`Error::ChainRejected`] for the
    /// leaf.
    pub fn verify_leaf(&self, leaf: &Certificate) -> Result<()> {
        self.verify(None)?;
        self.path_to_root(leaf, 0, &PathPolicy::default().istiod_ca(false))
    }

    /// [`verify_path`] of `target` to the root, through the chain's certificates from
    /// `from` on (the root excluded).
    fn path_to_root(&self, target: &Certificate, from: usize, policy: &PathPolicy) -> Result<()> {
        let untrusted: Vec<X509> = self.certs[from..self.certs.len() - 1]
            .iter()
            .map(|c| c.openssl().to_owned())
            .collect();
        verify_path(
            &[self.last().openssl().to_owned()],
            target.openssl(),
            &untrusted,
            None,
            policy,
            &default_subject,
        )
        .map(|_| ())
        .map_err(|problems| Error::ChainRejected { problems })
    }
}

impl fmt::Display for CertChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_pem())
    }
}

/// What verification saw, certificate by certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// In chain order.
    pub certs: Vec<ChainEntry>,
}

/// One verified certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainEntry {
    /// Subject.
    pub subject: String,
    /// Serial, colon-separated hex.
    pub serial: String,
    /// Start of validity (RFC 3339).
    pub not_before: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// `pathLenConstraint`, if any.
    pub path_len: Option<u32>,
}

impl From<&Certificate> for ChainEntry {
    fn from(c: &Certificate) -> Self {
        let fmt = |t: time::OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| t.to_string())
        };
        Self {
            subject: c.subject().to_owned(),
            serial: c.serial_hex(),
            not_before: fmt(c.not_before()),
            not_after: fmt(c.not_after()),
            path_len: c.basic_constraints().and_then(|b| b.path_len),
        }
    }
}

impl fmt::Display for ChainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.certs.iter().enumerate() {
            let path_len = c
                .path_len
                .map_or_else(String::new, |n| format!(", pathlen:{n}"));
            writeln!(
                f,
                "[{i}] {} (serial {}, {} to {}{path_len})",
                c.subject, c.serial, c.not_before, c.not_after
            )?;
        }
        Ok(())
    }
}

/// Checks that the signed certificate carries the CSR's public key.
///
/// # Errors
/// [`Error::KeyMismatch`].
pub fn check_cert_matches_csr(cert: &Certificate, csr: &Csr) -> Result<()> {
    if same_public_key(
        cert.public_key_spki_der(),
        &csr.report().public_key.spki_der,
    ) {
        Ok(())
    } else {
        Err(Error::KeyMismatch {
            subject: cert.subject().to_owned(),
            expected: "CSR's",
        })
    }
}

/// Checks that `signer` holds the private key of `cert`: same public key, and a fresh
/// signature by `signer` verifies under the certificate's key.
///
/// # Errors
/// [`Error::KeyMismatch`], [`Error::Sign`].
pub fn check_signer_matches_cert(cert: &Certificate, signer: &dyn Signer) -> Result<()> {
    let mismatch = || Error::KeyMismatch {
        subject: cert.subject().to_owned(),
        expected: "signer's",
    };
    if !same_public_key(cert.public_key_spki_der(), &signer.public_key_spki_der()) {
        return Err(mismatch());
    }
    let mut challenge = [0u8; 32];
    openssl::rand::rand_bytes(&mut challenge).map_err(Error::openssl("drawing a challenge"))?;
    let signature = signer.sign(&challenge).map_err(Error::Sign)?;
    let digest = match signer.algorithm() {
        SignatureAlgorithm::EcdsaP384Sha384 => openssl::hash::MessageDigest::sha384(),
        _ => openssl::hash::MessageDigest::sha256(),
    };
    let key = cert
        .openssl()
        .public_key()
        .map_err(Error::openssl("reading the certificate's key"))?;
    let ok = openssl::sign::Verifier::new(digest, &key)
        .and_then(|mut v| {
            v.update(&challenge)?;
            v.verify(&signature)
        })
        .unwrap_or(false);
    if ok { Ok(()) } else { Err(mismatch()) }
}
