//! Format tests against vectors made by Python `cryptography` (`tests/vectors/make_vectors.py`).

use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::Session;
use hsm_core::jwe::Dek;
use hsm_core::{
    AuthenticatedDecryptRequest, Error, HsmIstioKms, IstioConfig, Iv, KekId, LoadSKeyRequest,
    ObjectLabel,
};
use sandbox::SoftHsm;

use crate::unhex;

struct Vectors(serde_json::Value);

impl Vectors {
    fn load() -> Self {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/envelope.json"
        ))
        .unwrap();
        Self(serde_json::from_str(&text).unwrap())
    }
    fn s(&self, key: &str) -> &str {
        self.0[key].as_str().unwrap()
    }
    fn hex(&self, key: &str) -> Vec<u8> {
        unhex(self.s(key))
    }
}

/// Imports the vectors' KEK as a session object (`CKA_TOKEN` false) with the KEK id and label;
/// the returned session must stay open while the key is used.
fn import_kek(hsm: &SoftHsm, v: &Vectors) -> Session {
    let session = hsm
        .module()
        .login_user(hsm.label(), hsm.user_pin())
        .unwrap();
    session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(v.hex("kek_hex")),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Id(v.s("kek_id").as_bytes().to_vec()),
            Attribute::Label(ObjectLabel::KEK.as_bytes().to_vec()),
        ])
        .unwrap();
    session
}

#[test]
fn python_made_blobs_decrypt_with_our_code_for_both_iv_lengths() {
    let v = Vectors::load();
    let (hsm, token) = crate::token("vectors-in");
    let _keep = import_kek(&hsm, &v);
    let kek = KekId::new(v.s("kek_id")).unwrap();
    for blob in ["encrypted_dek_iv12", "encrypted_dek_iv16"] {
        let (dek, kid) = token.unwrap_dek(&kek, v.s(blob).as_bytes()).unwrap();
        assert_eq!(
            dek.as_bytes().as_slice(),
            v.hex("dek_hex").as_slice(),
            "{blob}"
        );
        assert_eq!(kid, v.s("dek_kid"));
        assert_eq!(dek.kid(), v.s("dek_kid"));
    }
    let kms = HsmIstioKms::new(token, IstioConfig::default());
    let csr = kms
        .authenticated_decrypt_blocking(&AuthenticatedDecryptRequest {
            kek_id: kek.clone(),
            encrypted_dek: v.s("encrypted_dek_iv16").as_bytes().to_vec(),
            ciphertext: v.s("encrypted_csr").as_bytes().to_vec(),
            aad: v.s("csr_id").as_bytes().to_vec(),
        })
        .unwrap();
    assert_eq!(csr.as_slice(), v.s("csr").as_bytes());
    let skey = kms
        .load_skey_blocking(&LoadSKeyRequest {
            kek_id: kek,
            encrypted_dek: v.s("encrypted_dek_iv12").as_bytes().to_vec(),
            encrypted_skey: v.s("encrypted_skey").as_bytes().to_vec(),
        })
        .unwrap();
    assert_eq!(skey.expose(), v.s("skey_pem").as_bytes());
}

#[test]
fn our_blobs_are_byte_identical_to_the_python_ones_given_the_same_iv() {
    // Identical bytes mean the independent implementation decrypts ours exactly as its own.
    let v = Vectors::load();
    let (hsm, token) = crate::token("vectors-out");
    let _keep = import_kek(&hsm, &v);
    let kek = KekId::new(v.s("kek_id")).unwrap();
    let dek = Dek::from_bytes(v.hex("dek_hex").try_into().unwrap());
    assert_eq!(dek.to_jwk_json().as_slice(), v.s("dek_jwk").as_bytes());
    for (iv, blob) in [
        ("iv12_hex", "encrypted_dek_iv12"),
        ("iv16_hex", "encrypted_dek_iv16"),
    ] {
        let ours = token.wrap_dek(&kek, &dek, &Iv::Fixed(v.hex(iv))).unwrap();
        assert_eq!(String::from_utf8(ours).unwrap(), v.s(blob));
    }
    let ours = dek
        .seal_with_iv(
            &dek.kid(),
            v.s("csr_id").as_bytes(),
            &v.hex("dek_iv_hex"),
            v.s("csr").as_bytes(),
        )
        .unwrap();
    assert_eq!(ours, v.s("encrypted_csr"));
}

