//! A logged-in token with a small session pool that survives session loss.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use cryptoki::error::RvError;
use cryptoki::object::ObjectHandle;
use cryptoki::session::{Session, SessionState, UserType};
use secrecy::SecretString;

use crate::module::is_pin_rejection;
use crate::{Error, Module, Result, TokenLabel};

/// How a [`HsmToken`] recovers from lost sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOptions {
    /// Sessions tried per operation before giving up with [`Error::SessionLost`] (at least 1).
    pub max_attempts: u32,
    /// Pause before the first re-open; doubled after each further loss.
    pub initial_backoff: Duration,
    /// Upper bound of the pause.
    pub max_backoff: Duration,
}

impl Default for TokenOptions {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// Whether the token can currently serve requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Logged in (or able to log in) and serving.
    Ready,
    /// The HSM rejected the PIN; nothing is retried until [`HsmToken::reset_pin`].
    PinRejected(RvError),
}

/// What a cached object handle was looked up by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ObjectKey {
    /// The one secret key with this `CKA_ID` and `CKA_LABEL`.
    SecretKey { id: Vec<u8>, label: Vec<u8> },
    /// The one private key with this `CKA_ID`.
    PrivateKey { id: Vec<u8> },
}

/// A token found by label, with the user logged in once and a pool of sessions.
///
/// Every method blocks on the HSM: async callers use the port implementations
/// ([`crate::HsmIstioKms`], [`crate::HsmKubeKms`], [`crate::HsmAdminService`]), which run
/// them on tokio's blocking pool, or, for the per-request operations of a token that answers
/// in microseconds, on the calling task ([`HsmToken::typical_call`]).
///
/// When a session is lost (`CKR_SESSION_HANDLE_INVALID`, `CKR_SESSION_CLOSED`,
/// `CKR_DEVICE_REMOVED`, `CKR_TOKEN_NOT_PRESENT`, `CKR_USER_NOT_LOGGED_IN`) the operation is
/// retried on a fresh session, after finding the token again by label and logging in again,
/// with bounded exponential backoff. A rejected PIN is different: it is reported as
/// [`Error::PinRejected`] after exactly one `C_Login`, remembered, and never retried
/// automatically, because HSMs lock the partition after a few failures.
///
/// The handles of the keys used on every call (KEKs, signing keys) are looked up once and
/// cached: object handles belong to the application, not to a session. A handle the module no
/// longer knows (`CKR_OBJECT_HANDLE_INVALID`, `CKR_KEY_HANDLE_INVALID`: the object was
/// destroyed, or the token re-initialised) is forgotten and looked up again; every handle is
/// forgotten with the sessions when they are lost.
pub struct HsmToken {
    module: Module,
    label: TokenLabel,
    pin: Mutex<SecretString>,
    options: TokenOptions,
    idle: Mutex<Vec<Session>>,
    handles: Mutex<HashMap<ObjectKey, ObjectHandle>>,
    pin_failure: Mutex<Option<RvError>>,
    login_calls: AtomicU64,
    /// Moving average of the per-request operations' duration in nanoseconds (0: none yet).
    typical_call_ns: AtomicU64,
}

