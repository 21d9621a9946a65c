//! The demo workloads' mutual TLS handshake, as two Istio sidecars do it: each presents its
//! workload certificate with the istiod CA and the root, each checks the other's chain against
//! the root and its SPIFFE id, and ALPN is `istio`.

use std::sync::Arc;

use ca_signing::{Certificate, San, SoftwareSigner};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::error::{IstiodError, IstiodResult};

/// ALPN protocol Istio's sidecars negotiate for mesh mTLS.
pub const ISTIO_ALPN: &[u8] = b"istio";

/// A demo workload's identity: its certificate and key.
pub(crate) struct DemoWorkload {
    pub(crate) spiffe_id: String,
    pub(crate) cert: Certificate,
    pub(crate) key: SoftwareSigner,
}

/// What the demo handshake showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRecord {
    /// The chain the server presented (leaf first), PEM: what `meshca verify` checks.
    pub server_chain_pem: String,
    /// The SPIFFE id of the server's certificate, as the client verified it.
    pub server_identity: String,
    /// The SPIFFE id of the client's certificate, as the server saw it.
    pub client_identity: String,
    /// The negotiated ALPN protocol.
    pub alpn: Vec<u8>,
    /// The negotiated TLS version (`TLSv1_3`).
    pub protocol_version: String,
}

fn tls_error(what: &str) -> impl FnOnce(rustls::Error) -> IstiodError + '_ {
    move |e| IstiodError::Handshake {
        reason: format!("{what}: {e}"),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn identity(
    workload: &DemoWorkload,
    istiod_ca: &Certificate,
    root: &Certificate,
) -> IstiodResult<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = [&workload.cert, istiod_ca, root]
        .iter()
        .map(|c| CertificateDer::from(c.der().to_vec()))
        .collect();
    let pem = workload
        .key
        .private_key_pkcs8_pem()
        .map_err(IstiodError::cert("encoding a workload key"))?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| IstiodError::Handshake {
        reason: format!("reading the key of {}: {e}", workload.spiffe_id),
    })?;
    Ok((chain, key))
}

fn uri_sans(der: &[u8]) -> Vec<String> {
    Certificate::from_der(der.to_vec())
        .map(|c| {
            c.sans()
                .iter()
                .filter_map(|s| match s {
                    San::Uri(u) => Some(u.clone()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Verifies a server's chain to the mesh root and its SPIFFE id instead of a DNS name.
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if uri_sans(end_entity).contains(&self.expected) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn pem_of(certs: &[CertificateDer<'_>]) -> IstiodResult<String> {
    certs
        .iter()
        .map(|c| {
            Certificate::from_der(c.to_vec())
                .map(|c| c.pem())
                .map_err(IstiodError::cert("parsing the presented chain"))
        })
        .collect()
}

fn server_config(
    server: &DemoWorkload,
    istiod_ca: &Certificate,
    root: &Certificate,
    roots: &Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
) -> IstiodResult<rustls::ServerConfig> {
    let (chain, key) = identity(server, istiod_ca, root)?;
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), Arc::clone(provider))
            .build()
            .map_err(|e| IstiodError::Handshake {
                reason: format!("building the client verifier: {e}"),
            })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(tls_error("choosing protocol versions"))?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain, key)
        .map_err(tls_error("loading the server identity"))?;
    config.alpn_protocols = vec![ISTIO_ALPN.to_vec()];
    Ok(config)
}

fn client_config(
    client: &DemoWorkload,
    server: &DemoWorkload,
    istiod_ca: &Certificate,
    root: &Certificate,
    roots: Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
) -> IstiodResult<rustls::ClientConfig> {
    let (chain, key) = identity(client, istiod_ca, root)?;
    let verifier = SpiffeServerVerifier {
        roots,
        expected: server.spiffe_id.clone(),
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(tls_error("choosing protocol versions"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .map_err(tls_error("loading the client identity"))?;
    config.alpn_protocols = vec![ISTIO_ALPN.to_vec()];
    Ok(config)
}

/// `client` connects to `server` over loopback TCP with mutual TLS; both trust `root` only.
pub(crate) async fn handshake(
    server: &DemoWorkload,
    client: &DemoWorkload,
    root: &Certificate,
    istiod_ca: &Certificate,
) -> IstiodResult<HandshakeRecord> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(root.der().to_vec()))
        .map_err(tls_error("adding the mesh root"))?;
    let roots = Arc::new(roots);
    let server_config = server_config(server, istiod_ca, root, &roots, &provider)?;
    let client_config = client_config(client, server, istiod_ca, root, roots, &provider)?;

    let io = |what: &'static str| {
        move |e: std::io::Error| IstiodError::Handshake {
            reason: format!("{what}: {e}"),
        }
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(io("listening on loopback"))?;
    let addr = listener.local_addr().map_err(io("reading the address"))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(io("accepting"))?;
        let mut tls = acceptor.accept(tcp).await.map_err(io("server handshake"))?;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| uri_sans(c))
            .unwrap_or_default();
        let mut buf = [0_u8; 4];
        tls.read_exact(&mut buf).await.map_err(io("server read"))?;
        tls.write_all(b"pong").await.map_err(io("server write"))?;
        tls.shutdown().await.map_err(io("server shutdown"))?;
        Ok::<_, IstiodError>(peer)
    });

    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(io("connecting"))?;
    let name = ServerName::try_from("httpbin.demo.svc.cluster.local").map_err(|e| {
        IstiodError::Handshake {
            reason: format!("server name: {e}"),
        }
    })?;
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(io("client handshake"))?;
    let (presented, alpn, version) = {
        let conn = tls.get_ref().1;
        (
            conn.peer_certificates()
                .map(<[_]>::to_vec)
                .unwrap_or_default(),
            conn.alpn_protocol().map(<[u8]>::to_vec).unwrap_or_default(),
            conn.protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default(),
        )
    };
    tls.write_all(b"ping").await.map_err(io("client write"))?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer)
        .await
        .map_err(io("client read"))?;
    let client_sans = server_side.await.map_err(|source| IstiodError::Task {
        task: "demo server",
        source,
    })??;
    if answer != b"pong" {
        return Err(IstiodError::Handshake {
            reason: "the server's answer did not arrive".to_owned(),
        });
    }
    if alpn != ISTIO_ALPN {
        return Err(IstiodError::Handshake {
            reason: format!(
                "ALPN {:?} was negotiated instead of istio",
                String::from_utf8_lossy(&alpn)
            ),
        });
    }
    if !client_sans.contains(&client.spiffe_id) {
        return Err(IstiodError::Handshake {
            reason: format!(
                "the server saw client identities {client_sans:?}, not {}",
                client.spiffe_id
            ),
        });
    }
    Ok(HandshakeRecord {
        server_chain_pem: pem_of(&presented)?,
        server_identity: server.spiffe_id.clone(),
        client_identity: client.spiffe_id.clone(),
        alpn,
        protocol_version: version,
    })
}
