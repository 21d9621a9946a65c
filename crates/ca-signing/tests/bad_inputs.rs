//! Each bad input gives a named error and leaves the output directory empty.

#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

mod common;

use std::path::Path;

use ca_signing::ops::{SignIstiodCaRequest, sign_istiod_ca_to_dir, write_istio_ca_cert_secret};
use ca_signing::{
    Certificate, CsrPolicy, Error, IstiodCaProfile, KeyAlgorithm, PolicyViolation, RootProfile,
    SoftwareSigner, issue_root,
};
use common::{entries, openssl, openssl_csr};
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::x509::X509Builder;
use openssl::x509::extension::{BasicConstraints, KeyUsage};

const ISTIOD_SAN: &str = "subjectAltName=DNS:istiod.istio-system.svc";
const SUBJ: &str = "/O=Istio/CN=Intermediate CA";

struct Fixture {
    tmp: tempfile::TempDir,
    root_key: SoftwareSigner,
    root_pem: Vec<u8>,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("out")).unwrap();
        let root_key = SoftwareSigner::generate(KeyAlgorithm::EcdsaP256, "root key").unwrap();
        let root_pem = issue_root(&RootProfile::default(), &root_key)
            .unwrap()
            .pem()
            .into_bytes();
        Self {
            tmp,
            root_key,
            root_pem,
        }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn out(&self) -> std::path::PathBuf {
        self.tmp.path().join("out")
    }

    /// Signs `csr` under `root_pem` with `profile`; asserts nothing was written on error.
    fn sign(&self, csr: &[u8], root_pem: &[u8], profile: &IstiodCaProfile) -> Result<(), Error> {
        let result = sign_istiod_ca_to_dir(
            &SignIstiodCaRequest {
                csr,
                root_cert: root_pem,
                policy: &CsrPolicy::default(),
                profile,
            },
            &self.root_key,
            &self.out(),
        );
        if result.is_err() {
            assert!(entries(&self.out()).is_empty(), "output written on error");
        }
        result.map(|_| ())
    }

    fn sign_default(&self, csr: &[u8]) -> Result<(), Error> {
        self.sign(csr, &self.root_pem, &IstiodCaProfile::default())
    }

    fn good_csr(&self) -> Vec<u8> {
        openssl_csr(self.dir(), "good", "rsa:2048", SUBJ, &[ISTIOD_SAN])
    }
}

fn violations(err: &Error) -> Vec<PolicyViolation> {
    err.policy_violations().to_vec()
}

#[test]
fn garbage_pem_is_an_encoding_error() {
    let f = Fixture::new();
    for garbage in [
        &b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64 at all!\n-----END CERTIFICATE REQUEST-----\n"[..],
        b"hello, I am not a CSR",
        b"",
    ] {
        let err = f.sign_default(garbage).unwrap_err();
        assert!(matches!(err, Error::Encoding { .. }), "{err}");
    }
    // a certificate where a CSR is expected
    let err = f.sign_default(&f.root_pem).unwrap_err();
    assert!(matches!(err, Error::Encoding { .. }), "{err}");
    assert!(err.to_string().contains("CERTIFICATE REQUEST"), "{err}");
    // DER that is not a CSR
    let err = f.sign_default(&[0x30, 0x03, 0x02, 0x01, 0x01]).unwrap_err();
    assert!(matches!(err, Error::CsrParse { .. }), "{err}");
}

#[test]
fn a_csr_with_a_broken_signature_is_refused() {
    let f = Fixture::new();
    let pem = f.good_csr();
    let mut der = pem::parse(&pem).unwrap().into_contents();
    // alter the signed subject: "Intermediate" -> "Intermediatf"
    let pos = der.windows(12).position(|w| w == b"Intermediate").unwrap();
    der[pos + 11] = b'f';
    let err = f.sign_default(&der).unwrap_err();
    assert!(matches!(err, Error::CsrSignature), "{err}");
    // and a damaged signature value
    let mut der = pem::parse(&pem).unwrap().into_contents();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let err = f.sign_default(&der).unwrap_err();
    assert!(matches!(err, Error::CsrSignature), "{err}");
    // the untouched CSR signs fine, and the out dir then has the files
    f.sign_default(&pem).unwrap();
    assert_eq!(entries(&f.out()).len(), 4);
}

#[test]
fn an_rsa_1024_key_is_refused() {
    let f = Fixture::new();
    let csr = openssl_csr(f.dir(), "weak", "rsa:1024", SUBJ, &[ISTIOD_SAN]);
    let err = f.sign_default(&csr).unwrap_err();
    assert_eq!(
        violations(&err),
        [PolicyViolation::WeakRsaKey {
            bits: 1024,
            min_bits: 2048
        }]
    );
    assert!(err.to_string().contains("1024"), "{err}");
}

#[test]
fn a_san_outside_the_policy_is_refused() {
    let f = Fixture::new();
    let csr = openssl_csr(
        f.dir(),
        "evil",
        "rsa:2048",
        SUBJ,
        &[
            "subjectAltName=DNS:istiod.istio-system.svc,DNS:evil.example.com,URI:spiffe://other.domain/ns/x/sa/y",
        ],
    );
    let err = f.sign_default(&csr).unwrap_err();
    assert_eq!(
        violations(&err),
        [
            PolicyViolation::SanNotAllowed {
                san: "DNS:evil.example.com".to_owned()
            },
            PolicyViolation::SanNotAllowed {
                san: "URI:spiffe://other.domain/ns/x/sa/y".to_owned()
            }
        ]
    );
}

