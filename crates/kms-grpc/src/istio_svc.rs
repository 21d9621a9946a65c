//! `thalescpl.io.ekms.istio.v1.KeyManagementService` over [`hsm_core::IstioKms`].

use std::sync::Arc;

use hsm_core::{
    AuthenticatedDecryptRequest, AuthenticatedEncryptRequest, CaId, GenerateDekRequest,
    GenerateSKeyRequest, ImportCaCertRequest, ImportPolicy, KekId, LoadSKeyRequest, SKeySpec,
    VerifyCertChainRequest,
};
use tonic::{Request, Response, Status};

use crate::error::{hsm_status, invalid_field};
use crate::policy::Rpc;
use crate::proto::istio as pb;
use crate::proto::istio::key_management_service_server::KeyManagementService;
use crate::server::{CaKeyMode, Shared};

pub(crate) struct IstioService {
    shared: Arc<Shared>,
}

impl IstioService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

fn kek_id(rpc: Rpc, bytes: Vec<u8>) -> Result<KekId, Status> {
    KekId::new(bytes).map_err(|e| invalid_field(rpc, "kek_kid", e))
}

#[tonic::async_trait]
impl KeyManagementService for IstioService {
    async fn generate_kek(
        &self,
        request: Request<pb::GenerateKekRequest>,
    ) -> Result<Response<pb::GenerateKekResponse>, Status> {
        const RPC: Rpc = Rpc::GenerateKek;
        let call = self.shared.begin(RPC, &request)?;
        let req = request.into_inner();
        let result = async {
            let id = if req.kek_kid.is_empty() {
                None
            } else {
                Some(kek_id(RPC, req.kek_kid)?)
            };
            let id = call
                .backends()?
                .istio
                .generate_kek(id)
                .await
                .map_err(|e| hsm_status(RPC, &e))?;
            Ok(pb::GenerateKekResponse {
                kek_kid: id.as_bytes().to_vec(),
            })
        }
        .await;
        call.finish(result)
    }

    async fn generate_dek(
        &self,
        request: Request<pb::GenerateDekRequest>,
    ) -> Result<Response<pb::GenerateDekResponse>, Status> {
        const RPC: Rpc = Rpc::GenerateDek;
        let call = self.shared.begin(RPC, &request)?;
        let req = request.into_inner();
        let result = async {
            let kek_id = kek_id(RPC, req.kek_kid)?;
            let blob = call
                .backends()?
                .istio
                .generate_dek(GenerateDekRequest { kek_id })
                .await
                .map_err(|e| hsm_status(RPC, &e))?;
            Ok(pb::GenerateDekResponse {
                encrypted_dek_blob: blob,
            })
        }
        .await;
        call.finish(result)
    }

    async fn generate_s_key(
        &self,
        request: Request<pb::GenerateSKeyRequest>,
    ) -> Result<Response<pb::GenerateSKeyResponse>, Status> {
        const RPC: Rpc = Rpc::GenerateSKey;
        let call = self.shared.begin(RPC, &request)?;
        let req = request.into_inner();
        let result = async {
            let spec = SKeySpec::from_wire(req.kind, req.size).map_err(|e| hsm_status(RPC, &e))?;
            let kek_id = kek_id(RPC, req.kek_kid)?;
            let blob = call
                .backends()?
                .istio
                .generate_skey(GenerateSKeyRequest {
                    kek_id,
                    encrypted_dek: req.encrypted_dek_blob,
                    spec,
                })
                .await
                .map_err(|e| hsm_status(RPC, &e))?;
            Ok(pb::GenerateSKeyResponse {
                encrypted_skey_blob: blob,
            })
        }
        .await;
        call.finish(result)
    }

    async fn load_s_key(
        &self,
        request: Request<pb::LoadSKeyRequest>,
    ) -> Result<Response<pb::LoadSKeyResponse>, Status> {
        const RPC: Rpc = Rpc::LoadSKey;
        let call = self.shared.begin(RPC, &request)?;
        let req = request.into_inner();
        let result = async {
            if call.config().ca_key_mode == CaKeyMode::HsmKey {
                return Err(Status::failed_precondition(
                    "LoadSKey: refused in hsm-key mode: the CA private key lives in the HSM and is never exported; sign through the signing service",
                ));
            }
            let kek_id = kek_id(RPC, req.kek_kid)?;
            let pem = call
                .backends()?
                .istio
                .load_skey(LoadSKeyRequest {
                    kek_id,
                    encrypted_dek: req.encrypted_dek_blob,
                    encrypted_skey: req.encrypted_skey_blob,
                })
                .await
                .map_err(|e| hsm_status(RPC, &e))?;
            Ok(pb::LoadSKeyResponse {
                plaintext_skey: pem.expose().to_vec(),
            })
        }
        .await;
        call.finish(result)
    }

