//! Everything we issue is checked independently with the `openssl` CLI.

#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine;

use ca_signing::ops::{SignIstiodCaRequest, files, sign_istiod_ca_to_dir};
use ca_signing::{
    CertChain, Certificate, CsrPolicy, Error, IstiodCaProfile, KeyAlgorithm, RootProfile,
    SecretLayout, Signer, SoftwareSigner, Subject, WorkloadProfile, check_signer_matches_cert,
    issue_root, issue_workload,
};
use common::{openssl, openssl_csr};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// A fresh `algorithm` key made by `openssl genpkey -pkeyopt <option>`, written to `dir/out`.
fn genpkey(dir: &Path, algorithm: &str, option: &str, out: &str) {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            algorithm,
            "-pkeyopt",
            option,
            "-out",
            out,
        ],
    );
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one end-to-end scenario, read top to bottom"
)]
fn root_istiod_ca_and_workload_leaf_verify_with_the_openssl_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // root key made by openssl, loaded from its PKCS#8 PEM
    genpkey(dir, "EC", "ec_paramgen_curve:P-384", "root.key");
    let root_key = SoftwareSigner::from_file(&dir.join("root.key"), None).unwrap();
    let root = issue_root(&RootProfile::default(), &root_key).unwrap();
    write(dir, "root.pem", root.pem().as_bytes());

    let root_text = openssl(dir, &["x509", "-in", "root.pem", "-noout", "-text"]);
    assert!(
        root_text.contains("X509v3 Basic Constraints: critical"),
        "{root_text}"
    );
    assert!(root_text.contains("CA:TRUE"), "{root_text}");
    assert!(!root_text.contains("pathlen"), "{root_text}");
    assert!(
        root_text.contains("X509v3 Key Usage: critical"),
        "{root_text}"
    );
    assert!(
        root_text.contains("Certificate Sign, CRL Sign"),
        "{root_text}"
    );
    assert!(
        root_text.contains("X509v3 Subject Key Identifier"),
        "{root_text}"
    );
    assert!(
        root_text.contains("Subject: O = Istio, CN = Root CA"),
        "{root_text}"
    );
    assert!(root_text.contains("ecdsa-with-SHA384"), "{root_text}");
    assert!(!root_text.contains("rcgen"), "{root_text}");
    let verified = openssl(
        dir,
        &["verify", "-x509_strict", "-CAfile", "root.pem", "root.pem"],
    );
    assert_eq!(verified.trim(), "root.pem: OK");

    // istiod's CSR, made by openssl with an RSA key, as the plugin would send it
    let csr = openssl_csr(
        dir,
        "istiod",
        "rsa:2048",
        "/O=Istio/CN=Intermediate CA/L=cluster1",
        &["subjectAltName=DNS:istiod.istio-system.svc"],
    );
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    let signed = sign_istiod_ca_to_dir(
        &SignIstiodCaRequest {
            csr: &csr,
            root_cert: root.pem().as_bytes(),
            policy: &CsrPolicy::default(),
            profile: &IstiodCaProfile::default(),
        },
        &root_key,
        &out,
    )
    .unwrap();
    assert_eq!(signed.review.public_key.kind.to_string(), "RSA 2048 bits");
    assert_eq!(signed.files.len(), 4);

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
    for want in [
        "X509v3 Basic Constraints: critical",
        "CA:TRUE, pathlen:0",
        "X509v3 Key Usage: critical",
        "Digital Signature, Certificate Sign, CRL Sign",
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
        "DNS:istiod.istio-system.svc",
        "Subject: O = Istio, CN = Intermediate CA, L = cluster1",
        "Issuer: O = Istio, CN = Root CA",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("Extended Key Usage"), "{text}");
    // the signed certificate carries the CSR's key
    let cert_pub = openssl(&out, &["x509", "-in", files::CA_CERT, "-noout", "-pubkey"]);
    let key_pub = openssl(dir, &["pkey", "-in", "istiod.key", "-pubout"]);
    assert_eq!(cert_pub, key_pub);
    // cert-chain.pem: the istiod CA first, then the root
    let chain_pem = std::fs::read(out.join(files::CERT_CHAIN)).unwrap();
    let chain = CertChain::parse_pem(&chain_pem).unwrap();
    assert_eq!(chain.certs().len(), 2);
    assert_eq!(chain.first().der(), signed.istiod_ca.der());
    assert_eq!(chain.last().der(), root.der());
    // the Secret manifest carries exactly that chain
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(files::ISTIO_CA_CERT_SECRET)).unwrap())
            .unwrap();
    assert_eq!(manifest["metadata"]["name"], "istio-ca-cert");
    assert_eq!(manifest["metadata"]["namespace"], "istio-system");
    let data = base64::engine::general_purpose::STANDARD
        .decode(manifest["data"]["cert-chain.pem"].as_str().unwrap())
        .unwrap();
    assert_eq!(data, chain_pem);

    // a workload leaf under the istiod CA, signed with istiod's key
    let istiod_key = SoftwareSigner::from_file(&dir.join("istiod.key"), None).unwrap();
    check_signer_matches_cert(&signed.istiod_ca, &istiod_key).unwrap();
    assert!(matches!(
        check_signer_matches_cert(&signed.istiod_ca, &root_key),
        Err(Error::KeyMismatch { .. })
    ));
    let leaf_key = SoftwareSigner::generate(KeyAlgorithm::EcdsaP256, "leaf").unwrap();
    let leaf = issue_workload(
        &WorkloadProfile::new("cluster.local", "default", "sleep"),
        &leaf_key.public_key_spki_der(),
        &signed.istiod_ca,
        &istiod_key,
    )
    .unwrap();
    chain.verify_leaf(&leaf).unwrap();
    write(&out, "leaf.pem", leaf.pem().as_bytes());
    let verified = openssl(
        &out,
        &[
            "verify",
            "-x509_strict",
            "-CAfile",
            files::ROOT_CERT,
            "-untrusted",
            files::CA_CERT,
            "-purpose",
            "sslserver",
            "leaf.pem",
        ],
    );
    assert_eq!(verified.trim(), "leaf.pem: OK");
    let text = openssl(&out, &["x509", "-in", "leaf.pem", "-noout", "-text"]);
    for want in [
        "URI:spiffe://cluster.local/ns/default/sa/sleep",
        "TLS Web Server Authentication, TLS Web Client Authentication",
        "CA:FALSE",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // and without the intermediate it does not verify
    let out_no_int =
        common::openssl_raw(&out, &["verify", "-CAfile", files::ROOT_CERT, "leaf.pem"]);
    assert!(!out_no_int.status.success());
}

