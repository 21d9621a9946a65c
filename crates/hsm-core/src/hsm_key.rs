//! hsm-key mode (KMS-PROTOCOL W1): the CA key pair is generated inside the HSM, never leaves
//! it, and signs through PKCS#11. Hashing happens on the host (`CKM_ECDSA` takes the digest;
//! SoftHSM2 has no `CKM_ECDSA_SHA256`).

use std::sync::Arc;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;

use crate::session::ObjectKey;
use crate::{Error, HsmToken, KeyPairId, Mode, ObjectLabel, Outcome, Result, der};

const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// Algorithms of in-HSM key pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// ECDSA on P-256, signatures with SHA-256.
    EcdsaP256,
    /// ECDSA on P-384, signatures with SHA-384.
    EcdsaP384,
    /// RSA 3072, PKCS#1 v1.5 signatures with SHA-256.
    Rsa3072,
}

impl std::fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::EcdsaP256 => "ECDSA P-256",
            Self::EcdsaP384 => "ECDSA P-384",
            Self::Rsa3072 => "RSA 3072",
        })
    }
}

fn templates(
    alg: KeyAlgorithm,
    id: &KeyPairId,
    label: &ObjectLabel,
) -> (Mechanism<'static>, Vec<Attribute>, Vec<Attribute>) {
    let common = |class| {
        vec![
            Attribute::Class(class),
            Attribute::Token(true),
            Attribute::Id(id.as_bytes().to_vec()),
            Attribute::Label(label.as_str().as_bytes().to_vec()),
        ]
    };
    let mut public = common(ObjectClass::PUBLIC_KEY);
    public.extend([
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Derive(false),
    ]);
    let mut private = common(ObjectClass::PRIVATE_KEY);
    private.extend([
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ]);
    let mechanism = match alg {
        KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
            let oid = if alg == KeyAlgorithm::EcdsaP256 {
                P256_OID
            } else {
                P384_OID
            };
            public.extend([
                Attribute::KeyType(KeyType::EC),
                Attribute::EcParams(oid.to_vec()),
            ]);
            private.push(Attribute::KeyType(KeyType::EC));
            Mechanism::EccKeyPairGen
        }
        KeyAlgorithm::Rsa3072 => {
            public.extend([
                Attribute::KeyType(KeyType::RSA),
                Attribute::ModulusBits(3072.into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            ]);
            private.push(Attribute::KeyType(KeyType::RSA));
            Mechanism::RsaPkcsKeyPairGen
        }
    };
    (mechanism, public, private)
}

fn find_one(
    token: &HsmToken,
    session: &Session,
    class: ObjectClass,
    id: &KeyPairId,
) -> Result<Option<ObjectHandle>> {
    let found = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Id(id.as_bytes().to_vec()),
        ])
        .map_err(Error::pkcs11("finding a key pair"))?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        many => Err(Error::DuplicateObject {
            what: "key pair",
            id: id.to_text(),
            token: token.label().to_string(),
            count: many.len(),
        }),
    }
}

/// The public half as read from the token: algorithm, SPKI DER, and the raw key
/// (`04||X||Y` for EC, PKCS#1 `RSAPublicKey` DER for RSA).
fn read_public(
    session: &Session,
    id: &KeyPairId,
    handle: ObjectHandle,
) -> Result<(KeyAlgorithm, Vec<u8>, Vec<u8>)> {
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::KeyType,
                AttributeType::EcParams,
                AttributeType::EcPoint,
                AttributeType::Modulus,
                AttributeType::PublicExponent,
            ],
        )
        .map_err(Error::pkcs11("reading a public key"))?;
    let (mut kind, mut params, mut point, mut modulus, mut exponent) =
        (None, None, None, None, None);
    for attr in attrs {
        match attr {
            Attribute::KeyType(k) => kind = Some(k),
            Attribute::EcParams(v) => params = Some(v),
            Attribute::EcPoint(v) => point = Some(v),
            Attribute::Modulus(v) => modulus = Some(v),
            Attribute::PublicExponent(v) => exponent = Some(v),
            _ => {}
        }
    }
    let unsupported = |difference: String| Error::ObjectMismatch {
        what: "key pair",
        id: id.to_text(),
        difference,
    };
    match kind {
        Some(KeyType::EC) => {
            let params = params.unwrap_or_default();
            let (alg, nid) = if params == P256_OID {
                (KeyAlgorithm::EcdsaP256, Nid::X9_62_PRIME256V1)
            } else if params == P384_OID {
                (KeyAlgorithm::EcdsaP384, Nid::SECP384R1)
            } else {
                return Err(unsupported(
                    "its curve is neither P-256 nor P-384".to_owned(),
                ));
            };
            let raw = point
                .as_deref()
                .and_then(der::ec_point)
                .ok_or_else(|| unsupported("its CKA_EC_POINT is unreadable".to_owned()))?;
            let spki = (|| {
                let group = EcGroup::from_curve_name(nid)?;
                let mut ctx = openssl::bn::BigNumContext::new()?;
                let point = EcPoint::from_bytes(&group, &raw, &mut ctx)?;
                PKey::from_ec_key(EcKey::from_public_key(&group, &point)?)?.public_key_to_der()
            })()
            .map_err(Error::crypto("encoding the EC public key"))?;
            Ok((alg, spki, raw))
        }
        Some(KeyType::RSA) => {
            let (Some(n), Some(e)) = (modulus, exponent) else {
                return Err(unsupported("its modulus is unreadable".to_owned()));
            };
            let rsa = Rsa::from_public_components(
                BigNum::from_slice(&n).map_err(Error::crypto("reading the RSA modulus"))?,
                BigNum::from_slice(&e).map_err(Error::crypto("reading the RSA exponent"))?,
            )
            .map_err(Error::crypto("building the RSA public key"))?;
            if rsa.size() != 384 {
                return Err(unsupported(format!(
                    "it is RSA {} bits, not 3072",
                    rsa.size() * 8
                )));
            }
            let raw = rsa
                .public_key_to_der_pkcs1()
                .map_err(Error::crypto("encoding the RSA public key"))?;
            let spki = PKey::from_rsa(rsa)
                .and_then(|k| k.public_key_to_der())
                .map_err(Error::crypto("encoding the RSA public key"))?;
            Ok((KeyAlgorithm::Rsa3072, spki, raw))
        }
        other => Err(unsupported(format!("its key type is {other:?}"))),
    }
}

