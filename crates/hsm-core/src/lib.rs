//! PKCS#11 layer of mesh-hsm.
//!
//! This crate owns every call into the HSM: it loads a PKCS#11 module once per process, finds
//! tokens by label (never by slot number, which HSMs renumber between restarts), logs in once
//! and keeps sessions alive across session loss ([`HsmToken`]). On top of that it provides
//! what the ASM 1.8 HSM flow does inside the HSM, compatible byte for byte with the Thales
//! `k8s-kms-plugin`:
//!
//! - key-encryption keys ([`HsmToken::ensure_kek`]) and CA anchors
//!   ([`HsmToken::import_ca_cert`]), read from the token on every use;
//! - the compact JWE envelope and DEK-as-JWK ([`jwe`], [`HsmToken::wrap_dek`]);
//! - the Istio KMS operations ([`IstioKms`], served by [`HsmIstioKms`]);
//! - the Kubernetes KMS v2 and v1beta1 operations ([`KubeKms`], served by [`HsmKubeKms`]);
//! - hsm-key mode: CA key pairs generated and used inside the HSM ([`HsmKey`]).
//!
//! Existing keys are used only when their material never left the HSM (sensitive,
//! non-extractable, never extractable) and they are of the type asked for
//! ([`Error::WeakObject`] otherwise). Chains are verified by ca-signing's one verifier
//! ([`ca_signing::verify_path`]), which holds the istiod CA to its profile.
//!
//! It does no networking; `kms-grpc` puts the ports on a socket. PKCS#11 calls block (a
//! network HSM answers in milliseconds): the async ports run them on tokio's blocking pool,
//! except the per-request operations of a token that answers in microseconds, which run on
//! the calling task (a hop to another thread would cost more than the call; see
//! [`HsmToken::typical_call`]). Synchronous callers call [`HsmToken`] methods from a thread
//! that may block.
//!
//! ```no_run
//! use hsm_core::{HsmToken, KekId, Mode, Module, TokenLabel, TokenOptions};
//! use secrecy::SecretString;
//!
//! # fn main() -> hsm_core::Result<()> {
//! let module = Module::load("/usr/lib/softhsm/libsofthsm2.so")?;
//! let label = TokenLabel::new("asm-ca")?;
//! let pin = hsm_core::pin::pin_from_file("/run/pin".as_ref(), Default::default())?;
//! let token = HsmToken::open(&module, &label, pin, TokenOptions::default())?;
//! let kek = KekId::new("asm-kek")?;
//! println!("KEK {kek}: {}", token.ensure_kek(&kek, Mode::Apply)?);
//! # Ok(())
//! # }
//! ```

#![allow(
    clippy::doc_markdown,
    reason = "RPC names (GenerateDEK, VerifyCertChain) and Go identifiers read wrong in backticks"
)]

mod anchor;
mod der;
mod envelope;
mod error;
mod hsm_key;
mod ids;
mod istio;
mod kek;
mod kube;
mod module;
mod ports;
mod protection;
mod session;
mod skey;
mod token;
mod verify;

pub mod jwe;
pub mod pin;

pub use anchor::{AnchorInfo, ImportPolicy, go_dn_string};
pub use envelope::{Iv, IvLength, KeyRef, Opened};
pub use error::{Error, ErrorKind, Result, WeakKey};
pub use hsm_key::{HsmKey, KeyAlgorithm};
pub use ids::{CaId, KekId, KeyPairId, MAX_ID_LEN, Mode, ObjectLabel, Outcome};
pub use istio::{
    AuthenticatedDecryptRequest, AuthenticatedEncryptRequest, GenerateDekRequest,
    GenerateSKeyRequest, HsmIstioKms, ImportCaCertRequest, IstioConfig, LoadSKeyRequest,
    VerifyCertChainRequest,
};
pub use kek::KekInfo;
pub use kube::{
    HsmKubeKms, KubeDecryptRequest, KubeEncryptRequest, KubeEncryptResponse, KubeKey,
    KubeKmsConfig, KubeStatus, V1Version,
};
pub use module::{DEFAULT_SOFTHSM_MODULE, Module, slot_list_lock};
pub use ports::{HsmAdmin, HsmAdminService, IstioKms, KubeKms};
#[cfg(any(test, feature = "mock"))]
pub use ports::{MockHsmAdmin, MockIstioKms, MockKubeKms};
pub use session::{Health, HsmToken, TokenOptions};
pub use skey::{SKeySpec, SecretPem};
pub use token::{TokenInfo, TokenLabel};
pub use verify::{ChainProblem, VerifiedChain, VerifyPolicy};
