//! Start-up pieces shared by the `meshca`, `hsm-plugin` and `vault-client` binaries.
//!
//! Only binaries depend on this crate: [`init_logging`] installs the global `tracing`
//! subscriber (text or JSON lines, chosen by a `--log-format` flag of type [`LogFormat`]), which
//! a library must never do; [`parse_duration`] parses duration flags.

mod duration;

use std::io::IsTerminal as _;

use clap::builder::PossibleValue;
use tracing_subscriber::EnvFilter;

pub use duration::{MAX_DURATION, parse_duration};

/// How log lines are written to stderr; a `--log-format` flag's value (`text` or `json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

// Written by hand rather than derived so that `--help` lists the bare values, as the binaries
// always have, instead of one described value per line.
impl clap::ValueEnum for LogFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Text, Self::Json]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(match self {
            Self::Text => "text",
            Self::Json => "json",
        }))
    }
}

/// Installs the process-wide `tracing` subscriber: events go to stderr in `format`, with ANSI
/// colours only when stderr is a terminal.
///
/// The filter comes from `RUST_LOG` when it is set and valid, otherwise from `default_filter`
/// (an [`EnvFilter`] directive such as `"info"` or `"info,vaultrs=off"`).
///
/// # Panics
///
/// If a global subscriber is already installed; call it once, at the start of `main`.
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Reports the error that ends the process, in the log's format: `error: <message>` on stderr
/// for [`LogFormat::Text`], one more JSON event (level `ERROR`, the message in field `error`)
/// for [`LogFormat::Json`], so that every stderr line stays a JSON object. Pass the whole chain
/// (`format!("{err:#}")` for an `anyhow::Error`); it must hold no secret.
pub fn report_error(format: LogFormat, message: &str) {
    match format {
        LogFormat::Text => eprintln!("error: {message}"),
        LogFormat::Json => tracing::error!(error = message, "exiting on error"),
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum as _;

    use super::LogFormat;

    #[test]
    fn log_format_parses_the_flag_values() {
        assert_eq!(LogFormat::from_str("text", false), Ok(LogFormat::Text));
        assert_eq!(LogFormat::from_str("json", false), Ok(LogFormat::Json));
        assert!(LogFormat::from_str("yaml", false).is_err());
        let names: Vec<String> = LogFormat::value_variants()
            .iter()
            .filter_map(LogFormat::to_possible_value)
            .map(|v| v.get_name().to_owned())
            .collect();
        assert_eq!(names, ["text", "json"]);
    }
}
