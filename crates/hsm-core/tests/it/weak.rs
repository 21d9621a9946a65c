//! `ensure_kek` / `ensure_key_pair` refuse an existing key whose material can leave (or has
//! left) the HSM, or that is not the type asked for. The weak keys are made directly with
//! cryptoki, as another tool would.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::Session;
use hsm_core::{Error, ErrorKind, KekId, KeyAlgorithm, KeyPairId, Mode, ObjectLabel};

const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn raw(hsm: &sandbox::SoftHsm) -> Session {
    hsm.module()
        .login_user(hsm.label(), hsm.user_pin())
        .unwrap()
}

/// An AES-256 key with the KEK label and `id`, plus `extra` attributes.
fn aes_key(session: &Session, id: &str, extra: &[Attribute]) {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(cryptoki::object::KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Id(id.as_bytes().to_vec()),
        Attribute::Label(ObjectLabel::KEK.as_bytes().to_vec()),
    ];
    template.extend_from_slice(extra);
    session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .unwrap();
}

fn assert_weak(err: &Error, id: &str, attribute: &str) {
    assert!(
        matches!(err, Error::WeakObject(weak) if weak.attribute == attribute),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    let text = err.to_string();
    assert!(text.contains(id) && text.contains(attribute), "{text}");
}

#[test]
fn ensure_kek_refuses_an_existing_key_that_can_leave_the_hsm() {
    let (hsm, token) = crate::token("weak-kek");
    let session = raw(&hsm);
    let cases: [(&str, Vec<Attribute>, &str); 3] = [
        (
            "readable",
            vec![Attribute::Sensitive(false), Attribute::Extractable(true)],
            "CKA_SENSITIVE",
        ),
        (
            "extractable",
            vec![Attribute::Sensitive(true), Attribute::Extractable(true)],
            "CKA_EXTRACTABLE",
        ),
        // Extractable at first, locked afterwards: copies may exist.
        (
            "once-extractable",
            vec![Attribute::Sensitive(true), Attribute::Extractable(true)],
            "CKA_NEVER_EXTRACTABLE",
        ),
    ];
    for (id, extra, attribute) in cases {
        aes_key(&session, id, &extra);
        if id == "once-extractable" {
            let handle = session
                .find_objects(&[Attribute::Id(id.as_bytes().to_vec())])
                .unwrap()[0];
            session
                .update_attributes(handle, &[Attribute::Extractable(false)])
                .unwrap();
        }
        let kek = KekId::new(id).unwrap();
        for mode in [Mode::DryRun, Mode::Apply] {
            let err = token.ensure_kek(&kek, mode).unwrap_err();
            assert_weak(&err, id, attribute);
        }
        assert!(
            err_mentions_fix(&token.ensure_kek(&kek, Mode::Apply).unwrap_err()),
            "the error says what to do"
        );
    }
    // A key of another type under the KEK's id and label.
    session
        .generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::ValueLen(32.into()),
                Attribute::Token(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Id(b"generic".to_vec()),
                Attribute::Label(ObjectLabel::KEK.as_bytes().to_vec()),
            ],
        )
        .unwrap();
    let err = token
        .ensure_kek(&KekId::new("generic").unwrap(), Mode::Apply)
        .unwrap_err();
    assert_weak(&err, "generic", "CKA_KEY_TYPE");

    // The template mesh-hsm (and the Thales plugin) generates with is accepted.
    aes_key(
        &session,
        "sound",
        &[Attribute::Sensitive(true), Attribute::Extractable(false)],
    );
    token
        .ensure_kek(&KekId::new("sound").unwrap(), Mode::Apply)
        .unwrap();
}

fn err_mentions_fix(err: &Error) -> bool {
    err.to_string().contains("create a KEK under a new id")
}

#[test]
fn ensure_key_pair_refuses_an_extractable_private_key() {
    let (hsm, token) = crate::token("weak-pair");
    let session = raw(&hsm);
    let id = KeyPairId::new("exportable-ca").unwrap();
    let common = |class| {
        vec![
            Attribute::Class(class),
            Attribute::Token(true),
            Attribute::Id(id.as_bytes().to_vec()),
        ]
    };
    let mut public = common(ObjectClass::PUBLIC_KEY);
    public.extend([Attribute::EcParams(P256.to_vec()), Attribute::Verify(true)]);
    let mut private = common(ObjectClass::PRIVATE_KEY);
    private.extend([
        Attribute::Sign(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
    ]);
    session
        .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
        .unwrap();

    let label = ObjectLabel::new("istiod-ca").unwrap();
    let err = token
        .ensure_key_pair(&id, &label, KeyAlgorithm::EcdsaP256, Mode::Apply)
        .unwrap_err();
    assert_weak(&err, "exportable-ca", "CKA_EXTRACTABLE");
    assert!(err.to_string().contains("generate a new key pair"), "{err}");
    // Asked for another algorithm, the mismatch is what is reported.
    let err = token
        .ensure_key_pair(&id, &label, KeyAlgorithm::EcdsaP384, Mode::Apply)
        .unwrap_err();
    assert!(matches!(err, Error::ObjectMismatch { .. }), "{err}");
}