    async fn authenticated_encrypt(
        &self,
        request: Request<pb::AuthenticatedEncryptRequest>,
    ) -> Result<Response<pb::AuthenticatedEncryptResponse>, Status> {
        const RPC: Rpc = Rpc::AuthenticatedEncrypt;
        let call = self.shared.begin(RPC, &request)?;
        let req = request.into_inner();
        let result = async {
            let kek_id = kek_id(RPC, req.kek_kid)?;
            let ciphertext = call
                .backends()?
                .istio
                .authenticated_encrypt(AuthenticatedEncryptRequest {
                    kek_id,
                    encrypted_dek: req.encrypted_dek_blob,
                    plaintext: req.plaintext,
                    aad: req.aad,
                })
                .await
                .map_err(|e| hsm_status(RPC, &e))?;
            Ok(pb::AuthenticatedEncryptResponse { ciphertext })
        }
        .await;
        call.finish(result)
    }

    async fn authenticated_decrypt(
        &self,
        request: Request<pb::AuthenticatedDecryptRequest>,
    ) -> Result<Response<pb::AuthenticatedDecryptResponse>, Status> {
        const RPC: Rpc = Rpc::AuthenticatedDecrypt;
        let call = self.shared.begin(RPC, &request)?;
        let req = request.into_inner();
        let result = async {
            let kek_id = kek_id(RPC, req.kek_kid)?;
            let plaintext = call
                .backends()?
                .istio
                .authenticated_decrypt(AuthenticatedDecryptRequest {
                    kek_id,
                    encrypted_dek: req.encrypted_dek_blob,
                    ciphertext: req.ciphertext,
                    aad: req.aad,
                })
                .await
                .map_err(|e| hsm_status(RPC, &e))?;
            Ok(pb::AuthenticatedDecryptResponse {
                plaintext: plaintext.to_vec(),
            })
        }
        .await;
        call.finish(result)
    }

    async fn import_ca_cert(
        &self,
        request: Request<pb::ImportCaCertRequest>,
    ) -> Result<Response<pb::ImportCaCertResponse>, Status> {
        const RPC: Rpc = Rpc::ImportCaCert;
        let call = self.shared.begin(RPC, &request)?;
        let req = request.into_inner();
        let result = async {
            let ca_id = if req.ca_id.is_empty() {
                None
            } else {
                Some(CaId::new(req.ca_id).map_err(|e| invalid_field(RPC, "ca_id", e))?)
            };
            if req.ca_cert_blob.is_empty() {
                return Err(invalid_field(
                    RPC,
                    "ca_cert_blob",
                    "it is empty; send the root certificate, PEM or DER",
                ));
            }
            let outcome = call
                .backends()?
                .istio
                .import_ca_cert(ImportCaCertRequest {
                    ca_id,
                    cert: req.ca_cert_blob,
                    policy: ImportPolicy::KeepExisting,
                })
                .await
                .map_err(|e| hsm_status(RPC, &e))?;
            tracing::info!(%outcome, "CA certificate import");
            Ok(pb::ImportCaCertResponse { success: true })
        }
        .await;
        call.finish(result)
    }

    async fn verify_cert_chain(
        &self,
        request: Request<pb::VerifyCertChainRequest>,
    ) -> Result<Response<pb::VerifyCertChainResponse>, Status> {
        const RPC: Rpc = Rpc::VerifyCertChain;
        let call = self.shared.begin(RPC, &request)?;
        let req = request.into_inner();
        let result = async {
            if req.certificates.is_empty() {
                return Err(invalid_field(
                    RPC,
                    "certificates",
                    "it is empty; send the chain (DER or PEM elements)",
                ));
            }
            let verified = call
                .backends()?
                .istio
                .verify_cert_chain(VerifyCertChainRequest {
                    certificates: req.certificates,
                    expected_spki: None,
                })
                .await
                .map_err(|e| hsm_status(RPC, &e))?;
            tracing::info!(
                target_subject = %verified.target_subject,
                anchor = %verified.anchor_subject,
                "certificate chain verified"
            );
            Ok(pb::VerifyCertChainResponse {
                successful_verification: true,
            })
        }
        .await;
        call.finish(result)
    }
}
