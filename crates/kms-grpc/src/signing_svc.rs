//! `meshhsm.signing.v1.SigningService`: hsm-key mode, where the CA key pair lives in the HSM.
//! Certificates are issued only under an issuer certificate that carries the HSM key and
//! verifies against a CA anchor on the token, only for CSRs that pass the CSR policy, and
//! workload certificates only in the server's trust domain. Who may call what (raw Sign and
//! intermediates are not the sidecar's) is decided before any of this, by `access.rs`.

use std::sync::Arc;

use ca_signing::{
    CsrPolicy, CsrPurpose, IstiodCaProfile, KeyKind, PublicKeyInfo, San, SignError,
    SignatureAlgorithm, Signer, Subject, WorkloadProfile,
};
use hsm_core::{HsmAdmin, KeyPairId, VerifyCertChainRequest};
use tonic::{Request, Response, Status};

use crate::error::{hsm_status, invalid_field, signing_status};
use crate::policy::Rpc;
use crate::proto::signing as pb;
use crate::proto::signing::signing_service_server::SigningService as SigningApi;
use crate::server::{Call, Shared};

pub(crate) struct SigningService {
    shared: Arc<Shared>,
    algorithms: Algorithms,
}

impl SigningService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            algorithms: Algorithms::default(),
        }
    }
}

/// The algorithms of the public keys seen so far, by SPKI: parsing a key with OpenSSL costs
/// more than the HSM signature it names, and the signing keys are few and long-lived.
#[derive(Default)]
struct Algorithms {
    known: std::sync::Mutex<Vec<(Vec<u8>, KeyAlgorithms)>>,
}

/// A key's algorithm on the wire and for signing.
type KeyAlgorithms = (pb::KeyAlgorithm, SignatureAlgorithm);

impl Algorithms {
    /// At most this many keys are remembered (the plugin serves a handful of signing keys).
    const MAX: usize = 16;

