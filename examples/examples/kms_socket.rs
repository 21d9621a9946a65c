//! The plugin's gRPC services on a real Unix socket over a SoftHSM2 token: what istiod calls
//! in compat mode (FLOW.md steps 7–11), the operator's decrypt-csr, a refusal by the sidecar
//! policy profile, and Kubernetes KMS v2.

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use std::sync::Arc;

use hsm_core::{
    HsmAdminService, HsmIstioKms, HsmKubeKms, IstioConfig, KekId, KeyRef, KubeKmsConfig, Mode,
};
use kms_grpc::{Backend, Backends, KmsClient, KmsServer, Profile, ServerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (_hsm, token) = examples::user_token("asm-kms-socket")?;
    // The operator made the KEKs beforehand (generate-kek against an admin server).
    let kek = KekId::new("asm-kek")?;
    token.ensure_kek(&kek, Mode::Apply)?;
    let apiserver_kek = KekId::new("apiserver-kek")?;
    token.ensure_kek(&apiserver_kek, Mode::Apply)?;

    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("hsm-plugin-server.sock");
    let mut config = ServerConfig::new(&socket);
    config.profile = Profile::Sidecar;
    let backend = Backend::Ready(Backends {
        istio: Arc::new(HsmIstioKms::new(Arc::clone(&token), IstioConfig::default())),
        admin: Arc::new(HsmAdminService::new(Arc::clone(&token))),
        kube: Some(Arc::new(HsmKubeKms::new(
            Arc::clone(&token),
            KubeKmsConfig::new(KeyRef::kek(apiserver_kek)),
        ))),
    });
    let bound = KmsServer::new(config, backend).bind()?;
    println!("listening on {}", bound.path().display());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bound.serve(async {
        let _ = stopped.await;
    }));

    let client = KmsClient::connect(&socket).await?;
    println!("health: serving={}", client.is_serving().await?);
    let dek = client.generate_dek(kek.as_bytes()).await?;
    println!("GenerateDEK: {} bytes of compact JWE", dek.len());
    let csr = b"-----BEGIN CERTIFICATE REQUEST-----\n...\n-----END CERTIFICATE REQUEST-----\n";
    let encrypted = client
        .authenticated_encrypt(kek.as_bytes(), &dek, csr, b"csr-0001")
        .await?;
    let back = client
        .authenticated_decrypt(kek.as_bytes(), &dek, &encrypted, b"csr-0001")
        .await?;
    anyhow::ensure!(back.as_slice() == csr, "the CSR did not round-trip");
    println!("AuthenticatedEncrypt/Decrypt: the CSR round-trips with csr-id as AAD");

    match client
        .authenticated_decrypt(kek.as_bytes(), &dek, &encrypted, b"csr-9999")
        .await
    {
        Err(err) => println!("wrong csr-id: {:?}: {err}", err.code()),
        Ok(_) => anyhow::bail!("a wrong AAD was accepted"),
    }
    match client.generate_kek(Some(b"another")).await {
        Err(err) => println!("sidecar profile: {:?}: {err}", err.code()),
        Ok(_) => anyhow::bail!("the sidecar profile let GenerateKEK through"),
    }

    let status = client.kube_status().await?;
    println!(
        "KMS v2 Status: version={} healthz={} key_id={}",
        status.version, status.healthz, status.key_id
    );

    let _ = stop.send(());
    server.await??;
    anyhow::ensure!(!socket.exists(), "the socket was not removed");
    println!("stopped; socket removed");
    Ok(())
}
