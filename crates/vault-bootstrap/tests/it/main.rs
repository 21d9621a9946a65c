//! vault-bootstrap against real OpenBao servers (sandbox).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test on error"
)]

mod agent;
mod bootstrap;
mod lifecycle;
mod support;
