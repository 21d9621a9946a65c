//! The `vault-client` sidecar's logic: log in with the pod's service-account JWT through the
//! Kubernetes auth method, read the HSM credential secret, write the files the HSM plugin needs
//! (mode 0600, atomically, only when the content changed) and re-fetch on an interval.
//!
//! The token's lifecycle: it is renewed after two thirds of its lease, asking for the login's
//! lease again. A renewal that comes back shorter was capped by the max TTL, and a
//! non-renewable token cannot be renewed: then the agent logs in again after two thirds of
//! what is left, before the token dies. Failed renewals and logins are retried with bounded
//! exponential backoff while the token in hand keeps serving reads. A token replaced before it
//! expired, and the token in hand when the agent stops, are revoked (`auth/token/revoke-self`).
//!
//! Readiness means "the credential files are in place and match Vault": see [`Metrics::is_ready`],
//! the optional ready file, and [`serve_status`]'s `/readyz`.

mod config;
mod files;
mod metrics;
mod session;
mod sidecar;
mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use tokio::time::Instant;
use zeroize::Zeroizing;

pub use config::{
    AgentConfig, DEFAULT_JWT_PATH, DEFAULT_REFRESH_INTERVAL, DEFAULT_RETRY_INTERVAL, FetchReport,
    OutputFiles, SecretLocation, normalise_auth_path,
};
pub use files::write_if_changed;
pub use metrics::Metrics;
pub use sidecar::run_sidecar;
pub use status::serve_status;

use crate::{AgentVault, Error, Result, SecretFields, fields};
use session::{Backoff, Due, Session};

/// How long revoking the token at shutdown may take before the agent gives up on it.
pub const REVOKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The agent: one per process.
pub struct Agent {
    config: AgentConfig,
    vault: Arc<dyn AgentVault>,
    metrics: Arc<Metrics>,
    session: Option<Session>,
    /// Paces renewals and logins that failed while the token in hand is still valid.
    token_backoff: Backoff,
    /// Paces cycles that failed.
    cycle_backoff: Backoff,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .field("logged_in", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent talking to `vault`, counting into `metrics`.
    pub fn new(config: AgentConfig, vault: Arc<dyn AgentVault>, metrics: Arc<Metrics>) -> Self {
        let mut config = config;
        config.auth_path = normalise_auth_path(&config.auth_path);
        let backoff = Backoff::new(
            config.retry_interval,
            config.refresh_interval.max(config.retry_interval),
        );
        Self {
            config,
            vault,
            metrics,
            session: None,
            token_backoff: backoff,
            cycle_backoff: backoff,
        }
    }

    /// The metrics this agent counts into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Logs in with the JWT file's current content; the new token replaces the one in hand,
    /// which is kept when the login fails.
    ///
    /// # Errors
    /// [`Error::ReadFile`] when the JWT cannot be read; [`Error::PermissionDenied`] when Vault
    /// refuses the service account; availability errors.
    #[tracing::instrument(skip_all, fields(vault.auth = %self.config.auth_path, vault.role = %self.config.role))]
    pub async fn login(&mut self) -> Result<()> {
        let result = async {
            let jwt =
                crate::token::read_token_file(&self.config.jwt_path).map_err(|e| match e {
                    Error::ReadFile { path, source, .. } => Error::ReadFile {
                        what: "the service-account JWT",
                        path,
                        source,
                    },
                    other => other,
                })?;
            self.vault
                .login_kubernetes(&self.config.auth_path, &self.config.role, &jwt)
                .await
        }
        .await;
        match result {
            Ok(login) => {
                tracing::info!(
                    lease_s = login.lease.as_secs(),
                    renewable = login.renewable,
                    policies = ?login.policies,
                    "logged in to Vault"
                );
                self.metrics.count_login(true);
                self.token_backoff.reset();
                let replaced = self
                    .session
                    .replace(Session::from_login(login, Instant::now()));
                // A token replaced before it expired (capped, non-renewable, failed renewal)
                // is of no further use: revoke it rather than leave it alive for its last third.
                if let Some(old) = replaced {
                    self.revoke_session(old, false).await;
                }
                Ok(())
            }
            Err(err) => {
                self.metrics.count_login(false);
                Err(err)
            }
        }
    }

    /// Renews the token when it is due, or logs in again when renewing cannot help (a
    /// non-renewable token, a renewal capped by the max TTL) or failed. Logs in when there is
    /// no valid token. When a renewal or login fails while the token in hand is still valid,
    /// that token stays in use and the attempt is repeated with backoff.
    ///
    /// # Errors
    /// As for [`Agent::login`], when no valid token is left.
    pub async fn keep_token_fresh(&mut self) -> Result<()> {
        let now = Instant::now();
        let due = match &self.session {
            Some(session) if !session.expired(now) => session.due(now),
            _ => {
                self.session = None;
                return self.login().await;
            }
        };
        match due {
            Due::Nothing => return Ok(()),
            Due::Renew => match self.renew().await {
                Ok(()) => return Ok(()),
                Err(err) => {
                    tracing::warn!(error = %err, "renewing the Vault token failed; logging in again");
                }
            },
            Due::Login => {
                tracing::debug!("the Vault token cannot be renewed further; logging in again");
            }
        }
        let Err(err) = self.login().await else {
            return Ok(());
        };
        let now = Instant::now();
        let retry = self.token_backoff.next();
        match &mut self.session {
            Some(session) if !session.expired(now) => {
                session.retry_at(now.checked_add(retry).unwrap_or(now));
                tracing::warn!(
                    error = %err,
                    retry_in_ms = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX),
                    "logging in to Vault again failed; the current token stays in use until it expires"
                );
                Ok(())
            }
            _ => {
                self.session = None;
                Err(err)
            }
        }
    }

