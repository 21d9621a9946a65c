use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret as _, SecretString};
use vault_bootstrap::{Connection, VaultAddr};

use crate::{Error, Result, tools};

/// How long a server may take to answer its health endpoint after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many free-port races a start survives.
const START_ATTEMPTS: usize = 3;

/// Where an [`OpenBao`] server keeps its data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Storage {
    /// `bao server -dev`: in memory, initialised and unsealed at start, gone when it stops.
    #[default]
    DevInMemory,
    /// Integrated (raft) storage in the fixture's directory: initialised and unsealed by the
    /// fixture, and surviving [`OpenBao::restart`] (for fault tests).
    Raft,
}

/// Options for a new [`OpenBao`] server.
#[derive(Debug, Default)]
pub struct OpenBaoBuilder {
    tls: bool,
    storage: Storage,
}

impl OpenBaoBuilder {
    /// Serve HTTPS with a CA of the server's own (`-dev-tls`); see [`OpenBao::ca_cert_path`].
    /// Only for [`Storage::DevInMemory`].
    #[must_use]
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// Where the server keeps its data.
    #[must_use]
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// Spawns the server on a free 127.0.0.1 port and waits until it answers
    /// `/v1/sys/health` (bounded), initialising and unsealing it for [`Storage::Raft`].
    ///
    /// # Errors
    /// [`Error::MissingTool`] when `bao` is not installed, [`Error::OpenBaoStart`] (with the
    /// server's log) when it does not come up.
    pub async fn start(self) -> Result<OpenBao> {
        let bin = tools::bao_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("sandbox-openbao-")
            .tempdir()
            .map_err(Error::io(
                "creating OpenBao directory",
                std::env::temp_dir(),
            ))?;
        let mut server = OpenBao {
            bin,
            dir,
            storage: self.storage,
            tls: self.tls && self.storage == Storage::DevInMemory,
            child: None,
            cluster_port: free_port()?,
            addr: VaultAddr::parse("http://127.0.0.1:1").map_err(api("address"))?,
            root_token: SecretString::from(crate::random_string(24)),
            unseal_key: None,
        };
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            match server.spawn_and_wait(port).await {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(err) => {
                    server.kill();
                    last = Some(err);
                }
            }
        }
        if let Some(err) = last {
            return Err(err);
        }
        if server.storage == Storage::Raft {
            server.initialise().await?;
            server.unseal().await?;
        }
        tracing::debug!(vault.addr = %server.addr, "OpenBao started");
        Ok(server)
    }
}

/// A real OpenBao server process, killed when dropped.
pub struct OpenBao {
    bin: PathBuf,
    dir: tempfile::TempDir,
    storage: Storage,
    tls: bool,
    child: Option<Child>,
    cluster_port: u16,
    addr: VaultAddr,
    root_token: SecretString,
    unseal_key: Option<SecretString>,
}

