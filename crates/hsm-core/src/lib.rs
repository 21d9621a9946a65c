//! PKCS#11 layer of mesh-hsm.
//!
//! This crate owns every call into the HSM: it loads a PKCS#11 module once per process, finds
//! tokens by label (never by slot number, which HSMs renumber between restarts) and, as the
//! crate grows, manages key-encryption keys, CA anchors and the KMS operations istiod needs.
//! It does no networking and no X.509 building; those live in `kms-grpc` and `ca-signing`.
//!
//! PKCS#11 calls block (a network HSM answers in milliseconds), so async callers must run them
//! on a blocking thread (`tokio::task::spawn_blocking`), never on an async worker.
//!
//! ```no_run
//! use hsm_core::{Module, TokenLabel};
//!
//! # fn main() -> hsm_core::Result<()> {
//! let module = Module::load("/usr/lib/softhsm/libsofthsm2.so")?;
//! let label = TokenLabel::new("asm-ca")?;
//! let token = module.find_token(&label)?;
//! println!("token {} has serial {}", token.label, token.serial);
//! # Ok(())
//! # }
//! ```

mod error;
mod module;
mod token;

pub use error::{Error, Result};
pub use module::{DEFAULT_SOFTHSM_MODULE, Module};
pub use token::{TokenInfo, TokenLabel};
