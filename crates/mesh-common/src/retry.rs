use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// Errors that can tell a transient failure (connection refused, 5xx, 429, a sealed server) from
/// a permanent one.
pub trait Retryable {
    /// True when the same request may succeed if sent again later.
    fn is_retryable(&self) -> bool;
}

/// Bounded retries with exponential backoff for transient failures. Permanent failures (client
/// errors, a rejected credential) are returned at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, at least 1.
    pub attempts: u32,
    /// Wait after the first failure; doubled after each further one.
    pub initial_backoff: Duration,
    /// Upper bound of one wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, waiting 200 ms, 400 ms, 800 ms, 1.6 s in between (about 3 s in all).
    fn default() -> Self {
        Self {
            attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(3),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retry.
    pub const fn none() -> Self {
        Self {
            attempts: 1,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
        }
    }

    /// The wait after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// Runs `op` until it succeeds, fails with an error that is not retryable, or the attempts
    /// are used up; the last error is returned. `operation` names the call in the debug log.
    ///
    /// # Errors
    /// The last error `op` returned.
    pub async fn run<T, E, F, Fut>(&self, operation: &str, mut op: F) -> Result<T, E>
    where
        E: Retryable + Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let attempts = self.attempts.max(1);
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(err) if attempt < attempts && err.is_retryable() => {
                    let wait = self.backoff(attempt);
                    tracing::debug!(
                        operation,
                        attempt,
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        error = %err,
                        "transient failure, retrying"
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[derive(Debug)]
    struct Failure {
        transient: bool,
    }

    impl Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(if self.transient {
                "transient"
            } else {
                "permanent"
            })
        }
    }

    impl Retryable for Failure {
        fn is_retryable(&self) -> bool {
            self.transient
        }
    }

    fn fast(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_millis(200));
        assert_eq!(p.backoff(2), Duration::from_millis(400));
        assert_eq!(p.backoff(5), Duration::from_secs(3));
        assert_eq!(p.backoff(64), Duration::from_secs(3));
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let result: Result<u32, Failure> = fast(5)
            .run("probe", || async {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n < 3 {
                    Err(Failure { transient: true })
                } else {
                    Ok(n)
                }
            })
            .await;
        assert_eq!(result.unwrap(), 3);
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), Failure> = fast(5)
            .run("probe", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Failure { transient: false })
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn attempts_are_bounded() {
        let calls = AtomicU32::new(0);
        let result: Result<(), Failure> = fast(3)
            .run("probe", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Failure { transient: true })
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
