//! The API server's audit log, read back: which requests reached it, by whom, with what result.
//! Tests use it where the emulator used to record requests, so "a second run writes nothing" is
//! checked against the real server's own account.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::api::ClusterApi;
use crate::{Error, Result};

/// One audited request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// The Kubernetes verb (`get`, `list`, `create`, `patch`, `update`, `delete`, ...).
    pub verb: String,
    /// The request URI, query included (`dryRun=All` shows there).
    pub uri: String,
    /// The authenticated user.
    pub user: String,
    /// The response code.
    pub code: u16,
}

impl AuditEvent {
    /// Whether the verb can change something (dry runs included: see [`Self::uri`]).
    pub fn is_write(&self) -> bool {
        !matches!(self.verb.as_str(), "get" | "list" | "watch")
    }

    fn parse(line: &str) -> Option<Self> {
        let event: Value = serde_json::from_str(line).ok()?;
        Some(Self {
            verb: event["verb"].as_str()?.to_owned(),
            uri: event["requestURI"].as_str()?.to_owned(),
            user: event["user"]["username"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            code: event["responseStatus"]["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or_default(),
        })
    }
}

/// Every event logged so far. The API server logs a request just after answering it, so a marker
/// request is sent first and the log read once the marker shows: everything answered before the
/// call is then in the result.
pub(crate) async fn events(api: &ClusterApi, log: &Path) -> Result<Vec<AuditEvent>> {
    let marker = format!(
        "sandbox-audit-marker-{}",
        crate::random_string(12).to_lowercase()
    );
    api.probe_namespace(&marker).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).map_err(Error::io("reading the audit log", log))?;
        let mut events: Vec<AuditEvent> = text.lines().filter_map(AuditEvent::parse).collect();
        if events.iter().any(|e| e.uri.ends_with(&marker)) {
            events.retain(|e| !e.uri.contains("sandbox-audit-marker-"));
            return Ok(events);
        }
        if Instant::now() >= deadline {
            return Err(Error::ClusterApi {
                operation: "reading the audit log",
                detail: format!("the marker request {marker} was not logged within 10s"),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