#[test]
fn cacerts_layout_matches_istio_and_keeps_the_key_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let root_key = SoftwareSigner::generate(KeyAlgorithm::EcdsaP256, "root").unwrap();
    let root = issue_root(&RootProfile::default(), &root_key).unwrap();
    let ca_key = SoftwareSigner::generate(KeyAlgorithm::EcdsaP256, "ca").unwrap();
    let csr = ca_signing::create_csr(&Subject::new("Istio", "Intermediate CA"), &[], &ca_key)
        .unwrap()
        .review(&CsrPolicy::default(), ca_signing::CsrPurpose::IstiodCa)
        .unwrap();
    let ca =
        ca_signing::sign_istiod_ca(&csr, &root, &root_key, &IstiodCaProfile::default()).unwrap();
    let chain = CertChain::build(&ca, &root).unwrap();

    let layout = SecretLayout::cacerts(&chain, Some(&ca_key)).unwrap();
    assert_eq!(
        layout.keys().collect::<Vec<_>>(),
        [
            "ca-cert.pem",
            "ca-key.pem",
            "cert-chain.pem",
            "root-cert.pem"
        ]
    );
    assert!(!format!("{layout:?}").contains("PRIVATE KEY"));
    let written = layout.write_files(dir).unwrap();
    assert_eq!(written.len(), 4);
    let mode = |n: &str| std::fs::metadata(dir.join(n)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("ca-key.pem"), 0o600);
    assert_eq!(mode("ca-cert.pem"), 0o644);
    // istiod's own checks, done with openssl: key matches cert, chain verifies to the root
    assert_eq!(
        openssl(dir, &["x509", "-in", "ca-cert.pem", "-noout", "-pubkey"]),
        openssl(dir, &["pkey", "-in", "ca-key.pem", "-pubout"])
    );
    let verified = openssl(
        dir,
        &[
            "verify",
            "-CAfile",
            "root-cert.pem",
            "-untrusted",
            "cert-chain.pem",
            "ca-cert.pem",
        ],
    );
    assert_eq!(verified.trim(), "ca-cert.pem: OK");

    // an HSM key has no ca-key.pem; a wrong key is refused
    let hsm_style = SecretLayout::cacerts(&chain, None).unwrap();
    assert!(hsm_style.get("ca-key.pem").is_none());
    assert!(matches!(
        SecretLayout::cacerts(&chain, Some(&root_key)),
        Err(Error::KeyMismatch { .. })
    ));
}

