//! The emulated istiod of the sandbox (FLOW.md steps 9–11): it logs in to OpenBao with its
//! service-account token, opens the SoftHSM2 token with the PIN it fetched, bootstraps its CA
//! key and CSR over the plugin socket, waits for Secret `istio-ca-cert`, and proves the chain
//! with a mutual TLS handshake between two demo workloads. This example plays the security
//! admin in between, in hsm-key mode (`--mode compat` for the guide's mode).

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use ca_signing::{CsrPolicy, CsrPurpose, IstiodCaProfile, RootProfile, SoftwareSigner};
use hsm_core::{
    AuthenticatedDecryptRequest, CaId, HsmIstioKms, HsmToken, ImportPolicy, IstioConfig, IstioKms,
    KekId, Mode,
};
use kms_grpc::CaKeyMode;
use sandbox::istiod::{EmulatedIstiod, IstiodConfig, IstiodPhase, names};
use sandbox::kube::ApiServer;
use secrecy::SecretString;
use serde_json::json;
use vault_bootstrap::{BootstrapSpec, HttpVault, KubernetesAuthConfig, SecretFields, fields};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mode = if std::env::args().any(|a| a == "compat") {
        CaKeyMode::Compat
    } else {
        CaKeyMode::HsmKey
    };
    sandbox::init_crypto();

    // Steps 1–3: the token and its KEK.
    let (hsm, admin) = examples::user_token("asm-istiod")?;
    let kek = KekId::new("asm-kek")?;
    admin.ensure_kek(&kek, Mode::Apply)?;

    // Step 4: the reviewer account OpenBao's Kubernetes auth uses.
    let server = ApiServer::start()?;
    let cluster = server.cluster();
    cluster
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vault"}}))?;
    cluster.create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "role-tokenreview-binding"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "vault"}]}))?;
    let reviewer_jwt = cluster.create_token("vault", "default", &[], Duration::from_secs(3600))?;

    // Step 5: Vault holds the PIN for role istiod.
    let bao = sandbox::OpenBao::builder().start().await?;
    let tls = rcgen::generate_simple_self_signed(vec!["hsm-client".to_owned()])?;
    let mut secret = SecretFields::new();
    secret.insert(fields::CLIENT_CERT, SecretString::from(tls.cert.pem()));
    secret.insert(
        fields::CLIENT_KEY,
        SecretString::from(tls.signing_key.serialize_pem()),
    );
    secret.insert(fields::SERVER_CERT, SecretString::from(tls.cert.pem()));
    secret.insert(fields::PIN, hsm.user_pin().clone());
    let spec = BootstrapSpec::for_cluster(
        "c1",
        KubernetesAuthConfig {
            kubernetes_host: server.url().to_owned(),
            kubernetes_ca_cert: Some(server.ca_pem().to_owned()),
            token_reviewer_jwt: Some(reviewer_jwt),
            issuer: None,
            pem_keys: vec![cluster.service_account_public_key_pem()],
            disable_local_ca_jwt: true,
        },
        Some(secret),
    )?;
    let vault = HttpVault::new(bao.connection()?, Some(bao.root_token()))?;
    vault_bootstrap::apply(&vault, &spec, vault_bootstrap::Mode::Apply).await?;

    // Step 9: istiod starts.
    let ca_id = CaId::new("asm-root")?;
    let istiod = EmulatedIstiod::start(IstiodConfig::new(
        cluster.clone(),
        bao.connection()?,
        spec.login_path(),
        "asm-c1/hsm",
        hsm.module_path(),
        hsm.label().clone(),
        kek.clone(),
        ca_id.clone(),
        mode,
    )?)?;
    let phase = istiod
        .wait_for_phase(|p| *p == IstiodPhase::WaitingForCa, Duration::from_secs(60))
        .await;
    anyhow::ensure!(phase == IstiodPhase::WaitingForCa, "istiod: {phase:?}");
    let bundle = istiod
        .csr_secret()
        .ok_or_else(|| anyhow::anyhow!("no CSR secret"))?;
    println!(
        "istiod ({mode:?}) wrote Secret {}/{} (csr-id {})",
        names::ISTIO_NAMESPACE,
        names::CA_CSR_SECRET,
        String::from_utf8_lossy(&bundle.csr_id)
    );

    // Step 10: the security admin decrypts, reviews, signs and hands the chain back.
    sign_as_security_admin(&admin, &istiod, cluster, &ca_id).await?;

    // Step 11: istiod loads the chain and the demo workloads talk mTLS.
    let phase = istiod
        .wait_for_phase(|p| *p == IstiodPhase::Ready, Duration::from_secs(60))
        .await;
    anyhow::ensure!(phase == IstiodPhase::Ready, "istiod: {phase:?}");
    let record = istiod
        .handshake()
        .ok_or_else(|| anyhow::anyhow!("no handshake recorded"))?;
    println!(
        "{} -> {} over {} with ALPN {}; the server presented:\n{}",
        record.client_identity,
        record.server_identity,
        record.protocol_version,
        String::from_utf8_lossy(&record.alpn),
        record.server_chain_pem
    );
    Ok(())
}

/// Decrypts the CSR with the KEK, signs it with a fresh root (imported as the HSM anchor)
/// and writes Secret `istio-ca-cert`.
async fn sign_as_security_admin(
    admin: &Arc<HsmToken>,
    istiod: &EmulatedIstiod,
    cluster: &sandbox::kube::Cluster,
    ca_id: &CaId,
) -> anyhow::Result<()> {
    let bundle = istiod
        .csr_secret()
        .ok_or_else(|| anyhow::anyhow!("no CSR secret"))?;
    let csr = HsmIstioKms::new(Arc::clone(admin), IstioConfig::default())
        .authenticated_decrypt(AuthenticatedDecryptRequest {
            kek_id: KekId::new(bundle.kek_id.clone())?,
            encrypted_dek: bundle.encrypted_dek.clone(),
            ciphertext: bundle.encrypted_csr.clone(),
            aad: bundle.csr_id.clone(),
        })
        .await?;
    let root_key = SoftwareSigner::generate(ca_signing::KeyAlgorithm::EcdsaP384, "root")?;
    let root = ca_signing::issue_root(&RootProfile::default(), &root_key)?;
    admin.import_ca_cert(
        ca_id,
        root.pem().as_bytes(),
        ImportPolicy::KeepExisting,
        Mode::Apply,
    )?;
    let reviewed = ca_signing::review_csr(&csr, &CsrPolicy::default(), CsrPurpose::IstiodCa)?;
    let istiod_ca =
        ca_signing::sign_istiod_ca(&reviewed, &root, &root_key, &IstiodCaProfile::default())?;
    let chain = format!("{}{}", istiod_ca.pem(), root.pem());
    cluster.create(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": names::CA_CERT_SECRET, "namespace": names::ISTIO_NAMESPACE},
        "data": {names::CERT_CHAIN_KEY: base64::engine::general_purpose::STANDARD.encode(&chain)},
    }))?;

    Ok(())
}
