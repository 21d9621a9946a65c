//! The emulated istiod end to end: a real SoftHSM2 token, a real OpenBao with Kubernetes auth
//! against the emulated API server, the plugin server on a real socket, and a test playing
//! the security admin who signs the CSR with a root made by ca-signing.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use ca_signing::{
    Certificate, CsrPolicy, CsrPurpose, IstiodCaProfile, RootProfile, SoftwareSigner,
};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use hsm_core::{
    AuthenticatedDecryptRequest, CaId, HsmIstioKms, HsmToken, ImportPolicy, IstioConfig, IstioKms,
    KekId, Mode, TokenOptions,
};
use kms_grpc::csr_bundle::EncryptedCsr;
use kms_grpc::{CaKeyMode, KmsClient};
use sandbox::istiod::{EmulatedIstiod, IstiodConfig, IstiodPhase, names};
use sandbox::kube::ApiServer;
use sandbox::{OpenBao, SoftHsm};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::json;
use vault_bootstrap::{BootstrapSpec, HttpVault, KubernetesAuthConfig, SecretFields, fields};

const KEK: &str = "asm-kek";
const CA_ID: &str = "asm-root";
const WAIT: Duration = Duration::from_secs(60);

struct World {
    hsm: SoftHsm,
    admin: Arc<HsmToken>,
    server: ApiServer,
    bao: OpenBao,
    dir: tempfile::TempDir,
}

/// The guide's steps 1–8 done: KEK on the token, step 4's reviewer RBAC, step 5's Vault
/// configuration holding the token's real PIN.
async fn world() -> World {
    sandbox::init_crypto();
    sandbox::init_tracing();
    let hsm = SoftHsm::new("istiod");
    let admin = Arc::new(
        HsmToken::open(
            hsm.module(),
            hsm.label(),
            hsm.user_pin().clone(),
            TokenOptions::default(),
        )
        .unwrap(),
    );
    admin
        .ensure_kek(&KekId::new(KEK).unwrap(), Mode::Apply)
        .unwrap();

    let server = ApiServer::start().unwrap();
    let c = server.cluster();
    c.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vault"}}))
        .unwrap();
    c.create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "role-tokenreview-binding"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "vault"}]}))
        .unwrap();
    let reviewer = c
        .create_token("vault", "default", &[], Duration::from_secs(3600))
        .unwrap();

    let bao = OpenBao::dev().await;
    let client = rcgen::generate_simple_self_signed(vec!["hsm-client".to_owned()]).unwrap();
    let mut secret = SecretFields::new();
    secret.insert(fields::CLIENT_CERT, SecretString::from(client.cert.pem()));
    secret.insert(
        fields::CLIENT_KEY,
        SecretString::from(client.signing_key.serialize_pem()),
    );
    secret.insert(fields::SERVER_CERT, SecretString::from(client.cert.pem()));
    secret.insert(fields::PIN, hsm.user_pin().clone());
    let spec = BootstrapSpec::for_cluster(
        "c1",
        KubernetesAuthConfig {
            kubernetes_host: server.url().to_owned(),
            kubernetes_ca_cert: Some(server.ca_pem().to_owned()),
            token_reviewer_jwt: Some(reviewer),
            issuer: None,
            pem_keys: vec![c.service_account_public_key_pem()],
            disable_local_ca_jwt: true,
        },
        Some(secret),
    )
    .unwrap();
    let vault = HttpVault::new(bao.connection().unwrap(), Some(bao.root_token())).unwrap();
    vault_bootstrap::apply(&vault, &spec, vault_bootstrap::Mode::Apply)
        .await
        .unwrap();
    World {
        hsm,
        admin,
        server,
        bao,
        dir: tempfile::tempdir().unwrap(),
    }
}

fn start(w: &World, mode: CaKeyMode) -> EmulatedIstiod {
    let config = IstiodConfig::new(
        w.server.cluster().clone(),
        w.bao.connection().unwrap(),
        "auth/asm-c1/hsm/login",
        "asm-c1/hsm",
        w.hsm.module_path(),
        w.hsm.label().clone(),
        KekId::new(KEK).unwrap(),
        CaId::new(CA_ID).unwrap(),
        mode,
    )
    .unwrap();
    EmulatedIstiod::start(config).unwrap()
}

