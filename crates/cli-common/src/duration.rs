//! Duration flags (`--timeout 10s`, `--refresh-interval 5m`), parsed by humantime.

use std::time::Duration;

/// The longest duration a flag accepts: 100 years. Anything longer is a typo, and adding it to
/// a clock reading could overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses a flag's duration: `90s`, `5m`, `1h 30m`, `250ms`, `2days` (humantime's units), or a
/// bare number of seconds (`90`). Zero is refused, and so is anything above [`MAX_DURATION`]
/// (`5000000000000h`) or too large to represent, instead of overflowing later.
///
/// Use it as a clap `value_parser`; clap's error then names the flag and the value:
///
/// ```
/// use std::time::Duration;
/// use clap::Parser as _;
///
/// #[derive(Debug, clap::Parser)]
/// struct Cli {
///     #[arg(long, default_value = "5m", value_parser = cli_common::parse_duration)]
///     refresh_interval: Duration,
/// }
///
/// let cli = Cli::try_parse_from(["x", "--refresh-interval", "1h 30m"]).unwrap();
/// assert_eq!(cli.refresh_interval, Duration::from_secs(5400));
/// let err = Cli::try_parse_from(["x", "--refresh-interval", "5000000000000h"]).unwrap_err();
/// assert!(err.to_string().contains("--refresh-interval"));
/// ```
///
/// # Errors
/// A message saying what is wrong with `text` and what a valid duration looks like.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let parsed = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| "the number is too large".to_owned())
    } else {
        humantime::parse_duration(t).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => "the number is too large".to_owned(),
            other => other.to_string(),
        })
    };
    match parsed {
        Ok(d) if d.is_zero() => Err("must be longer than zero".to_owned()),
        Ok(d) if d > MAX_DURATION => Err("too large: the limit is 100 years".to_owned()),
        Ok(d) => Ok(d),
        Err(reason) => Err(format!(
            "{reason}; expected a duration such as 30s, 5m, 1h 30m or 250ms"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_bare_seconds_and_combinations_parse() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2days"), Ok(Duration::from_secs(172_800)));
    }

    #[test]
    fn zero_overflow_and_unknown_units_are_refused_with_a_reason() {
        let zero = parse_duration("0s").unwrap_err();
        assert!(zero.contains("longer than zero"), "{zero}");
        for huge in [
            "5000000000000h",
            "99999999999999999999",
            "18446744073709551615y",
        ] {
            let err = parse_duration(huge).unwrap_err();
            assert!(err.contains("too large"), "{huge}: {err}");
        }
        let unit = parse_duration("5x").unwrap_err();
        assert!(
            unit.contains("unknown time unit") && unit.contains("30s"),
            "{unit}"
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-5s").is_err());
    }
}
