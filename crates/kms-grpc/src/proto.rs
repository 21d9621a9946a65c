//! Generated protobuf messages, tonic clients and servers.
//!
//! The protos are ours, written from KMS-PROTOCOL §2; package, service and method names,
//! field numbers and types match the Thales plugin and the Kubernetes KMS APIs.

#![allow(
    missing_docs,
    unreachable_pub,
    clippy::pedantic,
    clippy::doc_markdown,
    reason = "generated code"
)]

/// `thalescpl.io.ekms.istio.v1`: the Istio KMS service istiod calls.
pub mod istio {
    tonic::include_proto!("thalescpl.io.ekms.istio.v1");
}

/// `v1beta1`: Kubernetes KMS v1 with the Thales extension fields.
pub mod v1beta1 {
    tonic::include_proto!("v1beta1");
}

/// `v2`: Kubernetes KMS v2.
pub mod v2 {
    tonic::include_proto!("v2");
}

/// `grpc.health.v1`: the standard health service.
pub mod health {
    tonic::include_proto!("grpc.health.v1");
}

/// `meshhsm.signing.v1`: our signing API for hsm-key mode.
pub mod signing {
    tonic::include_proto!("meshhsm.signing.v1");
}

/// Full gRPC service names, as clients and the health service use them.
pub mod names {
    /// The Istio KMS service.
    pub const ISTIO: &str = "thalescpl.io.ekms.istio.v1.KeyManagementService";
    /// Kubernetes KMS v1beta1.
    pub const V1BETA1: &str = "v1beta1.KeyManagementService";
    /// Kubernetes KMS v2.
    pub const V2: &str = "v2.KeyManagementService";
    /// The signing service.
    pub const SIGNING: &str = "meshhsm.signing.v1.SigningService";
    /// The health service.
    pub const HEALTH: &str = "grpc.health.v1.Health";
}