/// The READY column `kubectl get pods` shows for the istiod pods.
fn kubectl_ready(w: &World) -> Vec<String> {
    kubectl_column(w, "pods")
}

/// The READY column `kubectl get deployments` shows for istiod.
fn kubectl_deployment_ready(w: &World) -> Vec<String> {
    kubectl_column(w, "deployments")
}

fn kubectl_column(w: &World, resource: &str) -> Vec<String> {
    let kubeconfig = w.dir.path().join("kubeconfig");
    w.server.write_kubeconfig(&kubeconfig).unwrap();
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "get",
            resource,
            "-n",
            "istio-system",
            "-l",
            "app=istiod",
            "--no-headers",
        ])
        .output()
        .expect("kubectl is installed (cargo xtask setup)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

/// The security admin: reads the CSR Secret, decrypts it with the KEK on the token, reviews
/// and signs it with the root, imports the root as the anchor, writes `istio-ca-cert`.
async fn sign_as_security_admin(w: &World, istiod: &EmulatedIstiod) -> Certificate {
    let cluster = w.server.cluster();
    let secret = cluster
        .get(
            "secrets",
            Some(names::ISTIO_NAMESPACE),
            names::CA_CSR_SECRET,
        )
        .expect("istiod wrote istio-ca-cert-csr");
    // The layout the installer's reader expects.
    let parsed = k8s_bootstrap::ca_secrets::EncryptedCsr::from_secret(&secret).unwrap();
    let bundle =
        EncryptedCsr::from_json(serde_json::to_string(&secret["data"]).unwrap().as_bytes())
            .unwrap();
    assert_eq!(Some(&bundle), istiod.csr_secret().as_ref());
    assert_eq!(parsed.encrypted_csr, bundle.encrypted_csr);
    assert_eq!(bundle.kek_id, KEK.as_bytes());

    let kms = HsmIstioKms::new(Arc::clone(&w.admin), IstioConfig::default());
    let csr = kms
        .authenticated_decrypt(AuthenticatedDecryptRequest {
            kek_id: KekId::new(bundle.kek_id.clone()).unwrap(),
            encrypted_dek: bundle.encrypted_dek.clone(),
            ciphertext: bundle.encrypted_csr.clone(),
            aad: bundle.csr_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&csr).unwrap(),
        istiod.csr_pem().unwrap()
    );
    // A wrong csr-id (AAD) does not decrypt.
    assert!(
        kms.authenticated_decrypt(AuthenticatedDecryptRequest {
            kek_id: KekId::new(KEK).unwrap(),
            encrypted_dek: bundle.encrypted_dek.clone(),
            ciphertext: bundle.encrypted_csr.clone(),
            aad: b"another-csr".to_vec(),
        })
        .await
        .is_err()
    );

    let root_key =
        SoftwareSigner::generate(ca_signing::KeyAlgorithm::EcdsaP256, "test root").unwrap();
    let root = ca_signing::issue_root(&RootProfile::default(), &root_key).unwrap();
    w.admin
        .import_ca_cert(
            &CaId::new(CA_ID).unwrap(),
            root.pem().as_bytes(),
            ImportPolicy::KeepExisting,
            Mode::Apply,
        )
        .unwrap();
    let reviewed =
        ca_signing::review_csr(&csr, &CsrPolicy::default(), CsrPurpose::IstiodCa).unwrap();
    let istiod_ca =
        ca_signing::sign_istiod_ca(&reviewed, &root, &root_key, &IstiodCaProfile::default())
            .unwrap();
    let chain = format!("{}{}", istiod_ca.pem(), root.pem());
    cluster
        .create(json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": names::CA_CERT_SECRET, "namespace": names::ISTIO_NAMESPACE},
            "data": {names::CERT_CHAIN_KEY: base64::engine::general_purpose::STANDARD.encode(&chain)},
        }))
        .unwrap();
    root
}

