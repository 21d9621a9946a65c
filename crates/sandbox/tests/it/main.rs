//! Sandbox fixtures against the real SoftHSM2 module and a real OpenBao server.

mod istiod_emulated;
mod kube_client;
mod kube_kubectl;
mod kube_openbao;
mod local_cluster;
mod openbao;
mod softhsm;