impl HsmToken {
    /// Makes sure the key pair `id` exists with `algorithm`: Created (generated inside the HSM,
    /// private key sensitive and non-extractable), Unchanged, or WouldCreate in a dry run.
    ///
    /// # Errors
    /// [`Error::ObjectMismatch`] when `id` holds a key of another algorithm,
    /// [`Error::WeakObject`] when its private key is (or once was) extractable or is not
    /// sensitive, [`Error::DuplicateObject`], [`Error::Pkcs11`].
    pub fn ensure_key_pair(
        &self,
        id: &KeyPairId,
        label: &ObjectLabel,
        algorithm: KeyAlgorithm,
        mode: Mode,
    ) -> Result<Outcome> {
        self.with_session("ensuring a key pair", |session| {
            let public = find_one(self, session, ObjectClass::PUBLIC_KEY, id)?;
            let private = find_one(self, session, ObjectClass::PRIVATE_KEY, id)?;
            match (public, private) {
                (Some(public), Some(private)) => {
                    let (existing, _, _) = read_public(session, id, public)?;
                    if existing != algorithm {
                        return Err(Error::ObjectMismatch {
                            what: "key pair",
                            id: id.to_text(),
                            difference: format!(
                                "it is {existing}, not {algorithm}; pick another id for a \
                                 {algorithm} key, or ask for {existing}"
                            ),
                        });
                    }
                    let key_type = match algorithm {
                        KeyAlgorithm::Rsa3072 => KeyType::RSA,
                        KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => KeyType::EC,
                    };
                    crate::protection::check_private_key(self, session, private, id, key_type)?;
                    Ok(Outcome::Unchanged)
                }
                (None, None) if mode == Mode::DryRun => Ok(Outcome::WouldCreate),
                (None, None) => {
                    let (mechanism, public, private) = templates(algorithm, id, label);
                    session
                        .generate_key_pair(&mechanism, &public, &private)
                        .map_err(Error::pkcs11("generating a key pair"))?;
                    tracing::info!(hsm.token = %self.label(), hsm.key = %id, %algorithm, "key pair generated");
                    Ok(Outcome::Created)
                }
                _ => Err(Error::ObjectMismatch {
                    what: "key pair",
                    id: id.to_text(),
                    difference: "only one half (public or private) exists".to_owned(),
                }),
            }
        })
    }
}

/// A key pair inside the HSM, ready to sign. Cheap to clone.
#[derive(Clone)]
pub struct HsmKey {
    token: Arc<HsmToken>,
    id: KeyPairId,
    algorithm: KeyAlgorithm,
    spki: Vec<u8>,
    raw_public: Vec<u8>,
}

