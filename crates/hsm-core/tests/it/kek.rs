use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use hsm_core::{Error, KekId, Mode, ObjectLabel, Outcome};

#[test]
fn kek_has_the_thales_template_read_back_from_the_token() {
    let (hsm, token) = crate::token("kek-attrs");
    let id = KekId::new("asm-kek-1").unwrap();
    assert_eq!(token.generate_kek(Some(id.clone())).unwrap(), id);

    let info = token.describe_kek(&id).unwrap();
    assert_eq!(info.id, id);
    assert_eq!(info.label, "k8s-kms-plugin-kek");
    assert_eq!(info.value_len, Some(32));
    assert_eq!(info.sensitive, Some(true));
    assert_eq!(info.extractable, Some(false));
    assert_eq!(info.never_extractable, Some(true));
    assert_eq!(info.always_sensitive, Some(true));
    assert_eq!(info.token, Some(true));
    assert_eq!(
        (info.encrypt, info.decrypt, info.sign),
        (Some(true), Some(true), Some(false))
    );

    // Read independently through a raw session too: CKA_VALUE is not readable.
    let raw = hsm
        .module()
        .login_user(hsm.label(), hsm.user_pin())
        .unwrap();
    let found = raw
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Id(b"asm-kek-1".to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1);
    let attrs = raw
        .get_attributes(found[0], &[AttributeType::Value])
        .unwrap();
    assert!(
        attrs.is_empty(),
        "the KEK value must not be readable: {attrs:?}"
    );
}

#[test]
fn random_kek_ids_are_uuid_text() {
    let (_hsm, token) = crate::token("kek-uuid");
    let id = token.generate_kek(None).unwrap();
    assert_eq!(id.to_text().len(), 36);
    assert_eq!(token.list_keks().unwrap().len(), 1);
}

#[test]
fn ensure_kek_run_twice_is_created_then_unchanged() {
    let (_hsm, token) = crate::token("kek-twice");
    let id = KekId::new("twice").unwrap();
    assert_eq!(
        token.ensure_kek(&id, Mode::DryRun).unwrap(),
        Outcome::WouldCreate
    );
    assert!(
        token.list_keks().unwrap().is_empty(),
        "a dry run changes nothing"
    );
    assert_eq!(
        token.ensure_kek(&id, Mode::Apply).unwrap(),
        Outcome::Created
    );
    assert_eq!(
        token.ensure_kek(&id, Mode::Apply).unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(
        token.ensure_kek(&id, Mode::DryRun).unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(token.list_keks().unwrap().len(), 1);
}

#[test]
fn generating_an_existing_id_is_refused() {
    let (_hsm, token) = crate::token("kek-dup");
    let id = KekId::new("taken").unwrap();
    token.generate_kek(Some(id.clone())).unwrap();
    let err = token.generate_kek(Some(id)).unwrap_err();
    assert!(matches!(err, Error::ObjectExists { .. }), "{err}");
    assert_eq!(token.list_keks().unwrap().len(), 1);
}

#[test]
fn duplicates_made_by_another_tool_are_reported_never_picked() {
    let (hsm, token) = crate::token("kek-other-tool");
    let id = KekId::new("dup").unwrap();
    token.generate_kek(Some(id.clone())).unwrap();
    // Another tool (like the Thales plugin, which never checks) makes a second one.
    let raw = hsm
        .module()
        .login_user(hsm.label(), hsm.user_pin())
        .unwrap();
    raw.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Id(b"dup".to_vec()),
            Attribute::Label(ObjectLabel::KEK.as_bytes().to_vec()),
        ],
    )
    .unwrap();
    drop(raw);
    for err in [
        token.ensure_kek(&id, Mode::Apply).unwrap_err(),
        token.describe_kek(&id).unwrap_err(),
        token
            .wrap_dek(
                &id,
                &token.random_dek().unwrap(),
                &hsm_core::Iv::Random(hsm_core::IvLength::default()),
            )
            .unwrap_err(),
    ] {
        assert!(
            matches!(err, Error::DuplicateObject { count: 2, .. }),
            "{err}"
        );
    }
    assert_eq!(token.list_keks().unwrap().len(), 2);
}

#[test]
fn destroy_needs_the_id_repeated() {
    let (_hsm, token) = crate::token("kek-destroy");
    let id = KekId::new("doomed").unwrap();
    token.generate_kek(Some(id.clone())).unwrap();
    let err = token
        .destroy_kek(&id, &KekId::new("other").unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::NotConfirmed { .. }), "{err}");
    assert!(token.describe_kek(&id).is_ok());
    token.destroy_kek(&id, &id).unwrap();
    assert!(token.describe_kek(&id).unwrap_err().is_not_found());
}
