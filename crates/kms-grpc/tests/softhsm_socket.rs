//! The server over a real Unix socket against a real SoftHSM2 token, with the typed client.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test on error")]
#![allow(
    clippy::too_many_lines,
    reason = "end-to-end sequences read best as one story"
)]

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ca_signing::{
    CsrPolicy, CsrPurpose, IstiodCaProfile, RootProfile, San, SoftwareSigner, Subject,
};
use hsm_core::{
    HsmAdminService, HsmIstioKms, HsmKubeKms, HsmToken, IstioConfig, KekId, KeyAlgorithm,
    KeyPairId, KeyRef, KubeKmsConfig, Mode, ObjectLabel, TokenOptions,
};
use kms_grpc::proto::{istio, signing, v1beta1, v2};
use kms_grpc::{
    Backend, Backends, CaKeyMode, KmsClient, KmsServer, PeerAllowlist, PluginState, Profile,
    ServerConfig,
};
use sandbox::SoftHsm;
use tonic::Code;

struct Server {
    client: KmsClient,
    state: PluginState,
    path: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<kms_grpc::Result<()>>,
}

impl Server {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }
}

fn open(hsm: &SoftHsm) -> Arc<HsmToken> {
    Arc::new(
        HsmToken::open(
            hsm.module(),
            hsm.label(),
            hsm.user_pin().clone(),
            TokenOptions::default(),
        )
        .unwrap(),
    )
}

fn backends(token: &Arc<HsmToken>, kube_kek: Option<&str>) -> Backend {
    let kube = kube_kek.map(|kek| {
        let kek = KekId::new(kek).unwrap();
        token.ensure_kek(&kek, Mode::Apply).unwrap();
        Arc::new(HsmKubeKms::new(
            Arc::clone(token),
            KubeKmsConfig::new(KeyRef::kek(kek)),
        )) as Arc<dyn hsm_core::KubeKms>
    });
    Backend::Ready(Backends {
        istio: Arc::new(HsmIstioKms::new(Arc::clone(token), IstioConfig::default())),
        admin: Arc::new(HsmAdminService::new(Arc::clone(token))),
        kube,
    })
}

async fn serve(socket: &Path, backend: Backend, config: impl FnOnce(&mut ServerConfig)) -> Server {
    let mut cfg = ServerConfig::new(socket);
    cfg.profile = Profile::Admin;
    config(&mut cfg);
    let bound = KmsServer::new(cfg, backend).bind().unwrap();
    let state = bound.state();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bound.serve(async {
        let _ = rx.await;
    }));
    Server {
        client: KmsClient::connect(socket).await.unwrap(),
        state,
        path: socket.to_path_buf(),
        stop: Some(tx),
        task,
    }
}

fn root() -> (SoftwareSigner, ca_signing::Certificate) {
    let key = SoftwareSigner::generate(ca_signing::KeyAlgorithm::EcdsaP256, "test root").unwrap();
    let cert = ca_signing::issue_root(&RootProfile::default(), &key).unwrap();
    (key, cert)
}

fn istiod_csr_signer(pem: &[u8]) -> SoftwareSigner {
    SoftwareSigner::from_bytes(pem, None, "istiod skey").unwrap()
}

fn istiod_subject() -> Subject {
    Subject::new("Istio", "Intermediate CA")
}

