//! `hsm-plugin`: the PKCS#11 KMS plugin that runs beside istiod and on the operator's
//! workstation. Flags and environment variables follow `k8s-kms-plugin` (`P11_LIB`,
//! `P11_TOKEN`, ...).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// PKCS#11 KMS plugin for istiod.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Exit codes: 0 success, 1 failure, 2 usage, 4 HSM unavailable"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the tokens of a PKCS#11 module, or the one token labelled --p11-token.
    TokenInfo {
        /// PKCS#11 module.
        #[arg(long, env = "P11_LIB", default_value = hsm_core::DEFAULT_SOFTHSM_MODULE)]
        p11_lib: PathBuf,
        /// Token (slot) label; all tokens when absent.
        #[arg(long, env = "P11_TOKEN")]
        p11_token: Option<String>,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            exit_code(&err)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::TokenInfo {
            p11_lib,
            p11_token,
            output,
        } => token_info(&p11_lib, p11_token.as_deref(), output),
    }
}

fn token_info(lib: &std::path::Path, label: Option<&str>, output: Output) -> anyhow::Result<()> {
    let module = hsm_core::Module::load(lib)?;
    let tokens = match label {
        Some(label) => vec![module.find_token(&hsm_core::TokenLabel::new(label)?)?],
        None => module.tokens()?,
    };
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            let doc: Vec<_> = tokens
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "label": t.label,
                        "serial": t.serial,
                        "model": t.model,
                        "manufacturer": t.manufacturer,
                        "user_pin_initialized": t.user_pin_initialized,
                        "user_pin_locked": t.user_pin_locked,
                    })
                })
                .collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        }
        Output::Text => {
            for t in &tokens {
                writeln!(
                    out,
                    "{}\tserial={}\tmodel={}\tuser-pin={}",
                    t.label,
                    t.serial,
                    t.model,
                    if t.user_pin_locked {
                        "locked"
                    } else if t.user_pin_initialized {
                        "set"
                    } else {
                        "unset"
                    }
                )?;
            }
        }
    }
    Ok(())
}

fn exit_code(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<hsm_core::Error>() {
            if matches!(
                e,
                hsm_core::Error::ModuleMissing { .. } | hsm_core::Error::ModuleLoad { .. }
            ) {
                return ExitCode::from(4);
            }
            if matches!(e, hsm_core::Error::InvalidLabel { .. }) {
                return ExitCode::from(2);
            }
        }
        if let Some(e) = cause.downcast_ref::<std::io::Error>()
            && e.kind() == std::io::ErrorKind::BrokenPipe
        {
            return ExitCode::SUCCESS;
        }
    }
    ExitCode::FAILURE
}