impl std::fmt::Debug for HsmToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmToken")
            .field("module", &self.module.path())
            .field("label", &self.label)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl HsmToken {
    /// Finds the token labelled `label`, opens a session and logs the user in.
    ///
    /// # Errors
    /// The lookup errors of [`Module::find_token`]; [`Error::PinRejected`] after one login
    /// attempt when the HSM refuses the PIN; [`Error::Pkcs11`] otherwise.
    pub fn open(
        module: &Module,
        label: &TokenLabel,
        pin: SecretString,
        options: TokenOptions,
    ) -> Result<Self> {
        let token = Self {
            module: module.clone(),
            label: label.clone(),
            pin: Mutex::new(pin),
            options,
            idle: Mutex::new(Vec::new()),
            handles: Mutex::new(HashMap::new()),
            pin_failure: Mutex::new(None),
            login_calls: AtomicU64::new(0),
            typical_call_ns: AtomicU64::new(0),
        };
        token.with_session("opening the token", |_| Ok(()))?;
        Ok(token)
    }

    /// The token's label.
    pub fn label(&self) -> &TokenLabel {
        &self.label
    }

    /// The module the token lives in.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// How many times this handle has called `C_Login`.
    pub fn login_calls(&self) -> u64 {
        self.login_calls.load(Ordering::Relaxed)
    }

    /// The moving average duration of the per-request operations the async ports ran on this
    /// token (encrypt, decrypt, sign), or `None` before the first.
    pub fn typical_call(&self) -> Option<Duration> {
        match self.typical_call_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Adds one per-request operation's duration to [`HsmToken::typical_call`] (weight 1/8).
    pub(crate) fn record_call(&self, took: Duration) {
        let sample = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        let _ = self
            .typical_call_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    sample
                } else {
                    (old - old / 8).saturating_add(sample / 8).max(1)
                })
            });
    }

    /// True when the per-request operations typically finish in less than
    /// [`HsmToken::INLINE_BELOW`]: then running one costs less than handing it to another
    /// thread and back.
    pub(crate) fn answers_fast(&self) -> bool {
        self.typical_call().is_some_and(|d| d < Self::INLINE_BELOW)
    }

    /// Below this typical duration the async ports run per-request operations on the calling
    /// task instead of tokio's blocking pool.
    pub const INLINE_BELOW: Duration = Duration::from_micros(250);

    /// Whether the token is serving or waiting for an operator after a PIN rejection.
    pub fn health(&self) -> Health {
        match *lock(&self.pin_failure) {
            Some(rv) => Health::PinRejected(rv),
            None => Health::Ready,
        }
    }

    /// Replaces the PIN and clears a remembered PIN rejection (the operator's explicit reset).
    /// The next operation logs in with the new PIN.
    pub fn reset_pin(&self, pin: SecretString) {
        *lock(&self.pin) = pin;
        *lock(&self.pin_failure) = None;
    }

    /// Runs `f` on a logged-in session, re-opening the session and logging in again after
    /// session loss, as described on [`HsmToken`]. `f` may run more than once.
    ///
    /// # Errors
    /// [`Error::PinRejected`], [`Error::SessionLost`] when every attempt lost its session, or
    /// whatever `f` returns.
    pub fn with_session<T>(
        &self,
        operation: &'static str,
        mut f: impl FnMut(&Session) -> Result<T>,
    ) -> Result<T> {
        let max_attempts = self.options.max_attempts.max(1);
        let mut backoff = self.options.initial_backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.checkout().map(|session| {
                let result = f(&session);
                (session, result)
            });
            let (lost, session) = match result {
                Ok((session, Ok(value))) => {
                    self.checkin(session);
                    return Ok(value);
                }
                Ok((session, Err(err))) => {
                    let Some(rv) = session_loss(&err) else {
                        self.checkin(session);
                        return Err(err);
                    };
                    (Lost { rv, err }, Some(session))
                }
                Err(err) => match session_loss(&err) {
                    Some(rv) => (Lost { rv, err }, None),
                    None => return Err(err),
                },
            };
            tracing::warn!(
                hsm.token = %self.label,
                hsm.rv = ?lost.rv,
                attempt,
                "{operation}: HSM session lost, re-opening"
            );
            if lost.rv == RvError::UserNotLoggedIn {
                // The session is fine; only the login state is gone. Keep it: checkout logs in.
                if let Some(session) = session {
                    self.checkin(session);
                }
            } else {
                // Every pooled handle is suspect (all sessions usually go together). Forget them
                // without C_CloseSession: the module may already have reused the numbers.
                drop(session);
                lock(&self.idle).clear();
                lock(&self.handles).clear();
            }
            if attempt >= max_attempts {
                return Err(match lost.err {
                    Error::Pkcs11 { source, .. } => Error::SessionLost {
                        operation,
                        attempts: attempt,
                        source,
                    },
                    other => other,
                });
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(self.options.max_backoff);
        }
    }

    /// Runs `use_handle` with the handle of the object `key` names: the cached one, or the one
    /// `find` finds (then cached). When the module no longer knows a cached handle, it is
    /// forgotten, looked up again with `find`, and `use_handle` runs once more.
    pub(crate) fn with_object<T>(
        &self,
        session: &Session,
        key: &ObjectKey,
        find: impl Fn(&Session) -> Result<ObjectHandle>,
        mut use_handle: impl FnMut(ObjectHandle) -> Result<T>,
    ) -> Result<T> {
        let cached = lock(&self.handles).get(key).copied();
        let handle = match cached {
            Some(handle) => handle,
            None => self.find_object(session, key, &find)?,
        };
        match use_handle(handle) {
            Err(err) if cached.is_some() && stale_handle(&err) => {
                tracing::debug!(hsm.token = %self.label, ?key, "cached object handle is stale; looking it up again");
                lock(&self.handles).remove(key);
                let handle = self.find_object(session, key, &find)?;
                use_handle(handle)
            }
            other => other,
        }
    }

    fn find_object(
        &self,
        session: &Session,
        key: &ObjectKey,
        find: &impl Fn(&Session) -> Result<ObjectHandle>,
    ) -> Result<ObjectHandle> {
        let handle = find(session)?;
        lock(&self.handles).insert(key.clone(), handle);
        Ok(handle)
    }

    /// Forgets the cached handle of `key` (after destroying the object).
    pub(crate) fn forget_object(&self, key: &ObjectKey) {
        lock(&self.handles).remove(key);
    }

    /// A logged-in session: a pooled one that still answers, or a new one.
    fn checkout(&self) -> Result<Session> {
        if let Some(rv) = *lock(&self.pin_failure) {
            return Err(Error::PinRejected {
                label: self.label.to_string(),
                rv,
            });
        }
        let pooled = lock(&self.idle).pop();
        let session = if let Some(session) = pooled {
            session
        } else {
            let token = self.module.find_token(&self.label)?;
            self.module
                .pkcs11()
                .open_rw_session_no_drop(token.slot)
                .map_err(Error::pkcs11("opening a session"))?
        };
        let state = session
            .get_session_info()
            .map_err(Error::pkcs11("checking the session"))?
            .session_state();
        if !matches!(state, SessionState::RwUser | SessionState::RoUser) {
            self.login(&session)?;
        }
        Ok(session)
    }

    fn login(&self, session: &Session) -> Result<()> {
        // Hold the failure lock across the call so concurrent callers never send a second
        // C_Login with a PIN the HSM has just rejected.
        let mut failure = lock(&self.pin_failure);
        if let Some(rv) = *failure {
            return Err(Error::PinRejected {
                label: self.label.to_string(),
                rv,
            });
        }
        self.login_calls.fetch_add(1, Ordering::Relaxed);
        let pin = lock(&self.pin).clone();
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                tracing::debug!(hsm.token = %self.label, "logged in");
                Ok(())
            }
            Err(cryptoki::error::Error::Pkcs11(rv, _)) if is_pin_rejection(rv) => {
                *failure = Some(rv);
                tracing::error!(
                    hsm.token = %self.label,
                    hsm.rv = ?rv,
                    "the HSM rejected the PIN; not retrying until the PIN is reset"
                );
                Err(Error::PinRejected {
                    label: self.label.to_string(),
                    rv,
                })
            }
            Err(source) => Err(Error::Pkcs11 {
                operation: "logging in",
                source,
            }),
        }
    }

    fn checkin(&self, session: Session) {
        lock(&self.idle).push(session);
    }
}

impl Drop for HsmToken {
    fn drop(&mut self) {
        for session in lock(&self.idle).drain(..) {
            if let Err(err) = session.close() {
                tracing::debug!(hsm.token = %self.label, %err, "closing a pooled session failed");
            }
        }
    }
}

struct Lost {
    rv: RvError,
    err: Error,
}

/// The return value when `err` means "this session (or its login) is gone".
fn session_loss(err: &Error) -> Option<RvError> {
    let rv = match err {
        Error::Pkcs11 {
            source: cryptoki::error::Error::Pkcs11(rv, _),
            ..
        } => *rv,
        _ => return None,
    };
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceRemoved
            | RvError::TokenNotPresent
            | RvError::UserNotLoggedIn
    )
    .then_some(rv)
}

/// True when `err` says an object handle is not (or no longer) valid.
fn stale_handle(err: &Error) -> bool {
    matches!(
        err,
        Error::Pkcs11 {
            source: cryptoki::error::Error::Pkcs11(
                RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid,
                _
            ),
            ..
        }
    )
}

/// Locks a mutex; a poisoned lock only means another thread panicked, the data is still usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
