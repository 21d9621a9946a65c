use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;

use crate::token::{TokenInfo, TokenLabel};
use crate::{Error, Result};

/// Where Debian and Ubuntu install the SoftHSM2 module.
pub const DEFAULT_SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Modules loaded by this process, keyed by canonical path. PKCS#11 allows one `C_Initialize`
/// per process; every [`Module::load`] of the same file shares the one context.
static LOADED: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();

/// Held while this process lists slots or changes which tokens exist; see [`slot_list_lock`].
static SLOT_LIST: Mutex<()> = Mutex::new(());

/// The process-wide lock around slot listing and token creation or removal.
///
/// SoftHSM2 rescans its token directory on every `C_GetSlotList` and aborts the process
/// (`SlotManager::insertToken: Assertion result.second failed`) when two threads rescan at once
/// or a token appears mid-scan. Every slot listing here takes this lock; code that initialises or
/// deletes tokens in the same process (test fixtures) must take it too.
pub fn slot_list_lock() -> std::sync::MutexGuard<'static, ()> {
    // Poisoning only means a panic while listing; the guarded state is the module's.
    SLOT_LIST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A loaded and initialised PKCS#11 module. Cheap to clone; shared by every user in the process.
#[derive(Clone, Debug)]
pub struct Module {
    path: PathBuf,
    ctx: Pkcs11,
}

impl Module {
    /// Loads and initialises the module at `path`, or returns the process's existing context
    /// for it.
    ///
    /// This blocks while the module initialises.
    ///
    /// # Errors
    /// [`Error::ModuleLoad`] when the file cannot be loaded, [`Error::Initialize`] when
    /// `C_Initialize` fails.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let given = path.as_ref();
        let canonical = given
            .canonicalize()
            .map_err(|source| Error::ModuleMissing {
                path: given.to_path_buf(),
                source,
            })?;
        let registry = LOADED.get_or_init(|| Mutex::new(HashMap::new()));
        // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
        let mut loaded = registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(ctx) = loaded.get(&canonical) {
            return Ok(Self {
                path: canonical,
                ctx: ctx.clone(),
            });
        }
        let ctx = Pkcs11::new(&canonical).map_err(|source| Error::ModuleLoad {
            path: canonical.clone(),
            source,
        })?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            // Another copy of this crate (or another library) initialised it first; the module
            // is usable all the same.
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(source) => {
                return Err(Error::Initialize {
                    path: canonical,
                    source,
                });
            }
        }
        tracing::debug!(hsm.module = %canonical.display(), "PKCS#11 module initialised");
        loaded.insert(canonical.clone(), ctx.clone());
        Ok(Self {
            path: canonical,
            ctx,
        })
    }

    /// Canonical path of the module file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying cryptoki context, for operations this crate does not wrap yet.
    pub fn pkcs11(&self) -> &Pkcs11 {
        &self.ctx
    }

    /// Every initialised token the module reports.
    ///
    /// # Errors
    /// [`Error::Pkcs11`] when the module cannot list slots or describe a token.
    pub fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let _listing = slot_list_lock();
        let slots = self
            .ctx
            .get_slots_with_token()
            .map_err(Error::pkcs11("listing slots"))?;
        let mut tokens = Vec::with_capacity(slots.len());
        for slot in slots {
            // A slot whose token is being initialised or removed right now can fail to answer;
            // an unrelated broken slot must not hide the token the caller is looking for.
            let info = match self.ctx.get_token_info(slot) {
                Ok(info) => info,
                Err(err) => {
                    tracing::debug!(hsm.slot = slot.id(), %err, "skipping unreadable slot");
                    continue;
                }
            };
            if !info.token_initialized() {
                continue;
            }
            tokens.push(TokenInfo {
                slot,
                label: info.label().trim().to_owned(),
                serial: info.serial_number().trim().to_owned(),
                model: info.model().trim().to_owned(),
                manufacturer: info.manufacturer_id().trim().to_owned(),
                user_pin_initialized: info.user_pin_initialized(),
                user_pin_locked: info.user_pin_locked(),
            });
        }
        Ok(tokens)
    }

    /// Finds the one initialised token carrying `label`.
    ///
    /// # Errors
    /// [`Error::TokenNotFound`] (listing the labels that exist) or [`Error::DuplicateToken`]
    /// when the label is ambiguous: a duplicate is reported, never silently picked.
    pub fn find_token(&self, label: &TokenLabel) -> Result<TokenInfo> {
        let tokens = self.tokens()?;
        let mut matching: Vec<TokenInfo> = tokens
            .iter()
            .filter(|t| t.label == label.as_str())
            .cloned()
            .collect();
        match matching.len() {
            1 => Ok(matching.remove(0)),
            0 => {
                let available = if tokens.is_empty() {
                    "none".to_owned()
                } else {
                    tokens
                        .iter()
                        .map(|t| format!("{:?}", t.label))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                Err(Error::TokenNotFound {
                    label: label.to_string(),
                    module: self.path.clone(),
                    available,
                })
            }
            count => Err(Error::DuplicateToken {
                label: label.to_string(),
                module: self.path.clone(),
                count,
            }),
        }
    }
}

impl Module {
    /// Opens a read-write session on the token labelled `label` and logs the user in.
    ///
    /// A session opened while the user is already logged in (login state is per application,
    /// not per session) is accepted as is. Blocks on the HSM.
    ///
    /// # Errors
    /// The lookup errors of [`Module::find_token`]; [`Error::PinRejected`] when the HSM refuses
    /// the PIN (never retried here); [`Error::Pkcs11`] for other failures.
    pub fn login_user(
        &self,
        label: &TokenLabel,
        pin: &secrecy::SecretString,
    ) -> Result<cryptoki::session::Session> {
        let token = self.find_token(label)?;
        let session = self
            .ctx
            .open_rw_session(token.slot)
            .map_err(Error::pkcs11("opening a session"))?;
        match session.login(cryptoki::session::UserType::User, Some(pin)) {
            Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                Ok(session)
            }
            Err(cryptoki::error::Error::Pkcs11(rv, _)) if is_pin_rejection(rv) => {
                Err(Error::PinRejected {
                    label: label.to_string(),
                    rv,
                })
            }
            Err(source) => Err(Error::Pkcs11 {
                operation: "logging in",
                source,
            }),
        }
    }
}

/// Return values meaning "this PIN will not work", as opposed to a transient failure.
pub(crate) fn is_pin_rejection(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::PinIncorrect
            | RvError::PinLocked
            | RvError::PinExpired
            | RvError::PinInvalid
            | RvError::PinLenRange
    )
}