    fn of(&self, rpc: Rpc, spki: &[u8]) -> Result<KeyAlgorithms, Status> {
        let lock = || {
            self.known
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some((_, found)) = lock().iter().find(|(k, _)| k == spki) {
            return Ok(*found);
        }
        let found = algorithm_of(rpc, spki)?;
        let mut known = lock();
        if known.len() >= Self::MAX {
            known.remove(0);
        }
        known.push((spki.to_vec(), found));
        Ok(found)
    }
}

/// The key the request names (or the default), if this plugin may use it.
fn key_id(call: &Call<'_>, rpc: Rpc, requested: Vec<u8>) -> Result<KeyPairId, Status> {
    let keys = &call.config().signing_keys;
    if requested.is_empty() {
        return keys.first().cloned().ok_or_else(|| {
            Status::failed_precondition(format!(
                "{rpc}: no signing key is configured; start the plugin with a signing key id"
            ))
        });
    }
    let id = KeyPairId::new(requested).map_err(|e| invalid_field(rpc, "key_id", e))?;
    if keys.contains(&id) {
        Ok(id)
    } else {
        Err(Status::permission_denied(format!(
            "{rpc}: key pair {id} is not one of this plugin's signing keys ({})",
            keys.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

fn algorithm_of(rpc: Rpc, spki: &[u8]) -> Result<KeyAlgorithms, Status> {
    let info = PublicKeyInfo::from_spki_der(spki).map_err(|e| signing_status(rpc, &e))?;
    match &info.kind {
        KeyKind::Ec { curve, .. } if curve == "P-256" => Ok((
            pb::KeyAlgorithm::EcdsaP256,
            SignatureAlgorithm::EcdsaP256Sha256,
        )),
        KeyKind::Ec { curve, .. } if curve == "P-384" => Ok((
            pb::KeyAlgorithm::EcdsaP384,
            SignatureAlgorithm::EcdsaP384Sha384,
        )),
        KeyKind::Rsa { bits: 3072 } => Ok((
            pb::KeyAlgorithm::Rsa3072,
            SignatureAlgorithm::RsaPkcs1Sha256,
        )),
        other => Err(Status::failed_precondition(format!(
            "{rpc}: the HSM key is {other}, which the signing service does not support"
        ))),
    }
}

/// A [`Signer`] over the async port; used on a blocking thread only.
struct PortSigner {
    admin: Arc<dyn HsmAdmin>,
    id: KeyPairId,
    algorithm: SignatureAlgorithm,
    spki: Vec<u8>,
    runtime: tokio::runtime::Handle,
}

impl Signer for PortSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn public_key_spki_der(&self) -> Vec<u8> {
        self.spki.clone()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        self.runtime
            .block_on(self.admin.sign(self.id.clone(), message.to_vec()))
            .map_err(|e| SignError {
                key: format!("HSM key pair {}", self.id),
                source: Box::new(e),
            })
    }
}

async fn port_signer(
    call: &Call<'_>,
    algorithms: &Algorithms,
    rpc: Rpc,
    id: KeyPairId,
) -> Result<PortSigner, Status> {
    let admin = Arc::clone(&call.backends()?.admin);
    let spki = admin
        .public_key(id.clone())
        .await
        .map_err(|e| hsm_status(rpc, &e))?;
    let (_, algorithm) = algorithms.of(rpc, &spki)?;
    Ok(PortSigner {
        admin,
        id,
        algorithm,
        spki,
        runtime: tokio::runtime::Handle::current(),
    })
}

async fn blocking<T: Send + 'static>(
    rpc: Rpc,
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("{rpc}: the signing task ended abnormally: {e}")))?
}

fn non_empty(rpc: Rpc, field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        Err(invalid_field(rpc, field, "it is empty"))
    } else {
        Ok(())
    }
}

#[tonic::async_trait]
impl SigningApi for SigningService {
    async fn get_public_key(
        &self,
        request: Request<pb::GetPublicKeyRequest>,
    ) -> Result<Response<pb::GetPublicKeyResponse>, Status> {
        const RPC: Rpc = Rpc::GetPublicKey;
        let call = self.shared.begin(RPC, &request)?;
        let req = request.into_inner();
        let result = async {
            let id = key_id(&call, RPC, req.key_id)?;
            let spki = call
                .backends()?
                .admin
                .public_key(id)
                .await
                .map_err(|e| hsm_status(RPC, &e))?;
            let (algorithm, _) = self.algorithms.of(RPC, &spki)?;
            Ok(pb::GetPublicKeyResponse {
                spki_der: spki,
                algorithm: algorithm.into(),
            })
        }
        .await;
        call.finish(result)
    }

    async fn sign(
        &self,
        request: Request<pb::SignRequest>,
    ) -> Result<Response<pb::SignResponse>, Status> {
        const RPC: Rpc = Rpc::Sign;
        let call = self.shared.begin(RPC, &request)?;
        let req = request.into_inner();
        let result = async {
            let id = key_id(&call, RPC, req.key_id)?;
            if req.message.is_empty() {
                return Err(invalid_field(RPC, "message", "it is empty"));
            }
            let admin = &call.backends()?.admin;
            let spki = admin
                .public_key(id.clone())
                .await
                .map_err(|e| hsm_status(RPC, &e))?;
            let (algorithm, _) = self.algorithms.of(RPC, &spki)?;
            let signature = admin
                .sign(id, req.message)
                .await
                .map_err(|e| hsm_status(RPC, &e))?;
            Ok(pb::SignResponse {
                signature,
                algorithm: algorithm.into(),
            })
        }
        .await;
        call.finish(result)
    }

    async fn create_csr(
        &self,
        request: Request<pb::CreateCsrRequest>,
    ) -> Result<Response<pb::CreateCsrResponse>, Status> {
        const RPC: Rpc = Rpc::CreateCsr;
        let call = self.shared.begin(RPC, &request)?;
        let req = request.into_inner();
        let result = async {
            let id = key_id(&call, RPC, req.key_id)?;
            non_empty(RPC, "common_name", &req.common_name)?;
            let signer = port_signer(&call, &self.algorithms, RPC, id).await?;
            let subject = Subject {
                organization: (!req.organization.is_empty()).then_some(req.organization),
                ..Subject::new("", &req.common_name)
            };
            let sans: Vec<San> = req
                .dns_names
                .into_iter()
                .map(San::Dns)
                .chain(req.uris.into_iter().map(San::Uri))
                .collect();
            let csr = blocking(RPC, move || {
                ca_signing::create_csr(&subject, &sans, &signer)
                    .map_err(|e| signing_status(RPC, &e))
            })
            .await?;
            Ok(pb::CreateCsrResponse {
                csr_pem: csr.to_pem(),
            })
        }
        .await;
        call.finish(result)
    }

