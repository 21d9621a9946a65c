//! gRPC KMS services of mesh-hsm, served on a Unix socket.
//!
//! The services (Istio KMS v1 wire-compatible with `thalescpl.io.ekms.istio.v1`, Kubernetes KMS
//! v2 and v1beta1, and our signing API) sit on top of `hsm-core`; this crate adds transport,
//! access control and error mapping and never touches PKCS#11 directly.
//!
//! Today it provides the socket lifecycle: [`socket::prepare`] makes a path ready to bind
//! (removing a stale socket, refusing to delete anything that is not a socket).

pub mod socket;
