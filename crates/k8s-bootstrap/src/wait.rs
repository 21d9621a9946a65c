//! Waiting for a cluster condition, with progress reports and a timeout.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use crate::{Error, Result};

/// How long and how often to poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitOptions {
    /// Give up after this long.
    pub timeout: Duration,
    /// Pause between polls.
    pub interval: Duration,
}

impl Default for WaitOptions {
    /// Five minutes, polling every two seconds.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            interval: Duration::from_secs(2),
        }
    }
}

/// How far a condition has got.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Items that satisfy the condition.
    pub ready: usize,
    /// Items considered.
    pub total: usize,
    /// Names of items that do not satisfy it yet.
    pub pending: Vec<String>,
}

impl Progress {
    /// True when nothing is pending.
    pub fn is_done(&self) -> bool {
        self.pending.is_empty()
    }
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {} ready", self.ready, self.total)?;
        if !self.pending.is_empty() {
            write!(f, " (waiting for {})", self.pending.join(", "))?;
        }
        Ok(())
    }
}

/// Polls `check` until it reports nothing pending, calling `on_progress` whenever the progress
/// changes.
///
/// # Errors
/// [`Error::Timeout`] naming `what` and the last progress; errors of `check` are returned at
/// once.
pub async fn poll_until<F, Fut>(
    what: &str,
    options: WaitOptions,
    on_progress: &mut (dyn FnMut(&Progress) + Send),
    mut check: F,
) -> Result<Progress>
where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = Result<Progress>> + Send,
{
    let start = tokio::time::Instant::now();
    let mut last: Option<Progress> = None;
    loop {
        let progress = check().await?;
        if last.as_ref() != Some(&progress) {
            tracing::info!(k8s.wait = what, %progress, "waiting");
            on_progress(&progress);
        }
        if progress.is_done() {
            return Ok(progress);
        }
        if start.elapsed() >= options.timeout {
            return Err(Error::Timeout {
                what: what.to_owned(),
                waited: options.timeout,
                progress: progress.to_string(),
            });
        }
        last = Some(progress);
        tokio::time::sleep(options.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn progress(ready: usize, total: usize) -> Progress {
        Progress {
            ready,
            total,
            pending: (ready..total).map(|i| format!("p{i}")).collect(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn progress_is_reported_once_per_change_until_done() {
        let polls = AtomicUsize::new(0);
        let mut seen = Vec::new();
        let done = poll_until(
            "pods",
            WaitOptions::default(),
            &mut |p| seen.push(p.ready),
            || async {
                let n = polls.fetch_add(1, Ordering::SeqCst);
                Ok(progress((n / 2).min(3), 3))
            },
        )
        .await
        .unwrap();
        assert!(done.is_done());
        assert_eq!(seen, [0, 1, 2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_condition_that_never_holds_times_out_with_its_progress() {
        let options = WaitOptions {
            timeout: Duration::from_secs(10),
            interval: Duration::from_secs(1),
        };
        let err = poll_until("pods in app", options, &mut |_| {}, || async {
            Ok(progress(1, 2))
        })
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "timed out after 10s waiting for pods in app: 1 of 2 ready (waiting for p1)"
        );
    }
}