    async fn issue_certificate(
        &self,
        request: Request<pb::IssueCertificateRequest>,
    ) -> Result<Response<pb::IssueCertificateResponse>, Status> {
        const RPC: Rpc = Rpc::IssueCertificate;
        let call = self.shared.begin(RPC, &request)?;
        let req = request.into_inner();
        let result = async {
            // The trust domain is the server's, never the caller's choice.
            let trust_domain = call.config().trust_domain.clone();
            if !req.trust_domain.is_empty() && req.trust_domain != trust_domain {
                return Err(invalid_field(
                    RPC,
                    "trust_domain",
                    format!(
                        "{:?} is not this plugin's trust domain {trust_domain:?}; leave the field empty or send {trust_domain:?}",
                        req.trust_domain
                    ),
                ));
            }
            let id = key_id(&call, RPC, req.key_id.clone())?;
            if req.issuer_certificate.is_empty() {
                return Err(invalid_field(RPC, "issuer_certificate", "it is empty"));
            }
            if req.csr.is_empty() {
                return Err(invalid_field(RPC, "csr", "it is empty"));
            }
            let purpose = match pb::Purpose::try_from(req.purpose) {
                Ok(pb::Purpose::IstiodCa) => CsrPurpose::IstiodCa,
                Ok(pb::Purpose::Workload) => CsrPurpose::Workload,
                _ => {
                    return Err(invalid_field(
                        RPC,
                        "purpose",
                        format!("{} is not ISTIOD_CA (1) or WORKLOAD (2)", req.purpose),
                    ));
                }
            };
            let signer = port_signer(&call, &self.algorithms, RPC, id).await?;
            // The issuer must carry the HSM key and chain to an anchor on the token.
            call.backends()?
                .istio
                .verify_cert_chain(VerifyCertChainRequest {
                    certificates: vec![req.issuer_certificate.clone()],
                    expected_spki: Some(signer.spki.clone()),
                })
                .await
                .map_err(|e| {
                    let status = hsm_status(RPC, &e);
                    Status::new(
                        status.code(),
                        format!("field issuer_certificate: {}", status.message()),
                    )
                })?;
            let (cert, issuer) = blocking(RPC, move || {
                let map = |e: ca_signing::Error| signing_status(RPC, &e);
                let issuer =
                    ca_signing::Certificate::parse(&req.issuer_certificate).map_err(map)?;
                let cert = if purpose == CsrPurpose::IstiodCa {
                    let reviewed = ca_signing::review_csr(&req.csr, &CsrPolicy::default(), purpose)
                        .map_err(map)?;
                    let mut profile = IstiodCaProfile::default();
                    if req.validity_days > 0 {
                        profile.validity_days = req.validity_days;
                    }
                    ca_signing::sign_istiod_ca(&reviewed, &issuer, &signer, &profile)
                        .map_err(map)?
                } else {
                    let policy = CsrPolicy::for_trust_domain(&trust_domain).map_err(map)?;
                    let reviewed =
                        ca_signing::review_csr(&req.csr, &policy, purpose).map_err(map)?;
                    let mut profile = WorkloadProfile::new(
                        &trust_domain,
                        &req.namespace,
                        &req.service_account,
                    );
                    if req.ttl_seconds > 0 {
                        profile.ttl = std::time::Duration::from_secs(req.ttl_seconds);
                    }
                    ca_signing::issue_workload(
                        &profile,
                        &reviewed.report().public_key.spki_der,
                        &issuer,
                        &signer,
                    )
                    .map_err(map)?
                };
                Ok((cert.pem(), issuer.pem()))
            })
            .await?;
            Ok(pb::IssueCertificateResponse {
                chain_pem: format!("{cert}{issuer}"),
                certificate_pem: cert,
            })
        }
        .await;
        call.finish(result)
    }
}
