//! What `vault-client` prints on stdout.

use std::io::Write as _;

use vault_bootstrap::{Connection, Health};

use crate::cli::Output;

/// The `health` answer, as one line of text or one JSON object.
pub(crate) fn health(format: Output, conn: &Connection, health: &Health) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
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
        ),
        Output::Text => writeln!(
            out,
            "{}: initialized={} sealed={} version={}",
            conn.addr(),
            health.initialized,
            health.sealed,
            health.version
        ),
    }
}
