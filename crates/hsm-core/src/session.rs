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
    /// The one private key with this `CKA_ID` whose public half has this SHA-256 SPKI
    /// fingerprint: each opened key pair caches its own handle, so a pair replaced under the
    /// same id never lends its handle to a key opened with the old public key (or back).
    PrivateKey { id: Vec<u8>, spki_sha256: [u8; 32] },
}

/// A token found by label, with the user logged in once and a pool of sessions.
///
/// Every method blocks on the HSM: async callers use the port implementations
/// ([`crate::HsmIstioKms`], [`crate::HsmKubeKms`], [`crate::HsmAdminService`]), which run
/// them on tokio's blocking pool, or, for the per-request operations of a token that answers
/// in microseconds, on the calling task ([`HsmToken::typical_call`]).
///
/// When a session is lost (`CKR_SESSION_HANDLE_INVALID`, `CKR_SESSION_CLOSED`,
/// `CKR_DEVICE_REMOVED`, `CKR_TOKEN_NOT_PRESENT`, `CKR_TOKEN_NOT_RECOGNIZED`,
/// `CKR_USER_NOT_LOGGED_IN`) the operation is retried on a fresh session, after finding the
/// token again by label and logging in again, with bounded exponential backoff. A token that
/// is not found by its label while re-opening (an HSM failing over to its standby) is waited
/// for the same way, then reported as [`Error::TokenUnavailable`]. The sessions dropped on a
/// loss are closed (`C_CloseSession`), except one the module itself declared invalid; a
/// session whose login fails is closed too. A rejected PIN is different: it is reported as
/// [`Error::PinRejected`] after exactly one `C_Login`, remembered, and never retried
/// automatically, because HSMs lock the partition after a few failures.
///
/// The handles of the keys used on every call (KEKs, signing keys) are looked up once and
/// cached: object handles belong to the application, not to a session. The handle of a
/// private key is cached per opened key pair (by id and public key), so a pair replaced under
/// the same id never serves a key opened before. A handle the module no longer knows
/// (`CKR_OBJECT_HANDLE_INVALID`, `CKR_KEY_HANDLE_INVALID`: the object was destroyed, or the
/// token re-initialised) is forgotten and looked up again; every handle is forgotten with the
/// sessions when they are lost.
pub struct HsmToken {
    module: Module,
    label: TokenLabel,
    pin: Mutex<SecretString>,
    options: TokenOptions,
    idle: Mutex<Vec<Session>>,
    /// Held while sessions are opened or closed, so this token never closes a session number
    /// the module has just handed out again (a module may reuse the numbers of closed sessions).
    reopen: Mutex<()>,
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
            reopen: Mutex::new(()),
            handles: Mutex::new(HashMap::new()),
            pin_failure: Mutex::new(None),
            login_calls: AtomicU64::new(0),
            typical_call_ns: AtomicU64::new(0),
        };
        // A wrong label fails at once; only a token lost later is waited for.
        module.find_token(label)?;
        token.with_session("opening the token", |_| Ok(()))?;
        Ok(token)
    }

    /// The token's label.
    pub fn label(&self) -> &TokenLabel {
        &self.label
    }

    /// How this token recovers from session loss.
    pub fn options(&self) -> &TokenOptions {
        &self.options
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
    /// A token that cannot be found by its label while re-opening (an HSM failing over) is
    /// waited for like a lost session. The backoff pauses block the thread; the async ports
    /// never let them run on a tokio worker thread.
    ///
    /// # Errors
    /// [`Error::PinRejected`], [`Error::SessionLost`] when every attempt lost its session,
    /// [`Error::TokenUnavailable`] when the token stayed out of reach, or whatever `f` returns.
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
            let (err, loss) = match self.checkout() {
                Ok(session) => match f(&session) {
                    Ok(value) => {
                        self.checkin(session);
                        return Ok(value);
                    }
                    Err(err) => {
                        let Some(loss) = Loss::of(&err) else {
                            self.checkin(session);
                            return Err(err);
                        };
                        self.discard(Some(session), loss);
                        (err, loss)
                    }
                },
                Err(err) => {
                    let Some(loss) = Loss::of(&err) else {
                        return Err(err);
                    };
                    self.discard(None, loss);
                    (err, loss)
                }
            };
            tracing::warn!(
                hsm.token = %self.label,
                hsm.loss = ?loss,
                attempt,
                "{operation}: HSM session lost, re-opening"
            );
            if attempt >= max_attempts || inline::defer() {
                return Err(self.exhausted(operation, attempt, err));
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(self.options.max_backoff);
        }
    }

    /// The error after the last attempt: what was lost, and how often.
    fn exhausted(&self, operation: &'static str, attempts: u32, err: Error) -> Error {
        match err {
            Error::Pkcs11 { source, .. } => Error::SessionLost {
                operation,
                attempts,
                source,
            },
            err @ Error::TokenNotFound { .. } => Error::TokenUnavailable {
                operation,
                label: self.label.to_string(),
                attempts,
                source: Box::new(err),
            },
            other => other,
        }
    }

    /// Drops the sessions a loss made suspect: `failed` (the one that reported it) and every
    /// pooled one, closing each that may still exist in the module, and forgets the cached
    /// handles. After a lost login only, the session is kept: checkout logs in again.
    fn discard(&self, failed: Option<Session>, loss: Loss) {
        if loss == Loss::Session(RvError::UserNotLoggedIn) {
            if let Some(session) = failed {
                self.checkin(session);
            }
            return;
        }
        let pooled: Vec<Session> = lock(&self.idle).drain(..).collect();
        lock(&self.handles).clear();
        let _reopen = lock(&self.reopen);
        if let Some(session) = failed {
            // A session the module declared invalid is gone already; its number may belong
            // to someone else by now.
            if !matches!(
                loss,
                Loss::Session(RvError::SessionHandleInvalid | RvError::SessionClosed)
            ) {
                self.close(session);
            }
        }
        for session in pooled {
            self.close(session);
        }
    }

    /// `C_CloseSession`; a session the module no longer knows is fine.
    fn close(&self, session: Session) {
        if let Err(err) = session.close() {
            tracing::debug!(hsm.token = %self.label, %err, "closing a dropped session failed");
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

    /// A logged-in session: a pooled one that still answers, or a new one. A session whose
    /// check or login fails is closed, never left open.
    fn checkout(&self) -> Result<Session> {
        if let Some(rv) = *lock(&self.pin_failure) {
            return Err(Error::PinRejected {
                label: self.label.to_string(),
                rv,
            });
        }
        let pooled = lock(&self.idle).pop();
        let session = match pooled {
            Some(session) => session,
            None => self.open_session()?,
        };
        match self.logged_in(&session) {
            Ok(()) => Ok(session),
            Err(err) => {
                let invalid = matches!(
                    err.rv(),
                    Some(RvError::SessionHandleInvalid | RvError::SessionClosed)
                );
                if !invalid {
                    let _reopen = lock(&self.reopen);
                    self.close(session);
                }
                Err(err)
            }
        }
    }

    fn open_session(&self) -> Result<Session> {
        let token = self.module.find_token(&self.label)?;
        let _reopen = lock(&self.reopen);
        self.module
            .pkcs11()
            .open_rw_session_no_drop(token.slot)
            .map_err(Error::pkcs11("opening a session"))
    }

    /// Logs the user in on `session` unless the application is logged in already.
    fn logged_in(&self, session: &Session) -> Result<()> {
        let state = session
            .get_session_info()
            .map_err(Error::pkcs11("checking the session"))?
            .session_state();
        if matches!(state, SessionState::RwUser | SessionState::RoUser) {
            Ok(())
        } else {
            self.login(session)
        }
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

/// What a failure says was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    /// This session, or its login (the return value says which).
    Session(RvError),
    /// The token itself: not found by its label while re-opening (failover, re-plug).
    Token,
}

impl Loss {
    /// What `err` says is gone, if it means "this session (or its token) is gone".
    fn of(err: &Error) -> Option<Self> {
        match err {
            Error::Pkcs11 {
                source: cryptoki::error::Error::Pkcs11(rv, _),
                ..
            } if matches!(
                rv,
                RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::DeviceRemoved
                    | RvError::TokenNotPresent
                    | RvError::TokenNotRecognized
                    | RvError::UserNotLoggedIn
            ) =>
            {
                Some(Self::Session(*rv))
            }
            Error::TokenNotFound { .. } => Some(Self::Token),
            _ => None,
        }
    }
}

/// Whether the current thread may sleep between attempts. The async ports run per-request
/// operations of a fast token on the calling task (a tokio worker thread); there a session
/// loss ends the attempt instead, and the port retries on the blocking pool.
pub(crate) mod inline {
    use std::cell::Cell;

    thread_local! {
        static STATE: Cell<State> = const { Cell::new(State::Off) };
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum State {
        Off,
        On,
        Deferred,
    }

    /// Runs `f` with backoff pauses forbidden; true in the second member when a session
    /// loss ended an attempt that needed one (run `f` again where blocking is fine).
    pub(crate) fn run<T>(f: impl FnOnce() -> T) -> (T, bool) {
        struct Restore(State);
        impl Drop for Restore {
            fn drop(&mut self) {
                STATE.with(|s| s.set(self.0));
            }
        }
        let _restore = Restore(STATE.with(|s| s.replace(State::On)));
        let value = f();
        let deferred = STATE.with(Cell::get) == State::Deferred;
        (value, deferred)
    }

    /// Called instead of a backoff pause: true (and remembered) when pausing is forbidden
    /// on this thread.
    pub(crate) fn defer() -> bool {
        STATE.with(|s| {
            if s.get() == State::Off {
                false
            } else {
                s.set(State::Deferred);
                true
            }
        })
    }
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
