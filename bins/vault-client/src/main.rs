//! `vault-client`: the sidecar that logs in to Vault with istiod's service-account token,
//! fetches the HSM credentials and keeps the HSM plugin's files current
//! ([`vault_bootstrap::agent`] does the work). `health` checks a server.

mod cli;
mod output;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use vault_bootstrap::HttpVault;
use vault_bootstrap::agent::{Agent, Metrics};

use cli::{Cli, Command, ConnectionArgs, Output, RunArgs};

#[tokio::main]
async fn main() -> ExitCode {
    vault_bootstrap::install_crypto_provider();
    let cli = Cli::parse();
    let log_format = cli.log_format;
    // vaultrs and rustify log every failed request at ERROR; the errors that matter are
    // reported once by vault-client itself.
    cli_common::init_logging(log_format, "info,vaultrs=off,rustify=off");
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            cli_common::report_error(log_format, &format!("{err:#}"));
            exit_code(&err)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Health { conn, output } => health(&conn, output).await,
        Command::Run(args) => run_agent(*args).await,
    }
}

async fn health(args: &ConnectionArgs, format: Output) -> anyhow::Result<ExitCode> {
    let conn = args.connection()?;
    let health = conn.health().await?;
    output::health(format, &conn, &health)?;
    // A sealed or uninitialised server cannot hand out credentials.
    Ok(if health.initialized && !health.sealed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}

async fn run_agent(args: RunArgs) -> anyhow::Result<ExitCode> {
    let vault = Arc::new(HttpVault::new(args.conn.connection()?, None)?);
    let mut agent = Agent::new(args.agent_config()?, vault, Arc::new(Metrics::default()));

    if args.once {
        let fetched = agent.run_once().await;
        // An init container's token is of no use once it exits.
        agent.revoke().await;
        let report = fetched.context("fetching the HSM credentials")?;
        tracing::info!(
            written = report.written.len(),
            unchanged = report.unchanged.len(),
            "HSM credentials in place"
        );
        return Ok(ExitCode::SUCCESS);
    }

    let status = match &args.listen {
        Some(listen) => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding the status listener on {listen}"))?;
            tracing::info!(addr = %listen, "serving /readyz, /healthz and /metrics");
            Some(listener)
        }
        None => None,
    };
    let signals = Signals::install()?;
    let interrupted = vault_bootstrap::agent::run_sidecar(agent, status, signals.recv()).await;
    Ok(if interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// SIGTERM (normal pod shutdown) and SIGINT, installed before the agent starts.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// Waits for either; true for SIGINT.
    async fn recv(mut self) -> bool {
        tokio::select! {
            _ = self.term.recv() => false,
            _ = self.int.recv() => true,
        }
    }
}

fn exit_code(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<vault_bootstrap::Error>() {
            return if e.is_unavailable() {
                ExitCode::from(4)
            } else if e.is_config() {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            };
        }
    }
    ExitCode::FAILURE
}
