//! Key-encryption keys: AES-256 token keys with the Thales plugin's template (KMS-PROTOCOL §3.1).

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use crate::{Error, HsmToken, KekId, Mode, ObjectLabel, Outcome, Result};

/// What the token reports about one AES secret key. `None` means the token did not return
/// the attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KekInfo {
    /// `CKA_ID`.
    pub id: KekId,
    /// `CKA_LABEL`.
    pub label: String,
    /// `CKA_VALUE_LEN` in bytes (32 for AES-256).
    pub value_len: Option<u64>,
    /// `CKA_TOKEN`.
    pub token: Option<bool>,
    /// `CKA_PRIVATE`.
    pub private: Option<bool>,
    /// `CKA_SENSITIVE`.
    pub sensitive: Option<bool>,
    /// `CKA_ALWAYS_SENSITIVE`.
    pub always_sensitive: Option<bool>,
    /// `CKA_EXTRACTABLE`.
    pub extractable: Option<bool>,
    /// `CKA_NEVER_EXTRACTABLE`.
    pub never_extractable: Option<bool>,
    /// `CKA_LOCAL` (generated on the token).
    pub local: Option<bool>,
    /// `CKA_ENCRYPT`.
    pub encrypt: Option<bool>,
    /// `CKA_DECRYPT`.
    pub decrypt: Option<bool>,
    /// `CKA_SIGN`.
    pub sign: Option<bool>,
    /// `CKA_WRAP`.
    pub wrap: Option<bool>,
}

/// The `C_GenerateKey` template of the Thales plugin: exactly these attributes, nothing else
/// (no `CKA_WRAP`/`CKA_UNWRAP`/`CKA_PRIVATE`; the token's defaults apply).
pub(crate) fn kek_template(id: &KekId, label: &ObjectLabel) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Id(id.as_bytes().to_vec()),
        Attribute::Label(label.as_str().as_bytes().to_vec()),
    ]
}

/// Finds the one secret key with this id and label. Duplicates are reported, never picked.
pub(crate) fn find_key(
    hsm: &HsmToken,
    session: &Session,
    id: &KekId,
    label: &ObjectLabel,
) -> Result<ObjectHandle> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Id(id.as_bytes().to_vec()),
            Attribute::Label(label.as_str().as_bytes().to_vec()),
        ])
        .map_err(Error::pkcs11("finding a KEK"))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Error::ObjectNotFound {
            what: "KEK",
            id: id.to_text(),
            token: hsm.label().to_string(),
        }),
        many => Err(Error::DuplicateObject {
            what: "KEK",
            id: id.to_text(),
            token: hsm.label().to_string(),
            count: many.len(),
        }),
    }
}

/// Finds the one secret key with this label, whatever its id (Kubernetes KMS v1 lookup).
pub(crate) fn find_key_by_label(
    hsm: &HsmToken,
    session: &Session,
    label: &ObjectLabel,
) -> Result<(ObjectHandle, KekId)> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_str().as_bytes().to_vec()),
        ])
        .map_err(Error::pkcs11("finding a key by label"))?;
    let handle = match found.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::ObjectNotFound {
                what: "key labelled",
                id: label.to_string(),
                token: hsm.label().to_string(),
            });
        }
        many => {
            return Err(Error::DuplicateObject {
                what: "key labelled",
                id: label.to_string(),
                token: hsm.label().to_string(),
                count: many.len(),
            });
        }
    };
    let info = read_info(session, handle)?;
    Ok((handle, info.id))
}

fn read_info(session: &Session, handle: ObjectHandle) -> Result<KekInfo> {
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::Id,
                AttributeType::Label,
                AttributeType::ValueLen,
                AttributeType::Token,
                AttributeType::Private,
                AttributeType::Sensitive,
                AttributeType::AlwaysSensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::Local,
                AttributeType::Encrypt,
                AttributeType::Decrypt,
                AttributeType::Sign,
                AttributeType::Wrap,
            ],
        )
        .map_err(Error::pkcs11("reading KEK attributes"))?;
    let mut id = Vec::new();
    let mut info = KekInfo {
        id: KekId::random(),
        label: String::new(),
        value_len: None,
        token: None,
        private: None,
        sensitive: None,
        always_sensitive: None,
        extractable: None,
        never_extractable: None,
        local: None,
        encrypt: None,
        decrypt: None,
        sign: None,
        wrap: None,
    };
    for attr in attrs {
        match attr {
            Attribute::Id(v) => id = v,
            Attribute::Label(v) => info.label = String::from_utf8_lossy(&v).into_owned(),
            Attribute::ValueLen(v) => info.value_len = Some(u64::from(v)),
            Attribute::Token(v) => info.token = Some(v),
            Attribute::Private(v) => info.private = Some(v),
            Attribute::Sensitive(v) => info.sensitive = Some(v),
            Attribute::AlwaysSensitive(v) => info.always_sensitive = Some(v),
            Attribute::Extractable(v) => info.extractable = Some(v),
            Attribute::NeverExtractable(v) => info.never_extractable = Some(v),
            Attribute::Local(v) => info.local = Some(v),
            Attribute::Encrypt(v) => info.encrypt = Some(v),
            Attribute::Decrypt(v) => info.decrypt = Some(v),
            Attribute::Sign(v) => info.sign = Some(v),
            Attribute::Wrap(v) => info.wrap = Some(v),
            _ => {}
        }
    }
    info.id = KekId::new(id).map_err(|_| Error::ObjectMismatch {
        what: "secret key",
        id: info.label.clone(),
        difference: "it has no usable CKA_ID".to_owned(),
    })?;
    Ok(info)
}

