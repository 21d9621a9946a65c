//! hsm-key mode: certificates signed by a key that never leaves the HSM verify with the
//! `openssl` CLI.

use std::process::Command;
use std::sync::Arc;

use ca_signing::Signer as _;
use hsm_core::{Error, HsmKey, KeyAlgorithm, KeyPairId, Mode, ObjectLabel, Outcome};
use rcgen::{DnType, Issuer, KeyPair, PublicKeyData, SignatureAlgorithm, SigningKey};

/// rcgen's signing seam over the HSM key, through ca-signing's `Signer` trait.
struct RcgenHsm {
    key: HsmKey,
    alg: &'static SignatureAlgorithm,
}

impl PublicKeyData for RcgenHsm {
    fn der_bytes(&self) -> &[u8] {
        self.key.public_key_raw()
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

impl SigningKey for RcgenHsm {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        ca_signing::Signer::sign(&self.key, msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

fn openssl_verify(dir: &std::path::Path, root_pem: &str, cert_pem: &str) -> String {
    std::fs::write(dir.join("root.pem"), root_pem).unwrap();
    std::fs::write(dir.join("cert.pem"), cert_pem).unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-CAfile", "root.pem", "cert.pem"])
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is needed; run `cargo xtask setup`");
    assert!(
        out.status.success(),
        "openssl verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sign_chain_and_verify(alg: KeyAlgorithm, rcgen_alg: &'static SignatureAlgorithm) {
    let (_hsm, token) = crate::token("hsm-key");
    let id = KeyPairId::new(format!("ca-{alg}")).unwrap();
    let label = ObjectLabel::new("istiod-ca").unwrap();
    assert_eq!(
        token
            .ensure_key_pair(&id, &label, alg, Mode::DryRun)
            .unwrap(),
        Outcome::WouldCreate
    );
    assert_eq!(
        token
            .ensure_key_pair(&id, &label, alg, Mode::Apply)
            .unwrap(),
        Outcome::Created
    );
    assert_eq!(
        token
            .ensure_key_pair(&id, &label, alg, Mode::Apply)
            .unwrap(),
        Outcome::Unchanged
    );
    let key = HsmKey::open(Arc::clone(&token), &id).unwrap();
    assert_eq!(key.public_key_spki_der(), key.spki_der());

    // Self-signed root made with the HSM key.
    let signer = RcgenHsm {
        key,
        alg: rcgen_alg,
    };
    let mut root = crate::certs::ca_params("HSM Root", None);
    root.distinguished_name
        .push(DnType::OrganizationName, "Istio");
    let root_cert = root.self_signed(&signer).unwrap();
    // An intermediate from a software key pair, signed by the HSM key.
    let issuer = Issuer::new(root, &signer);
    let int_key = KeyPair::generate().unwrap();
    let int = crate::certs::ca_params("Intermediate CA", Some(0))
        .signed_by(&int_key, &issuer)
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    assert!(openssl_verify(dir.path(), &root_cert.pem(), &root_cert.pem()).contains("OK"));
    assert!(openssl_verify(dir.path(), &root_cert.pem(), &int.pem()).contains("OK"));

    // The certificate's key is the HSM key.
    let x509 = openssl::x509::X509::from_der(root_cert.der()).unwrap();
    assert_eq!(
        x509.public_key().unwrap().public_key_to_der().unwrap(),
        signer.key.spki_der()
    );
}

#[test]
fn p256_key_signs_certificates_openssl_accepts() {
    sign_chain_and_verify(KeyAlgorithm::EcdsaP256, &rcgen::PKCS_ECDSA_P256_SHA256);
}

#[test]
fn p384_key_signs_certificates_openssl_accepts() {
    sign_chain_and_verify(KeyAlgorithm::EcdsaP384, &rcgen::PKCS_ECDSA_P384_SHA384);
}

#[test]
fn rsa3072_key_signs_certificates_openssl_accepts() {
    sign_chain_and_verify(KeyAlgorithm::Rsa3072, &rcgen::PKCS_RSA_SHA256);
}

#[test]
fn the_private_key_is_sensitive_and_non_extractable() {
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    let (hsm, token) = crate::token("hsm-key-attrs");
    let id = KeyPairId::new("ca").unwrap();
    token
        .ensure_key_pair(
            &id,
            &ObjectLabel::new("ca").unwrap(),
            KeyAlgorithm::EcdsaP256,
            Mode::Apply,
        )
        .unwrap();
    let err = token
        .ensure_key_pair(
            &id,
            &ObjectLabel::new("ca").unwrap(),
            KeyAlgorithm::EcdsaP384,
            Mode::Apply,
        )
        .unwrap_err();
    assert!(matches!(err, Error::ObjectMismatch { .. }), "{err}");
    let raw = hsm
        .module()
        .login_user(hsm.label(), hsm.user_pin())
        .unwrap();
    let found = raw
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(b"ca".to_vec()),
        ])
        .unwrap();
    let attrs = raw
        .get_attributes(
            found[0],
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::Decrypt,
            ],
        )
        .unwrap();
    assert_eq!(
        attrs,
        vec![
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::NeverExtractable(true),
            Attribute::Decrypt(false)
        ]
    );
}
