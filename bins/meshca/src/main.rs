//! `meshca`: the operator CLI for installing a mesh whose CA key is protected by an HSM.

mod demo;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use mesh_install::steps::Step;

/// Install Istio / Anthos Service Mesh with the mesh CA key in an HSM and its credentials in Vault.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Exit codes: 0 success, 1 failure, 2 usage, 3 invalid configuration, \
                  4 dependency unavailable"
)]
struct Cli {
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the guide's steps and the crate that owns each.
    Steps,
    /// Run the flow end to end on this machine against a fresh SoftHSM2 token, a real OpenBao
    /// dev server and the emulated cluster (the parts that are built).
    Demo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    sandbox::init_crypto();
    match run(&cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            exit_code(&err)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Steps => {
            steps(cli.output)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => demo::run(cli.output == Output::Json),
    }
}

fn steps(output: Output) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            let doc: Vec<_> = Step::ALL
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "number": s.number(),
                        "name": s,
                        "title": s.title(),
                        "owner": s.owner(),
                    })
                })
                .collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        }
        Output::Text => {
            for s in Step::ALL {
                writeln!(out, "{s:<60} [{}]", s.owner())?;
            }
        }
    }
    Ok(())
}

fn exit_code(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<sandbox::Error>()
            && matches!(
                e,
                sandbox::Error::MissingTool { .. } | sandbox::Error::OpenBaoStart { .. }
            )
        {
            return ExitCode::from(4);
        }
        if let Some(e) = cause.downcast_ref::<std::io::Error>()
            && e.kind() == std::io::ErrorKind::BrokenPipe
        {
            return ExitCode::SUCCESS;
        }
    }
    ExitCode::FAILURE
}