impl HsmToken {
    /// Generates a new KEK (AES-256, sensitive, non-extractable, encrypt/decrypt) with `id`,
    /// or with a random UUIDv4 text id when `id` is `None`, labelled `k8s-kms-plugin-kek`.
    ///
    /// # Errors
    /// [`Error::ObjectExists`] when a KEK with that id exists (use [`HsmToken::ensure_kek`]
    /// for an idempotent call), [`Error::DuplicateObject`], [`Error::Pkcs11`].
    pub fn generate_kek(&self, id: Option<KekId>) -> Result<KekId> {
        let id = id.unwrap_or_else(KekId::random);
        self.generate_key_labelled(&id, &ObjectLabel::kek())?;
        Ok(id)
    }

    /// Generates an AES-256 key with the KEK template under any label (the Kubernetes KMS
    /// keys use their own label).
    ///
    /// # Errors
    /// As [`HsmToken::generate_kek`].
    pub fn generate_key_labelled(&self, id: &KekId, label: &ObjectLabel) -> Result<()> {
        self.with_session("generating a KEK", |session| {
            match find_key(self, session, id, label) {
                Ok(_) => {
                    return Err(Error::ObjectExists {
                        what: "KEK",
                        id: id.to_text(),
                        token: self.label().to_string(),
                        hint: "pick another id, or use ensure to accept the existing key",
                    });
                }
                Err(Error::ObjectNotFound { .. }) => {}
                Err(other) => return Err(other),
            }
            session
                .generate_key(&Mechanism::AesKeyGen, &kek_template(id, label))
                .map_err(Error::pkcs11("generating a KEK"))?;
            tracing::info!(hsm.token = %self.label(), hsm.kek = %id, "KEK generated");
            Ok(())
        })
    }

    /// Makes sure the KEK `id` exists: Created when it was generated, Unchanged when it was
    /// there already (as an AES-256 key that never left the HSM), WouldCreate in a dry run.
    ///
    /// # Errors
    /// [`Error::DuplicateObject`] when other tools made several keys with that id,
    /// [`Error::WeakObject`] when the existing key is not AES-256 or is (or once was)
    /// extractable or not sensitive, [`Error::Pkcs11`].
    pub fn ensure_kek(&self, id: &KekId, mode: Mode) -> Result<Outcome> {
        self.ensure_key_labelled(id, &ObjectLabel::kek(), mode)
    }

    /// [`HsmToken::ensure_kek`] under any label.
    ///
    /// # Errors
    /// As [`HsmToken::ensure_kek`].
    pub fn ensure_key_labelled(
        &self,
        id: &KekId,
        label: &ObjectLabel,
        mode: Mode,
    ) -> Result<Outcome> {
        self.with_session("ensuring a KEK", |session| {
            match find_key(self, session, id, label) {
                Ok(handle) => {
                    crate::protection::check_secret_key(self, session, handle, id)?;
                    Ok(Outcome::Unchanged)
                }
                Err(Error::ObjectNotFound { .. }) if mode == Mode::DryRun => {
                    Ok(Outcome::WouldCreate)
                }
                Err(Error::ObjectNotFound { .. }) => {
                    session
                        .generate_key(&Mechanism::AesKeyGen, &kek_template(id, label))
                        .map_err(Error::pkcs11("generating a KEK"))?;
                    tracing::info!(hsm.token = %self.label(), hsm.kek = %id, "KEK generated");
                    Ok(Outcome::Created)
                }
                Err(other) => Err(other),
            }
        })
    }

    /// Every secret key labelled `k8s-kms-plugin-kek` on the token, duplicates included.
    ///
    /// # Errors
    /// [`Error::Pkcs11`].
    pub fn list_keks(&self) -> Result<Vec<KekInfo>> {
        self.with_session("listing KEKs", |session| {
            let handles = session
                .find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Label(ObjectLabel::KEK.as_bytes().to_vec()),
                ])
                .map_err(Error::pkcs11("listing KEKs"))?;
            let mut infos = handles
                .into_iter()
                .map(|h| read_info(session, h))
                .collect::<Result<Vec<_>>>()?;
            infos.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(infos)
        })
    }

    /// The attributes of the KEK `id`.
    ///
    /// # Errors
    /// [`Error::ObjectNotFound`], [`Error::DuplicateObject`], [`Error::Pkcs11`].
    pub fn describe_kek(&self, id: &KekId) -> Result<KekInfo> {
        self.with_session("describing a KEK", |session| {
            let handle = find_key(self, session, id, &ObjectLabel::kek())?;
            read_info(session, handle)
        })
    }

    /// Destroys the KEK `id`. Everything wrapped under it becomes unreadable, so the caller
    /// must repeat the id as `confirm`.
    ///
    /// # Errors
    /// [`Error::NotConfirmed`] when `confirm` differs from `id`; the lookup errors of
    /// [`HsmToken::describe_kek`]; [`Error::Pkcs11`].
    pub fn destroy_kek(&self, id: &KekId, confirm: &KekId) -> Result<()> {
        if id != confirm {
            return Err(Error::NotConfirmed {
                what: "KEK",
                id: id.to_text(),
                confirmed: confirm.to_text(),
            });
        }
        self.with_session("destroying a KEK", |session| {
            let handle = find_key(self, session, id, &ObjectLabel::kek())?;
            session
                .destroy_object(handle)
                .map_err(Error::pkcs11("destroying a KEK"))?;
            self.forget_object(&crate::KeyRef::kek(id.clone()).object_key());
            tracing::warn!(hsm.token = %self.label(), hsm.kek = %id, "KEK destroyed");
            Ok(())
        })
    }
}
