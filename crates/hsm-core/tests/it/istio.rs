use hsm_core::{
    CaId, Error, GenerateDekRequest, GenerateSKeyRequest, HsmIstioKms, ImportCaCertRequest,
    ImportPolicy, IstioConfig, IstioKms, KekId, LoadSKeyRequest, Outcome, SKeySpec,
    VerifyCertChainRequest,
};
use openssl::pkey::PKey;

#[tokio::test]
async fn istiod_bootstrap_sequence_through_the_async_port() {
    let (_hsm, token) = crate::token("istio-flow");
    let kms: Box<dyn IstioKms> = Box::new(HsmIstioKms::new(token, IstioConfig::default()));
    let kek = kms
        .generate_kek(Some(KekId::new("asm-kek").unwrap()))
        .await
        .unwrap();
    let err = kms.generate_kek(Some(kek.clone())).await.unwrap_err();
    assert!(matches!(err, Error::ObjectExists { .. }), "{err}");

    let dek = kms
        .generate_dek(GenerateDekRequest {
            kek_id: kek.clone(),
        })
        .await
        .unwrap();
    let header = hsm_core::jwe::parse("encrypted DEK", &dek).unwrap();
    assert_eq!((header.kid.as_str(), header.iv.len()), ("asm-kek", 16));

    for (spec, pem_tag) in [
        (SKeySpec::Rsa { bits: 2048 }, "RSA PRIVATE KEY"),
        (SKeySpec::EcdsaP256, "EC PRIVATE KEY"),
        (SKeySpec::EcdsaP384, "EC PRIVATE KEY"),
    ] {
        let skey = kms
            .generate_skey(GenerateSKeyRequest {
                kek_id: kek.clone(),
                encrypted_dek: dek.clone(),
                spec,
            })
            .await
            .unwrap();
        let pem = kms
            .load_skey(LoadSKeyRequest {
                kek_id: kek.clone(),
                encrypted_dek: dek.clone(),
                encrypted_skey: skey,
            })
            .await
            .unwrap();
        let text = std::str::from_utf8(pem.expose()).unwrap();
        assert!(
            text.starts_with(&format!("-----BEGIN {pem_tag}-----")),
            "{spec:?}"
        );
        let key = PKey::private_key_from_pem(pem.expose()).unwrap();
        match spec {
            SKeySpec::Rsa { bits } => assert_eq!(key.bits(), bits),
            SKeySpec::EcdsaP256 => assert_eq!(key.bits(), 256),
            _ => assert_eq!(key.bits(), 384),
        }
    }
    let err = kms
        .generate_skey(GenerateSKeyRequest {
            kek_id: kek.clone(),
            encrypted_dek: dek.clone(),
            spec: SKeySpec::Rsa { bits: 1024 },
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");

    let pki = crate::certs::pki("Root CA", vec![], (2080, 1, 1));
    let import = |cert: Vec<u8>| ImportCaCertRequest {
        ca_id: None,
        cert,
        policy: ImportPolicy::KeepExisting,
    };
    assert_eq!(
        kms.import_ca_cert(import(pki.root_pem.clone().into_bytes()))
            .await
            .unwrap(),
        Outcome::Created
    );
    assert_eq!(
        kms.import_ca_cert(import(pki.root_der.clone()))
            .await
            .unwrap(),
        Outcome::Unchanged
    );

    // A fresh operations object (as after a plugin restart) verifies: no in-memory CA state.
    let verified = kms
        .verify_cert_chain(VerifyCertChainRequest {
            certificates: vec![pki.int_der.clone()],
            expected_spki: None,
        })
        .await
        .unwrap();
    assert_eq!(verified.anchor_subject, "CN=Root CA,O=Istio");
}

#[test]
fn verify_uses_the_configured_anchor_ids_read_from_the_token_each_call() {
    let (_hsm, token) = crate::token("istio-verify");
    let pki = crate::certs::pki("Root CA", vec![], (2080, 1, 1));
    let config = IstioConfig {
        trusted_ca_ids: vec![CaId::new("custom").unwrap()],
        ..IstioConfig::default()
    };
    let kms = HsmIstioKms::new(token.clone(), config);
    kms.import_ca_cert_blocking(&ImportCaCertRequest {
        ca_id: Some(CaId::new("custom").unwrap()),
        cert: pki.root_der.clone(),
        policy: ImportPolicy::KeepExisting,
    })
    .unwrap();
    let req = VerifyCertChainRequest {
        certificates: vec![pki.int_der.clone()],
        expected_spki: None,
    };
    assert!(kms.verify_cert_chain_blocking(&req).is_ok());
    token
        .remove_anchor(&CaId::new("custom").unwrap(), &CaId::new("custom").unwrap())
        .unwrap();
    let err = kms.verify_cert_chain_blocking(&req).unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

/// KMS-PROTOCOL W4: the kid in the clear header of blobs under a new DEK says nothing about
/// the DEK (the plugin's kid is a SHA-256 key-check value of it), and the JWK inside the
/// encrypted DEK carries the same kid, which is all the Thales plugin reads.
#[tokio::test]
async fn clear_headers_under_a_new_dek_carry_no_value_derived_from_the_key() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let (_hsm, token) = crate::token("istio-w4");
    let kms = HsmIstioKms::new(token.clone(), IstioConfig::default());
    let kek = kms
        .generate_kek(Some(KekId::new("w4-kek").unwrap()))
        .await
        .unwrap();
    let encrypted_dek = kms
        .generate_dek(GenerateDekRequest {
            kek_id: kek.clone(),
        })
        .await
        .unwrap();
    let ciphertext = kms
        .authenticated_encrypt(hsm_core::AuthenticatedEncryptRequest {
            kek_id: kek.clone(),
            encrypted_dek: encrypted_dek.clone(),
            plaintext: b"csr".to_vec(),
            aad: b"csr-id".to_vec(),
        })
        .await
        .unwrap();
    let header_kid = hsm_core::jwe::parse("ciphertext", &ciphertext).unwrap().kid;

    // The DEK's key-check value, computed the way gose's CalculateKeyID does.
    let (dek, jwk_kid) = token.unwrap_dek(&kek, &encrypted_dek).unwrap();
    let mut input = b"v1.jwk.oct.".to_vec();
    input.extend_from_slice(URL_SAFE_NO_PAD.encode(dek.as_bytes()).as_bytes());
    let check_value = openssl::sha::sha256(&input)
        .iter()
        .fold(String::new(), |mut s, b| {
            use std::fmt::Write as _;
            write!(s, "{b:02x}").unwrap();
            s
        });
    assert_ne!(
        header_kid, check_value,
        "the header leaks a key-check value"
    );
    assert_eq!(
        header_kid, jwk_kid,
        "the plugin matches the header to the JWK kid"
    );
    assert_eq!(header_kid.len(), 64);
    assert!(header_kid.bytes().all(|b| b.is_ascii_hexdigit()));

    // Two DEKs never share a kid.
    let other = kms
        .generate_dek(GenerateDekRequest {
            kek_id: kek.clone(),
        })
        .await
        .unwrap();
    let (_, other_kid) = token.unwrap_dek(&kek, &other).unwrap();
    assert_ne!(other_kid, jwk_kid);
}
