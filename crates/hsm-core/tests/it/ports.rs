//! The ports as other crates use them: the HSM admin service, and the exported mocks.

use std::sync::Arc;

use hsm_core::{
    CaId, Error, Health, HsmAdmin, HsmAdminService, ImportPolicy, IstioKms, KekId, KeyAlgorithm,
    KeyPairId, MockIstioKms, Mode, ObjectLabel, Outcome,
};

#[tokio::test]
async fn admin_service_runs_every_operation_against_the_token() {
    let (_hsm, token) = crate::token("admin");
    let admin: Arc<dyn HsmAdmin> = Arc::new(HsmAdminService::new(token));
    assert_eq!(admin.health().await, Health::Ready);
    let kek = KekId::new("admin-kek").unwrap();
    assert_eq!(
        admin.ensure_kek(kek.clone(), Mode::Apply).await.unwrap(),
        Outcome::Created
    );
    assert_eq!(
        admin.ensure_kek(kek.clone(), Mode::Apply).await.unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(admin.list_keks().await.unwrap().len(), 1);
    assert_eq!(
        admin
            .describe_kek(kek.clone())
            .await
            .unwrap()
            .never_extractable,
        Some(true)
    );

    let pki = crate::certs::pki("Root CA", vec![], (2080, 1, 1));
    let outcome = admin
        .import_ca_cert(
            CaId::default(),
            pki.root_der,
            ImportPolicy::KeepExisting,
            Mode::Apply,
        )
        .await;
    assert_eq!(outcome.unwrap(), Outcome::Created);
    assert_eq!(admin.list_anchors().await.unwrap().len(), 1);

    let id = KeyPairId::new("ca").unwrap();
    let created = admin
        .ensure_key_pair(
            id.clone(),
            ObjectLabel::new("ca").unwrap(),
            KeyAlgorithm::EcdsaP256,
            Mode::Apply,
        )
        .await;
    assert_eq!(created.unwrap(), Outcome::Created);
    let spki = admin.public_key(id.clone()).await.unwrap();
    let sig = admin.sign(id, b"message".to_vec()).await.unwrap();
    let key = openssl::pkey::PKey::public_key_from_der(&spki).unwrap();
    let mut verifier =
        openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
    verifier.update(b"message").unwrap();
    assert!(verifier.verify(&sig).unwrap());

    admin.destroy_kek(kek.clone(), kek.clone()).await.unwrap();
    assert!(admin.describe_kek(kek).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn mocks_are_exported_for_transport_tests() {
    let mut mock = MockIstioKms::new();
    mock.expect_generate_kek().times(1).returning(|_| {
        Err(Error::ObjectExists {
            what: "KEK",
            id: "x".into(),
            token: "t".into(),
            hint: "h",
        })
    });
    let kms: Box<dyn IstioKms> = Box::new(mock);
    let err = kms.generate_kek(None).await.unwrap_err();
    assert_eq!(err.kind(), hsm_core::ErrorKind::AlreadyExists);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn per_request_operations_are_timed_and_answer_alike_on_either_path() {
    let (_hsm, token) = crate::token("ports-fast");
    let kek = KekId::new("fast-kek").unwrap();
    token.ensure_kek(&kek, Mode::Apply).unwrap();
    let istio = hsm_core::HsmIstioKms::new(Arc::clone(&token), hsm_core::IstioConfig::default());
    assert_eq!(token.typical_call(), None, "nothing measured yet");
    let dek = istio
        .generate_dek(hsm_core::GenerateDekRequest {
            kek_id: kek.clone(),
        })
        .await
        .unwrap();
    // The first call went to the blocking pool and was timed; from then on the calls run
    // on the calling task while the token answers fast, on the pool otherwise (how fast
    // depends on the machine's load), with the same results.
    assert!(token.typical_call().is_some());
    for i in 0..20u8 {
        let sealed = istio
            .authenticated_encrypt(hsm_core::AuthenticatedEncryptRequest {
                kek_id: kek.clone(),
                encrypted_dek: dek.clone(),
                plaintext: vec![i; 64],
                aad: vec![i],
            })
            .await
            .unwrap();
        let opened = istio
            .authenticated_decrypt(hsm_core::AuthenticatedDecryptRequest {
                kek_id: kek.clone(),
                encrypted_dek: dek.clone(),
                ciphertext: sealed,
                aad: vec![i],
            })
            .await
            .unwrap();
        assert_eq!(opened.as_slice(), vec![i; 64].as_slice());
    }
    assert!(token.typical_call().is_some());
}
