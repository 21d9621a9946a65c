//! Vocabulary every mesh-hsm library shares, so that reports from the HSM, Vault and Kubernetes
//! planes combine into one: [`Mode`] (apply or dry run), [`Outcome`] (what an idempotent
//! `ensure_*` operation did to one object) and [`RetryPolicy`] (bounded exponential backoff for
//! transient failures), plus [`fs`], the one atomic, permission-preserving file write.

pub mod fs;
mod outcome;
mod retry;

pub use outcome::{Mode, Outcome};
pub use retry::{RetryPolicy, Retryable};
