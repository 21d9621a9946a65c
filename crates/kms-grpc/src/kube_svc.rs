//! Kubernetes KMS v2 (`v2.KeyManagementService`) and the plugin's v1beta1 over
//! [`hsm_core::KubeKms`].

use std::collections::BTreeMap;
use std::sync::Arc;

use hsm_core::{KubeDecryptRequest, KubeEncryptRequest, KubeKms};
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::error::{hsm_status, invalid_field};
use crate::policy::Rpc;
use crate::proto::{v1beta1, v2};
use crate::server::{Call, Shared};

/// The API server's limits (KMS-PROTOCOL §2.4): key id ≤ 1 KiB, annotations ≤ 32 KiB.
const MAX_KEY_ID: usize = 1024;
const MAX_ANNOTATIONS: usize = 32 * 1024;

fn kube<'a>(call: &'a Call<'_>, rpc: Rpc) -> Result<&'a Arc<dyn KubeKms>, Status> {
    call.backends()?.kube.as_ref().ok_or_else(|| {
        Status::failed_precondition(format!(
            "{rpc}: Kubernetes KMS is not configured; start the plugin with a KMS key id"
        ))
    })
}

pub(crate) struct V2Service {
    shared: Arc<Shared>,
}

impl V2Service {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl v2::key_management_service_server::KeyManagementService for V2Service {
    async fn status(
        &self,
        request: Request<v2::StatusRequest>,
    ) -> Result<Response<v2::StatusResponse>, Status> {
        const RPC: Rpc = Rpc::V2Status;
        let call = self.shared.begin(RPC, &request)?;
        let result = async {
            let status = kube(&call, RPC)?
                .status()
                .await
                .map_err(|e| hsm_status(RPC, &e))?;
            Ok(v2::StatusResponse {
                version: status.version,
                healthz: status.healthz,
                key_id: status.key_id,
            })
        }
        .await;
        call.finish(result)
    }

    async fn decrypt(
        &self,
        request: Request<v2::DecryptRequest>,
    ) -> Result<Response<v2::DecryptResponse>, Status> {
        const RPC: Rpc = Rpc::V2Decrypt;
        let call = self.shared.begin(RPC, &request)?;
        let req = request.into_inner();
        let result = async {
            if req.key_id.is_empty() {
                return Err(invalid_field(
                    RPC,
                    "key_id",
                    "it is empty; send the key id Encrypt returned",
                ));
            }
            if req.key_id.len() > MAX_KEY_ID {
                return Err(invalid_field(
                    RPC,
                    "key_id",
                    format!("{} bytes is over the 1024-byte limit", req.key_id.len()),
                ));
            }
            let size: usize = req.annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
            if size > MAX_ANNOTATIONS {
                return Err(invalid_field(
                    RPC,
                    "annotations",
                    format!("{size} bytes is over the 32 KiB limit"),
                ));
            }
            let plaintext = kube(&call, RPC)?
                .decrypt(KubeDecryptRequest {
                    ciphertext: req.ciphertext,
                    uid: req.uid,
                    key_id: req.key_id,
                    annotations: req.annotations.into_iter().collect::<BTreeMap<_, _>>(),
                })
                .await
                .map_err(|e| hsm_status(RPC, &e))?;
            Ok(v2::DecryptResponse {
                plaintext: plaintext.to_vec(),
            })
        }
        .await;
        call.finish(result)
    }

    async fn encrypt(
        &self,
        request: Request<v2::EncryptRequest>,
    ) -> Result<Response<v2::EncryptResponse>, Status> {
        const RPC: Rpc = Rpc::V2Encrypt;
        let call = self.shared.begin(RPC, &request)?;
        let req = request.into_inner();
        let result = async {
            if req.plaintext.is_empty() {
                return Err(invalid_field(RPC, "plaintext", "it is empty"));
            }
            let out = kube(&call, RPC)?
                .encrypt(KubeEncryptRequest {
                    plaintext: Zeroizing::new(req.plaintext),
                    uid: req.uid,
                })
                .await
                .map_err(|e| hsm_status(RPC, &e))?;
            Ok(v2::EncryptResponse {
                ciphertext: out.ciphertext,
                key_id: out.key_id,
                annotations: out.annotations.into_iter().collect(),
            })
        }
        .await;
        call.finish(result)
    }
}

pub(crate) struct V1Beta1Service {
    shared: Arc<Shared>,
}

impl V1Beta1Service {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl v1beta1::key_management_service_server::KeyManagementService for V1Beta1Service {
    async fn version(
        &self,
        request: Request<v1beta1::VersionRequest>,
    ) -> Result<Response<v1beta1::VersionResponse>, Status> {
        const RPC: Rpc = Rpc::V1Version;
        let call = self.shared.begin(RPC, &request)?;
        let result = async {
            let v = kube(&call, RPC)?
                .v1_version()
                .await
                .map_err(|e| hsm_status(RPC, &e))?;
            Ok(v1beta1::VersionResponse {
                version: v.version,
                runtime_name: v.runtime_name,
                runtime_version: v.runtime_version,
            })
        }
        .await;
        call.finish(result)
    }

    async fn decrypt(
        &self,
        request: Request<v1beta1::DecryptRequest>,
    ) -> Result<Response<v1beta1::DecryptResponse>, Status> {
        const RPC: Rpc = Rpc::V1Decrypt;
        let call = self.shared.begin(RPC, &request)?;
        let req = request.into_inner();
        let result = async {
            let plain = kube(&call, RPC)?
                .v1_decrypt(req.cipher, req.key_id.into_bytes())
                .await
                .map_err(|e| hsm_status(RPC, &e))?;
            Ok(v1beta1::DecryptResponse {
                plain: plain.to_vec(),
            })
        }
        .await;
        call.finish(result)
    }

    async fn encrypt(
        &self,
        request: Request<v1beta1::EncryptRequest>,
    ) -> Result<Response<v1beta1::EncryptResponse>, Status> {
        const RPC: Rpc = Rpc::V1Encrypt;
        let call = self.shared.begin(RPC, &request)?;
        let req = request.into_inner();
        let result = async {
            let cipher = kube(&call, RPC)?
                .v1_encrypt(Zeroizing::new(req.plain), req.key_id.into_bytes())
                .await
                .map_err(|e| hsm_status(RPC, &e))?;
            Ok(v1beta1::EncryptResponse { cipher })
        }
        .await;
        call.finish(result)
    }
}
