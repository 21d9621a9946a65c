//! A typed client for the plugin socket. It checks who serves the socket (`SO_PEERCRED`)
//! before it sends anything: another user could have put their own server there.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{Error, Result};
use crate::policy::Rpc;
use crate::proto::health::health_check_response::ServingStatus;
use crate::proto::health::health_client::HealthClient;
use crate::proto::istio::key_management_service_client::KeyManagementServiceClient as IstioClient;
use crate::proto::signing::signing_service_client::SigningServiceClient;
use crate::proto::v1beta1::key_management_service_client::KeyManagementServiceClient as V1Beta1Client;
use crate::proto::v2::key_management_service_client::KeyManagementServiceClient as V2Client;
use crate::proto::{health, istio, signing, v2};

/// Which uid may serve the socket a [`KmsClient`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerUid {
    /// This process's effective uid, or root (the default).
    #[default]
    OwnOrRoot,
    /// This uid, or root (a plugin run by a dedicated user).
    Expected(u32),
}

impl ServerUid {
    /// Whether a server running as `uid` is accepted.
    pub fn accepts(self, uid: u32) -> bool {
        uid == 0
            || match self {
                Self::OwnOrRoot => uid == crate::socket::effective_uid(),
                Self::Expected(expected) => uid == expected,
            }
    }
}

impl std::fmt::Display for ServerUid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OwnOrRoot => write!(
                f,
                "this client's uid {} or root",
                crate::socket::effective_uid()
            ),
            Self::Expected(uid) => write!(f, "the expected uid {uid} or root"),
        }
    }
}

/// A connection to a plugin server on a Unix socket. Cheap to clone; calls may run
/// concurrently over the one connection.
#[derive(Debug, Clone)]
pub struct KmsClient {
    channel: Channel,
    path: PathBuf,
    max_message_bytes: usize,
}

fn rpc_error(rpc: Rpc) -> impl FnOnce(tonic::Status) -> Error {
    move |status| Error::Rpc {
        rpc,
        status: Box::new(status),
    }
}

impl KmsClient {
    /// Connects to the server listening on `path`, which must be served by this process's
    /// own uid or by root ([`ServerUid::OwnOrRoot`]).
    ///
    /// # Errors
    /// [`Error::Connect`] naming the path when nothing answers there;
    /// [`Error::UntrustedServer`] when another user serves it (nothing was sent).
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self> {
        Self::connect_to(path, ServerUid::OwnOrRoot).await
    }

