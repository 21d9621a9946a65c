//! The mesh HSM install flow as ordered, named steps.
//!
//! - [`steps::Step`]: the catalogue of the guide's steps (FLOW.md numbering) and who owns each.
//! - [`config::Config`]: the meshca TOML configuration (secrets only as file or environment
//!   references), with the guide's defaults and a commented [`config::SAMPLE`].
//! - [`flow::run`]: the built steps (0 to 8, 12, 13) in order over the HSM
//!   ([`hsm_core::HsmAdmin`]), Vault ([`vault_bootstrap::Vault`]) and Kubernetes
//!   ([`k8s_bootstrap::Kube`]) ports, planned (dry run) or applied idempotently, combined into
//!   one serialisable [`flow::FlowReport`].
//! - [`status::checks`]: drift and health checks from a dry-run report.
//! - [`audit::records`]: the audit records (created/updated objects, no values) of a report.
//!
//! The crate reads files the configuration names but no environment variables, prints nothing
//! and never exits.

pub mod audit;
pub mod config;
mod error;
pub mod flow;
pub mod status;
pub mod steps;

pub use error::{Error, Result};