#[tokio::test]
async fn compat_sequence_of_the_asm_guide_runs_over_the_socket() {
    let hsm = SoftHsm::new("it-compat");
    let dir = tempfile::tempdir().unwrap();
    let token = open(&hsm);
    let server = serve(&dir.path().join("kms.sock"), backends(&token, None), |_| {}).await;
    let c = &server.client;

    let kek = c.generate_kek(Some(b"asm-kek")).await.unwrap();
    assert_eq!(kek, b"asm-kek");
    let err = c.generate_kek(Some(b"asm-kek")).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::AlreadyExists), "{err}");
    let random = c.generate_kek(None).await.unwrap();
    assert_eq!(random.len(), 36, "a UUID text id");

    let dek = c.generate_dek(&kek).await.unwrap();
    let skey = c
        .istio()
        .generate_s_key(istio::GenerateSKeyRequest {
            size: 2048,
            kind: istio::KeyKind::Rsa.into(),
            curve: 0,
            kek_kid: kek.clone(),
            encrypted_dek_blob: dek.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .encrypted_skey_blob;
    let pem = c
        .istio()
        .load_s_key(istio::LoadSKeyRequest {
            kek_kid: kek.clone(),
            encrypted_dek_blob: dek.clone(),
            encrypted_skey_blob: skey,
        })
        .await
        .unwrap()
        .into_inner()
        .plaintext_skey;
    assert!(pem.starts_with(b"-----BEGIN RSA PRIVATE KEY-----"));

    // istiod: a CSR with the loaded key, encrypted with its csr-id as AAD.
    let istiod_key = istiod_csr_signer(&pem);
    let csr = ca_signing::create_csr(
        &istiod_subject(),
        &[San::Dns(ca_signing::ISTIOD_DNS_NAME.into())],
        &istiod_key,
    )
    .unwrap();
    let csr_pem = csr.to_pem();
    let encrypted_csr = c
        .authenticated_encrypt(&kek, &dek, csr_pem.as_bytes(), b"csr-0001")
        .await
        .unwrap();
    // the operator: decrypt-csr, then sign offline and import the root.
    let decrypted = c
        .authenticated_decrypt(&kek, &dek, &encrypted_csr, b"csr-0001")
        .await
        .unwrap();
    assert_eq!(decrypted.as_slice(), csr_pem.as_bytes());
    let (root_key, root_cert) = root();
    let reviewed =
        ca_signing::review_csr(&decrypted, &CsrPolicy::default(), CsrPurpose::IstiodCa).unwrap();
    let istiod_cert = ca_signing::sign_istiod_ca(
        &reviewed,
        &root_cert,
        &root_key,
        &IstiodCaProfile::default(),
    )
    .unwrap();
    c.import_ca_cert(None, root_cert.pem().as_bytes())
        .await
        .unwrap();
    // Importing the same root again is accepted (idempotent).
    c.import_ca_cert(None, root_cert.pem().as_bytes())
        .await
        .unwrap();
    // istiod: VerifyCertChain with the DER of the first PEM block.
    c.verify_cert_chain(vec![istiod_cert.der().to_vec()])
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn hsm_key_sequence_signs_inside_the_hsm_and_refuses_load_skey() {
    let hsm = SoftHsm::new("it-hsmkey");
    let dir = tempfile::tempdir().unwrap();
    let token = open(&hsm);
    let key_id = KeyPairId::new("istiod-ca").unwrap();
    token
        .ensure_key_pair(
            &key_id,
            &ObjectLabel::new("istiod-ca").unwrap(),
            KeyAlgorithm::EcdsaP256,
            Mode::Apply,
        )
        .unwrap();
    let server = serve(
        &dir.path().join("kms.sock"),
        backends(&token, None),
        |cfg| {
            cfg.ca_key_mode = CaKeyMode::HsmKey;
            cfg.signing_keys = vec![key_id.clone()];
        },
    )
    .await;
    let c = &server.client;

    let spki = c.public_key(b"").await.unwrap();
    let csr_pem = c
        .signing()
        .create_csr(signing::CreateCsrRequest {
            key_id: Vec::new(),
            common_name: "Intermediate CA".into(),
            organization: "Istio".into(),
            dns_names: vec![ca_signing::ISTIOD_DNS_NAME.into()],
            uris: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .csr_pem;
    // The operator signs the CSR offline with the root and imports the root.
    let (root_key, root_cert) = root();
    let reviewed = ca_signing::review_csr(
        csr_pem.as_bytes(),
        &CsrPolicy::default(),
        CsrPurpose::IstiodCa,
    )
    .unwrap();
    assert_eq!(
        reviewed.report().public_key.spki_der,
        spki,
        "the CSR carries the HSM key"
    );
    let istiod_cert = ca_signing::sign_istiod_ca(
        &reviewed,
        &root_cert,
        &root_key,
        &IstiodCaProfile::default(),
    )
    .unwrap();
    c.import_ca_cert(None, root_cert.der()).await.unwrap();
    c.verify_cert_chain(vec![
        istiod_cert.pem().into_bytes(),
        root_cert.der().to_vec(),
    ])
    .await
    .unwrap();

    // istiod asks the HSM to issue a workload certificate.
    let workload_key =
        SoftwareSigner::generate(ca_signing::KeyAlgorithm::EcdsaP256, "workload").unwrap();
    let spiffe = "spiffe://cluster.local/ns/default/sa/sleep";
    let workload_csr = ca_signing::create_csr(
        &Subject::new("", "sleep"),
        &[San::Uri(spiffe.into())],
        &workload_key,
    )
    .unwrap();
    let issued = c
        .signing()
        .issue_certificate(signing::IssueCertificateRequest {
            key_id: b"istiod-ca".to_vec(),
            ..workload_request(&istiod_cert, &workload_csr, "default", "sleep")
        })
        .await
        .unwrap()
        .into_inner();
    // Independent check with the openssl CLI: leaf → istiod CA (HSM key) → root.
    let files = dir.path();
    std::fs::write(files.join("root.pem"), root_cert.pem()).unwrap();
    std::fs::write(files.join("istiod.pem"), istiod_cert.pem()).unwrap();
    std::fs::write(files.join("leaf.pem"), &issued.certificate_pem).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(files.join("root.pem"))
        .arg("-untrusted")
        .arg(files.join("istiod.pem"))
        .arg(files.join("leaf.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(issued.chain_pem.starts_with(&issued.certificate_pem));

    // A workload CSR outside the trust domain is refused by policy.
    let evil = ca_signing::create_csr(
        &Subject::new("", "evil"),
        &[San::Uri("spiffe://evil.example/ns/x/sa/y".into())],
        &workload_key,
    )
    .unwrap();
    let err = c
        .signing()
        .issue_certificate(workload_request(&istiod_cert, &evil, "x", "y"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("evil.example"), "{}", err.message());

    // istiod's sidecar profile gets workload certificates (the access layer reads the
    // request's purpose and lets it through), in the server's trust domain when the request
    // leaves it empty.
    let sidecar = serve(
        &dir.path().join("sidecar.sock"),
        backends(&token, None),
        |cfg| {
            cfg.profile = Profile::Sidecar;
            cfg.ca_key_mode = CaKeyMode::HsmKey;
            cfg.signing_keys = vec![key_id.clone()];
        },
    )
    .await;
    let from_sidecar = sidecar
        .client
        .signing()
        .issue_certificate(signing::IssueCertificateRequest {
            trust_domain: String::new(),
            ..workload_request(&istiod_cert, &workload_csr, "default", "sleep")
        })
        .await
        .unwrap()
        .into_inner();
    std::fs::write(
        dir.path().join("sidecar-leaf.pem"),
        &from_sidecar.certificate_pem,
    )
    .unwrap();
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(dir.path().join("sidecar-leaf.pem"))
        .output()
        .unwrap();
    let sans = String::from_utf8_lossy(&out.stdout);
    assert!(sans.contains(&format!("URI:{spiffe}")), "{sans}");
    sidecar.stop().await;

    // An issuer that does not carry the HSM key is refused.
    let err = c
        .signing()
        .issue_certificate(workload_request(
            &root_cert,
            &workload_csr,
            "default",
            "sleep",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("issuer_certificate"),
        "{}",
        err.message()
    );

    // Sign returns a signature the public key verifies; other key ids are refused.
    let sig = c
        .signing()
        .sign(signing::SignRequest {
            key_id: Vec::new(),
            message: b"hello".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sig.algorithm, i32::from(signing::KeyAlgorithm::EcdsaP256));
    assert!(verify_p256(&spki, b"hello", &sig.signature, files));
    let err = c.public_key(b"other-key").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied), "{err}");

    let err = c
        .istio()
        .load_s_key(istio::LoadSKeyRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    server.stop().await;
}

/// A workload certificate request in trust domain `cluster.local`, for the default signing key.
fn workload_request(
    issuer: &ca_signing::Certificate,
    csr: &ca_signing::Csr,
    namespace: &str,
    service_account: &str,
) -> signing::IssueCertificateRequest {
    signing::IssueCertificateRequest {
        issuer_certificate: issuer.pem().into_bytes(),
        csr: csr.to_pem().into_bytes(),
        purpose: signing::Purpose::Workload.into(),
        trust_domain: "cluster.local".into(),
        namespace: namespace.into(),
        service_account: service_account.into(),
        ..Default::default()
    }
}

fn verify_p256(spki: &[u8], message: &[u8], sig: &[u8], dir: &Path) -> bool {
    std::fs::write(dir.join("pub.der"), spki).unwrap();
    std::fs::write(dir.join("msg"), message).unwrap();
    std::fs::write(dir.join("sig"), sig).unwrap();
    std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-keyform", "DER", "-verify"])
        .arg(dir.join("pub.der"))
        .arg("-signature")
        .arg(dir.join("sig"))
        .arg(dir.join("msg"))
        .output()
        .unwrap()
        .status
        .success()
}

#[tokio::test]
async fn sidecar_profile_refuses_generate_kek_and_import_ca_but_serves_istiod() {
    let hsm = SoftHsm::new("it-sidecar");
    let dir = tempfile::tempdir().unwrap();
    let token = open(&hsm);
    token
        .ensure_kek(&KekId::new("asm-kek").unwrap(), Mode::Apply)
        .unwrap();
    let server = serve(
        &dir.path().join("kms.sock"),
        backends(&token, None),
        |cfg| {
            cfg.profile = Profile::Sidecar;
        },
    )
    .await;
    let err = server.client.generate_kek(Some(b"new")).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied));
    assert!(err.to_string().contains("sidecar"), "{err}");
    let (_, root_cert) = root();
    let err = server
        .client
        .import_ca_cert(None, root_cert.der())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied));
    assert!(
        token.list_anchors().unwrap().is_empty(),
        "nothing was imported"
    );
    server.client.generate_dek(b"asm-kek").await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn peers_outside_the_allowlist_are_refused_and_listed_ones_served() {
    let hsm = SoftHsm::new("it-peers");
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe");
    std::fs::write(&probe, b"").unwrap();
    let meta = std::fs::metadata(&probe).unwrap();
    let (uid, gid) = (meta.uid(), meta.gid());
    let token = open(&hsm);
    token
        .ensure_kek(&KekId::new("asm-kek").unwrap(), Mode::Apply)
        .unwrap();

    let server = serve(
        &dir.path().join("deny.sock"),
        backends(&token, None),
        |cfg| {
            cfg.peers = PeerAllowlist::new([uid + 1], [gid + 1]);
        },
    )
    .await;
    let err = server.client.generate_dek(b"asm-kek").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied));
    assert!(err.to_string().contains(&format!("uid {uid}")), "{err}");
    let err = server.client.is_serving().await.unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied));
    server.stop().await;

    let server = serve(
        &dir.path().join("allow.sock"),
        backends(&token, None),
        |cfg| {
            cfg.peers = PeerAllowlist::new([uid], []);
        },
    )
    .await;
    server.client.generate_dek(b"asm-kek").await.unwrap();
    server.stop().await;
}

fn expired_and_non_ca_chain() -> (String, Vec<u8>, Vec<u8>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
    root.distinguished_name.push(DnType::CommonName, "Bad Root");
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root_cert = root.self_signed(&root_key).unwrap();
    let issuer = Issuer::new(root, root_key);

    let key = KeyPair::generate().unwrap();
    let mut expired = CertificateParams::new(Vec::<String>::new()).unwrap();
    expired
        .distinguished_name
        .push(DnType::CommonName, "Expired CA");
    expired.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    expired.not_before = rcgen::date_time_ymd(2020, 1, 1);
    expired.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = expired.signed_by(&key, &issuer).unwrap();

    let mut leaf = CertificateParams::new(vec!["leaf.example".to_owned()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "Not a CA");
    leaf.is_ca = IsCa::ExplicitNoCa;
    let leaf = leaf.signed_by(&key, &issuer).unwrap();
    (root_cert.pem(), expired.der().to_vec(), leaf.der().to_vec())
}

#[tokio::test]
async fn bad_input_gets_its_code_and_message_and_the_server_keeps_serving() {
    let hsm = SoftHsm::new("it-badinput");
    let dir = tempfile::tempdir().unwrap();
    let token = open(&hsm);
    let server = serve(
        &dir.path().join("kms.sock"),
        backends(&token, None),
        |cfg| {
            cfg.max_message_bytes = 64 * 1024;
        },
    )
    .await;
    let c = &server.client;
    let kek = c.generate_kek(Some(b"asm-kek")).await.unwrap();
    let dek = c.generate_dek(&kek).await.unwrap();
    let ct = c
        .authenticated_encrypt(&kek, &dek, b"csr", b"csr-1")
        .await
        .unwrap();

    let check = |err: kms_grpc::Error, code: Code, needle: &str| {
        assert_eq!(err.code(), Some(code), "{err}");
        assert!(err.to_string().contains(needle), "{needle:?} not in {err}");
    };
    // garbage and truncated JWEs
    check(
        c.authenticated_decrypt(&kek, b"garbage", &ct, b"csr-1")
            .await
            .unwrap_err(),
        Code::InvalidArgument,
        "AuthenticatedDecrypt",
    );
    let truncated = &ct[..ct.len() - 10];
    check(
        c.authenticated_decrypt(&kek, &dek, truncated, b"csr-1")
            .await
            .unwrap_err(),
        Code::InvalidArgument,
        "ciphertext",
    );
    // unknown KEK id
    check(
        c.generate_dek(b"no-such-kek").await.unwrap_err(),
        Code::NotFound,
        "no-such-kek",
    );
    // wrong AAD
    check(
        c.authenticated_decrypt(&kek, &dek, &ct, b"csr-2")
            .await
            .unwrap_err(),
        Code::InvalidArgument,
        "AAD",
    );
    // oversized message
    let big = vec![0_u8; 128 * 1024];
    check(
        c.authenticated_encrypt(&kek, &dek, &big, b"")
            .await
            .unwrap_err(),
        Code::OutOfRange,
        "too large",
    );
    // invalid PEM
    check(
        c.import_ca_cert(
            None,
            b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
        )
        .await
        .unwrap_err(),
        Code::InvalidArgument,
        "CA certificate",
    );
    // non-CA and expired chains against an imported root
    let (root_pem, expired, leaf) = expired_and_non_ca_chain();
    c.import_ca_cert(Some(b"bad-root"), root_pem.as_bytes())
        .await
        .unwrap();
    let server2_dir = tempfile::tempdir().unwrap();
    // VerifyCertChain trusts the configured anchors: serve a second instance trusting bad-root.
    let config = IstioConfig {
        trusted_ca_ids: vec![hsm_core::CaId::new("bad-root").unwrap()],
        ..IstioConfig::default()
    };
    let backend = Backend::Ready(Backends {
        istio: Arc::new(HsmIstioKms::new(Arc::clone(&token), config)),
        admin: Arc::new(HsmAdminService::new(Arc::clone(&token))),
        kube: None,
    });
    let verifier = serve(&server2_dir.path().join("v.sock"), backend, |_| {}).await;
    check(
        verifier
            .client
            .verify_cert_chain(vec![leaf])
            .await
            .unwrap_err(),
        Code::InvalidArgument,
        "Not a CA",
    );
    check(
        verifier
            .client
            .verify_cert_chain(vec![expired])
            .await
            .unwrap_err(),
        Code::InvalidArgument,
        "expired",
    );
    check(
        verifier
            .client
            .verify_cert_chain(vec![b"junk".to_vec()])
            .await
            .unwrap_err(),
        Code::InvalidArgument,
        "element 0",
    );
    verifier.stop().await;
    // empty ids
    check(
        c.generate_dek(b"").await.unwrap_err(),
        Code::InvalidArgument,
        "kek_kid",
    );
    // still serving
    let again = c.generate_dek(&kek).await.unwrap();
    assert!(!again.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn import_ca_then_verify_on_a_new_server_instance() {
    let hsm = SoftHsm::new("it-restart");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kms.sock");
    let (root_key, root_cert) = root();
    {
        let token = open(&hsm);
        let server = serve(&socket, backends(&token, None), |_| {}).await;
        server
            .client
            .import_ca_cert(None, root_cert.pem().as_bytes())
            .await
            .unwrap();
        server.stop().await;
    }
    let istiod_key =
        SoftwareSigner::generate(ca_signing::KeyAlgorithm::EcdsaP256, "istiod").unwrap();
    let csr = ca_signing::create_csr(&istiod_subject(), &[], &istiod_key).unwrap();
    let reviewed =
        ca_signing::review_csr(csr.der(), &CsrPolicy::default(), CsrPurpose::IstiodCa).unwrap();
    let cert = ca_signing::sign_istiod_ca(
        &reviewed,
        &root_cert,
        &root_key,
        &IstiodCaProfile::default(),
    )
    .unwrap();
    let token = open(&hsm);
    let server = serve(&socket, backends(&token, None), |_| {}).await;
    server
        .client
        .verify_cert_chain(vec![cert.der().to_vec()])
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn kms_v2_round_trip_reports_the_same_key_id_and_v1beta1_answers() {
    let hsm = SoftHsm::new("it-kmsv2");
    let dir = tempfile::tempdir().unwrap();
    let token = open(&hsm);
    token
        .ensure_key_labelled(
            &KekId::new("k8s-key").unwrap(),
            &ObjectLabel::new(ObjectLabel::K8S_KEY).unwrap(),
            Mode::Apply,
        )
        .unwrap();
    let server = serve(
        &dir.path().join("kms.sock"),
        backends(&token, Some("apiserver-kek")),
        |cfg| cfg.profile = Profile::Sidecar,
    )
    .await;
    let c = &server.client;
    let status = c.kube_status().await.unwrap();
    assert_eq!(status.version, "v2");
    assert_eq!(status.healthz, "ok");
    let enc = c
        .kube_v2()
        .encrypt(v2::EncryptRequest {
            plaintext: b"a 32-byte apiserver DEK........".to_vec(),
            uid: "req-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(enc.key_id, status.key_id);
    let dec = c
        .kube_v2()
        .decrypt(v2::DecryptRequest {
            ciphertext: enc.ciphertext.clone(),
            uid: "req-2".into(),
            key_id: enc.key_id.clone(),
            annotations: enc.annotations.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dec.plaintext, b"a 32-byte apiserver DEK........");
    let err = c
        .kube_v2()
        .decrypt(v2::DecryptRequest {
            ciphertext: enc.ciphertext,
            uid: "req-3".into(),
            key_id: "other:v1".into(),
            annotations: std::collections::HashMap::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("other:v1"), "{}", err.message());

    let version = c
        .kube_v1beta1()
        .version(v1beta1::VersionRequest {
            version: "v1beta1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.version, "v1beta1");
    let cipher = c
        .kube_v1beta1()
        .encrypt(v1beta1::EncryptRequest {
            plain: b"secret".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .cipher;
    let plain = c
        .kube_v1beta1()
        .decrypt(v1beta1::DecryptRequest {
            cipher,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .plain;
    assert_eq!(plain, b"secret");
    server.stop().await;
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let code = raw[9..12].parse().unwrap();
    let body = raw.split_once("\r\n\r\n").unwrap().1.to_owned();
    (code, body)
}

#[tokio::test]
async fn socket_mode_metrics_and_readiness_are_served() {
    let hsm = SoftHsm::new("it-ops");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/kms.sock");
    // A stale socket from a crashed run is replaced.
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let token = open(&hsm);
    let server = serve(&socket, backends(&token, None), |_| {}).await;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);

    let ops = kms_grpc::ops::OpsServer::bind(([127, 0, 0, 1], 0).into(), server.state.clone())
        .await
        .unwrap();
    let addr = ops.local_addr().unwrap();
    let (ops_stop, ops_rx) = tokio::sync::oneshot::channel::<()>();
    let ops_task = tokio::spawn(ops.serve(async {
        let _ = ops_rx.await;
    }));

    let kek = server.client.generate_kek(Some(b"k")).await.unwrap();
    server.client.generate_dek(&kek).await.unwrap();
    let _ = server.client.generate_dek(b"missing").await.unwrap_err();
    let (root_key, root_cert) = root();
    let _ = root_key;
    server
        .client
        .import_ca_cert(None, root_cert.der())
        .await
        .unwrap();

    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    let (code, body) = http_get(addr, "/readyz").await;
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    let (code, metrics) = http_get(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("hsm_plugin_grpc_requests_total{rpc=\"GenerateDEK\",code=\"OK\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hsm_plugin_grpc_errors_total{rpc=\"GenerateDEK\",code=\"NOT_FOUND\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hsm_plugin_grpc_request_duration_seconds_count{rpc=\"GenerateDEK\"} 2"),
        "{metrics}"
    );
    let expiry = root_cert.not_after().unix_timestamp();
    let gauge = metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "hsm_plugin_root_cert_expiry_timestamp{{ca_id=\"{}\"",
                hsm_core::CaId::DEFAULT
            ))
        })
        .unwrap_or_else(|| panic!("no expiry gauge in {metrics}"));
    assert!(gauge.ends_with(&format!("}} {expiry}")), "{gauge}");
    assert!(gauge.contains("CN=Root CA"), "{gauge}");
    assert_eq!(http_get(addr, "/nope").await.0, 404);

    let _ = ops_stop.send(());
    ops_task.await.unwrap();
    let path = server.path.clone();
    server.stop().await;
    assert!(!path.exists());
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_64_clients_by_1000_calls_without_errors_and_bounded_memory() {
    const CLIENTS: usize = 64;
    const CALLS: usize = 1000;
    let hsm = SoftHsm::new("it-load");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kms.sock");
    let token = open(&hsm);
    let server = serve(&socket, backends(&token, None), |_| {}).await;
    let kek = server.client.generate_kek(Some(b"load")).await.unwrap();
    let dek = server.client.generate_dek(&kek).await.unwrap();

    let run = |calls: usize| {
        let socket = socket.clone();
        let kek = kek.clone();
        let dek = dek.clone();
        async move {
            let mut tasks = Vec::new();
            for i in 0..CLIENTS {
                let (socket, kek, dek) = (socket.clone(), kek.clone(), dek.clone());
                tasks.push(tokio::spawn(async move {
                    let client = KmsClient::connect(&socket).await.unwrap();
                    let aad = format!("csr-{i}");
                    for _ in 0..calls {
                        client
                            .authenticated_encrypt(&kek, &dek, b"a small CSR", aad.as_bytes())
                            .await
                            .unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    run(50).await;
    let before = rss_kib();
    let started = std::time::Instant::now();
    run(CALLS).await;
    let after = rss_kib();
    eprintln!(
        "{} calls in {:?}; RSS {before} KiB -> {after} KiB",
        CLIENTS * CALLS,
        started.elapsed()
    );
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    let ok = server
        .state
        .metrics()
        .calls(kms_grpc::Rpc::AuthenticatedEncrypt, Code::Ok);
    assert_eq!(ok, u64::try_from(CLIENTS * (CALLS + 50)).unwrap());
    assert!(
        server
            .state
            .metrics()
            .calls(kms_grpc::Rpc::AuthenticatedEncrypt, Code::Internal)
            == 0
    );
    server.stop().await;
}
