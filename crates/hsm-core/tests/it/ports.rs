//! The ports as other crates use them: the HSM admin service, and the exported mocks.

use std::sync::Arc;

use hsm_core::{
    CaId, Error, Health, HsmAdmin, HsmAdminService, ImportPolicy, IstioKms, KekId, KeyAlgorithm,
    KeyPairId, MockIstioKms, Mode, ObjectLabel, Outcome,
};

#[tokio::test]
async fn admin_service_runs_every_operation_off_the_async_workers() {
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
