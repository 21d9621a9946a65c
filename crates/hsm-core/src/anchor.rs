//! CA anchors: root certificates stored on the token as `CKO_CERTIFICATE` objects
//! (KMS-PROTOCOL §3.1). Every lookup reads the token; nothing is remembered in memory (W5).

use cryptoki::object::{Attribute, AttributeType, CertificateType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use openssl::nid::Nid;
use openssl::x509::{X509, X509NameRef};

use crate::jwe::hex;
use crate::{CaId, Error, HsmToken, Mode, Outcome, Result, der};

/// Whether importing a different certificate under an existing CA id replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImportPolicy {
    /// Refuse (the default): the existing anchor stays.
    #[default]
    KeepExisting,
    /// Replace the existing certificate.
    Replace,
}

/// A CA anchor as stored on the token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AnchorInfo {
    /// `CKA_ID`.
    pub ca_id: CaId,
    /// `CKA_LABEL` (the subject DN, Go style).
    pub label: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Lowercase hex SHA-256 of the DER.
    pub sha256: String,
    /// The certificate's notAfter, as OpenSSL prints it.
    pub not_after: String,
}

/// The subject DN the way Go's `pkix.Name.String()` writes it (the Thales plugin's
/// certificate label): attributes other than C/ST/L/STREET/POSTALCODE/O/OU/CN/SERIALNUMBER
/// first (printed last) as `oid=#hex`, then the standard ones in Go's fixed order, the whole
/// sequence printed in reverse, values of one type joined with `+`.
pub fn go_dn_string(name: &X509NameRef) -> String {
    // (type name, values) in Go's ToRDNSequence order.
    let order = [
        (Nid::COUNTRYNAME, "C"),
        (Nid::STATEORPROVINCENAME, "ST"),
        (Nid::LOCALITYNAME, "L"),
        (Nid::STREETADDRESS, "STREET"),
        (Nid::POSTALCODE, "POSTALCODE"),
        (Nid::ORGANIZATIONNAME, "O"),
        (Nid::ORGANIZATIONALUNITNAME, "OU"),
        (Nid::COMMONNAME, "CN"),
        (Nid::SERIALNUMBER, "SERIALNUMBER"),
    ];
    let value_of = |entry: &openssl::x509::X509NameEntryRef| {
        entry
            .data()
            .to_string()
            .unwrap_or_else(|_| String::from_utf8_lossy(entry.data().as_slice()).into_owned())
    };
    // Each RDN is a list of "TYPE=value" strings.
    let mut rdns: Vec<Vec<String>> = Vec::new();
    for entry in name.entries() {
        let nid = entry.object().nid();
        if order.iter().any(|(n, _)| *n == nid) {
            continue;
        }
        let oid = der::oid_text(entry.object().to_owned().as_slice());
        let value = value_of(entry);
        let tag = if value.bytes().all(go_printable) {
            0x13
        } else {
            0x0c
        };
        rdns.push(vec![format!(
            "{oid}=#{}",
            hex(&der::encode(tag, value.as_bytes()))
        )]);
    }
    for (nid, short) in order {
        let mut values: Vec<String> = name.entries_by_nid(nid).map(value_of).collect();
        if values.is_empty() {
            continue;
        }
        // Go keeps only the last CommonName and SerialNumber.
        if matches!(nid, Nid::COMMONNAME | Nid::SERIALNUMBER) {
            values = values.split_off(values.len() - 1);
        }
        rdns.push(
            values
                .iter()
                .map(|v| format!("{short}={}", go_escape(v)))
                .collect(),
        );
    }
    rdns.iter()
        .rev()
        .map(|rdn| rdn.join("+"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Go's `asn1` PrintableString alphabet (without `*` and `&`, which Go marshals as UTF8String).
fn go_printable(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b)
}

fn go_escape(value: &str) -> String {
    let last = value.len().saturating_sub(1);
    let mut out = String::with_capacity(value.len());
    for (k, c) in value.char_indices() {
        let escape = match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => true,
            ' ' => k == 0 || k == last,
            '#' => k == 0,
            _ => false,
        };
        if escape {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn serial_der(cert: &X509) -> Result<Vec<u8>> {
    let bn = cert
        .serial_number()
        .to_bn()
        .map_err(Error::crypto("reading the certificate serial"))?;
    if bn.is_negative() {
        return Err(Error::InvalidCertificate {
            what: "CA certificate".to_owned(),
            reason: "its serial number is negative".to_owned(),
        });
    }
    Ok(der::unsigned_integer(&bn.to_vec()))
}

fn find_anchors(session: &Session, ca_id: &CaId) -> Result<Vec<ObjectHandle>> {
    session
        .find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Id(ca_id.as_bytes().to_vec()),
        ])
        .map_err(Error::pkcs11("finding a CA anchor"))
}

fn read_anchor(session: &Session, handle: ObjectHandle) -> Result<AnchorInfo> {
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::Id,
                AttributeType::Label,
                AttributeType::Value,
            ],
        )
        .map_err(Error::pkcs11("reading a CA anchor"))?;
    let (mut id, mut label, mut value) = (Vec::new(), String::new(), Vec::new());
    for attr in attrs {
        match attr {
            Attribute::Id(v) => id = v,
            Attribute::Label(v) => label = String::from_utf8_lossy(&v).into_owned(),
            Attribute::Value(v) => value = v,
            _ => {}
        }
    }
    let cert = X509::from_der(&value).map_err(|e| Error::InvalidCertificate {
        what: format!("the anchor labelled {label:?} on the token"),
        reason: e.to_string(),
    })?;
    Ok(AnchorInfo {
        ca_id: CaId::new(id)?,
        label,
        sha256: hex(&openssl::sha::sha256(&value)),
        not_after: cert.not_after().to_string(),
        der: value,
    })
}

