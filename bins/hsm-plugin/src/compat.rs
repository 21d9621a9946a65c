//! Flags and environment variables of the Thales `k8s-kms-plugin` that a manifest or runbook
//! may pass, and what hsm-plugin makes of each (KMS-PROTOCOL.md 2.6, W8, W16).
//!
//! | Thales | here |
//! |---|---|
//! | `--p11-lib`, `P11_LIB` | the PKCS#11 module (also `--p11-lib` of every command) |
//! | `--p11-label`, `P11_TOKEN` | the token label (alias of `--p11-token`) |
//! | `--kek-id`, `KEK_ID` or `kek-id` | `generate-kek`: the id; `serve`: logged as the KEK istiod uses |
//! | `--ca-id`, `CA_ID` or `ca-id` | the CA anchor id(s) |
//! | `--provider p11\|softhsm\|luna\|dpod` | accepted; every IV length is read on decrypt, so the provider changes nothing |
//! | `--algorithm aes-gcm` | accepted; `aes-cbc` (TPM2 tokens) is refused as unsupported |
//! | `--auto-create` | accepted; keys are never created implicitly (stray keys, W16): use `generate-kek` |
//! | `--enable-server` | accepted; no plaintext TCP listener is opened (it would expose LoadSKey, W8) |
//! | `--disable-socket` | accepted; the Unix socket is the only transport, so it is served anyway |
//! | `--p11-pin` | refused (exit 3): argv is readable by every user via ps and /proc |

use clap::{ArgAction, Args};

/// A configuration the plugin refuses before it touches anything (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConfigError(pub(crate) String);

/// Why `--p11-pin` is refused, and what to use instead.
pub(crate) fn p11_pin_refused() -> ConfigError {
    ConfigError(
        "--p11-pin is refused: a PIN on the command line is visible to every user of the \
         machine (ps, /proc/<pid>/cmdline) and lands in shell history; put the PIN in a file \
         readable only by the plugin (chmod 600) and pass it with P11_PIN_FILE (or \
         --p11-pin-file), or set the P11_PIN environment variable; nothing was changed"
            .to_owned(),
    )
}

/// The Thales `serve` flags without an equivalent here.
#[derive(Debug, Clone, Args)]
pub(crate) struct ThalesServeArgs {
    /// Thales provider (p11, softhsm, luna, dpod): accepted; hsm-plugin reads any GCM IV
    /// length, so it changes nothing.
    #[arg(long, env = "K8S_KMS_PLUGIN_SERVE_PROVIDER", value_name = "NAME")]
    provider: Option<String>,
    /// Thales KMS algorithm: aes-gcm (the only one served); aes-cbc is refused.
    #[arg(long, env = "K8S_KMS_PLUGIN_SERVE_ALGORITHM", value_name = "ALG")]
    algorithm: Option<String>,
    /// Thales: create missing keys at start. Accepted, but keys are never created
    /// implicitly here; create them with `generate-kek`.
    #[arg(long, env = "K8S_KMS_PLUGIN_SERVE_AUTO_CREATE", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = ArgAction::Set, value_name = "BOOL")]
    auto_create: Option<bool>,
    /// Thales: also serve plaintext TCP. Accepted, but no TCP listener is opened: it would
    /// hand `LoadSKey` and the KEKs to the network. The Unix socket is served.
    #[arg(long, env = "K8S_KMS_PLUGIN_SERVE_ENABLE_SERVER", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = ArgAction::Set, value_name = "BOOL")]
    enable_server: Option<bool>,
    /// Thales: do not serve the socket. Accepted; the Unix socket is the only transport, so it
    /// is served anyway.
    #[arg(long, env = "K8S_KMS_PLUGIN_SERVE_DISABLE_SOCKET", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = ArgAction::Set, value_name = "BOOL")]
    disable_socket: Option<bool>,
}

impl ThalesServeArgs {
    /// Refuses what cannot be honoured; logs what is accepted without effect.
    pub(crate) fn apply(&self) -> Result<(), ConfigError> {
        if let Some(provider) = &self.provider {
            if !matches!(provider.as_str(), "p11" | "softhsm" | "luna" | "dpod") {
                return Err(ConfigError(format!(
                    "--provider {provider:?} is not supported: use p11, softhsm, luna or dpod \
                     (all of them reach the token through P11_LIB)"
                )));
            }
            tracing::info!(%provider, "--provider accepted: the PKCS#11 module is P11_LIB; any GCM IV length is read on decrypt");
        }
        if let Some(algorithm) = &self.algorithm
            && algorithm != "aes-gcm"
        {
            return Err(ConfigError(format!(
                "--algorithm {algorithm:?} is not supported: hsm-plugin encrypts with aes-gcm \
                 in the HSM (the Thales aes-cbc mode for TPM2 tokens is not implemented)"
            )));
        }
        if self.auto_create == Some(true) {
            tracing::warn!(
                "--auto-create accepted without effect: keys are never created implicitly (stray keys in the partition); create the KEK with `hsm-plugin generate-kek`"
            );
        }
        if self.enable_server == Some(true) {
            tracing::warn!(
                "--enable-server accepted without effect: no plaintext TCP listener is opened (it would expose LoadSKey and the KEKs to the network); serving the Unix socket"
            );
        }
        if self.disable_socket == Some(true) {
            tracing::warn!(
                "--disable-socket accepted without effect: the Unix socket is hsm-plugin's only transport and is served"
            );
        }
        Ok(())
    }
}

/// A Thales setting whose environment variable is named after the flag (`kek-id`, `ca-id`),
/// when the flag and its upper-case variable are absent.
pub(crate) fn hyphenated_env(value: Option<String>, name: &str) -> Option<String> {
    value.or_else(|| std::env::var(name).ok().filter(|v| !v.is_empty()))
}
