//! What an existing key must look like before `ensure_*` accepts it: the type asked for, and
//! material that never left the HSM (`CKA_SENSITIVE` true, `CKA_EXTRACTABLE` false,
//! `CKA_NEVER_EXTRACTABLE` true). A key made by another tool without these is refused, never
//! silently used: data wrapped or certificates signed under it would only be as safe as the
//! copies of it that may exist outside the HSM.

use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectHandle};
use cryptoki::session::Session;

use crate::error::WeakKey;
use crate::{Error, HsmToken, KekId, KeyPairId, Result};

const REPLACE_KEK: &str = "its material may exist outside the HSM: create a KEK under a new id \
     (it is generated sensitive and non-extractable), re-wrap the data under it, then destroy \
     this one";
const REPLACE_PAIR: &str = "its private key may exist outside the HSM: generate a new key pair \
     under another id (it is generated sensitive and non-extractable), re-issue the CA \
     certificate for it, then destroy this one";
const WRONG_TYPE: &str =
    "an object made by another tool holds this id: pick another id, or remove that object";

/// The protection attributes of one key, as the token reports them.
struct Protection {
    key_type: Option<KeyType>,
    value_len: Option<u64>,
    sensitive: Option<bool>,
    extractable: Option<bool>,
    never_extractable: Option<bool>,
}

fn read(session: &Session, handle: ObjectHandle, with_len: bool) -> Result<Protection> {
    let mut types = vec![
        AttributeType::KeyType,
        AttributeType::Sensitive,
        AttributeType::Extractable,
        AttributeType::NeverExtractable,
    ];
    if with_len {
        types.push(AttributeType::ValueLen);
    }
    let attrs = session
        .get_attributes(handle, &types)
        .map_err(Error::pkcs11("reading key protection attributes"))?;
    let mut p = Protection {
        key_type: None,
        value_len: None,
        sensitive: None,
        extractable: None,
        never_extractable: None,
    };
    for attr in attrs {
        match attr {
            Attribute::KeyType(k) => p.key_type = Some(k),
            Attribute::ValueLen(v) => p.value_len = Some(u64::from(v)),
            Attribute::Sensitive(v) => p.sensitive = Some(v),
            Attribute::Extractable(v) => p.extractable = Some(v),
            Attribute::NeverExtractable(v) => p.never_extractable = Some(v),
            _ => {}
        }
    }
    Ok(p)
}

fn shown<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "not reported".to_owned(), |v| v.to_string())
}

/// The first protection attribute that is not as required: (attribute, found, required).
fn first_weakness(p: &Protection) -> Option<(&'static str, String, &'static str)> {
    if p.sensitive != Some(true) {
        return Some(("CKA_SENSITIVE", shown(p.sensitive), "true"));
    }
    if p.extractable != Some(false) {
        return Some(("CKA_EXTRACTABLE", shown(p.extractable), "false"));
    }
    if p.never_extractable != Some(true) {
        return Some((
            "CKA_NEVER_EXTRACTABLE",
            shown(p.never_extractable),
            "true (the key was extractable once)",
        ));
    }
    None
}

/// Builds the refusal of the existing `what` `id` on `token`, for one attribute.
fn refusal(
    what: &'static str,
    id: String,
    token: &HsmToken,
) -> impl Fn(&'static str, String, &'static str, &'static str) -> Error {
    let token = token.label().to_string();
    move |attribute, found, required, fix| {
        Error::WeakObject(Box::new(WeakKey {
            what,
            id: id.clone(),
            token: token.clone(),
            attribute,
            found,
            required,
            fix,
        }))
    }
}

/// Refuses an existing KEK (or Kubernetes KMS key) that is not an AES-256 key kept in the HSM.
pub(crate) fn check_secret_key(
    token: &HsmToken,
    session: &Session,
    handle: ObjectHandle,
    id: &KekId,
) -> Result<()> {
    let p = read(session, handle, true)?;
    let weak = refusal("KEK", id.to_text(), token);
    if p.key_type != Some(KeyType::AES) {
        return Err(weak("CKA_KEY_TYPE", shown(p.key_type), "AES", WRONG_TYPE));
    }
    if p.value_len != Some(32) {
        return Err(weak(
            "CKA_VALUE_LEN",
            shown(p.value_len),
            "32 (AES-256)",
            WRONG_TYPE,
        ));
    }
    match first_weakness(&p) {
        Some((attribute, found, required)) => Err(weak(attribute, found, required, REPLACE_KEK)),
        None => Ok(()),
    }
}

/// Refuses an existing private key that is not of `key_type` or not kept in the HSM.
pub(crate) fn check_private_key(
    token: &HsmToken,
    session: &Session,
    handle: ObjectHandle,
    id: &KeyPairId,
    key_type: KeyType,
) -> Result<()> {
    let p = read(session, handle, false)?;
    let weak = refusal("private key of key pair", id.to_text(), token);
    if p.key_type != Some(key_type) {
        let required = if key_type == KeyType::EC { "EC" } else { "RSA" };
        return Err(weak(
            "CKA_KEY_TYPE",
            shown(p.key_type),
            required,
            WRONG_TYPE,
        ));
    }
    match first_weakness(&p) {
        Some((attribute, found, required)) => Err(weak(attribute, found, required, REPLACE_PAIR)),
        None => Ok(()),
    }
}
