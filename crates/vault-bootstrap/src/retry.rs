//! Bounded retries with exponential backoff for transient failures (transport errors, a sealed
//! server, HTTP 5xx and 429; see [`crate::Error::is_retryable`]). Client errors are never retried.

pub use mesh_common::RetryPolicy;

use crate::Error;

impl mesh_common::Retryable for Error {
    fn is_retryable(&self) -> bool {
        Error::is_retryable(self)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn client_errors_stop_at_once_and_unavailability_uses_the_whole_budget() {
        let calls = AtomicU32::new(0);
        let err = RetryPolicy::default()
            .run("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Error::Api {
                    addr: "a".into(),
                    operation: "read",
                    object: "x".into(),
                    code: 400,
                    message: String::new(),
                })
            })
            .await
            .unwrap_err();
        assert!(!err.is_retryable());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let err = RetryPolicy::default()
            .run("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Error::Unavailable {
                    addr: "http://127.0.0.1:1".into(),
                    source: "refused".into(),
                })
            })
            .await
            .unwrap_err();
        assert!(err.is_unavailable());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            RetryPolicy::default().attempts
        );
    }
}