#[test]
fn tampered_wrong_kek_truncated_and_wrong_aad_are_distinct_errors() {
    let (_hsm, token) = crate::token("envelope-errors");
    let kek = token.generate_kek(None).unwrap();
    let other = token.generate_kek(None).unwrap();
    let kms = HsmIstioKms::new(token.clone(), IstioConfig::default());
    let dek_blob = kms
        .generate_dek_blocking(&hsm_core::GenerateDekRequest {
            kek_id: kek.clone(),
        })
        .unwrap();
    let text = String::from_utf8(dek_blob.clone()).unwrap();

    // Tampered ciphertext in the HSM layer: authentication error (SoftHSM's CKR_GENERAL_ERROR).
    let mut parts: Vec<&str> = text.split('.').collect();
    let flipped = flip_first_char(parts[3]);
    parts[3] = &flipped;
    let err = token
        .unwrap_dek(&kek, parts.join(".").as_bytes())
        .unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed { .. }), "{err}");

    // Wrong KEK id: the envelope names another key.
    let err = token.unwrap_dek(&other, &dek_blob).unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");

    // A KEK id that does not exist at all.
    let err = token
        .unwrap_dek(&KekId::new("absent").unwrap(), &dek_blob)
        .unwrap_err();
    assert!(matches!(err, Error::ObjectNotFound { .. }), "{err}");

    // Truncated.
    let err = token
        .unwrap_dek(&kek, &dek_blob[..dek_blob.len() / 2])
        .unwrap_err();
    assert!(matches!(err, Error::MalformedEnvelope { .. }), "{err}");

    // Wrong AAD.
    let ct = kms
        .authenticated_encrypt_blocking(&hsm_core::AuthenticatedEncryptRequest {
            kek_id: kek.clone(),
            encrypted_dek: dek_blob.clone(),
            plaintext: b"csr".to_vec(),
            aad: b"csr-1".to_vec(),
        })
        .unwrap();
    let req = |aad: &[u8], ciphertext: Vec<u8>| AuthenticatedDecryptRequest {
        kek_id: kek.clone(),
        encrypted_dek: dek_blob.clone(),
        ciphertext,
        aad: aad.to_vec(),
    };
    assert_eq!(
        kms.authenticated_decrypt_blocking(&req(b"csr-1", ct.clone()))
            .unwrap()
            .as_slice(),
        b"csr"
    );
    let err = kms
        .authenticated_decrypt_blocking(&req(b"csr-2", ct.clone()))
        .unwrap_err();
    assert!(matches!(err, Error::AadMismatch { .. }), "{err}");
    // AAD edited inside the header: the tag no longer verifies.
    let ct_text = String::from_utf8(ct).unwrap();
    let header = hsm_core::jwe::protected_header(
        &kms.token().unwrap_dek(&kek, &dek_blob).unwrap().1,
        b"csr-2",
    );
    let forged = format!("{header}{}", &ct_text[ct_text.find('.').unwrap()..]);
    let err = kms
        .authenticated_decrypt_blocking(&req(b"csr-2", forged.into_bytes()))
        .unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed { .. }), "{err}");
}

#[test]
fn kek_layer_iv_length_is_configurable_and_decrypt_accepts_both() {
    let (_hsm, token) = crate::token("iv-length");
    let kek = token.generate_kek(None).unwrap();
    let dek = token.random_dek().unwrap();
    for len in [hsm_core::IvLength::Bytes12, hsm_core::IvLength::Bytes16] {
        let blob = token.wrap_dek(&kek, &dek, &Iv::Random(len)).unwrap();
        let parsed = hsm_core::jwe::parse("encrypted DEK", &blob).unwrap();
        assert_eq!(parsed.iv.len(), len.bytes());
        assert_eq!(parsed.kid, kek.to_text());
        assert_eq!(
            token.unwrap_dek(&kek, &blob).unwrap().0.as_bytes(),
            dek.as_bytes()
        );
    }
}

fn flip_first_char(part: &str) -> String {
    let mut chars: Vec<char> = part.chars().collect();
    chars[0] = if chars[0] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}