    /// Connects to the server listening on `path`, checking who serves it first: the
    /// server's uid (`SO_PEERCRED`) is checked on every connection, before any byte is sent.
    ///
    /// # Errors
    /// [`Error::Connect`] naming the path when nothing answers there;
    /// [`Error::UntrustedServer`] when the server's uid is not the expected one.
    pub async fn connect_to(path: impl AsRef<Path>, server: ServerUid) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let dial = path.clone();
        let refused: Arc<Mutex<Option<u32>>> = Arc::default();
        let seen = Arc::clone(&refused);
        // The URI is required by the API but unused: the connector dials the socket.
        let endpoint = Endpoint::from_static("http://[::]:50051");
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let dial = dial.clone();
                let seen = Arc::clone(&seen);
                async move {
                    let stream = tokio::net::UnixStream::connect(dial).await?;
                    let uid = stream.peer_cred()?.uid();
                    if !server.accepts(uid) {
                        *seen
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(uid);
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::PermissionDenied,
                            format!("the socket is served by uid {uid}, not {server}"),
                        ));
                    }
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|source| {
                let uid = *refused
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match uid {
                    Some(uid) => Error::UntrustedServer {
                        path: path.clone(),
                        uid,
                        expected: server.to_string(),
                    },
                    None => Error::Connect {
                        path: path.clone(),
                        source,
                    },
                }
            })?;
        Ok(Self {
            channel,
            path,
            max_message_bytes: crate::server::ServerConfig::DEFAULT_MAX_MESSAGE_BYTES,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw Istio KMS client.
    pub fn istio(&self) -> IstioClient<Channel> {
        IstioClient::new(self.channel.clone())
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(usize::MAX)
    }

    /// The raw Kubernetes KMS v2 client.
    pub fn kube_v2(&self) -> V2Client<Channel> {
        V2Client::new(self.channel.clone()).max_decoding_message_size(self.max_message_bytes)
    }

    /// The raw Kubernetes KMS v1beta1 client.
    pub fn kube_v1beta1(&self) -> V1Beta1Client<Channel> {
        V1Beta1Client::new(self.channel.clone()).max_decoding_message_size(self.max_message_bytes)
    }

    /// The raw signing client.
    pub fn signing(&self) -> SigningServiceClient<Channel> {
        SigningServiceClient::new(self.channel.clone())
            .max_decoding_message_size(self.max_message_bytes)
    }

    /// The raw health client.
    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }

    /// Whether the server reports SERVING.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn is_serving(&self) -> Result<bool> {
        let status = self
            .health()
            .check(health::HealthCheckRequest::default())
            .await
            .map_err(rpc_error(Rpc::HealthCheck))?
            .into_inner()
            .status;
        Ok(status == i32::from(ServingStatus::Serving))
    }

    /// GenerateKEK; returns the KEK id (the server's random UUID when `kek_id` is `None`).
    ///
    /// # Errors
    /// [`Error::Rpc`] (AlreadyExists for an existing id, PermissionDenied on a sidecar).
    pub async fn generate_kek(&self, kek_id: Option<&[u8]>) -> Result<Vec<u8>> {
        let req = istio::GenerateKekRequest {
            kek_kid: kek_id.map(<[u8]>::to_vec).unwrap_or_default(),
        };
        Ok(self
            .istio()
            .generate_kek(req)
            .await
            .map_err(rpc_error(Rpc::GenerateKek))?
            .into_inner()
            .kek_kid)
    }

    /// GenerateDEK; returns `encrypted-dek`.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn generate_dek(&self, kek_id: &[u8]) -> Result<Vec<u8>> {
        let req = istio::GenerateDekRequest {
            kek_kid: kek_id.to_vec(),
        };
        Ok(self
            .istio()
            .generate_dek(req)
            .await
            .map_err(rpc_error(Rpc::GenerateDek))?
            .into_inner()
            .encrypted_dek_blob)
    }

    /// AuthenticatedEncrypt; returns the ciphertext.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn authenticated_encrypt(
        &self,
        kek_id: &[u8],
        encrypted_dek: &[u8],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>> {
        let req = istio::AuthenticatedEncryptRequest {
            kek_kid: kek_id.to_vec(),
            encrypted_dek_blob: encrypted_dek.to_vec(),
            plaintext: plaintext.to_vec(),
            aad: aad.to_vec(),
        };
        Ok(self
            .istio()
            .authenticated_encrypt(req)
            .await
            .map_err(rpc_error(Rpc::AuthenticatedEncrypt))?
            .into_inner()
            .ciphertext)
    }

    /// AuthenticatedDecrypt; returns the plaintext (zeroised on drop).
    ///
    /// # Errors
    /// [`Error::Rpc`] (InvalidArgument for a wrong AAD or a tampered blob).
    pub async fn authenticated_decrypt(
        &self,
        kek_id: &[u8],
        encrypted_dek: &[u8],
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        let req = istio::AuthenticatedDecryptRequest {
            kek_kid: kek_id.to_vec(),
            encrypted_dek_blob: encrypted_dek.to_vec(),
            ciphertext: ciphertext.to_vec(),
            aad: aad.to_vec(),
        };
        Ok(zeroize::Zeroizing::new(
            self.istio()
                .authenticated_decrypt(req)
                .await
                .map_err(rpc_error(Rpc::AuthenticatedDecrypt))?
                .into_inner()
                .plaintext,
        ))
    }

    /// ImportCACert (the server's default CA id when `ca_id` is `None`).
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn import_ca_cert(&self, ca_id: Option<&[u8]>, cert: &[u8]) -> Result<()> {
        let req = istio::ImportCaCertRequest {
            ca_id: ca_id.map(<[u8]>::to_vec).unwrap_or_default(),
            ca_cert_blob: cert.to_vec(),
        };
        self.istio()
            .import_ca_cert(req)
            .await
            .map_err(rpc_error(Rpc::ImportCaCert))?;
        Ok(())
    }

    /// VerifyCertChain; `Ok` only when the chain verified.
    ///
    /// # Errors
    /// [`Error::Rpc`] with the reasons.
    pub async fn verify_cert_chain(&self, certificates: Vec<Vec<u8>>) -> Result<()> {
        let resp = self
            .istio()
            .verify_cert_chain(istio::VerifyCertChainRequest { certificates })
            .await
            .map_err(rpc_error(Rpc::VerifyCertChain))?
            .into_inner();
        if resp.successful_verification {
            Ok(())
        } else {
            Err(Error::Rpc {
                rpc: Rpc::VerifyCertChain,
                status: Box::new(tonic::Status::invalid_argument(
                    "the server reported an unsuccessful verification",
                )),
            })
        }
    }

    /// KMS v2 Status.
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn kube_status(&self) -> Result<v2::StatusResponse> {
        Ok(self
            .kube_v2()
            .status(v2::StatusRequest {})
            .await
            .map_err(rpc_error(Rpc::V2Status))?
            .into_inner())
    }

    /// Signing GetPublicKey: the SPKI DER of the key pair (the server's default when empty).
    ///
    /// # Errors
    /// [`Error::Rpc`].
    pub async fn public_key(&self, key_id: &[u8]) -> Result<Vec<u8>> {
        Ok(self
            .signing()
            .get_public_key(signing::GetPublicKeyRequest {
                key_id: key_id.to_vec(),
            })
            .await
            .map_err(rpc_error(Rpc::GetPublicKey))?
            .into_inner()
            .spki_der)
    }
}
