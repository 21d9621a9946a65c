//! The one chain verifier against the `openssl` CLI: it accepts what `openssl verify`
//! accepts, and each istiod CA profile rejection matches what OpenSSL enforces once the
//! certificate is used as an issuer (a CA:FALSE or keyCertSign-less certificate cannot issue
//! a leaf, an unconstrained one can issue further CAs, pathlen:0 cannot).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test")]

mod common;

use std::path::Path;

use ca_signing::{ChainProblem, PathPolicy, default_subject, verify_path};
use openssl::x509::X509;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    date_time_ymd,
};

struct Made {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Made {
    fn x509(&self) -> X509 {
        X509::from_pem(self.pem.as_bytes()).unwrap()
    }
    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::new(self.params.clone(), &self.key)
    }
}

fn params(
    cn: &str,
    is_ca: IsCa,
    usages: Vec<KeyUsagePurpose>,
    not_after: i32,
) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::OrganizationName, "Istio");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = is_ca;
    p.key_usages = usages;
    p.not_before = date_time_ymd(2024, 1, 1);
    p.not_after = date_time_ymd(not_after, 1, 1);
    // OpenSSL's strict mode (and `openssl verify -x509_strict`) wants the AKI.
    p.use_authority_key_identifier_extension = true;
    p
}

fn ca_usages() -> Vec<KeyUsagePurpose> {
    vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ]
}

fn root() -> Made {
    let key = KeyPair::generate().unwrap();
    let params = params(
        "Root CA",
        IsCa::Ca(BasicConstraints::Unconstrained),
        ca_usages(),
        2090,
    );
    let pem = params.self_signed(&key).unwrap().pem();
    Made { params, key, pem }
}

fn signed(params: CertificateParams, by: &Made) -> Made {
    let key = KeyPair::generate().unwrap();
    let pem = params.signed_by(&key, &by.issuer()).unwrap().pem();
    Made { params, key, pem }
}

fn istiod_ca(root: &Made, is_ca: IsCa, usages: Vec<KeyUsagePurpose>, not_after: i32) -> Made {
    signed(params("Intermediate CA", is_ca, usages, not_after), root)
}

fn leaf(by: &Made) -> Made {
    signed(
        params(
            "workload",
            IsCa::ExplicitNoCa,
            vec![KeyUsagePurpose::DigitalSignature],
            2080,
        ),
        by,
    )
}

fn sub_ca(by: &Made) -> Made {
    signed(
        params(
            "Sub CA",
            IsCa::Ca(BasicConstraints::Constrained(0)),
            ca_usages(),
            2080,
        ),
        by,
    )
}

/// `openssl verify -CAfile root.pem [-untrusted chain.pem] cert.pem`: Ok, or the error text.
fn openssl_verify(dir: &Path, root: &Made, untrusted: &[&Made], cert: &Made) -> Result<(), String> {
    std::fs::write(dir.join("root.pem"), &root.pem).unwrap();
    std::fs::write(dir.join("cert.pem"), &cert.pem).unwrap();
    let mut args = vec!["verify", "-x509_strict", "-CAfile", "root.pem"];
    if !untrusted.is_empty() {
        let bundle: String = untrusted.iter().map(|m| m.pem.as_str()).collect();
        std::fs::write(dir.join("untrusted.pem"), bundle).unwrap();
        args.extend(["-untrusted", "untrusted.pem"]);
    }
    args.push("cert.pem");
    let out = common::openssl_raw(dir, &args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(text)
    }
}

/// Our verdict on `target` as the istiod CA under `root`.
fn ours(root: &Made, target: &Made) -> Result<(), Vec<ChainProblem>> {
    verify_path(
        &[root.x509()],
        &target.x509(),
        &[],
        None,
        &PathPolicy::default(),
        &default_subject,
    )
    .map(|_| ())
}

#[test]
fn a_proper_istiod_ca_verifies_here_and_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let root = root();
    let ca = istiod_ca(
        &root,
        IsCa::Ca(BasicConstraints::Constrained(0)),
        ca_usages(),
        2080,
    );
    ours(&root, &ca).unwrap();
    openssl_verify(dir.path(), &root, &[], &ca).unwrap();
    // What pathlen:0 and keyCertSign mean to OpenSSL: leaves yes, nothing below a further CA.
    openssl_verify(dir.path(), &root, &[&ca], &leaf(&ca)).unwrap();
    let sub = sub_ca(&ca);
    let err = openssl_verify(dir.path(), &root, &[&ca, &sub], &leaf(&sub)).unwrap_err();
    assert!(err.contains("path length"), "{err}");
}