impl std::fmt::Debug for OpenBao {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBao")
            .field("addr", &self.addr)
            .field("storage", &self.storage)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl OpenBao {
    /// Options for a new server.
    pub fn builder() -> OpenBaoBuilder {
        OpenBaoBuilder::default()
    }

    /// A plain-HTTP dev server.
    ///
    /// # Panics
    /// When `bao` is missing or the server does not start, with the install hint. Test
    /// fixtures fail loudly instead of skipping; use [`OpenBao::builder`] to handle the error.
    #[expect(
        clippy::panic,
        reason = "test fixture: a missing backend must fail the test loudly"
    )]
    pub async fn dev() -> Self {
        match Self::builder().start().await {
            Ok(server) => server,
            Err(err) => panic!("cannot start OpenBao: {err}"),
        }
    }

    /// The server address (`http://127.0.0.1:PORT` or `https://...`).
    pub fn addr(&self) -> &VaultAddr {
        &self.addr
    }

    /// The root token.
    pub fn root_token(&self) -> &SecretString {
        &self.root_token
    }

    /// The CA certificate of a TLS server (`vault-ca.pem`), `None` for plain HTTP.
    pub fn ca_cert_path(&self) -> Option<PathBuf> {
        self.tls.then(|| self.tls_dir().join("vault-ca.pem"))
    }

    /// A [`Connection`] to this server, trusting its CA when it serves TLS.
    ///
    /// # Errors
    /// [`Error::Io`] when the CA file cannot be read.
    pub fn connection(&self) -> Result<Connection> {
        let mut conn = Connection::new(self.addr.clone());
        if let Some(ca) = self.ca_cert_path() {
            let pem = std::fs::read(&ca).map_err(Error::io("reading OpenBao CA", &ca))?;
            conn = conn.with_ca_cert_pem(pem);
        }
        Ok(conn)
    }

    /// A vaultrs client logged in with the root token (every field set explicitly, so no
    /// `VAULT_*` variable of the surrounding environment leaks in).
    ///
    /// # Errors
    /// [`Error::OpenBaoApi`] when the client cannot be built.
    pub fn client(&self) -> Result<vaultrs::client::VaultClient> {
        crate::init_crypto();
        let mut settings = vaultrs::client::VaultClientSettingsBuilder::default();
        settings
            .address(self.addr.as_str())
            .token(self.root_token.expose_secret())
            .verify(true)
            .namespace(None);
        if let Some(ca) = self.ca_cert_path() {
            settings.ca_certs(vec![ca.to_string_lossy().into_owned()]);
        } else {
            settings.ca_certs(Vec::new());
        }
        let settings = settings.build().map_err(api("client settings"))?;
        vaultrs::client::VaultClient::new(settings).map_err(api("client"))
    }

    /// Stops the server and starts it again on the same port and storage, unsealing it again.
    /// Only [`Storage::Raft`] keeps data across a restart.
    ///
    /// # Errors
    /// As for [`OpenBaoBuilder::start`].
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        let port = self
            .addr
            .as_str()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or_else(|| Error::OpenBaoStart {
                reason: format!("no port in {}", self.addr),
                log: String::new(),
            })?;
        self.spawn_and_wait(port).await?;
        if self.storage == Storage::Raft {
            self.unseal().await?;
        }
        Ok(())
    }

    /// Stops the server now (also done on drop).
    pub fn stop(&mut self) {
        self.kill();
    }

    fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn spawn_and_wait(&mut self, port: u16) -> Result<()> {
        let listen = format!("127.0.0.1:{port}");
        let scheme = if self.tls { "https" } else { "http" };
        self.addr = VaultAddr::parse(&format!("{scheme}://{listen}")).map_err(api("address"))?;
        let log_path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(Error::io("opening OpenBao log", &log_path))?;
        let log_err = log
            .try_clone()
            .map_err(Error::io("opening OpenBao log", &log_path))?;

        let mut cmd = Command::new(&self.bin);
        cmd.arg("server")
            .env_remove("VAULT_ADDR")
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_TOKEN")
            .env_remove("BAO_TOKEN")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        match self.storage {
            Storage::DevInMemory => {
                // The root token travels in the environment, never in argv.
                cmd.arg("-dev")
                    .arg(format!("-dev-listen-address={listen}"))
                    .env("BAO_DEV_ROOT_TOKEN_ID", self.root_token.expose_secret());
                if self.tls {
                    let tls_dir = self.tls_dir();
                    std::fs::create_dir_all(&tls_dir)
                        .map_err(Error::io("creating OpenBao TLS dir", &tls_dir))?;
                    cmd.arg("-dev-tls")
                        .arg(format!("-dev-tls-cert-dir={}", self.tls_dir().display()));
                }
            }
            Storage::Raft => {
                let config = self.write_raft_config(port)?;
                cmd.arg(format!("-config={}", config.display()));
            }
        }
        let child = cmd
            .spawn()
            .map_err(Error::io("spawning OpenBao", self.bin.clone()))?;
        self.child = Some(child);
        self.wait_healthy().await
    }

    /// Single-node integrated storage (raft): OpenBao's persistent backend.
    fn write_raft_config(&self, port: u16) -> Result<PathBuf> {
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).map_err(Error::io("creating OpenBao data dir", &data))?;
        let cluster_port = self.cluster_port;
        let mut hcl = String::new();
        let _ = write!(
            hcl,
            "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"sandbox\"\n  performance_multiplier = 1\n}}\n\
             listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  \
             cluster_address = \"127.0.0.1:{cluster_port}\"\n  tls_disable = true\n}}\n\
             api_addr = \"http://127.0.0.1:{port}\"\n\
             cluster_addr = \"http://127.0.0.1:{cluster_port}\"\n",
            data.display()
        );
        let path = self.dir.path().join("server.hcl");
        std::fs::write(&path, hcl).map_err(Error::io("writing OpenBao config", &path))?;
        Ok(path)
    }

    async fn wait_healthy(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_error = String::from("no answer yet");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(self.start_error(format!("the server exited ({status})")));
            }
            if Instant::now() >= deadline {
                return Err(self.start_error(format!(
                    "no healthy answer within {}s ({last_error})",
                    START_TIMEOUT.as_secs()
                )));
            }
            // A TLS dev server writes its CA only once it is up.
            let ready = self.ca_cert_path().is_none_or(|ca| ca.is_file());
            if ready {
                match self.connection()?.health().await {
                    Ok(_) => return Ok(()),
                    Err(err) => last_error = err.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn start_error(&self, reason: String) -> Error {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        Error::OpenBaoStart {
            reason,
            log: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        }
    }

    async fn put_json(
        &self,
        operation: &'static str,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value> {
        // Initialising raft storage can take several seconds on a loaded machine.
        let http = self
            .connection()?
            .with_timeout(START_TIMEOUT)
            .http_client()
            .map_err(api(operation))?;
        let url = format!("{}/{path}", self.addr.as_str());
        let response = http
            .put(url)
            .json(&body)
            .send()
            .await
            .map_err(api(operation))?;
        let response = response.error_for_status().map_err(api(operation))?;
        response
            .json::<serde_json::Value>()
            .await
            .map_err(api(operation))
    }

    async fn initialise(&mut self) -> Result<()> {
        let answer = self
            .put_json(
                "init",
                "v1/sys/init",
                serde_json::json!({ "secret_shares": 1, "secret_threshold": 1 }),
            )
            .await?;
        let key = answer["keys_base64"][0].as_str();
        let token = answer["root_token"].as_str();
        match (key, token) {
            (Some(key), Some(token)) => {
                self.unseal_key = Some(SecretString::from(key.to_owned()));
                self.root_token = SecretString::from(token.to_owned());
                Ok(())
            }
            _ => Err(Error::OpenBaoApi {
                operation: "init",
                source: "the answer holds no unseal key or root token".into(),
            }),
        }
    }

    async fn unseal(&mut self) -> Result<()> {
        let Some(key) = self
            .unseal_key
            .as_ref()
            .map(|k| k.expose_secret().to_owned())
        else {
            return Ok(());
        };
        let answer = self
            .put_json("unseal", "v1/sys/unseal", serde_json::json!({ "key": key }))
            .await?;
        if answer["sealed"].as_bool() == Some(false) {
            self.wait_active().await
        } else {
            Err(Error::OpenBaoApi {
                operation: "unseal",
                source: "the server is still sealed after the unseal key".into(),
            })
        }
    }
}

impl OpenBao {
    /// After an unseal, a raft node elects itself leader before it serves requests.
    async fn wait_active(&self) -> Result<()> {
        let http = self.connection()?.http_client().map_err(api("leader"))?;
        let url = format!("{}/v1/sys/leader", self.addr.as_str());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(response) = http.get(&url).send().await
                && let Ok(doc) = response.json::<serde_json::Value>().await
                && (doc["is_self"].as_bool() == Some(true)
                    || doc["ha_enabled"].as_bool() == Some(false))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.start_error("the node did not become active".to_owned()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(Error::io("finding a free port", Path::new("127.0.0.1:0")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(Error::io("finding a free port", Path::new("127.0.0.1:0")))
}

fn api<E>(operation: &'static str) -> impl FnOnce(E) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |source| Error::OpenBaoApi {
        operation,
        source: Box::new(source),
    }
}
