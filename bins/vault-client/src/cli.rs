//! Command line: flags, their environment variables and defaults.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use cli_common::{LogFormat, parse_duration};
use vault_bootstrap::agent::{AgentConfig, DEFAULT_JWT_PATH, OutputFiles, SecretLocation};
use vault_bootstrap::{Connection, KvVersion, RetryPolicy, VaultAddr};

/// Vault client sidecar for istiod.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Exit codes: 0 success, 1 failure (e.g. login refused), 2 usage, \
                  3 invalid configuration, 4 Vault unavailable or sealed, 130 interrupted"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// Log format on stderr (`RUST_LOG` sets the filter).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Ask the server whether it is initialised and unsealed.
    Health {
        #[command(flatten)]
        conn: ConnectionArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Log in with the service-account JWT, fetch the HSM credentials and write them; keep
    /// them current until stopped (or once, with `--once`).
    Run(Box<RunArgs>),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
}

/// How to reach Vault.
#[derive(Debug, Args)]
pub(crate) struct ConnectionArgs {
    /// Vault or OpenBao address.
    #[arg(long, env = "VAULT_ADDR")]
    pub(crate) vault_addr: String,
    /// CA certificate file (PEM) to trust for the server, in addition to the system roots.
    #[arg(long, env = "VAULT_CACERT")]
    pub(crate) vault_cacert: Option<PathBuf>,
    /// Directory of CA certificates (`*.pem`, `*.crt`), used when no CA file is given.
    #[arg(long, env = "VAULT_CAPATH")]
    pub(crate) vault_capath: Option<PathBuf>,
    /// Namespace to work in.
    #[arg(long, env = "VAULT_NAMESPACE")]
    pub(crate) vault_namespace: Option<String>,
    /// Do not verify the server's TLS certificate. Insecure; for debugging only.
    #[arg(long)]
    pub(crate) tls_skip_verify: bool,
    /// Per-request timeout (`10s`, `1m 30s`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
    /// Attempts per request on connection errors, 5xx and 429.
    #[arg(long, default_value_t = 5)]
    pub(crate) retries: u32,
}

/// The agent's settings (`values.hsm.vaultAuth*` of the install).
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) conn: ConnectionArgs,
    /// Kubernetes auth path: `auth/asm-c1/hsm/login` (the guide's `vaultAuthPath`) or `asm-c1/hsm`.
    #[arg(long, env = "VAULT_AUTH_PATH")]
    pub(crate) auth_path: String,
    /// Role to log in as.
    #[arg(long, env = "VAULT_AUTH_ROLE", default_value = "istiod")]
    pub(crate) role: String,
    /// File holding the service-account JWT.
    #[arg(long, env = "VAULT_AUTH_JWT_PATH", default_value = DEFAULT_JWT_PATH)]
    pub(crate) jwt_path: PathBuf,
    /// Secret path `<mount>/<path>` (`asm-c1/hsm`).
    #[arg(long, env = "VAULT_SECRET_PATH")]
    pub(crate) secret_path: String,
    /// KV version of the secret's mount.
    #[arg(long, value_parser = ["1", "2"], default_value = "1")]
    pub(crate) kv_version: String,
    /// Directory for the credential files.
    #[arg(
        long,
        env = "HSM_CREDENTIALS_DIR",
        default_value = "/var/run/secrets/hsm"
    )]
    pub(crate) output_dir: PathBuf,
    /// File name for the client certificate (`clientcert`).
    #[arg(long, default_value = "client-cert.pem")]
    pub(crate) client_cert_file: String,
    /// File name for the client key (`clientkey`).
    #[arg(long, default_value = "client-key.pem")]
    pub(crate) client_key_file: String,
    /// File name for the server certificate (`servercert`).
    #[arg(long, default_value = "server-cert.pem")]
    pub(crate) server_cert_file: String,
    /// File name for the PIN (`PIN`).
    #[arg(long, default_value = "pin")]
    pub(crate) pin_file: String,
    /// How often to fetch the secret again (`5m`, `1h`); the token is renewed as its lease
    /// requires, independently.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub(crate) refresh_interval: Duration,
    /// How long to wait after a failure before trying again; doubled after each further
    /// failure, up to the refresh interval.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) retry_interval: Duration,
    /// File created while the credentials are in place (for exec readiness probes).
    #[arg(long)]
    pub(crate) ready_file: Option<PathBuf>,
    /// Address to serve `/readyz`, `/healthz` and `/metrics` on (e.g. `0.0.0.0:15021`).
    #[arg(long)]
    pub(crate) listen: Option<String>,
    /// Fetch once, write the files and exit (init container).
    #[arg(long)]
    pub(crate) once: bool,
}

impl RunArgs {
    pub(crate) fn agent_config(&self) -> vault_bootstrap::Result<AgentConfig> {
        let kv_version = if self.kv_version == "2" {
            KvVersion::V2
        } else {
            KvVersion::V1
        };
        Ok(AgentConfig {
            auth_path: self.auth_path.clone(),
            role: self.role.clone(),
            jwt_path: self.jwt_path.clone(),
            secret: SecretLocation::parse(&self.secret_path, kv_version)?,
            files: OutputFiles {
                dir: self.output_dir.clone(),
                client_cert: self.client_cert_file.clone(),
                client_key: self.client_key_file.clone(),
                server_cert: self.server_cert_file.clone(),
                pin: self.pin_file.clone(),
            },
            refresh_interval: self.refresh_interval,
            retry_interval: self.retry_interval,
            ready_file: self.ready_file.clone(),
        })
    }
}

impl ConnectionArgs {
    /// The connection these flags describe.
    pub(crate) fn connection(&self) -> vault_bootstrap::Result<Connection> {
        let addr = VaultAddr::parse(&self.vault_addr)?;
        let mut conn = Connection::new(addr)
            .with_timeout(self.timeout)
            .with_namespace(self.vault_namespace.clone())
            .with_insecure_skip_verify(self.tls_skip_verify)
            .with_retry(RetryPolicy {
                attempts: self.retries.max(1),
                ..RetryPolicy::default()
            });
        if let Some(path) = &self.vault_cacert {
            conn = conn.with_ca_cert_file(path)?;
        } else if let Some(dir) = &self.vault_capath {
            conn = conn.with_ca_path(dir)?;
        }
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_flags_reach_the_agent_config() {
        let cli = Cli::try_parse_from([
            "vault-client",
            "run",
            "--vault-addr=http://127.0.0.1:8200",
            "--auth-path=asm-c1/hsm",
            "--secret-path=asm-c1/hsm",
            "--refresh-interval=1h 30m",
            "--retry-interval=250ms",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run: {cli:?}");
        };
        let config = args.agent_config().unwrap();
        assert_eq!(config.refresh_interval, Duration::from_secs(5400));
        assert_eq!(config.retry_interval, Duration::from_millis(250));
        assert_eq!(args.conn.timeout, Duration::from_secs(10));
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