    /// Renews the token in hand, asking for the login's lease again.
    async fn renew(&mut self) -> Result<()> {
        let Some(session) = &mut self.session else {
            return Err(no_session());
        };
        let asked = session.ttl();
        match self.vault.renew_self(session.token(), asked).await {
            Ok(renewed) => {
                self.metrics.count_renewal(true);
                self.token_backoff.reset();
                session.renewed(&renewed, Instant::now());
                if session.is_capped() {
                    tracing::info!(
                        lease_s = renewed.lease.as_secs(),
                        asked_s = asked.as_secs(),
                        "the Vault token reached its max TTL; logging in again before it expires"
                    );
                } else {
                    tracing::debug!(lease_s = renewed.lease.as_secs(), "token renewed");
                }
                Ok(())
            }
            Err(err) => {
                self.metrics.count_renewal(false);
                Err(err)
            }
        }
    }

    /// Revokes the token in hand (`auth/token/revoke-self`) so that it does not outlive the
    /// agent, waiting at most [`REVOKE_TIMEOUT`]. Failures are logged, not returned: the token
    /// then simply expires with its lease.
    pub async fn revoke(&mut self) {
        if let Some(session) = self.session.take() {
            self.revoke_session(session, true).await;
        }
    }

    /// Revokes `session`'s token unless it has expired, within [`REVOKE_TIMEOUT`]. Failures are
    /// logged at WARN when `last` (shutdown), else at DEBUG: a replaced batch token cannot be
    /// revoked and simply expires.
    async fn revoke_session(&self, session: Session, last: bool) {
        if session.expired(Instant::now()) {
            return;
        }
        let failure =
            match tokio::time::timeout(REVOKE_TIMEOUT, self.vault.revoke_self(session.token()))
                .await
            {
                Ok(Ok(())) => {
                    if last {
                        tracing::info!("Vault token revoked");
                    } else {
                        tracing::debug!("replaced Vault token revoked");
                    }
                    return;
                }
                Ok(Err(err)) => err.to_string(),
                Err(_) => format!("no answer within {} s", REVOKE_TIMEOUT.as_secs()),
            };
        if last {
            tracing::warn!(error = %failure, "revoking the Vault token failed; it expires with its lease");
        } else {
            tracing::debug!(error = %failure, "revoking the replaced Vault token failed; it expires with its lease");
        }
    }

    /// Reads the secret (logging in first when needed, and once more if the token was refused)
    /// and writes the files whose content changed.
    ///
    /// # Errors
    /// Login, read and file errors; [`Error::MissingField`] when the secret lacks a field.
    pub async fn fetch(&mut self) -> Result<FetchReport> {
        let result = self.fetch_inner().await;
        self.metrics.count_fetch(result.is_ok());
        match &result {
            Ok(report) => {
                self.metrics.set_ready(true);
                self.mark_ready(true)?;
                if !report.written.is_empty() {
                    tracing::info!(files = ?report.written, "HSM credential files written");
                }
            }
            Err(_) if !self.files_present() => {
                self.metrics.set_ready(false);
                self.mark_ready(false)?;
            }
            Err(_) => {}
        }
        result
    }

