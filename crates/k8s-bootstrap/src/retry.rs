//! Bounded retries with exponential backoff for transient API failures (see
//! [`Error::is_retryable`]): connection failures, 5xx and 429. Client errors are never retried.

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
    use crate::Verb;

    fn api(code: u16) -> Error {
        Error::Api {
            verb: Verb::Get,
            resource: "x".into(),
            namespace: None,
            code,
            reason: String::new(),
            message: String::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn forbidden_stops_at_once_and_throttling_uses_the_whole_budget() {
        for (code, expected_calls) in [(403, 1), (429, RetryPolicy::default().attempts)] {
            let calls = AtomicU32::new(0);
            let err = RetryPolicy::default()
                .run("t", || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err::<(), _>(api(code))
                })
                .await
                .unwrap_err();
            assert_eq!(err.status_code(), Some(code));
            assert_eq!(calls.load(Ordering::SeqCst), expected_calls);
        }
    }
}