#[test]
fn a_csr_asking_for_pathlen_above_zero_is_refused() {
    let f = Fixture::new();
    let csr = openssl_csr(
        f.dir(),
        "pathlen",
        "rsa:2048",
        SUBJ,
        &[ISTIOD_SAN, "basicConstraints=critical,CA:TRUE,pathlen:1"],
    );
    let err = f.sign_default(&csr).unwrap_err();
    assert_eq!(
        violations(&err),
        [PolicyViolation::PathLenTooLarge { requested: 1 }]
    );
    // pathlen:0 is what the profile gives anyway
    let csr = openssl_csr(
        f.dir(),
        "pathlen0",
        "rsa:2048",
        SUBJ,
        &[ISTIOD_SAN, "basicConstraints=critical,CA:TRUE,pathlen:0"],
    );
    f.sign_default(&csr).unwrap();
}

#[test]
fn a_sha1_signed_csr_is_refused() {
    let f = Fixture::new();
    let dir = f.dir();
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "k.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req", "-new", "-sha1", "-key", "k.pem", "-subj", SUBJ, "-addext", ISTIOD_SAN, "-out",
            "sha1.csr",
        ],
    );
    let err = f
        .sign_default(&std::fs::read(dir.join("sha1.csr")).unwrap())
        .unwrap_err();
    assert_eq!(
        violations(&err),
        [PolicyViolation::SignatureAlgorithmNotAllowed {
            algorithm: "sha1WithRSAEncryption".to_owned()
        }]
    );
}

/// A root signed by `key` whose validity ended yesterday.
fn expired_root(key: &SoftwareSigner) -> Vec<u8> {
    let pkey =
        openssl::pkey::PKey::private_key_from_pem(&key.private_key_pkcs8_pem().unwrap()).unwrap();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let serial = BigNum::from_u32(7).unwrap().to_asn1_integer().unwrap();
    b.set_serial_number(&serial).unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "Expired Root").unwrap();
    let name = name.build();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&pkey).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let start = Asn1Time::from_unix(i64::try_from(now).unwrap() - 400 * 86_400).unwrap();
    let end = Asn1Time::from_unix(i64::try_from(now).unwrap() - 86_400).unwrap();
    b.set_not_before(&start).unwrap();
    b.set_not_after(&end).unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.sign(&pkey, MessageDigest::sha256()).unwrap();
    b.build().to_pem().unwrap()
}

#[test]
fn an_expired_root_or_one_expiring_too_soon_is_refused() {
    let f = Fixture::new();
    let csr = f.good_csr();
    let err = f
        .sign(
            &csr,
            &expired_root(&f.root_key),
            &IstiodCaProfile::default(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::IssuerNotValidNow { .. }), "{err}");

    let short = issue_root(
        &RootProfile {
            validity_days: 100,
            ..RootProfile::default()
        },
        &f.root_key,
    )
    .unwrap();
    let err = f
        .sign(&csr, short.pem().as_bytes(), &IstiodCaProfile::default())
        .unwrap_err();
    let Error::IssuerExpiresTooSoon { max_days, .. } = err else {
        panic!("expected IssuerExpiresTooSoon, got {err}")
    };
    assert_eq!(max_days, 99);
}

#[test]
fn a_root_that_is_not_the_signers_is_refused() {
    let f = Fixture::new();
    let other = SoftwareSigner::generate(KeyAlgorithm::EcdsaP256, "other").unwrap();
    let other_root = issue_root(&RootProfile::default(), &other).unwrap();
    let err = f
        .sign(
            &f.good_csr(),
            other_root.pem().as_bytes(),
            &IstiodCaProfile::default(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::SignerMismatch { .. }), "{err}");
}

#[test]
fn a_chain_in_the_wrong_order_or_without_root_is_refused() {
    let f = Fixture::new();
    f.sign_default(&f.good_csr()).unwrap();
    let ca = std::fs::read(f.out().join("ca-cert.pem")).unwrap();
    let root = f.root_pem.clone();
    let secret = f.dir().join("secret.json");
    let run = |chain: &[u8], expected_root: Option<&[u8]>| {
        let r = write_istio_ca_cert_secret(chain, expected_root, &secret);
        if r.is_err() {
            assert!(!secret.exists(), "output written on error");
        }
        r
    };

    let reversed = [root.clone(), ca.clone()].concat();
    let err = run(&reversed, None).unwrap_err();
    assert!(matches!(err, Error::ChainOrder { index: 0, .. }), "{err}");

    let err = run(&ca, None).unwrap_err();
    assert!(matches!(err, Error::ChainMissingRoot { .. }), "{err}");

    let err = run(&root, None).unwrap_err();
    assert!(matches!(err, Error::ChainTooShort { found: 1 }), "{err}");

    let err = run(b"", None).unwrap_err();
    assert!(matches!(err, Error::Encoding { .. }), "{err}");

    let other = SoftwareSigner::generate(KeyAlgorithm::EcdsaP256, "other").unwrap();
    let other_root = issue_root(&RootProfile::default(), &other).unwrap();
    let good = [ca.clone(), root.clone()].concat();
    let err = run(&good, Some(other_root.pem().as_bytes())).unwrap_err();
    assert!(matches!(err, Error::ChainRootMismatch { .. }), "{err}");

    let report = run(&good, Some(&root)).unwrap();
    assert_eq!(report.certs.len(), 2);
    assert_eq!(report.certs[0].path_len, Some(0));
    assert!(secret.exists());
    let _ = Certificate::parse(&ca).unwrap();
}
