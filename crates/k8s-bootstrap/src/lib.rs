//! Cluster-side steps of the mesh HSM install (FLOW.md steps 4, 7, 8, 12, 13 and the Secrets of
//! step 10), over a narrow `Kube` port.
//!
//! Today it provides the guide's names: [`names`] holds the objects the guide creates, and
//! [`ClusterSuffix`] validates the per-cluster suffix and derives the file names of step 4.

pub mod names;

pub use names::{ClusterSuffix, InvalidSuffix};
