//! A root whose key lives in SoftHSM2 issues the istiod CA; `openssl verify` accepts the chain.
//!
//! The PKCS#11 signer here is the test's own minimal one (ECDSA P-256 via `CKM_ECDSA`), so the
//! issuing path through `&dyn Signer` is proved against a real token independently of
//! hsm-core's signer.

#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

mod common;

use std::sync::Mutex;

use ca_signing::ops::{SignIstiodCaRequest, files, sign_istiod_ca_to_dir};
use ca_signing::{
    CsrPolicy, IstiodCaProfile, RootProfile, SignError, SignatureAlgorithm, Signer, Subject,
    check_signer_matches_cert, issue_root,
};
use common::{openssl, openssl_csr};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::Session;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::PKey;

/// DER OID of prime256v1, the `CKA_EC_PARAMS` of a P-256 key.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

struct TokenSigner {
    session: Mutex<Session>,
    key: ObjectHandle,
    spki: Vec<u8>,
}

impl TokenSigner {
    /// Generates a non-extractable P-256 key pair on the token.
    fn generate(session: Session, label: &str) -> Self {
        let (public, private) = session
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[
                    Attribute::Token(true),
                    Attribute::Verify(true),
                    Attribute::EcParams(P256_PARAMS.to_vec()),
                    Attribute::Label(label.as_bytes().to_vec()),
                ],
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Sign(true),
                    Attribute::Label(label.as_bytes().to_vec()),
                ],
            )
            .unwrap();
        let attrs = session
            .get_attributes(public, &[AttributeType::EcPoint])
            .unwrap();
        let Some(Attribute::EcPoint(wrapped)) = attrs.first() else {
            panic!("no CKA_EC_POINT")
        };
        // CKA_EC_POINT is a DER OCTET STRING around 04 || X || Y (65 bytes, short length)
        assert_eq!(wrapped[..2], [0x04, 65]);
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let mut ctx = openssl::bn::BigNumContext::new().unwrap();
        let point = EcPoint::from_bytes(&group, &wrapped[2..], &mut ctx).unwrap();
        let ec = EcKey::from_public_key(&group, &point).unwrap();
        let spki = PKey::from_ec_key(ec).unwrap().public_key_to_der().unwrap();
        Self {
            session: Mutex::new(session),
            key: private,
            spki,
        }
    }
}

impl Signer for TokenSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::EcdsaP256Sha256
    }

    fn public_key_spki_der(&self) -> Vec<u8> {
        self.spki.clone()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let err = |e: Box<dyn std::error::Error + Send + Sync>| SignError {
            key: "softhsm root key".to_owned(),
            source: e,
        };
        let digest = openssl::sha::sha256(message);
        let session = self.session.lock().map_err(|_| err("poisoned".into()))?;
        let raw = session
            .sign(&Mechanism::Ecdsa, self.key, &digest)
            .map_err(|e| err(Box::new(e)))?;
        // PKCS#11 returns r || s; X.509 carries a DER ECDSA-Sig-Value
        let (r, s) = raw.split_at(raw.len() / 2);
        let sig = EcdsaSig::from_private_components(
            BigNum::from_slice(r).map_err(|e| err(Box::new(e)))?,
            BigNum::from_slice(s).map_err(|e| err(Box::new(e)))?,
        )
        .map_err(|e| err(Box::new(e)))?;
        sig.to_der().map_err(|e| err(Box::new(e)))
    }
}

#[test]
fn an_istiod_ca_signed_by_a_softhsm_root_verifies_with_openssl() {
    let hsm = sandbox::SoftHsm::new("ca-signing-root");
    let session = hsm
        .module()
        .login_user(hsm.label(), hsm.user_pin())
        .unwrap();
    let signer = TokenSigner::generate(session, "mesh-root");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let profile = RootProfile {
        subject: Subject::new("Example Corp", "Mesh Root CA"),
        ..RootProfile::default()
    };
    let root = issue_root(&profile, &signer).unwrap();
    check_signer_matches_cert(&root, &signer).unwrap();

    let csr = openssl_csr(
        dir,
        "istiod",
        "rsa:2048",
        "/O=Istio/CN=Intermediate CA",
        &["subjectAltName=DNS:istiod.istio-system.svc"],
    );
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    let root_pem = root.pem();
    sign_istiod_ca_to_dir(
        &SignIstiodCaRequest {
            csr: &csr,
            root_cert: root_pem.as_bytes(),
            policy: &CsrPolicy::default(),
            profile: &IstiodCaProfile::default(),
        },
        &signer,
        &out,
    )
    .unwrap();

    let verified = openssl(
        &out,
        &[
            "verify",
            "-x509_strict",
            "-CAfile",
            files::ROOT_CERT,
            files::CA_CERT,
        ],
    );
    assert_eq!(verified.trim(), "ca-cert.pem: OK");
    let text = openssl(&out, &["x509", "-in", files::CA_CERT, "-noout", "-text"]);
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    assert!(
        text.contains("Issuer: O = Example Corp, CN = Mesh Root CA"),
        "{text}"
    );
    assert!(text.contains("ecdsa-with-SHA256"), "{text}");
    let verified = openssl(
        &out,
        &["verify", "-CAfile", files::ROOT_CERT, files::ROOT_CERT],
    );
    assert_eq!(verified.trim(), "root-cert.pem: OK");
}
