//! The embedded environment mesh-hsm's tests, examples, benchmarks and `meshca demo` run in.
//!
//! Everything here is real except Kubernetes: [`SoftHsm`] creates throw-away tokens in a real
//! SoftHSM2 PKCS#11 module, and [`OpenBao`] runs a real OpenBao server process. A fixture whose
//! tool is missing fails with an install hint (`cargo xtask setup`); it never skips.
//!
//! SoftHSM2 reads its configuration file once per process, when the module is initialised, so
//! every token of a process lives in one token directory. The configuration path comes from
//! `SOFTHSM2_CONF`, which `.cargo/config.toml` sets for every cargo-run process; the sandbox
//! writes the file (and the token directory beside it) on first use.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sandbox::Error> {
//! let hsm = sandbox::SoftHsm::builder().label("asm-ca").create()?;
//! let bao = sandbox::OpenBao::builder().start().await?;
//! println!("token {} (serial {}) and Vault at {}", hsm.label(), hsm.serial(), bao.addr());
//! # Ok(())
//! # }
//! ```

pub mod cluster;
mod error;
pub mod istiod;
pub mod kube;
mod openbao;
mod secret_file;
mod softhsm;
mod tools;

pub use cluster::{LocalCluster, LocalClusterBuilder, NodeCapacity};
pub use error::{Error, Result};
pub use openbao::{OpenBao, OpenBaoBuilder, Storage};
pub use secret_file::write_secret_file;
pub use softhsm::{SoftHsm, SoftHsmBuilder};
pub use tools::{bao_binary, pkcs11_module, softhsm_conf_path};

/// Installs the process-wide rustls crypto provider (ring), which vaultrs, reqwest and kube
/// need before their first TLS client is built. Idempotent.
pub fn init_crypto() {
    // An error means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Routes `tracing` output to the test harness's captured output. Idempotent; honours
/// `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
}

/// A random alphanumeric string of `len` characters, for labels, PINs and tokens.
pub fn random_string(len: usize) -> String {
    use rand::Rng as _;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}