/// Signs a root with `key_file` loaded by the software signer and has openssl verify it.
fn root_verifies_with(
    dir: &Path,
    key_file: &str,
    passphrase_file: Option<&str>,
) -> Result<(), Error> {
    let signer = SoftwareSigner::from_file(
        &dir.join(key_file),
        passphrase_file.map(|p| dir.join(p)).as_deref(),
    )?;
    let root = issue_root(&RootProfile::default(), &signer)?;
    let name = format!("{key_file}.root.pem");
    write(dir, &name, root.pem().as_bytes());
    let out = openssl(dir, &["verify", "-CAfile", &name, &name]);
    assert_eq!(out.trim(), format!("{name}: OK"));
    Ok(())
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one table of key formats, read top to bottom"
)]
fn software_signer_reads_every_key_format_openssl_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(dir, "pass.txt", b"correct horse battery staple\n");
    write(dir, "wrong.txt", b"not the passphrase\n");
    // SEC1 EC P-256 PEM
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "sec1.pem",
        ],
    );
    // PKCS#8 PEM, P-384
    genpkey(dir, "EC", "ec_paramgen_curve:P-384", "p8.pem");
    // PKCS#8 DER
    openssl(
        dir,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "sec1.pem", "-outform", "DER", "-out", "p8.der",
        ],
    );
    // encrypted PKCS#8 PEM, passphrase from a file
    openssl(
        dir,
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-in",
            "p8.pem",
            "-passout",
            "file:pass.txt",
            "-out",
            "enc-p8.pem",
        ],
    );
    // RSA 3072, traditional PKCS#1 PEM, and encrypted traditional PEM
    genpkey(dir, "RSA", "rsa_keygen_bits:3072", "rsa.pem");
    openssl(
        dir,
        &[
            "rsa",
            "-in",
            "rsa.pem",
            "-traditional",
            "-out",
            "rsa-pkcs1.pem",
        ],
    );
    openssl(
        dir,
        &[
            "rsa",
            "-in",
            "rsa.pem",
            "-traditional",
            "-aes256",
            "-passout",
            "file:pass.txt",
            "-out",
            "rsa-enc.pem",
        ],
    );

    for key in ["sec1.pem", "p8.pem", "p8.der", "rsa.pem", "rsa-pkcs1.pem"] {
        root_verifies_with(dir, key, None).unwrap_or_else(|e| panic!("{key}: {e}"));
    }
    for key in ["enc-p8.pem", "rsa-enc.pem"] {
        root_verifies_with(dir, key, Some("pass.txt")).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(
            matches!(
                root_verifies_with(dir, key, None),
                Err(Error::KeyPassphraseNeeded { .. })
            ),
            "{key}"
        );
        assert!(
            matches!(
                root_verifies_with(dir, key, Some("wrong.txt")),
                Err(Error::KeyPassphraseWrong { .. })
            ),
            "{key}"
        );
    }

    // weak or unsupported keys are refused by name
    genpkey(dir, "RSA", "rsa_keygen_bits:1024", "rsa1024.pem");
    openssl(dir, &["genpkey", "-algorithm", "ED25519", "-out", "ed.pem"]);
    for key in ["rsa1024.pem", "ed.pem"] {
        let err = SoftwareSigner::from_file(&dir.join(key), None).unwrap_err();
        assert!(matches!(err, Error::KeyUnsupported { .. }), "{key}: {err}");
    }
    write(
        dir,
        "garbage.pem",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    assert!(matches!(
        SoftwareSigner::from_file(&dir.join("garbage.pem"), None),
        Err(Error::KeyParse { .. })
    ));
    write(dir, "empty.txt", b"\n");
    assert!(matches!(
        SoftwareSigner::from_file(&dir.join("enc-p8.pem"), Some(&dir.join("empty.txt"))),
        Err(Error::PassphraseEmpty { .. })
    ));

    // our own encrypted export round-trips through openssl
    let signer =
        SoftwareSigner::from_file(&dir.join("p8.pem"), Some(&dir.join("pass.txt"))).unwrap();
    let pass = ca_signing::read_passphrase_file(&dir.join("pass.txt")).unwrap();
    write(
        dir,
        "export.pem",
        &signer.encrypted_private_key_pem(&pass).unwrap(),
    );
    openssl(
        dir,
        &[
            "pkey",
            "-in",
            "export.pem",
            "-passin",
            "file:pass.txt",
            "-noout",
        ],
    );
    let _ = Certificate::parse(
        issue_root(&RootProfile::default(), &signer)
            .unwrap()
            .pem()
            .as_bytes(),
    )
    .unwrap();
}
