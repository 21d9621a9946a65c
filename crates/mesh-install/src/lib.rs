//! The mesh HSM install flow as ordered, named steps.
//!
//! - [`steps::Step`]: the catalogue of the guide's steps (FLOW.md numbering) and who owns each.
//! - [`config::Config`]: the meshca TOML configuration (secrets only as file or environment
//!   references), with the guide's defaults and a commented [`config::SAMPLE`].
//! - [`flow::run`]: every step (0 to 13) in order over the HSM
//!   ([`hsm_core::HsmAdmin`]), Vault ([`vault_bootstrap::Vault`]) and Kubernetes
//!   ([`k8s_bootstrap::Kube`]) ports, planned (dry run) or applied idempotently, combined into
//!   one serialisable [`flow::FlowReport`]; steps 9-11 also over an [`install::Installer`]
//!   (`istioctl`, or the sandbox's emulated istiod), the plugin's [`hsm_core::IstioKms`]
//!   (decrypting istiod's CSR), the root's [`ca_signing::Signer`] and a [`install::MeshProbe`].
//! - [`install`]: the `IstioOperator` rendering (ASM `values.hsm.*`, or the upstream overlay)
//!   and the install port.
//! - [`status::checks`]: drift and health checks from a dry-run report.
//! - [`audit::records`]: the audit records (created/updated objects, no values) of a report.
//!
//! The crate reads files the configuration names but no environment variables, prints nothing
//! and never exits.

pub mod audit;
pub mod config;
mod error;
pub mod flow;
pub mod install;
pub mod status;
pub mod steps;

pub use error::{Error, Result};