fn openssl_verify(dir: &Path, root: &Certificate, chain_pem: &str) {
    let certs = Certificate::parse_pem_bundle(chain_pem.as_bytes()).unwrap();
    assert!(certs.len() >= 2, "leaf and istiod CA presented");
    std::fs::write(dir.join("root.pem"), root.pem()).unwrap();
    std::fs::write(dir.join("leaf.pem"), certs[0].pem()).unwrap();
    let rest: String = certs[1..].iter().map(Certificate::pem).collect();
    std::fs::write(dir.join("untrusted.pem"), rest).unwrap();
    let out = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.join("root.pem"))
        .arg("-untrusted")
        .arg(dir.join("untrusted.pem"))
        .arg(dir.join("leaf.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The whole hand-off in one mode; returns the running istiod for mode-specific checks.
async fn hand_off(w: &World, mode: CaKeyMode) -> EmulatedIstiod {
    let istiod = start(w, mode);
    let phase = istiod
        .wait_for_phase(|p| *p == IstiodPhase::WaitingForCa, WAIT)
        .await;
    assert_eq!(phase, IstiodPhase::WaitingForCa);
    assert_eq!(kubectl_ready(w), ["2/3"]);
    assert_eq!(kubectl_deployment_ready(w), ["0/1"]);
    assert!(
        w.server
            .cluster()
            .get(
                "deployments",
                Some(names::ISTIO_NAMESPACE),
                istiod.deployment_name()
            )
            .is_some()
    );
    // OpenBao checked istiod's token with the API server's TokenReview.
    assert!(
        w.server
            .cluster()
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/tokenreviews") && r.status == 201)
    );

    let root = sign_as_security_admin(w, &istiod).await;
    let phase = istiod
        .wait_for_phase(|p| *p == IstiodPhase::Ready, WAIT)
        .await;
    assert_eq!(phase, IstiodPhase::Ready);
    assert_eq!(kubectl_ready(w), ["3/3"]);
    assert_eq!(kubectl_deployment_ready(w), ["1/1"]);
    let chain = istiod.ca_chain_pem().unwrap();
    assert!(chain.ends_with(&root.pem()));

    let record = istiod.handshake().unwrap();
    assert_eq!(record.alpn, b"istio");
    assert_eq!(
        record.server_identity,
        "spiffe://cluster.local/ns/demo/sa/httpbin"
    );
    assert_eq!(
        record.client_identity,
        "spiffe://cluster.local/ns/demo/sa/sleep"
    );
    openssl_verify(w.dir.path(), &root, &record.server_chain_pem);
    // The PIN never shows up in what istiod exposes.
    let pin = w.hsm.user_pin().expose_secret().to_owned();
    assert!(!format!("{istiod:?}{record:?}").contains(&pin));
    istiod
}

/// Collects the log lines of the current thread.
#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// One thread: istiod's task runs where the capturing subscriber is installed.
#[tokio::test(flavor = "current_thread")]
async fn compat_istiod_bootstraps_waits_for_the_ca_and_serves_mtls() {
    let logs = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let w = world().await;
    let istiod = hand_off(&w, CaKeyMode::Compat).await;
    let chain = istiod.ca_chain_pem().unwrap();
    let text = logs.text();
    assert!(text.contains(&format!("CA cert:\n{chain}")), "{text}");
    assert!(
        !text.contains(w.hsm.user_pin().expose_secret()),
        "the PIN is in the log"
    );
    let socket = istiod.socket_path().to_path_buf();
    assert!(socket.exists());
    drop(istiod);
    // Stopping istiod stops the plugin and removes its socket.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while socket.exists() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!socket.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_key_istiod_keeps_its_ca_key_in_the_token() {
    let w = world().await;
    let istiod = hand_off(&w, CaKeyMode::HsmKey).await;

    // The plugin refuses LoadSKey in hsm-key mode.
    let client = KmsClient::connect(istiod.socket_path()).await.unwrap();
    let err = client
        .istio()
        .load_s_key(kms_grpc::proto::istio::LoadSKeyRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::FailedPrecondition,
        "{}",
        err.message()
    );

    // The CA key pair is on the token, not extractable, and the CSR carried its public key.
    let session = w
        .hsm
        .module()
        .login_user(w.hsm.label(), w.hsm.user_pin())
        .unwrap();
    let keys = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(b"istiod-ca".to_vec()),
        ])
        .unwrap();
    assert_eq!(keys.len(), 1);
    let attrs = session
        .get_attributes(
            keys[0],
            &[AttributeType::Extractable, AttributeType::Sensitive],
        )
        .unwrap();
    assert!(attrs.contains(&Attribute::Extractable(false)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Sensitive(true)), "{attrs:?}");
    let spki = client.public_key(b"istiod-ca").await.unwrap();
    let csr = ca_signing::review_csr(
        istiod.csr_pem().unwrap().as_bytes(),
        &CsrPolicy::default(),
        CsrPurpose::IstiodCa,
    )
    .unwrap();
    assert_eq!(csr.report().public_key.spki_der, spki);
    let chain = Certificate::parse_pem_bundle(istiod.ca_chain_pem().unwrap().as_bytes()).unwrap();
    assert!(chain[0].has_public_key(&spki));
    drop(client);
    drop(session);

    // A restarted istiod finds its key pair on the token, so the signed chain still fits:
    // it goes back to ready without a new signature.
    drop(istiod);
    let again = start(&w, CaKeyMode::HsmKey);
    let phase = again
        .wait_for_phase(|p| *p == IstiodPhase::Ready, WAIT)
        .await;
    assert_eq!(phase, IstiodPhase::Ready);
    assert_eq!(kubectl_ready(&w), ["3/3"]);
    let client = KmsClient::connect(again.socket_path()).await.unwrap();
    assert_eq!(client.public_key(b"istiod-ca").await.unwrap(), spki);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_from_an_unknown_root_fails_verification_and_the_pod_stays_not_ready() {
    let w = world().await;
    let istiod = start(&w, CaKeyMode::Compat);
    let phase = istiod
        .wait_for_phase(|p| *p == IstiodPhase::WaitingForCa, WAIT)
        .await;
    assert_eq!(phase, IstiodPhase::WaitingForCa);
    // Signed correctly, but by a root that was never imported as the HSM anchor.
    let bundle = istiod.csr_secret().unwrap();
    let csr = HsmIstioKms::new(Arc::clone(&w.admin), IstioConfig::default())
        .authenticated_decrypt(AuthenticatedDecryptRequest {
            kek_id: KekId::new(bundle.kek_id.clone()).unwrap(),
            encrypted_dek: bundle.encrypted_dek.clone(),
            ciphertext: bundle.encrypted_csr.clone(),
            aad: bundle.csr_id.clone(),
        })
        .await
        .unwrap();
    let root_key =
        SoftwareSigner::generate(ca_signing::KeyAlgorithm::EcdsaP256, "rogue root").unwrap();
    let root = ca_signing::issue_root(&RootProfile::default(), &root_key).unwrap();
    let reviewed =
        ca_signing::review_csr(&csr, &CsrPolicy::default(), CsrPurpose::IstiodCa).unwrap();
    let istiod_ca =
        ca_signing::sign_istiod_ca(&reviewed, &root, &root_key, &IstiodCaProfile::default())
            .unwrap();
    let chain = format!("{}{}", istiod_ca.pem(), root.pem());
    w.server
        .cluster()
        .create(json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": names::CA_CERT_SECRET, "namespace": names::ISTIO_NAMESPACE},
            "data": {names::CERT_CHAIN_KEY: base64::engine::general_purpose::STANDARD.encode(&chain)},
        }))
        .unwrap();
    let phase = istiod
        .wait_for_phase(|p| *p == IstiodPhase::Ready, WAIT)
        .await;
    let IstiodPhase::Failed { reason } = phase else {
        panic!("expected a failure, got {phase:?}");
    };
    assert!(reason.contains("VerifyCertChain"), "{reason}");
    assert_eq!(kubectl_ready(&w), ["2/3"]);
    assert!(istiod.ca_chain_pem().is_none());
    assert!(istiod.handshake().is_none());
}

#[test]
fn object_names_match_the_installer() {
    assert_eq!(
        names::ISTIO_NAMESPACE,
        k8s_bootstrap::names::ISTIO_NAMESPACE
    );
    assert_eq!(names::CA_CSR_SECRET, k8s_bootstrap::names::CA_CSR_SECRET);
    assert_eq!(names::CA_CERT_SECRET, k8s_bootstrap::names::CA_CERT_SECRET);
    assert_eq!(names::CERT_CHAIN_KEY, k8s_bootstrap::names::CERT_CHAIN_KEY);
    assert_eq!(names::CA_CSR_FIELDS, k8s_bootstrap::names::CA_CSR_FIELDS);
    assert_eq!(
        names::DEFAULT_REVISION,
        k8s_bootstrap::names::DEFAULT_REVISION
    );
}
