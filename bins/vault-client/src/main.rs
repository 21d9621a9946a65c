//! `vault-client`: the sidecar that logs in to Vault with istiod's service-account token,
//! fetches the HSM credentials and keeps the HSM plugin's files current. `health` checks a
//! server.

mod cli;

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use vault_bootstrap::agent::{Agent, Metrics};
use vault_bootstrap::{Connection, HttpVault};

use cli::{Cli, Command, ConnectionArgs, Output, RunArgs};

#[tokio::main]
async fn main() -> ExitCode {
    vault_bootstrap::install_crypto_provider();
    let cli = Cli::parse();
    // vaultrs and rustify log every failed request at ERROR; the errors that matter are
    // reported once by vault-client itself.
    cli_common::init_logging(cli.log_format, "info,vaultrs=off,rustify=off");
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
        Command::Health { conn, output } => health(&conn, output).await,
        Command::Run(args) => run_agent(*args).await,
    }
}

fn connection(args: &ConnectionArgs) -> anyhow::Result<Connection> {
    let addr = vault_bootstrap::VaultAddr::parse(&args.vault_addr)?;
    let mut conn = Connection::new(addr)
        .with_timeout(args.timeout.0)
        .with_namespace(args.vault_namespace.clone())
        .with_insecure_skip_verify(args.tls_skip_verify)
        .with_retry(vault_bootstrap::RetryPolicy {
            attempts: args.retries.max(1),
            ..vault_bootstrap::RetryPolicy::default()
        });
    if let Some(path) = &args.vault_cacert {
        conn = conn.with_ca_cert_file(path)?;
    } else if let Some(dir) = &args.vault_capath {
        conn = conn.with_ca_path(dir)?;
    }
    Ok(conn)
}

async fn health(args: &ConnectionArgs, output: Output) -> anyhow::Result<ExitCode> {
    let conn = connection(args)?;
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

async fn run_agent(args: RunArgs) -> anyhow::Result<ExitCode> {
    let conn = connection(&args.conn)?;
    let config = args.agent_config()?;
    let vault = Arc::new(HttpVault::new(conn, None)?);
    let metrics = Arc::new(Metrics::default());
    let mut agent = Agent::new(config, vault, Arc::clone(&metrics));

    if args.once {
        let report = agent
            .run_once()
            .await
            .context("fetching the HSM credentials")?;
        tracing::info!(
            written = report.written.len(),
            unchanged = report.unchanged.len(),
            "HSM credentials in place"
        );
        return Ok(ExitCode::SUCCESS);
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(listen) = &args.listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the status listener on {listen}"))?;
        tracing::info!(addr = %listen, "serving /readyz, /healthz and /metrics");
        let mut rx = stop_rx.clone();
        tokio::spawn(vault_bootstrap::agent::serve_status(
            listener,
            Arc::clone(&metrics),
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            },
        ));
    }
    let mut rx = stop_rx;
    let agent_task = tokio::spawn(agent.run(async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }));
    let interrupted = wait_for_signal().await?;
    let _ = stop_tx.send(true);
    let _ = agent_task.await;
    Ok(if interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// Waits for SIGTERM (normal pod shutdown, returns false) or SIGINT (returns true).
async fn wait_for_signal() -> anyhow::Result<bool> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => Ok(false),
        _ = int.recv() => Ok(true),
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
