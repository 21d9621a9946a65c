//! How many clusters one process runs at once. Tests start one cluster each and run in parallel
//! threads; on a two-core machine more than a couple of control planes starting together only
//! slow each other down. `SANDBOX_MAX_CLUSTERS` overrides the default of 2.

use std::sync::{Arc, LazyLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

static PERMITS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let limit = std::env::var("SANDBOX_MAX_CLUSTERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(2);
    Arc::new(Semaphore::new(limit))
});

/// Waits for a slot; the slot is given back when the permit (held by the cluster) is dropped.
pub(crate) async fn acquire() -> OwnedSemaphorePermit {
    loop {
        if let Ok(permit) = Arc::clone(&PERMITS).acquire_owned().await {
            return permit;
        }
        // The semaphore is never closed; this only satisfies the type.
        tokio::task::yield_now().await;
    }
}
