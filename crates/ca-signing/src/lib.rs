//! Certificate work for the mesh CA: CSR review, the root and istiod CA profiles, signing
//! through a `Signer` (a software key or an HSM key), chain building and verification.
//!
//! Today it provides the release check of FLOW.md step 6: [`release::verify_detached`]
//! verifies a downloaded file against a detached ECDSA P-256/SHA-256 signature, accepting
//! exactly what `openssl dgst -sha256 -verify` accepts.

pub mod release;
pub mod signer;

pub use signer::{SignError, SignatureAlgorithm, Signer};