    async fn fetch_inner(&mut self) -> Result<FetchReport> {
        self.keep_token_fresh().await?;
        let secret = match self.read_secret().await {
            Err(err) if err.is_permission_denied() => {
                tracing::warn!(error = %err, "token refused; logging in again");
                self.session = None;
                self.login().await?;
                self.read_secret().await?
            }
            other => other?,
        };
        self.write_files(&secret)
    }

    async fn read_secret(&self) -> Result<SecretFields> {
        let loc = &self.config.secret;
        let session = self.session.as_ref().ok_or_else(no_session)?;
        self.vault
            .read_secret_with(session.token(), &loc.mount, loc.kv_version, &loc.path)
            .await?
            .ok_or_else(|| Error::MissingField {
                path: format!("{}/{}", loc.mount, loc.path),
                field: "(the whole secret)".to_owned(),
            })
    }

    fn write_files(&self, secret: &SecretFields) -> Result<FetchReport> {
        let targets = self.config.files.targets();
        // Check every field first so that a broken secret changes no file.
        for (field, _) in &targets {
            if secret.get(field).is_none() {
                return Err(Error::MissingField {
                    path: format!("{}/{}", self.config.secret.mount, self.config.secret.path),
                    field: (*field).to_owned(),
                });
            }
        }
        files::ensure_dir(&self.config.files.dir)?;
        let mut report = FetchReport::default();
        for (field, path) in targets {
            let Some(value) = secret.get(field) else {
                continue;
            };
            let mut bytes = Zeroizing::new(value.expose_secret().as_bytes().to_vec());
            if field == fields::PIN && !bytes.ends_with(b"\n") {
                bytes.push(b'\n');
            }
            if write_if_changed(&path, &bytes, "an HSM credential")? {
                self.metrics.count_file_write();
                report.written.push(path);
            } else {
                report.unchanged.push(path);
            }
        }
        Ok(report)
    }

    fn files_present(&self) -> bool {
        self.config.files.targets().iter().all(|(_, p)| p.is_file())
    }

    fn mark_ready(&self, ready: bool) -> Result<()> {
        let Some(path) = &self.config.ready_file else {
            return Ok(());
        };
        if ready {
            write_if_changed(path, b"ready\n", "the ready file").map(|_| ())
        } else {
            match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(Error::WriteFile {
                    what: "the ready file",
                    path: path.clone(),
                    source,
                }),
            }
        }
    }

    /// Logs in, fetches and writes the files once (the init-container mode).
    ///
    /// # Errors
    /// As for [`Agent::fetch`].
    pub async fn run_once(&mut self) -> Result<FetchReport> {
        self.fetch().await
    }

    /// Runs until `shutdown` completes, then revokes the token: fetches every refresh
    /// interval, keeps the token fresh (see [`Agent::keep_token_fresh`]), and after a failed
    /// cycle waits the retry interval, doubled after each further failure up to the refresh
    /// interval. Failures are logged and counted, never fatal, and the files stay in place, so
    /// the sidecar survives Vault restarts.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        // A ready file from an earlier container run proves nothing until the first fetch.
        let _ = self.mark_ready(false);
        loop {
            let wait = match self.fetch().await {
                Ok(_) => {
                    self.cycle_backoff.reset();
                    self.next_wait()
                }
                Err(err) => {
                    let wait = self.cycle_backoff.next();
                    tracing::warn!(
                        error = %err,
                        retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "fetching the HSM credentials failed"
                    );
                    wait
                }
            };
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!("shutting down");
        self.revoke().await;
    }

    /// Until the next fetch, or until the token needs attention if that comes first.
    fn next_wait(&self) -> Duration {
        let refresh = self.config.refresh_interval;
        self.session
            .as_ref()
            .and_then(|s| s.until_due(Instant::now()))
            .map_or(refresh, |due| refresh.min(due))
    }
}

fn no_session() -> Error {
    Error::InvalidConfig {
        field: "session",
        reason: "no Vault token; log in first".to_owned(),
    }
}

#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod tests;
