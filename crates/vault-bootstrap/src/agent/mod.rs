//! The `vault-client` sidecar's logic: log in with the pod's service-account JWT through the
//! Kubernetes auth method, read the HSM credential secret, write the files the HSM plugin needs
//! (mode 0600, atomically, only when the content changed), keep the token renewed (logging in
//! again before it expires or after a failure) and re-fetch on an interval.
//!
//! Readiness means "the credential files are in place and match Vault": see [`Metrics::is_ready`],
//! the optional ready file, and [`serve_status`]'s `/readyz`.

mod files;
mod metrics;
mod status;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use tokio::time::Instant;
use zeroize::Zeroizing;

pub use files::write_if_changed;
pub use metrics::Metrics;
pub use status::serve_status;

use crate::{AgentVault, Error, KvVersion, Login, Result, SecretFields, fields};

/// Where Kubernetes mounts the pod's service-account token (`values.hsm.vaultAuthJwtPath`).
pub const DEFAULT_JWT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// How often the secret is fetched again by default.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// How long to wait after a failed cycle before trying again, by default.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// Where the secret lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretLocation {
    /// KV mount (`asm-c1`).
    pub mount: String,
    /// Path inside the mount (`hsm`).
    pub path: String,
    /// KV version of the mount.
    pub kv_version: KvVersion,
}

impl SecretLocation {
    /// Splits a secret path as `values.hsm.vaultSecretPath` gives it (`asm-c1/hsm`, or
    /// `asm-c1/data/hsm` for KV v2) into mount and path.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when there is no `/` separating mount and path.
    pub fn parse(secret_path: &str, kv_version: KvVersion) -> Result<Self> {
        let trimmed = secret_path
            .trim()
            .trim_start_matches('/')
            .trim_start_matches("v1/")
            .trim_end_matches('/');
        let invalid = || Error::InvalidConfig {
            field: "secret path",
            reason: format!("{secret_path:?} must be <mount>/<path>, e.g. asm-c1/hsm"),
        };
        let (mount, rest) = trimmed.split_once('/').ok_or_else(invalid)?;
        let path = match kv_version {
            KvVersion::V1 => rest,
            KvVersion::V2 => rest.strip_prefix("data/").unwrap_or(rest),
        };
        if mount.is_empty() || path.is_empty() {
            return Err(invalid());
        }
        Ok(Self {
            mount: mount.to_owned(),
            path: path.to_owned(),
            kv_version,
        })
    }
}

/// Names of the four files written for the HSM plugin, inside one directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputFiles {
    /// The directory (created with mode 0700 when missing).
    pub dir: PathBuf,
    /// File for the `clientcert` field.
    pub client_cert: String,
    /// File for the `clientkey` field.
    pub client_key: String,
    /// File for the `servercert` field.
    pub server_cert: String,
    /// File for the `PIN` field.
    pub pin: String,
}

impl OutputFiles {
    /// The default names (`client-cert.pem`, `client-key.pem`, `server-cert.pem`, `pin`) in `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            client_cert: "client-cert.pem".to_owned(),
            client_key: "client-key.pem".to_owned(),
            server_cert: "server-cert.pem".to_owned(),
            pin: "pin".to_owned(),
        }
    }

    /// (secret field, file path) pairs.
    pub fn targets(&self) -> [(&'static str, PathBuf); 4] {
        [
            (fields::CLIENT_CERT, self.dir.join(&self.client_cert)),
            (fields::CLIENT_KEY, self.dir.join(&self.client_key)),
            (fields::SERVER_CERT, self.dir.join(&self.server_cert)),
            (fields::PIN, self.dir.join(&self.pin)),
        ]
    }
}

/// Everything the agent needs to know.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Auth mount path (`asm-c1/hsm`); see [`normalise_auth_path`] for the accepted forms.
    pub auth_path: String,
    /// Role to log in as (`istiod`).
    pub role: String,
    /// File holding the service-account JWT (read again at every login: projected tokens
    /// rotate).
    pub jwt_path: PathBuf,
    /// The secret.
    pub secret: SecretLocation,
    /// The files to write.
    pub files: OutputFiles,
    /// How often to fetch again.
    pub refresh_interval: Duration,
    /// How long to wait after a failed cycle.
    pub retry_interval: Duration,
    /// A file created when the credentials are in place and removed when they are not known
    /// to be (for exec readiness probes).
    pub ready_file: Option<PathBuf>,
}

/// Accepts `asm-c1/hsm`, `auth/asm-c1/hsm`, `auth/asm-c1/hsm/login` and `/v1/auth/.../login`
/// (the guide's `vaultAuthPath` is the login path) and returns the mount path `asm-c1/hsm`.
pub fn normalise_auth_path(path: &str) -> String {
    let p = path.trim().trim_matches('/');
    let p = p.strip_prefix("v1/").unwrap_or(p);
    let p = p.strip_prefix("auth/").unwrap_or(p);
    let p = p.strip_suffix("/login").unwrap_or(p);
    p.to_owned()
}

