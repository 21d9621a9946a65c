//! `vault-client` against real OpenBao servers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test on error"
)]

mod flags;
mod health;
mod run;
mod support;
