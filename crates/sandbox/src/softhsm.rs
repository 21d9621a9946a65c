use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cryptoki::session::UserType;
use hsm_core::{Module, TokenInfo, TokenLabel};
use secrecy::{ExposeSecret as _, SecretString};

use crate::{Error, Result, tools};

/// The process's SoftHSM2 environment, set up once.
struct Environment {
    module: Module,
    token_dir: PathBuf,
}

static ENVIRONMENT: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();

fn environment() -> Result<&'static Environment> {
    let env = ENVIRONMENT.get_or_init(|| prepare().map_err(|e| e.to_string()));
    env.as_ref().map_err(|detail| Error::MissingTool {
        tool: "softhsm2",
        detail: detail.clone(),
    })
}

/// Writes the configuration file `SOFTHSM2_CONF` names (token directory beside it), then loads
/// the module. Must run before the module's `C_Initialize`, which reads the file.
fn prepare() -> Result<Environment> {
    let module_path = tools::pkcs11_module()?;
    let conf = tools::softhsm_conf_path()?;
    let dir = conf
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let token_dir = dir.join("tokens");
    std::fs::create_dir_all(&token_dir)
        .map_err(Error::io("creating token directory", &token_dir))?;
    let token_dir = token_dir
        .canonicalize()
        .map_err(Error::io("resolving token directory", &token_dir))?;
    let contents = format!(
        "# Written by the mesh-hsm sandbox.\n\
         directories.tokendir = {}\n\
         objectstore.backend = file\n\
         log.level = ERROR\n\
         slots.removable = false\n",
        token_dir.display()
    );
    // Test processes run in parallel and all write the same content: an atomic write means no
    // reader ever sees a half-written file.
    if std::fs::read_to_string(&conf).ok().as_deref() != Some(contents.as_str()) {
        mesh_common::fs::write_atomic(&conf, contents.as_bytes(), 0o644)
            .map_err(Error::io("writing SoftHSM2 config", &conf))?;
    }
    let module = Module::load(&module_path)?;
    Ok(Environment { module, token_dir })
}

/// A throw-away SoftHSM2 token, initialised with its own label, SO PIN and user PIN, and
/// removed from disk when dropped.
///
/// Several tokens can exist at once in one process (tests run in parallel threads); each has a
/// unique label and is always found by that label, never by slot number.
pub struct SoftHsm {
    module: Module,
    label: TokenLabel,
    serial: String,
    so_pin: SecretString,
    user_pin: SecretString,
    token_path: Option<PathBuf>,
}

impl std::fmt::Debug for SoftHsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftHsm")
            .field("label", &self.label)
            .field("serial", &self.serial)
            .field("module", &self.module.path())
            .finish_non_exhaustive()
    }
}

/// Options for a new [`SoftHsm`] token.
#[derive(Default)]
pub struct SoftHsmBuilder {
    label: Option<String>,
    so_pin: Option<SecretString>,
    user_pin: Option<SecretString>,
}

impl SoftHsmBuilder {
    /// Label prefix. A random suffix is appended so parallel tests never collide; the result is
    /// at most 32 bytes.
    #[must_use]
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Security officer PIN (random when not set).
    #[must_use]
    pub fn so_pin(mut self, pin: SecretString) -> Self {
        self.so_pin = Some(pin);
        self
    }

    /// User PIN (random when not set).
    #[must_use]
    pub fn user_pin(mut self, pin: SecretString) -> Self {
        self.user_pin = Some(pin);
        self
    }

