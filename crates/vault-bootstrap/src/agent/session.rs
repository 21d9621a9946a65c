//! The token's schedule, as pure logic over instants: when to renew it, when to log in again
//! instead (non-renewable, or renewal capped by the max TTL), and how long to wait after
//! failures. [`super::Agent`] performs it.

use std::time::Duration;

use secrecy::SecretString;
use tokio::time::Instant;

use crate::Login;

/// What the token needs at a given instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Due {
    /// Nothing yet.
    Nothing,
    /// Extend it (`auth/token/renew-self`).
    Renew,
    /// Replace it with a new login: it cannot be renewed, or renewing no longer extends it.
    Login,
}

/// The token in hand and its schedule. Acting after two thirds of a lease keeps the last third
/// as the margin for retries.
pub(super) struct Session {
    token: SecretString,
    /// The lease the login gave: what each renewal asks for.
    ttl: Duration,
    renewable: bool,
    /// A renewal came back shorter than asked: the token's max TTL is near and renewing it
    /// again cannot help.
    capped: bool,
    /// `None`: never expires (a zero lease).
    expires_at: Option<Instant>,
    /// When to renew or log in again; `None`: never.
    act_at: Option<Instant>,
}

impl Session {
    /// A fresh login at `now`.
    pub(super) fn from_login(login: Login, now: Instant) -> Self {
        let mut session = Self {
            token: login.token,
            ttl: login.lease,
            renewable: login.renewable,
            capped: false,
            expires_at: None,
            act_at: None,
        };
        if !login.lease.is_zero() {
            session.set_lease(login.lease, now);
        }
        session
    }

    pub(super) fn token(&self) -> &SecretString {
        &self.token
    }

    /// The increment a renewal asks for: the login's lease.
    pub(super) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether a renewal came back capped by the max TTL.
    pub(super) fn is_capped(&self) -> bool {
        self.capped
    }

    /// Whether the token is past its lease (as far as this process knows).
    pub(super) fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// What to do at `now`.
    pub(super) fn due(&self, now: Instant) -> Due {
        match self.act_at {
            Some(at) if now >= at => {
                if self.renewable && !self.capped && !self.expired(now) {
                    Due::Renew
                } else {
                    Due::Login
                }
            }
            _ => Due::Nothing,
        }
    }

    /// How long until something is due (zero when it already is); `None`: never.
    pub(super) fn until_due(&self, now: Instant) -> Option<Duration> {
        self.act_at.map(|at| at.saturating_duration_since(now))
    }

    /// Takes in a renewal answered at `now`. A lease shorter than the one asked for means the
    /// max TTL capped it: the token dies at `now + lease` whatever happens, so the next step
    /// is a login, after two thirds of what is left.
    pub(super) fn renewed(&mut self, renewed: &Login, now: Instant) {
        self.capped = renewed.lease < self.ttl;
        self.renewable = renewed.renewable;
        self.set_lease(renewed.lease, now);
    }

    /// After a failed renewal or login while the token is still valid: try again at `at`, or
    /// when it expires if that comes first.
    pub(super) fn retry_at(&mut self, at: Instant) {
        self.act_at = Some(self.expires_at.map_or(at, |expiry| at.min(expiry)));
    }

    fn set_lease(&mut self, lease: Duration, now: Instant) {
        // Past what an Instant can hold, the lease is as good as endless.
        self.expires_at = now.checked_add(lease);
        self.act_at = now.checked_add(lease.saturating_sub(lease / 3));
    }
}

/// Exponential backoff: `first`, doubled after each failure, never above `max`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Backoff {
    first: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(super) fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max: max.max(first),
            failures: 0,
        }
    }

    /// The wait after one more failure.
    pub(super) fn next(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.failures).unwrap_or(u32::MAX);
        self.failures = self.failures.saturating_add(1);
        self.first
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// After a success: the next failure waits `first` again.
    pub(super) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(lease_s: u64, renewable: bool) -> Login {
        Login {
            token: SecretString::from("t"),
            lease: Duration::from_secs(lease_s),
            renewable,
            policies: Vec::new(),
        }
    }

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_renewable_token_is_renewed_after_two_thirds_until_a_renewal_is_capped() {
        let t0 = Instant::now();
        let mut s = Session::from_login(login(90, true), t0);
        assert_eq!(s.due(t0 + secs(59)), Due::Nothing);
        assert_eq!(s.until_due(t0), Some(secs(60)));
        assert_eq!(s.due(t0 + secs(60)), Due::Renew);
        // Renewed in full: the same again.
        s.renewed(&login(90, true), t0 + secs(60));
        assert!(!s.is_capped());
        assert_eq!(s.until_due(t0 + secs(60)), Some(secs(60)));
        // Capped at the max TTL (20 s left instead of 90): log in after two thirds of it.
        s.renewed(&login(20, true), t0 + secs(120));
        assert!(s.is_capped());
        let relogin = t0 + secs(120) + secs(20) - secs(20) / 3;
        assert_eq!(s.due(relogin - Duration::from_millis(1)), Due::Nothing);
        assert_eq!(s.due(relogin), Due::Login);
        assert!(!s.expired(relogin));
        assert!(s.expired(t0 + secs(140)));
    }

    #[test]
    fn a_non_renewable_token_is_replaced_and_a_zero_lease_never_is() {
        let t0 = Instant::now();
        let s = Session::from_login(login(90, false), t0);
        assert_eq!(s.due(t0 + secs(60)), Due::Login);
        let endless = Session::from_login(login(0, true), t0);
        assert_eq!(endless.due(t0 + secs(10_000_000)), Due::Nothing);
        assert_eq!(endless.until_due(t0), None);
        assert!(!endless.expired(t0 + secs(10_000_000)));
        // A lease from outside too large for an Instant does not overflow.
        let huge = Session::from_login(login(u64::MAX, true), t0);
        assert_eq!(huge.due(t0 + secs(10_000_000)), Due::Nothing);
    }

    #[test]
    fn retries_never_go_past_the_expiry() {
        let t0 = Instant::now();
        let mut s = Session::from_login(login(90, true), t0);
        s.retry_at(t0 + secs(75));
        assert_eq!(s.until_due(t0), Some(secs(75)));
        s.retry_at(t0 + secs(120));
        assert_eq!(s.until_due(t0), Some(secs(90)));
        assert_eq!(
            s.due(t0 + secs(90)),
            Due::Login,
            "expired: only a login helps"
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_bound_and_resets() {
        let mut b = Backoff::new(secs(1), secs(60));
        let waits: Vec<u64> = (0..9).map(|_| b.next().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        for _ in 0..100 {
            assert_eq!(b.next(), secs(60));
        }
        b.reset();
        assert_eq!(b.next(), secs(1));
        // A bound below the first wait is raised to it.
        assert_eq!(Backoff::new(secs(10), secs(1)).next(), secs(10));
    }
}