fn anchor_template(ca_id: &CaId, cert: &X509) -> Result<Vec<Attribute>> {
    let der = cert
        .to_der()
        .map_err(Error::crypto("encoding the CA certificate"))?;
    let subject = cert
        .subject_name()
        .to_der()
        .map_err(Error::crypto("encoding the CA subject"))?;
    let issuer = cert
        .issuer_name()
        .to_der()
        .map_err(Error::crypto("encoding the CA issuer"))?;
    Ok(vec![
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::CertificateType(CertificateType::X_509),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Subject(subject),
        Attribute::Issuer(issuer),
        Attribute::SerialNumber(serial_der(cert)?),
        Attribute::Value(der),
        Attribute::Id(ca_id.as_bytes().to_vec()),
        Attribute::Label(go_dn_string(cert.subject_name()).into_bytes()),
    ])
}

impl HsmToken {
    /// Imports a root certificate (the first PEM block, or DER) as the anchor `ca_id`.
    ///
    /// The same certificate again is Unchanged; a different one under an existing id is
    /// refused unless `policy` is [`ImportPolicy::Replace`] (then Updated).
    ///
    /// # Errors
    /// [`Error::InvalidCertificate`], [`Error::ObjectExists`] (different certificate, no
    /// replace), [`Error::DuplicateObject`] (several objects with the id already),
    /// [`Error::Pkcs11`].
    pub fn import_ca_cert(
        &self,
        ca_id: &CaId,
        cert: &[u8],
        policy: ImportPolicy,
        mode: Mode,
    ) -> Result<Outcome> {
        let cert = crate::verify::parse_one("CA certificate", cert)?;
        let der = cert
            .to_der()
            .map_err(Error::crypto("encoding the CA certificate"))?;
        let template = anchor_template(ca_id, &cert)?;
        self.with_session("importing a CA certificate", |session| {
            let existing = find_anchors(session, ca_id)?;
            match existing.as_slice() {
                [] if mode == Mode::DryRun => Ok(Outcome::WouldCreate),
                [] => {
                    session
                        .create_object(&template)
                        .map_err(Error::pkcs11("storing the CA certificate"))?;
                    tracing::info!(hsm.token = %self.label(), hsm.ca_id = %ca_id, "CA anchor imported");
                    Ok(Outcome::Created)
                }
                [one] => {
                    let current = read_anchor(session, *one)?;
                    if current.der == der {
                        return Ok(Outcome::Unchanged);
                    }
                    match (policy, mode) {
                        (ImportPolicy::KeepExisting, _) => Err(Error::ObjectExists {
                            what: "CA anchor",
                            id: ca_id.to_text(),
                            token: self.label().to_string(),
                            hint: "it holds a different certificate; ask for replacement or use another CA id",
                        }),
                        (ImportPolicy::Replace, Mode::DryRun) => Ok(Outcome::WouldUpdate),
                        (ImportPolicy::Replace, Mode::Apply) => {
                            session
                                .destroy_object(*one)
                                .map_err(Error::pkcs11("removing the replaced CA certificate"))?;
                            session
                                .create_object(&template)
                                .map_err(Error::pkcs11("storing the CA certificate"))?;
                            tracing::info!(hsm.token = %self.label(), hsm.ca_id = %ca_id, "CA anchor replaced");
                            Ok(Outcome::Updated)
                        }
                    }
                }
                many => Err(Error::DuplicateObject {
                    what: "CA anchor",
                    id: ca_id.to_text(),
                    token: self.label().to_string(),
                    count: many.len(),
                }),
            }
        })
    }

    /// The anchor `ca_id`, read from the token now.
    ///
    /// # Errors
    /// [`Error::ObjectNotFound`], [`Error::DuplicateObject`], [`Error::Pkcs11`].
    pub fn anchor(&self, ca_id: &CaId) -> Result<AnchorInfo> {
        self.with_session("reading a CA anchor", |session| {
            match find_anchors(session, ca_id)?.as_slice() {
                [one] => read_anchor(session, *one),
                [] => Err(Error::ObjectNotFound {
                    what: "CA anchor",
                    id: ca_id.to_text(),
                    token: self.label().to_string(),
                }),
                many => Err(Error::DuplicateObject {
                    what: "CA anchor",
                    id: ca_id.to_text(),
                    token: self.label().to_string(),
                    count: many.len(),
                }),
            }
        })
    }

