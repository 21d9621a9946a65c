//! `hsm-plugin`: the PKCS#11 KMS plugin that runs beside istiod and on the operator's
//! workstation. Flags and environment variables follow `k8s-kms-plugin` (`P11_LIB`,
//! `P11_TOKEN`, `P11_SLOT`, `P11_PIN_FILE`, `SOCKET`; `ChrystokiConfigurationPath` is read by
//! the Luna module itself).

mod commands;
mod compat;
mod serve;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use cli_common::LogFormat;

/// PKCS#11 KMS plugin for istiod.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Exit codes: 0 success, 1 failure, 2 usage, 3 configuration refused (nothing changed), \
                  4 HSM or plugin unavailable\n\n\
                  Thales k8s-kms-plugin flags are accepted (--p11-lib, --p11-label, --kek-id, --ca-id, \
                  --provider, --algorithm, --auto-create, --enable-server, --disable-socket); \
                  --p11-pin is refused: use P11_PIN_FILE or P11_PIN."
)]
struct Cli {
    /// Log format on stderr (`RUST_LOG` sets the filter).
    #[arg(long, global = true, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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
        /// Token (slot) label; all tokens when absent (`--p11-label` is the Thales spelling).
        #[arg(long, env = "P11_TOKEN", visible_alias = "p11-label")]
        p11_token: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Serve the KMS gRPC services on a Unix socket. The policy profile defaults to sidecar
    /// inside a Kubernetes pod and to admin on a workstation (see --profile).
    Serve(Box<serve::ServeArgs>),
    /// Create a KEK in the HSM (prints `KEK ID: <id>`).
    GenerateKek(commands::GenerateKekArgs),
    /// Import the root CA certificate into the HSM as a trust anchor.
    ImportCa(commands::ImportCaArgs),
    /// Decrypt the CSR of Secret istio-ca-cert-csr (its `.data` as JSON).
    DecryptCsr(commands::DecryptCsrArgs),
    /// Verify a certificate chain against the anchors in the HSM.
    VerifyCert(commands::VerifyCertArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli_common::init_logging(cli.log_format, "info");
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
        command => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                match command {
                    Command::Serve(args) => serve::run(*args).await,
                    Command::GenerateKek(args) => commands::generate_kek(args).await,
                    Command::ImportCa(args) => commands::import_ca(args).await,
                    Command::DecryptCsr(args) => commands::decrypt_csr(args).await,
                    Command::VerifyCert(args) => commands::verify_cert(args).await,
                    Command::TokenInfo { .. } => Ok(()),
                }
            })
        }
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
        if cause.downcast_ref::<compat::ConfigError>().is_some()
            || cause
                .downcast_ref::<kms_grpc::Error>()
                .is_some_and(kms_grpc::Error::is_unsafe_socket_directory)
            || matches!(
                cause.downcast_ref::<kms_grpc::socket::Error>(),
                Some(kms_grpc::socket::Error::UnsafeDirectory { .. })
            )
        {
            return ExitCode::from(3);
        }
        if let Some(e) = cause.downcast_ref::<kms_grpc::Error>()
            && (matches!(e, kms_grpc::Error::Connect { .. })
                || e.code() == Some(kms_grpc::Code::Unavailable))
        {
            return ExitCode::from(4);
        }
        if let Some(e) = cause.downcast_ref::<hsm_core::Error>()
            && e.kind() == hsm_core::ErrorKind::Unavailable
        {
            return ExitCode::from(4);
        }
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