/// What one fetch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// Files rewritten because their content changed (or they were missing).
    pub written: Vec<PathBuf>,
    /// Files already up to date.
    pub unchanged: Vec<PathBuf>,
}

struct Session {
    token: secrecy::SecretString,
    renew_at: Instant,
    expires_at: Instant,
    renewable: bool,
}

impl Session {
    fn from_login(login: Login) -> Self {
        let now = Instant::now();
        // Renew (or log in again) after two thirds of the lease; a zero lease never expires.
        let lease = if login.lease.is_zero() {
            Duration::from_secs(365 * 24 * 3600)
        } else {
            login.lease
        };
        Self {
            token: login.token,
            renew_at: now + lease * 2 / 3,
            expires_at: now + lease,
            renewable: login.renewable,
        }
    }
}

/// The agent: one per process.
pub struct Agent {
    config: AgentConfig,
    vault: Arc<dyn AgentVault>,
    metrics: Arc<Metrics>,
    session: Option<Session>,
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
        Self {
            config,
            vault,
            metrics,
            session: None,
        }
    }

    /// The metrics this agent counts into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Logs in with the JWT file's current content.
    ///
    /// # Errors
    /// [`Error::ReadFile`] when the JWT cannot be read; [`Error::PermissionDenied`] when Vault
    /// refuses the service account; availability errors.
    #[tracing::instrument(skip_all, fields(vault.auth = %self.config.auth_path, vault.role = %self.config.role))]
    pub async fn login(&mut self) -> Result<()> {
        self.session = None;
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
                self.session = Some(Session::from_login(login));
                Ok(())
            }
            Err(err) => {
                self.metrics.count_login(false);
                Err(err)
            }
        }
    }

    /// Renews the token when it is due, logging in again when renewal is impossible or fails.
    /// Logs in when there is no session.
    ///
    /// # Errors
    /// As for [`Agent::login`].
    pub async fn keep_token_fresh(&mut self) -> Result<()> {
        let now = Instant::now();
        let Some(session) = &self.session else {
            return self.login().await;
        };
        if now < session.renew_at {
            return Ok(());
        }
        if session.renewable && now < session.expires_at {
            match self.vault.renew_self(&session.token).await {
                // A renewal capped near the token's max TTL is not worth keeping: log in again.
                Ok(renewed) if renewed.lease > self.config.retry_interval => {
                    self.metrics.count_renewal(true);
                    tracing::debug!(lease_s = renewed.lease.as_secs(), "token renewed");
                    let token = session.token.clone();
                    let mut next = Session::from_login(renewed);
                    next.token = token;
                    self.session = Some(next);
                    return Ok(());
                }
                Ok(_) => self.metrics.count_renewal(true),
                Err(err) => {
                    self.metrics.count_renewal(false);
                    tracing::warn!(error = %err, "token renewal failed; logging in again");
                }
            }
        }
        self.login().await
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
                self.login().await?;
                self.read_secret().await?
            }
            other => other?,
        };
        self.write_files(&secret)
    }

    async fn read_secret(&self) -> Result<SecretFields> {
        let loc = &self.config.secret;
        let token = self
            .session
            .as_ref()
            .map(|s| s.token.clone())
            .ok_or_else(|| Error::InvalidConfig {
                field: "session",
                reason: "no Vault token; log in first".to_owned(),
            })?;
        self.vault
            .read_secret_with(&token, &loc.mount, loc.kv_version, &loc.path)
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

    /// Runs until `shutdown` completes: fetches every refresh interval, renews the token before
    /// it expires, and after a failure waits the retry interval and starts over (logging in
    /// again). Failures are logged and counted, never fatal, so the sidecar survives Vault
    /// restarts.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        // A ready file from an earlier container run proves nothing until the first fetch.
        let _ = self.mark_ready(false);
        loop {
            let wait = match self.fetch().await {
                Ok(_) => self.next_wait(),
                Err(err) => {
                    tracing::warn!(error = %err, "fetching the HSM credentials failed");
                    // Start over with a fresh login next time: after a server restart or a
                    // revoked token that is the state that is known to work.
                    self.session = None;
                    self.config.retry_interval
                }
            };
            tokio::select! {
                () = &mut shutdown => {
                    tracing::info!("shutting down");
                    return;
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Until the next fetch, or the next renewal if it comes first.
    fn next_wait(&self) -> Duration {
        let refresh = self.config.refresh_interval;
        match &self.session {
            Some(s) => refresh.min(s.renew_at.saturating_duration_since(Instant::now())),
            None => refresh,
        }
    }
}

#[cfg(test)]
mod tests;
