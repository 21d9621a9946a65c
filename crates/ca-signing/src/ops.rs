//! The admin's operations end to end, as the CLI runs them: every check happens before the
//! first output file is written, so a rejected input leaves the output directory untouched.

use std::path::{Path, PathBuf};

use crate::cert::Certificate;
use crate::chain::{CertChain, ChainReport, check_cert_matches_csr};
use crate::csr::{CsrReport, review_csr};
use crate::encoding::{FileMode, write_file_atomic};
use crate::error::Result;
use crate::issue::sign_istiod_ca;
use crate::policy::{CsrPolicy, CsrPurpose};
use crate::profile::IstiodCaProfile;
use crate::secret::SecretLayout;
use crate::signer::Signer;

/// File names written by [`sign_istiod_ca_to_dir`].
pub mod files {
    /// The istiod CA certificate alone.
    pub const CA_CERT: &str = "ca-cert.pem";
    /// The istiod CA certificate, then the root.
    pub const CERT_CHAIN: &str = "cert-chain.pem";
    /// The root certificate.
    pub const ROOT_CERT: &str = "root-cert.pem";
    /// The `istio-ca-cert` Secret manifest.
    pub const ISTIO_CA_CERT_SECRET: &str = "istio-ca-cert.secret.json";
}

/// Inputs of [`sign_istiod_ca_to_dir`].
#[derive(Debug, Clone, Copy)]
pub struct SignIstiodCaRequest<'a> {
    /// The CSR, PEM or DER.
    pub csr: &'a [u8],
    /// The root certificate, PEM or DER.
    pub root_cert: &'a [u8],
    /// The policy the CSR must meet.
    pub policy: &'a CsrPolicy,
    /// The istiod CA profile.
    pub profile: &'a IstiodCaProfile,
}

/// What [`sign_istiod_ca_to_dir`] produced.
#[derive(Debug, Clone)]
pub struct SignedIstiodCa {
    /// The CSR review.
    pub review: CsrReport,
    /// The istiod CA certificate.
    pub istiod_ca: Certificate,
    /// `cert-chain.pem`.
    pub chain: CertChain,
    /// The verification of the chain.
    pub verification: ChainReport,
    /// The files written.
    pub files: Vec<PathBuf>,
}

/// Reviews istiod's CSR, signs it with the root key, builds and verifies `cert-chain.pem`, and
/// only then writes `ca-cert.pem`, `cert-chain.pem`, `root-cert.pem` and the `istio-ca-cert`
/// Secret manifest into `out_dir`.
///
/// `signer` may block (an HSM key); run this on a blocking thread from async code.
///
/// # Errors
/// Any review, signing or verification error (nothing is written then), or
/// [`crate::Error::Write`].
pub fn sign_istiod_ca_to_dir(
    request: &SignIstiodCaRequest<'_>,
    signer: &dyn Signer,
    out_dir: &Path,
) -> Result<SignedIstiodCa> {
    let csr = review_csr(request.csr, request.policy, CsrPurpose::IstiodCa)?;
    let root = Certificate::parse(request.root_cert)?;
    let istiod_ca = sign_istiod_ca(&csr, &root, signer, request.profile)?;
    let chain = CertChain::build(&istiod_ca, &root)?;
    let verification = chain.verify(Some(&root))?;
    check_cert_matches_csr(&istiod_ca, csr.csr())?;
    let secret = SecretLayout::istio_ca_cert(&chain)?;

    let mut written = Vec::new();
    for (name, bytes) in [
        (files::CA_CERT, istiod_ca.pem().into_bytes()),
        (files::CERT_CHAIN, chain.to_pem().into_bytes()),
        (files::ROOT_CERT, root.pem().into_bytes()),
        (
            files::ISTIO_CA_CERT_SECRET,
            secret.to_manifest_json().as_bytes().to_vec(),
        ),
    ] {
        let path = out_dir.join(name);
        write_file_atomic(&path, &bytes, FileMode::Public)?;
        written.push(path);
    }
    Ok(SignedIstiodCa {
        review: csr.report().clone(),
        istiod_ca,
        chain,
        verification,
        files: written,
    })
}

/// Verifies a `cert-chain.pem` (optionally against the expected root) and writes the
/// `istio-ca-cert` Secret manifest to `out_file` only if it verifies.
///
/// # Errors
/// Any parsing or verification error (nothing is written then), or [`crate::Error::Write`].
pub fn write_istio_ca_cert_secret(
    chain_pem: &[u8],
    expected_root: Option<&[u8]>,
    out_file: &Path,
) -> Result<ChainReport> {
    let chain = CertChain::parse_pem(chain_pem)?;
    let root = expected_root.map(Certificate::parse).transpose()?;
    let report = chain.verify(root.as_ref())?;
    let secret = SecretLayout::istio_ca_cert(&chain)?;
    write_file_atomic(
        out_file,
        secret.to_manifest_json().as_bytes(),
        FileMode::Public,
    )?;
    Ok(report)
}
