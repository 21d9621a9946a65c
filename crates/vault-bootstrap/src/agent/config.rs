//! What the agent is told: where to log in, which secret to read, which files to write, how
//! often.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, KvVersion, Result, fields};

/// Where Kubernetes mounts the pod's service-account token (`values.hsm.vaultAuthJwtPath`).
pub const DEFAULT_JWT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// How often the secret is fetched again by default.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// How long to wait after a first failure before trying again, by default.
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
    /// How long to wait after a failure before trying again; the wait doubles with each
    /// further failure in a row, up to the refresh interval.
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
