//! `vault-client`: the sidecar that logs in to Vault with istiod's service-account token and
//! fetches the HSM credentials. Today it checks a server's health.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use vault_bootstrap::{Connection, VaultAddr};

/// Vault client sidecar for istiod.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Exit codes: 0 success, 1 failure, 2 usage, 3 invalid configuration, 4 Vault unavailable"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask the server whether it is initialised and unsealed.
    Health {
        /// Vault or OpenBao address.
        #[arg(long, env = "VAULT_ADDR")]
        vault_addr: String,
        /// CA certificate (PEM) to trust for the server, in addition to the system roots.
        #[arg(long, env = "VAULT_CACERT")]
        vault_cacert: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    vault_bootstrap::install_crypto_provider();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            exit_code(&err)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Health {
            vault_addr,
            vault_cacert,
            output,
        } => {
            let mut conn = Connection::new(VaultAddr::parse(&vault_addr)?);
            if let Some(path) = vault_cacert {
                let pem = std::fs::read(&path).map_err(|e| {
                    anyhow::Error::new(ConfigError(format!(
                        "cannot read VAULT_CACERT {}: {e}",
                        path.display()
                    )))
                })?;
                conn = conn.with_ca_cert_pem(pem);
            }
            let health = conn.health().await?;
            let mut out = std::io::stdout().lock();
            match output {
                Output::Json => writeln!(
                    out,
                    "{}",
                    serde_json::json!({
                        "addr": conn.addr().as_str(),
                        "initialized": health.initialized,
                        "sealed": health.sealed,
                        "standby": health.standby,
                        "version": health.version,
                    })
                )?,
                Output::Text => writeln!(
                    out,
                    "{}: initialized={} sealed={} version={}",
                    conn.addr(),
                    health.initialized,
                    health.sealed,
                    health.version
                )?,
            }
            // A sealed or uninitialised server cannot hand out credentials.
            Ok(if health.initialized && !health.sealed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(4)
            })
        }
    }
}

/// A configuration problem the operator must fix (exit code 3).
#[derive(Debug)]
struct ConfigError(String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn exit_code(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if cause.is::<ConfigError>() {
            return ExitCode::from(3);
        }
        if let Some(e) = cause.downcast_ref::<vault_bootstrap::Error>() {
            return match e {
                vault_bootstrap::Error::InvalidAddr { .. }
                | vault_bootstrap::Error::InvalidCaCert { .. } => ExitCode::from(3),
                e if e.is_unavailable() => ExitCode::from(4),
                _ => ExitCode::FAILURE,
            };
        }
    }
    ExitCode::FAILURE
}
