//! Cached object handles: keys destroyed or replaced behind a token handle's back are looked
//! up again, never used stale.

use std::sync::Arc;

use cryptoki::object::{Attribute, ObjectClass};
use hsm_core::{
    Error, HsmAdmin as _, HsmAdminService, HsmKey, HsmToken, Iv, IvLength, KekId, KeyAlgorithm,
    KeyPairId, KeyRef, Mode, ObjectLabel, TokenOptions,
};

/// A second, independent handle on the same token (its own sessions and cache).
fn second_handle(hsm: &sandbox::SoftHsm) -> HsmToken {
    HsmToken::open(
        hsm.module(),
        hsm.label(),
        hsm.user_pin().clone(),
        TokenOptions::default(),
    )
    .unwrap()
}

fn seal(token: &HsmToken, kek: &KekId) -> hsm_core::Result<String> {
    token.seal(
        &KeyRef::kek(kek.clone()),
        &kek.to_text(),
        b"",
        &Iv::Random(IvLength::Bytes12),
        b"payload",
    )
}

#[test]
fn a_kek_destroyed_elsewhere_is_not_found_and_a_recreated_one_is_used() {
    let (hsm, token) = crate::token("handles-kek");
    let kek = KekId::new("cached-kek").unwrap();
    token.ensure_kek(&kek, Mode::Apply).unwrap();
    let first = seal(&token, &kek).unwrap();

    let other = second_handle(&hsm);
    other.destroy_kek(&kek, &kek).unwrap();
    let err = seal(&token, &kek).unwrap_err();
    assert!(matches!(err, Error::ObjectNotFound { .. }), "{err}");

    other.ensure_kek(&kek, Mode::Apply).unwrap();
    let second = seal(&token, &kek).unwrap();
    // The new key opens what it sealed, and not what the destroyed key sealed.
    let key = KeyRef::kek(kek.clone());
    let opened = token
        .open_with(&key, "test blob", &kek.to_text(), second.as_bytes())
        .unwrap();
    assert_eq!(opened.plaintext.as_slice(), b"payload");
    let err = token
        .open_with(&key, "test blob", &kek.to_text(), first.as_bytes())
        .unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed { .. }), "{err}");
}

#[test]
fn a_kek_destroyed_through_the_same_handle_is_forgotten() {
    let (_hsm, token) = crate::token("handles-own");
    let kek = KekId::new("own-kek").unwrap();
    token.ensure_kek(&kek, Mode::Apply).unwrap();
    seal(&token, &kek).unwrap();
    token.destroy_kek(&kek, &kek).unwrap();
    let err = seal(&token, &kek).unwrap_err();
    assert!(matches!(err, Error::ObjectNotFound { .. }), "{err}");
}

fn destroy_pair(hsm: &sandbox::SoftHsm, id: &KeyPairId) {
    let raw = hsm
        .module()
        .login_user(hsm.label(), hsm.user_pin())
        .unwrap();
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        for handle in raw
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Id(id.as_bytes().to_vec()),
            ])
            .unwrap()
        {
            raw.destroy_object(handle).unwrap();
        }
    }
}

#[tokio::test]
async fn a_replaced_key_pair_is_refused_by_an_open_key_and_reopened_by_the_service() {
    let (hsm, token) = crate::token("handles-pair");
    let id = KeyPairId::new("istiod-ca").unwrap();
    let label = ObjectLabel::new("istiod-ca").unwrap();
    token
        .ensure_key_pair(&id, &label, KeyAlgorithm::EcdsaP256, Mode::Apply)
        .unwrap();
    let key = HsmKey::open(Arc::clone(&token), &id).unwrap();
    key.sign(b"before").unwrap();
    let service = HsmAdminService::new(Arc::clone(&token));
    let old_spki = service.public_key(id.clone()).await.unwrap();
    service.sign(id.clone(), b"before".to_vec()).await.unwrap();

    destroy_pair(&hsm, &id);
    token
        .ensure_key_pair(&id, &label, KeyAlgorithm::EcdsaP256, Mode::Apply)
        .unwrap();

    // The open key would sign with a private key that does not match its public key.
    let err = key.sign(b"after").unwrap_err();
    assert!(matches!(err, Error::ObjectMismatch { .. }), "{err}");
    assert!(err.to_string().contains("replaced"), "{err}");
    // The service refuses once, then opens the new pair.
    let err = service
        .sign(id.clone(), b"after".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ObjectMismatch { .. }), "{err}");
    let new_spki = service.public_key(id.clone()).await.unwrap();
    assert_ne!(new_spki, old_spki);
    service.sign(id.clone(), b"after".to_vec()).await.unwrap();
    let reopened = HsmKey::open(Arc::clone(&token), &id).unwrap();
    assert_eq!(reopened.spki_der(), new_spki.as_slice());
}

/// Each opened key pair signs only with the handle found for it: once the pair was replaced
/// and a new key cached the new private key's handle, the old key still refuses to sign
/// (it would sign with a private key that does not match its public key).
#[test]
fn an_open_key_never_signs_with_the_handle_cached_for_its_replacement() {
    let (hsm, token) = crate::token("handles-inst");
    let id = KeyPairId::new("istiod-ca").unwrap();
    let label = ObjectLabel::new("istiod-ca").unwrap();
    token
        .ensure_key_pair(&id, &label, KeyAlgorithm::EcdsaP256, Mode::Apply)
        .unwrap();
    let old = HsmKey::open(Arc::clone(&token), &id).unwrap();
    old.sign(b"before").unwrap();

    destroy_pair(&hsm, &id);
    token
        .ensure_key_pair(&id, &label, KeyAlgorithm::EcdsaP256, Mode::Apply)
        .unwrap();
    let new = HsmKey::open(Arc::clone(&token), &id).unwrap();
    assert_ne!(new.spki_der(), old.spki_der());
    let signature = new.sign(b"after").unwrap();
    let public = openssl::pkey::PKey::public_key_from_der(new.spki_der()).unwrap();
    let mut verifier =
        openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &public).unwrap();
    assert!(verifier.verify_oneshot(&signature, b"after").unwrap());

    for _ in 0..2 {
        let err = old.sign(b"stale").unwrap_err();
        assert!(matches!(err, Error::ObjectMismatch { .. }), "{err}");
    }
    new.sign(b"still fine").unwrap();
}
