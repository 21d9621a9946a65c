use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use hsm_core::{
    CaId, ChainProblem, Error, HsmToken, ImportPolicy, Mode, Outcome, TokenOptions, VerifyPolicy,
};
use rcgen::ExtendedKeyUsagePurpose;

use crate::certs::pki;

const CHILD_ENV: &str = "HSM_CORE_TEST_ANCHOR_CHILD";

#[test]
fn anchor_has_the_thales_attributes_and_import_is_idempotent() {
    let (hsm, token) = crate::token("anchor-attrs");
    let pki = pki("Root CA", vec![], (2080, 1, 1));
    let id = CaId::default();
    assert_eq!(
        token
            .import_ca_cert(
                &id,
                pki.root_pem.as_bytes(),
                ImportPolicy::KeepExisting,
                Mode::DryRun
            )
            .unwrap(),
        Outcome::WouldCreate
    );
    assert_eq!(
        token
            .import_ca_cert(
                &id,
                pki.root_pem.as_bytes(),
                ImportPolicy::KeepExisting,
                Mode::Apply
            )
            .unwrap(),
        Outcome::Created
    );
    // The same certificate again (DER this time) is unchanged.
    assert_eq!(
        token
            .import_ca_cert(&id, &pki.root_der, ImportPolicy::KeepExisting, Mode::Apply)
            .unwrap(),
        Outcome::Unchanged
    );
    let anchor = token.anchor(&id).unwrap();
    assert_eq!(anchor.label, "CN=Root CA,O=Istio");
    assert_eq!(anchor.der, pki.root_der);

    // Read the raw attributes back: subject/issuer/serial as DER.
    let raw = hsm
        .module()
        .login_user(hsm.label(), hsm.user_pin())
        .unwrap();
    let found = raw
        .find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Id(id.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1);
    let attrs = raw
        .get_attributes(
            found[0],
            &[
                AttributeType::Subject,
                AttributeType::SerialNumber,
                AttributeType::Private,
            ],
        )
        .unwrap();
    let cert = openssl::x509::X509::from_der(&pki.root_der).unwrap();
    for attr in attrs {
        match attr {
            Attribute::Subject(v) => assert_eq!(v, cert.subject_name().to_der().unwrap()),
            Attribute::SerialNumber(v) => {
                assert_eq!(v[0], 0x02, "DER INTEGER");
                let magnitude = cert.serial_number().to_bn().unwrap().to_vec();
                assert!(v.ends_with(&magnitude));
            }
            Attribute::Private(v) => assert!(!v),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_different_certificate_under_an_existing_id_needs_replace() {
    let (_hsm, token) = crate::token("anchor-replace");
    let id = CaId::default();
    let old = pki("Old Root", vec![], (2080, 1, 1));
    let new = pki("New Root", vec![], (2080, 1, 1));
    token
        .import_ca_cert(&id, &old.root_der, ImportPolicy::KeepExisting, Mode::Apply)
        .unwrap();
    let err = token
        .import_ca_cert(&id, &new.root_der, ImportPolicy::KeepExisting, Mode::Apply)
        .unwrap_err();
    assert!(matches!(err, Error::ObjectExists { .. }), "{err}");
    assert_eq!(
        token
            .import_ca_cert(&id, &new.root_der, ImportPolicy::Replace, Mode::DryRun)
            .unwrap(),
        Outcome::WouldUpdate
    );
    assert_eq!(token.anchor(&id).unwrap().der, old.root_der);
    assert_eq!(
        token
            .import_ca_cert(&id, &new.root_der, ImportPolicy::Replace, Mode::Apply)
            .unwrap(),
        Outcome::Updated
    );
    assert_eq!(token.anchor(&id).unwrap().der, new.root_der);
    assert_eq!(token.list_anchors().unwrap().len(), 1);
}

#[test]
fn several_anchors_coexist_for_rotation() {
    let (_hsm, token) = crate::token("anchor-rotate");
    let old = pki("Old Root", vec![], (2080, 1, 1));
    let new = pki("New Root", vec![], (2080, 1, 1));
    let (old_id, new_id) = (CaId::default(), CaId::new("root-2026").unwrap());
    token
        .import_ca_cert(
            &old_id,
            &old.root_der,
            ImportPolicy::KeepExisting,
            Mode::Apply,
        )
        .unwrap();
    token
        .import_ca_cert(
            &new_id,
            &new.root_der,
            ImportPolicy::KeepExisting,
            Mode::Apply,
        )
        .unwrap();
    let both = [old_id.clone(), new_id.clone()];
    let policy = VerifyPolicy::default();
    let a = token
        .verify_chain(&both, std::slice::from_ref(&old.int_der), None, &policy)
        .unwrap();
    let b = token
        .verify_chain(&both, std::slice::from_ref(&new.int_der), None, &policy)
        .unwrap();
    assert_eq!(
        (a.anchor_subject.as_str(), b.anchor_subject.as_str()),
        ("CN=Old Root,O=Istio", "CN=New Root,O=Istio")
    );
    // Only the new anchor trusted: the old chain is refused.
    let err = token
        .verify_chain(&[new_id], &[old.int_der], None, &policy)
        .unwrap_err();
    assert!(
        matches!(&err, Error::ChainRejected { problems } if matches!(problems[0], ChainProblem::UntrustedIssuer { .. })),
        "{err}"
    );
}

#[test]
fn verify_accepts_the_adapter_call_and_full_chains_in_either_order() {
    let (_hsm, token) = crate::token("verify-ok");
    let pki = pki(
        "Root CA",
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        (2080, 1, 1),
    );
    let id = CaId::default();
    token
        .import_ca_cert(
            &id,
            pki.root_pem.as_bytes(),
            ImportPolicy::KeepExisting,
            Mode::Apply,
        )
        .unwrap();
    let ids = [id];
    let policy = VerifyPolicy::default();
    for chain in [
        vec![pki.int_der.clone()],
        vec![pki.int_pem.clone().into_bytes()],
        vec![pki.int_der.clone(), pki.root_der.clone()],
        vec![pki.root_der.clone(), pki.int_der.clone()],
        vec![format!("{}{}", pki.int_pem, pki.root_pem).into_bytes()],
    ] {
        let verified = token.verify_chain(&ids, &chain, None, &policy).unwrap();
        assert_eq!(verified.target_der, pki.int_der);
        assert_eq!(verified.target_subject, "CN=Intermediate CA,O=Istio");
    }
    // The leaf is not a CA: refused under the default policy, accepted without it.
    let chain = vec![pki.leaf_der.clone(), pki.int_der.clone()];
    let err = token.verify_chain(&ids, &chain, None, &policy).unwrap_err();
    assert!(
        matches!(&err, Error::ChainRejected { problems } if problems.iter().any(|p| matches!(p, ChainProblem::TargetNotCa { .. }))),
        "{err}"
    );
    let relaxed = VerifyPolicy {
        require_ca_target: false,
    };
    assert!(token.verify_chain(&ids, &chain, None, &relaxed).is_ok());
    // Key match: a different expected key is refused.
    let other = crate::certs::pki("Other", vec![], (2080, 1, 1));
    let other_spki = openssl::x509::X509::from_der(&other.int_der)
        .unwrap()
        .public_key()
        .unwrap()
        .public_key_to_der()
        .unwrap();
    let own_spki = openssl::x509::X509::from_der(&pki.int_der)
        .unwrap()
        .public_key()
        .unwrap()
        .public_key_to_der()
        .unwrap();
    assert!(
        token
            .verify_chain(
                &ids,
                std::slice::from_ref(&pki.int_der),
                Some(&own_spki),
                &policy
            )
            .is_ok()
    );
    let err = token
        .verify_chain(
            &ids,
            std::slice::from_ref(&pki.int_der),
            Some(&other_spki),
            &policy,
        )
        .unwrap_err();
    assert!(err.to_string().contains("not the expected key"), "{err}");
}

#[test]
fn verify_gives_structured_reasons() {
    let (_hsm, token) = crate::token("verify-bad");
    let id = CaId::default();
    let expired = pki("Root CA", vec![], (2025, 1, 1));
    let client_only = pki(
        "Client Root",
        vec![ExtendedKeyUsagePurpose::ClientAuth],
        (2080, 1, 1),
    );
    let policy = VerifyPolicy::default();

    let err = token
        .verify_chain(
            std::slice::from_ref(&id),
            std::slice::from_ref(&expired.int_der),
            None,
            &policy,
        )
        .unwrap_err();
    assert!(err.is_not_found(), "no anchor imported yet: {err}");

    token
        .import_ca_cert(
            &id,
            &expired.root_der,
            ImportPolicy::KeepExisting,
            Mode::Apply,
        )
        .unwrap();
    let problems = |chain: &[Vec<u8>]| match token.verify_chain(
        std::slice::from_ref(&id),
        chain,
        None,
        &policy,
    ) {
        Err(Error::ChainRejected { problems }) => problems,
        other => panic!("expected a rejection, got {other:?}"),
    };
    assert!(matches!(
        problems(std::slice::from_ref(&expired.int_der))[0],
        ChainProblem::Expired { .. }
    ));
    assert!(matches!(
        problems(std::slice::from_ref(&client_only.int_der))[0],
        ChainProblem::UntrustedIssuer { .. }
    ));
    assert!(matches!(
        problems(&[b"not a certificate".to_vec()])[0],
        ChainProblem::Unparseable { index: 0, .. }
    ));
    assert!(matches!(problems(&[])[0], ChainProblem::Empty));

    token
        .import_ca_cert(
            &id,
            &client_only.root_der,
            ImportPolicy::Replace,
            Mode::Apply,
        )
        .unwrap();
    assert!(matches!(
        problems(std::slice::from_ref(&client_only.int_der))[0],
        ChainProblem::EkuNotAllowed { .. }
    ));
}

/// Imports an anchor, then asks a brand-new process (a new PKCS#11 context) to read it.
#[test]
fn anchor_survives_a_fresh_process() {
    let (hsm, token) = crate::token("anchor-fresh");
    let pki = pki("Persistent Root", vec![], (2080, 1, 1));
    token
        .import_ca_cert(
            &CaId::default(),
            &pki.root_der,
            ImportPolicy::KeepExisting,
            Mode::Apply,
        )
        .unwrap();
    let pin_dir = tempfile::tempdir().unwrap();
    let pin_file = pin_dir.path().join("pin");
    hsm.write_user_pin_file(&pin_file).unwrap();

    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "anchors::child_reads_anchor",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(
        CHILD_ENV,
        format!(
            "{}\n{}\n{}",
            hsm.module_path().display(),
            hsm.label(),
            pin_file.display()
        ),
    );
    for (k, v) in hsm.child_env().unwrap() {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fingerprint = token.anchor(&CaId::default()).unwrap().sha256;
    assert!(
        stdout.contains(&format!(
            "CHILD-ANCHOR {fingerprint} CN=Persistent Root,O=Istio"
        )),
        "{stdout}"
    );
}

/// The child half of `anchor_survives_a_fresh_process`; does nothing unless that test runs it.
#[test]
fn child_reads_anchor() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut lines = spec.lines();
    let (module, label, pin) = (
        lines.next().unwrap(),
        lines.next().unwrap(),
        lines.next().unwrap(),
    );
    let module = hsm_core::Module::load(module).unwrap();
    let label = hsm_core::TokenLabel::new(label).unwrap();
    let pin =
        hsm_core::pin::pin_from_file(pin.as_ref(), hsm_core::pin::FileAccess::OwnerOnly).unwrap();
    let token = HsmToken::open(&module, &label, pin, TokenOptions::default()).unwrap();
    let anchor = token.anchor(&CaId::default()).unwrap();
    println!("CHILD-ANCHOR {} {}", anchor.sha256, anchor.label);
}

/// `VerifyCertChain` holds the target to the istiod CA profile of ca-signing's verifier: an
/// intermediate that could issue further CAs (no pathlen:0), or that lacks keyCertSign, is
/// refused even though its path to the anchor is sound.
#[tokio::test]
async fn verify_cert_chain_requires_pathlen_zero_and_key_cert_sign_on_the_target() {
    use hsm_core::{HsmIstioKms, IstioConfig, IstioKms as _, VerifyCertChainRequest};
    use rcgen::{Issuer, KeyPair, KeyUsagePurpose};

    let (_hsm, token) = crate::token("verify-profile");
    let root_key = KeyPair::generate().unwrap();
    let root_params = crate::certs::ca_params("Root CA", None);
    let root = root_params.self_signed(&root_key).unwrap();
    token
        .import_ca_cert(
            &CaId::default(),
            root.der(),
            ImportPolicy::KeepExisting,
            Mode::Apply,
        )
        .unwrap();
    let issuer = Issuer::new(root_params, &root_key);
    let kms = HsmIstioKms::new(token, IstioConfig::default());
    let verify = |params: rcgen::CertificateParams| {
        let key = KeyPair::generate().unwrap();
        let der = params.signed_by(&key, &issuer).unwrap().der().to_vec();
        kms.verify_cert_chain(VerifyCertChainRequest {
            certificates: vec![der],
            expected_spki: None,
        })
    };

    verify(crate::certs::ca_params("Intermediate CA", Some(0)))
        .await
        .unwrap();
    let err = verify(crate::certs::ca_params("Intermediate CA", None))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ChainRejected { problems } if matches!(problems[..], [ChainProblem::TargetPathLen { found: None, .. }])),
        "{err}"
    );
    assert_eq!(err.kind(), hsm_core::ErrorKind::InvalidArgument);
    let mut no_sign = crate::certs::ca_params("Intermediate CA", Some(0));
    no_sign.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let err = verify(no_sign).await.unwrap_err();
    assert!(
        matches!(&err, Error::ChainRejected { problems } if matches!(problems[..], [ChainProblem::TargetCannotSign { .. }])),
        "{err}"
    );
}

/// No anchor on the token is a `NotFound` error, whether one CA id is configured or several
/// (a rotation), never an invalid chain.
#[test]
fn a_missing_anchor_is_not_found_however_many_ids_are_configured() {
    let (_hsm, token) = crate::token("anchor-missing");
    let pki = pki("Root CA", vec![], (2080, 1, 1));
    let policy = VerifyPolicy::default();
    for ids in [
        vec![CaId::default()],
        vec![CaId::default(), CaId::new("root-2026").unwrap()],
    ] {
        let err = token
            .verify_chain(&ids, std::slice::from_ref(&pki.int_der), None, &policy)
            .unwrap_err();
        assert_eq!(err.kind(), hsm_core::ErrorKind::NotFound, "{ids:?}: {err}");
        assert!(err.is_not_found(), "{err}");
    }
}
