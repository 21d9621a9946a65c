//! Certificate work for the mesh CA (FLOW.md steps 6 and 10): CSR review and policy, the root,
//! istiod intermediate CA and workload profiles, issuing through a [`Signer`] (a software key
//! here, an HSM key in `hsm-core`), chain building and verification, the Secret layouts istiod
//! reads, and the release signature check.
//!
//! Issuing uses rcgen, so any [`Signer`] (including a PKCS#11 key) can sign; parsing and
//! verification use OpenSSL (`X509Store`). The crate does no networking and talks to no cluster.
//!
//! ```no_run
//! use ca_signing::{CsrPolicy, CsrPurpose, IstiodCaProfile, RootProfile, SoftwareSigner};
//!
//! # fn main() -> ca_signing::Result<()> {
//! let root_key = SoftwareSigner::generate(Default::default(), "root key")?;
//! let root = ca_signing::issue_root(&RootProfile::default(), &root_key)?;
//! let csr_pem = std::fs::read("istiod.csr").map_err(|source| ca_signing::Error::ReadFile {
//!     what: "the CSR",
//!     path: "istiod.csr".into(),
//!     source,
//! })?;
//! let reviewed = ca_signing::review_csr(&csr_pem, &CsrPolicy::default(), CsrPurpose::IstiodCa)?;
//! println!("{}", reviewed.report());
//! let istiod_ca =
//!     ca_signing::sign_istiod_ca(&reviewed, &root, &root_key, &IstiodCaProfile::default())?;
//! # let _ = istiod_ca;
//! # Ok(())
//! # }
//! ```

mod cert;
mod chain;
mod csr;
mod encoding;
mod error;
mod issue;
pub mod ops;
mod policy;
mod profile;
mod pubkey;
pub mod release;
mod secret;
pub mod signer;
mod software;
mod verify;

pub use cert::{BasicConstraints, Certificate, IssuedCert};
pub use chain::{
    CertChain, ChainEntry, ChainReport, check_cert_matches_csr, check_signer_matches_cert,
};
pub use csr::{
    Csr, CsrReport, RequestedBasicConstraints, RequestedExtension, ReviewedCsr, San, review_csr,
};
pub use encoding::{FileMode, write_file_atomic};
pub use error::{Error, Result};
pub use issue::{create_csr, issue_root, issue_workload, sign_istiod_ca};
pub use policy::{CsrPolicy, CsrPurpose, ISTIOD_DNS_NAME, PolicyViolation};
pub use profile::{IstiodCaProfile, KeyAlgorithm, RootProfile, Subject, WorkloadProfile};
pub use pubkey::{KeyKind, PublicKeyInfo};
pub use secret::{ISTIO_NAMESPACE, SecretLayout};
#[cfg(any(test, feature = "mock"))]
pub use signer::MockSigner;
pub use signer::{SignError, SignatureAlgorithm, Signer};
pub use software::{SoftwareSigner, read_passphrase_file};
pub use verify::{
    ChainProblem, PathPolicy, VerifiedPath, default_subject, render_problems, verify_path,
};