    /// Initialises the token.
    ///
    /// # Errors
    /// [`Error::MissingTool`] when SoftHSM2 is not installed or `SOFTHSM2_CONF` is not set,
    /// [`Error::Pkcs11`] when the module refuses to initialise the token.
    pub fn create(self) -> Result<SoftHsm> {
        let env = environment()?;
        let prefix = self.label.unwrap_or_else(|| "sandbox".to_owned());
        let suffix = crate::random_string(8).to_lowercase();
        let keep = TokenLabel::MAX_LEN.saturating_sub(suffix.len() + 1);
        let prefix: String = prefix.chars().take(keep).collect();
        // Trim by bytes in case the prefix held multi-byte characters.
        let mut label = format!("{prefix}-{suffix}");
        while label.len() > TokenLabel::MAX_LEN {
            label.remove(0);
        }
        let label = TokenLabel::new(label)?;
        let so_pin = self
            .so_pin
            .unwrap_or_else(|| SecretString::from(crate::random_string(16)));
        let user_pin = self
            .user_pin
            .unwrap_or_else(|| SecretString::from(crate::random_string(16)));

        let ctx = env.module.pkcs11();
        {
            // "Find the free slot, initialise it" must not interleave with another thread doing
            // the same (SoftHSM2 offers one free slot at a time) nor with any slot listing.
            let _guard = hsm_core::slot_list_lock();
            let free = ctx
                .get_slots_with_token()
                .map_err(pkcs11("listing slots"))?
                .into_iter()
                .find(|slot| {
                    ctx.get_token_info(*slot)
                        .is_ok_and(|info| !info.token_initialized())
                })
                .ok_or(Error::MissingTool {
                    tool: "softhsm2",
                    detail: "the module offers no free slot".to_owned(),
                })?;
            ctx.init_token(free, &so_pin, label.as_str())
                .map_err(pkcs11("initialising the token"))?;
        }
        // SoftHSM2 moves a new token to a fresh slot: look it up by label from here on.
        let token = env.module.find_token(&label)?;
        let session = ctx
            .open_rw_session(token.slot)
            .map_err(pkcs11("opening an SO session"))?;
        session
            .login(UserType::So, Some(&so_pin))
            .map_err(pkcs11("logging in as SO"))?;
        session
            .init_pin(&user_pin)
            .map_err(pkcs11("setting the user PIN"))?;
        session.logout().map_err(pkcs11("logging out"))?;
        drop(session);

        let token_path = token_directory(&env.token_dir, &token.serial);
        tracing::debug!(hsm.token = %label, hsm.serial = %token.serial, "SoftHSM2 token created");
        Ok(SoftHsm {
            module: env.module.clone(),
            label,
            serial: token.serial,
            so_pin,
            user_pin,
            token_path,
        })
    }
}

impl SoftHsm {
    /// Options for a new token.
    pub fn builder() -> SoftHsmBuilder {
        SoftHsmBuilder::default()
    }

    /// A new token whose label starts with `label`.
    ///
    /// # Panics
    /// When SoftHSM2 is missing or the token cannot be created, with the install hint. Test
    /// fixtures fail loudly instead of skipping; use [`SoftHsm::builder`] to handle the error.
    #[expect(
        clippy::panic,
        reason = "test fixture: a missing backend must fail the test loudly"
    )]
    pub fn new(label: &str) -> Self {
        match Self::builder().label(label).create() {
            Ok(hsm) => hsm,
            Err(err) => panic!("cannot create a SoftHSM2 token: {err}"),
        }
    }

    /// The token's label (unique within the process).
    pub fn label(&self) -> &TokenLabel {
        &self.label
    }

    /// The token's serial number.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// The user PIN.
    pub fn user_pin(&self) -> &SecretString {
        &self.user_pin
    }

    /// The security officer PIN.
    pub fn so_pin(&self) -> &SecretString {
        &self.so_pin
    }

    /// The process-wide PKCS#11 module the token lives in.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// Path of the PKCS#11 module file, for child processes (`P11_LIB`).
    pub fn module_path(&self) -> &Path {
        self.module.path()
    }

    /// The token as the module reports it now (current slot, flags).
    ///
    /// # Errors
    /// The lookup errors of [`Module::find_token`].
    pub fn info(&self) -> Result<TokenInfo> {
        Ok(self.module.find_token(&self.label)?)
    }

    /// Environment a child process needs to see this token (`SOFTHSM2_CONF`).
    ///
    /// # Errors
    /// [`Error::MissingEnv`] when `SOFTHSM2_CONF` is not set.
    pub fn child_env(&self) -> Result<Vec<(&'static str, PathBuf)>> {
        Ok(vec![("SOFTHSM2_CONF", tools::softhsm_conf_path()?)])
    }

    /// Writes the user PIN to `path` (mode 0600, atomically), as `P11_PIN_FILE` expects.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file.
    pub fn write_user_pin_file(&self, path: &Path) -> Result<()> {
        crate::write_secret_file(path, self.user_pin.expose_secret().as_bytes())
    }
}

impl Drop for SoftHsm {
    fn drop(&mut self) {
        // No slot listing may rescan the token directory while a token leaves it.
        let _guard = hsm_core::slot_list_lock();
        if let Some(path) = self.token_path.take()
            && let Err(err) = std::fs::remove_dir_all(&path)
        {
            tracing::warn!(
                hsm.token = %self.label,
                path = %path.display(),
                %err,
                "could not remove SoftHSM2 token"
            );
        }
    }
}

/// SoftHSM2 names a token's directory by a UUID whose last 16 hex digits are the serial.
fn token_directory(token_dir: &Path, serial: &str) -> Option<PathBuf> {
    let serial = serial.to_ascii_lowercase();
    std::fs::read_dir(token_dir)
        .ok()?
        .filter_map(std::result::Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name().is_some_and(|name| {
                name.to_string_lossy()
                    .replace('-', "")
                    .to_ascii_lowercase()
                    .ends_with(&serial)
            })
        })
}

fn pkcs11(operation: &'static str) -> impl FnOnce(cryptoki::error::Error) -> Error {
    move |source| Error::Pkcs11 { operation, source }
}
