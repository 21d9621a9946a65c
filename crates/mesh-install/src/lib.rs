//! The mesh HSM install flow as ordered, named steps.
//!
//! Each step of the guide (FLOW.md) will get a `plan` and an idempotent `apply` over the other
//! crates' ports. Today this crate provides the catalogue of steps, [`steps::Step`], which the
//! CLI uses to show the flow and what each step owns.

pub mod steps;