#[test]
fn a_ca_false_target_is_refused_and_openssl_refuses_it_as_an_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let root = root();
    let not_ca = istiod_ca(&root, IsCa::ExplicitNoCa, ca_usages(), 2080);
    let problems = ours(&root, &not_ca).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, ChainProblem::TargetNotCa { .. })),
        "{problems:?}"
    );
    let err = openssl_verify(dir.path(), &root, &[&not_ca], &leaf(&not_ca)).unwrap_err();
    assert!(err.contains("invalid CA certificate"), "{err}");
}

#[test]
fn a_target_without_pathlen_zero_is_refused_as_openssl_would_let_it_issue_cas() {
    let dir = tempfile::tempdir().unwrap();
    let root = root();
    for (is_ca, found) in [
        (IsCa::Ca(BasicConstraints::Unconstrained), None),
        (IsCa::Ca(BasicConstraints::Constrained(1)), Some(1)),
    ] {
        let open = istiod_ca(&root, is_ca, ca_usages(), 2080);
        let problems = ours(&root, &open).unwrap_err();
        assert!(
            matches!(problems.as_slice(), [ChainProblem::TargetPathLen { found: f, .. }] if *f == found),
            "{problems:?}"
        );
        assert!(problems[0].to_string().contains("pathlen:0"));
        // The reason it matters: OpenSSL accepts what a CA below this one issues.
        let sub = sub_ca(&open);
        openssl_verify(dir.path(), &root, &[&open, &sub], &leaf(&sub)).unwrap();
    }
}

#[test]
fn a_target_without_key_cert_sign_is_refused_and_openssl_refuses_it_as_an_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let root = root();
    let cannot_sign = istiod_ca(
        &root,
        IsCa::Ca(BasicConstraints::Constrained(0)),
        vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign],
        2080,
    );
    let problems = ours(&root, &cannot_sign).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, ChainProblem::TargetCannotSign { .. })),
        "{problems:?}"
    );
    let err = openssl_verify(dir.path(), &root, &[&cannot_sign], &leaf(&cannot_sign)).unwrap_err();
    assert!(err.contains("key usage"), "{err}");
}

#[test]
fn an_expired_target_is_refused_here_and_by_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let root = root();
    let expired = istiod_ca(
        &root,
        IsCa::Ca(BasicConstraints::Constrained(0)),
        ca_usages(),
        2025,
    );
    let problems = ours(&root, &expired).unwrap_err();
    assert!(
        matches!(problems.as_slice(), [ChainProblem::Expired { .. }]),
        "{problems:?}"
    );
    let err = openssl_verify(dir.path(), &root, &[], &expired).unwrap_err();
    assert!(err.contains("expired"), "{err}");
}

#[test]
fn a_target_from_another_root_is_untrusted_here_and_by_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let (root, other) = (root(), root());
    let ca = istiod_ca(
        &other,
        IsCa::Ca(BasicConstraints::Constrained(0)),
        ca_usages(),
        2080,
    );
    let problems = ours(&root, &ca).unwrap_err();
    assert!(
        matches!(problems.as_slice(), [ChainProblem::UntrustedIssuer { .. }]),
        "{problems:?}"
    );
    assert!(openssl_verify(dir.path(), &root, &[], &ca).is_err());
}

/// `cert-chain.pem` verification goes through the same verifier: an istiod CA that could
/// issue further CAs, or may not sign certificates, is refused there too.
#[test]
fn cert_chain_verify_holds_the_istiod_ca_to_the_same_profile() {
    let root = root();
    let root_cert = ca_signing::Certificate::parse(root.pem.as_bytes()).unwrap();
    let good = istiod_ca(
        &root,
        IsCa::Ca(BasicConstraints::Constrained(0)),
        ca_usages(),
        2080,
    );
    let open = istiod_ca(
        &root,
        IsCa::Ca(BasicConstraints::Unconstrained),
        ca_usages(),
        2080,
    );
    let cannot_sign = istiod_ca(
        &root,
        IsCa::Ca(BasicConstraints::Constrained(0)),
        vec![KeyUsagePurpose::DigitalSignature],
        2080,
    );
    let chain = |made: &Made| {
        let cert = ca_signing::Certificate::parse(made.pem.as_bytes()).unwrap();
        ca_signing::CertChain::build(&cert, &root_cert).unwrap()
    };
    chain(&good).verify(Some(&root_cert)).unwrap();
    for bad in [&open, &cannot_sign] {
        let err = chain(bad).verify(Some(&root_cert)).unwrap_err();
        assert!(
            matches!(&err, ca_signing::Error::ChainRejected { problems } if problems.iter().any(|p| matches!(p, ChainProblem::TargetPathLen { .. } | ChainProblem::TargetCannotSign { .. }))),
            "{err}"
        );
    }
}
