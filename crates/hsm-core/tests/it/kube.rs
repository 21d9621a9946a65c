use std::collections::BTreeMap;

use hsm_core::{
    Error, HsmKubeKms, KekId, KeyRef, KubeDecryptRequest, KubeEncryptRequest, KubeKey, KubeKms,
    KubeKmsConfig, Mode, ObjectLabel,
};

use zeroize::Zeroizing;

fn enc(data: &[u8]) -> KubeEncryptRequest {
    KubeEncryptRequest {
        plaintext: Zeroizing::new(data.to_vec()),
        uid: "uid-1".to_owned(),
    }
}

fn dec(ciphertext: Vec<u8>, key_id: String) -> KubeDecryptRequest {
    KubeDecryptRequest {
        ciphertext,
        uid: "uid-2".to_owned(),
        key_id,
        annotations: BTreeMap::new(),
    }
}

#[tokio::test]
async fn v2_status_encrypt_decrypt_pick_the_key_named_by_key_id() {
    let (_hsm, token) = crate::token("kms-v2");
    let old = KekId::new("k8s-kek-1").unwrap();
    let new = KekId::new("k8s-kek-2").unwrap();
    token.ensure_kek(&old, Mode::Apply).unwrap();
    token.ensure_kek(&new, Mode::Apply).unwrap();

    let before = HsmKubeKms::new(token.clone(), KubeKmsConfig::new(KeyRef::kek(old.clone())));
    let old_ct = before.encrypt(enc(b"dek-old")).await.unwrap();
    assert_eq!(old_ct.key_id, "k8s-kek-1:v1");

    let mut config = KubeKmsConfig::new(KeyRef::kek(new.clone()));
    config.current.version = "v2".to_owned();
    config.retired = vec![KubeKey {
        key: KeyRef::kek(old),
        version: "v1".to_owned(),
    }];
    let kms: Box<dyn KubeKms> = Box::new(HsmKubeKms::new(token, config));

    let status = kms.status().await.unwrap();
    assert_eq!(
        (
            status.version.as_str(),
            status.healthz.as_str(),
            status.key_id.as_str()
        ),
        ("v2", "ok", "k8s-kek-2:v2")
    );

    let ct = kms.encrypt(enc(b"dek-new")).await.unwrap();
    assert_eq!(ct.key_id, "k8s-kek-2:v2");
    assert_eq!(
        hsm_core::jwe::parse("x", &ct.ciphertext).unwrap().iv.len(),
        12
    );
    assert_eq!(
        kms.decrypt(dec(ct.ciphertext.clone(), ct.key_id.clone()))
            .await
            .unwrap()
            .as_slice(),
        b"dek-new"
    );
    assert_eq!(
        kms.decrypt(dec(old_ct.ciphertext.clone(), old_ct.key_id))
            .await
            .unwrap()
            .as_slice(),
        b"dek-old"
    );

    let err = kms
        .decrypt(dec(ct.ciphertext.clone(), "k8s-kek-9:v1".to_owned()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownKeyId { .. }), "{err}");
    // The key id names the old key but the blob was made with the new one: never guessed.
    let err = kms
        .decrypt(dec(ct.ciphertext, "k8s-kek-1:v1".to_owned()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
}

#[tokio::test]
async fn v1beta1_uses_the_labelled_key_and_the_label_as_kid() {
    let (_hsm, token) = crate::token("kms-v1");
    let label = ObjectLabel::new(ObjectLabel::K8S_KEY).unwrap();
    let id = KekId::new("v1-key-id").unwrap();
    token.ensure_key_labelled(&id, &label, Mode::Apply).unwrap();
    let kms = HsmKubeKms::new(
        token,
        KubeKmsConfig::new(KeyRef::kek(KekId::new("unused").unwrap())),
    );
    assert_eq!(KubeKms::v1_version(&kms).await.unwrap().version, "v1beta1");

    let cipher = kms
        .v1_encrypt(Zeroizing::new(b"apiserver dek".to_vec()), Vec::new())
        .await
        .unwrap();
    let parsed = hsm_core::jwe::parse("x", &cipher).unwrap();
    assert_eq!(
        (
            parsed.kid.as_str(),
            parsed.iv.len(),
            parsed.thales_aad.len()
        ),
        ("k8s-dek", 16, 0)
    );
    assert_eq!(
        kms.v1_decrypt(cipher.clone(), Vec::new())
            .await
            .unwrap()
            .as_slice(),
        b"apiserver dek"
    );
    assert_eq!(
        kms.v1_decrypt(cipher.clone(), b"v1-key-id".to_vec())
            .await
            .unwrap()
            .as_slice(),
        b"apiserver dek"
    );
    let err = kms.v1_decrypt(cipher, b"other".to_vec()).await.unwrap_err();
    assert!(matches!(err, Error::UnknownKeyId { .. }), "{err}");
}