impl std::fmt::Debug for HsmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmKey")
            .field("token", self.token.label())
            .field("id", &self.id)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl HsmKey {
    /// Opens the key pair `id` (its public key is read now).
    ///
    /// # Errors
    /// [`Error::ObjectNotFound`], [`Error::DuplicateObject`], [`Error::ObjectMismatch`] for an
    /// unsupported key, [`Error::Pkcs11`].
    pub fn open(token: Arc<HsmToken>, id: &KeyPairId) -> Result<Self> {
        let (algorithm, spki, raw_public) =
            token.with_session("opening a key pair", |session| {
                let public =
                    find_one(&token, session, ObjectClass::PUBLIC_KEY, id)?.ok_or_else(|| {
                        Error::ObjectNotFound {
                            what: "key pair",
                            id: id.to_text(),
                            token: token.label().to_string(),
                        }
                    })?;
                read_public(session, id, public)
            })?;
        Ok(Self {
            token,
            id: id.clone(),
            algorithm,
            spki,
            raw_public,
        })
    }

    /// The key's id.
    pub fn id(&self) -> &KeyPairId {
        &self.id
    }

    /// The algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The public key as `SubjectPublicKeyInfo` DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The raw public key: `04||X||Y` for EC, PKCS#1 `RSAPublicKey` DER for RSA (what rcgen's
    /// `PublicKeyData::der_bytes` expects).
    pub fn public_key_raw(&self) -> &[u8] {
        &self.raw_public
    }

    /// Signs `message` inside the HSM: a DER `ECDSA-Sig-Value` for ECDSA (SHA-256 for P-256,
    /// SHA-384 for P-384, hashed on the host), a PKCS#1 v1.5 signature with SHA-256 for RSA.
    /// Blocks on the HSM.
    ///
    /// # Errors
    /// [`Error::ObjectNotFound`] when the private key is gone, [`Error::Pkcs11`], [`Error::Crypto`].
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let object = ObjectKey::PrivateKey {
            id: self.id.as_bytes().to_vec(),
            spki_sha256: openssl::sha::sha256(&self.spki),
        };
        // CKM_ECDSA takes the digest; the RSA mechanism hashes inside the HSM.
        let digest = match self.algorithm {
            KeyAlgorithm::EcdsaP256 => openssl::sha::sha256(message).to_vec(),
            KeyAlgorithm::EcdsaP384 => openssl::sha::sha384(message).to_vec(),
            KeyAlgorithm::Rsa3072 => Vec::new(),
        };
        let (mechanism, input, operation) = match self.algorithm {
            KeyAlgorithm::Rsa3072 => (Mechanism::Sha256RsaPkcs, message, "RSA signing"),
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
                (Mechanism::Ecdsa, digest.as_slice(), "ECDSA signing")
            }
        };
        let raw = self
            .token
            .with_session("signing with an HSM key", |session| {
                self.token.with_object(
                    session,
                    &object,
                    |s| self.find_private(s),
                    |key| {
                        session
                            .sign(&mechanism, key, input)
                            .map_err(Error::pkcs11(operation))
                    },
                )
            })?;
        match self.algorithm {
            KeyAlgorithm::Rsa3072 => Ok(raw),
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
                let expected = match self.algorithm {
                    KeyAlgorithm::EcdsaP384 => 96,
                    _ => 64,
                };
                if raw.len() != expected {
                    return Err(Error::HsmOutput {
                        operation: "ECDSA signing",
                        expected,
                        actual: raw.len(),
                        hint: "a raw ECDSA signature is r||s, each as long as the curve order; \
                               check the PKCS#11 module",
                    });
                }
                let (r, s) = raw.split_at(raw.len() / 2);
                let sig = (|| {
                    EcdsaSig::from_private_components(
                        BigNum::from_slice(r)?,
                        BigNum::from_slice(s)?,
                    )?
                    .to_der()
                })()
                .map_err(Error::crypto("encoding the ECDSA signature"))?;
                Ok(sig)
            }
        }
    }
}

impl HsmKey {
    /// Finds the private key, and checks that its public half is still the one this key was
    /// opened with (the pair may have been replaced on the token since).
    fn find_private(&self, session: &Session) -> Result<ObjectHandle> {
        let private = find_one(&self.token, session, ObjectClass::PRIVATE_KEY, &self.id)?
            .ok_or_else(|| Error::ObjectNotFound {
                what: "private key",
                id: self.id.to_text(),
                token: self.token.label().to_string(),
            })?;
        let public = find_one(&self.token, session, ObjectClass::PUBLIC_KEY, &self.id)?
            .ok_or_else(|| Error::ObjectNotFound {
                what: "public key",
                id: self.id.to_text(),
                token: self.token.label().to_string(),
            })?;
        let (_, spki, _) = read_public(session, &self.id, public)?;
        if spki != self.spki {
            return Err(Error::ObjectMismatch {
                what: "key pair",
                id: self.id.to_text(),
                difference: "it was replaced on the token after it was opened; open it again"
                    .to_owned(),
            });
        }
        Ok(private)
    }
}

#[cfg(feature = "signer")]
impl ca_signing::Signer for HsmKey {
    fn algorithm(&self) -> ca_signing::SignatureAlgorithm {
        match self.algorithm {
            KeyAlgorithm::EcdsaP256 => ca_signing::SignatureAlgorithm::EcdsaP256Sha256,
            KeyAlgorithm::EcdsaP384 => ca_signing::SignatureAlgorithm::EcdsaP384Sha384,
            KeyAlgorithm::Rsa3072 => ca_signing::SignatureAlgorithm::RsaPkcs1Sha256,
        }
    }

    fn public_key_spki_der(&self) -> Vec<u8> {
        self.spki.clone()
    }

    fn sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, ca_signing::SignError> {
        HsmKey::sign(self, message).map_err(|e| ca_signing::SignError {
            key: format!("HSM key {} on token {}", self.id, self.token.label()),
            source: Box::new(e),
        })
    }
}