    /// Every certificate object on the token, sorted by CA id.
    ///
    /// # Errors
    /// [`Error::Pkcs11`].
    pub fn list_anchors(&self) -> Result<Vec<AnchorInfo>> {
        self.with_session("listing CA anchors", |session| {
            let handles = session
                .find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE)])
                .map_err(Error::pkcs11("listing CA anchors"))?;
            let mut anchors = handles
                .into_iter()
                .map(|h| read_anchor(session, h))
                .collect::<Result<Vec<_>>>()?;
            anchors.sort_by(|a, b| a.ca_id.cmp(&b.ca_id));
            Ok(anchors)
        })
    }

    /// Removes the anchor `ca_id`; the caller repeats the id as `confirm`.
    ///
    /// # Errors
    /// [`Error::NotConfirmed`]; the lookup errors of [`HsmToken::anchor`].
    pub fn remove_anchor(&self, ca_id: &CaId, confirm: &CaId) -> Result<()> {
        if ca_id != confirm {
            return Err(Error::NotConfirmed {
                what: "CA anchor",
                id: ca_id.to_text(),
                confirmed: confirm.to_text(),
            });
        }
        self.with_session("removing a CA anchor", |session| {
            match find_anchors(session, ca_id)?.as_slice() {
                [one] => session
                    .destroy_object(*one)
                    .map_err(Error::pkcs11("removing a CA anchor")),
                [] => Err(Error::ObjectNotFound {
                    what: "CA anchor",
                    id: ca_id.to_text(),
                    token: self.label().to_string(),
                }),
                many => Err(Error::DuplicateObject {
                    what: "CA anchor",
                    id: ca_id.to_text(),
                    token: self.label().to_string(),
                    count: many.len(),
                }),
            }
        })
    }

    /// Verifies a certificate chain against the anchors `ca_ids` (read from the token now).
    /// Elements may be DER or PEM, in any order; the target is the one certificate that
    /// issues none of the others.
    ///
    /// # Errors
    /// [`Error::ChainRejected`] with the reasons; [`Error::ObjectNotFound`] when none of the
    /// anchors is on the token; [`Error::DuplicateObject`] for the anchors; [`Error::Pkcs11`].
    pub fn verify_chain(
        &self,
        ca_ids: &[CaId],
        elements: &[Vec<u8>],
        expected_spki: Option<&[u8]>,
        policy: &crate::VerifyPolicy,
    ) -> Result<crate::VerifiedChain> {
        let mut anchors = Vec::with_capacity(ca_ids.len());
        for ca_id in ca_ids {
            let info = match self.anchor(ca_id) {
                Ok(info) => info,
                // A configured rotation slot may be empty; other anchors can still verify.
                Err(Error::ObjectNotFound { .. }) if ca_ids.len() > 1 => continue,
                Err(err) => return Err(err),
            };
            anchors.push(X509::from_der(&info.der).map_err(Error::crypto("parsing a CA anchor"))?);
        }
        if anchors.is_empty() && !ca_ids.is_empty() {
            // Every configured slot is empty: nothing to verify against is a missing object,
            // however many ids are configured.
            return Err(Error::ObjectNotFound {
                what: "CA anchor",
                id: ca_ids
                    .iter()
                    .map(CaId::to_text)
                    .collect::<Vec<_>>()
                    .join(", "),
                token: self.label().to_string(),
            });
        }
        crate::verify::verify_chain(&anchors, elements, expected_spki, policy)
            .map_err(|problems| Error::ChainRejected { problems })
    }
}

#[cfg(test)]
mod tests {
    use openssl::x509::X509NameBuilder;

    use super::*;

    #[test]
    fn dn_string_follows_go_order_and_escaping() {
        let mut b = X509NameBuilder::new().unwrap();
        b.append_entry_by_text("CN", "Root CA").unwrap();
        b.append_entry_by_text("O", "Istio").unwrap();
        b.append_entry_by_text("C", "US").unwrap();
        b.append_entry_by_text("OU", "a,b").unwrap();
        b.append_entry_by_text("OU", " mesh").unwrap();
        let name = b.build();
        assert_eq!(
            go_dn_string(&name),
            r"CN=Root CA,OU=a\,b+OU=\ mesh,O=Istio,C=US"
        );
    }

    #[test]
    fn dn_string_renders_unknown_attributes_as_hex_der() {
        let mut b = X509NameBuilder::new().unwrap();
        b.append_entry_by_text("O", "Istio").unwrap();
        b.append_entry_by_text("emailAddress", "a@b").unwrap();
        let name = b.build();
        // "a@b" is not PrintableString (the '@'), so Go marshals it as UTF8String (0x0c).
        assert_eq!(
            go_dn_string(&name),
            "O=Istio,1.2.840.113549.1.9.1=#0c03614062"
        );
    }
}
