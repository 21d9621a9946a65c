//! Issuing certificates with rcgen through any [`Signer`].

use std::sync::Mutex;

use rcgen::{
    BasicConstraints as RcgenBasicConstraints, CertificateParams, DistinguishedName, DnType,
    DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyUsagePurpose, SanType,
    SerialNumber,
};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::FromDer;
use x509_parser::x509::{SubjectPublicKeyInfo, X509Name};

use crate::cert::{Certificate, IssuedCert};
use crate::csr::{Csr, ReviewedCsr, San};
use crate::error::{Error, Result};
use crate::policy::{CsrPurpose, ISTIOD_DNS_NAME};
use crate::profile::{IstiodCaProfile, RootProfile, Subject, WorkloadProfile};
use crate::signer::{SignError, SignatureAlgorithm, Signer};

/// How far `notBefore` is set back from now, for clocks running slightly behind.
const BACKDATE: Duration = Duration::minutes(5);

/// Issues the self-signed root for `profile`, signed (and keyed) by `signer`.
///
/// `signer` may block (an HSM key); run this on a blocking thread from async code.
///
/// # Errors
/// [`Error::InvalidProfile`], [`Error::SignerKey`] for a signer whose key does not fit its
/// algorithm, [`Error::Sign`] when the signer fails, [`Error::BadSignature`] when its signature
/// does not verify.
pub fn issue_root(profile: &RootProfile, signer: &dyn Signer) -> Result<IssuedCert> {
    profile.validate()?;
    let key = SignerKey::new(signer)?;
    let now = OffsetDateTime::now_utc();
    let mut params = base_params(profile.subject.to_rcgen()?)?;
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(i64::from(profile.validity_days));
    params.is_ca = IsCa::Ca(RcgenBasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params
        .self_signed(&key)
        .map_err(|e| key.map_error(e, "root certificate"))?;
    let cert = Certificate::from_der(cert.der().to_vec())?;
    if !cert.is_self_signed() {
        return Err(Error::BadSignature);
    }
    tracing::info!(
        cert.subject = %cert.subject(),
        cert.serial = %cert.serial_hex(),
        key.algorithm = %signer.algorithm(),
        "issued root certificate"
    );
    Ok(cert)
}

/// Signs the istiod intermediate CA certificate for a reviewed CSR with the root's key.
///
/// The result carries the CSR's key and subject (or the profile's), the CSR's SANs (or
/// `DNS:istiod.istio-system.svc`), CA:TRUE pathlen:0, keyUsage keyCertSign + cRLSign +
/// digitalSignature, SKI and AKI, and no EKU. Its validity never extends beyond the root's.
///
/// `signer` may block (an HSM key); run this on a blocking thread from async code.
///
/// # Errors
/// [`Error::InvalidProfile`] (also when the CSR was reviewed for another purpose),
/// [`Error::SignerMismatch`] when `signer` is not the root's key, [`Error::IssuerNotCa`],
/// [`Error::IssuerNotValidNow`], [`Error::IssuerExpiresTooSoon`], [`Error::Sign`],
/// [`Error::BadSignature`].
pub fn sign_istiod_ca(
    csr: &ReviewedCsr,
    root: &Certificate,
    signer: &dyn Signer,
    profile: &IstiodCaProfile,
) -> Result<IssuedCert> {
    profile.validate()?;
    if csr.purpose() != CsrPurpose::IstiodCa {
        return Err(Error::InvalidProfile {
            field: "csr",
            reason: format!(
                "the CSR was reviewed for the {} profile; review it for the istiod CA profile",
                csr.purpose()
            ),
        });
    }
    let key = SignerKey::new(signer)?;
    check_issuer(root, &key, true)?;
    let now = OffsetDateTime::now_utc();
    let (not_before, not_after) =
        window(root, now, Duration::days(i64::from(profile.validity_days)))?;

    let dn = match &profile.subject {
        Some(s) => s.to_rcgen()?,
        None => dn_from_der(csr.csr().subject_der(), "CSR subject")?,
    };
    let mut params = base_params(dn)?;
    params.not_before = not_before;
    params.not_after = not_after;
    params.is_ca = IsCa::Ca(RcgenBasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params.use_authority_key_identifier_extension = true;
    let sans: Vec<San> = if !profile.sans.is_empty() {
        profile.sans.clone()
    } else if !csr.report().sans.is_empty() {
        csr.report().sans.clone()
    } else {
        vec![San::Dns(ISTIOD_DNS_NAME.to_owned())]
    };
    params.subject_alt_names = sans.iter().map(to_rcgen_san).collect::<Result<_>>()?;

    let subject_key = subject_key(&csr.report().public_key.spki_der, "CSR")?;
    let cert = sign_with(&params, &subject_key, root, &key, "istiod CA certificate")?;
    if !cert.has_public_key(&csr.report().public_key.spki_der) {
        return Err(Error::KeyMismatch {
            subject: cert.subject().to_owned(),
            expected: "CSR's",
        });
    }
    tracing::info!(
        cert.subject = %cert.subject(),
        cert.serial = %cert.serial_hex(),
        cert.not_after = %cert.not_after(),
        issuer = %root.subject(),
        "signed istiod CA certificate"
    );
    Ok(cert)
}

/// Issues a workload leaf for `subject_spki_der` under a CA (normally the istiod CA), as istiod
/// would; used to prove a chain works end to end.
///
/// # Errors
/// As [`sign_istiod_ca`], plus [`Error::CertParse`] for an unusable subject key.
pub fn issue_workload(
    profile: &WorkloadProfile,
    subject_spki_der: &[u8],
    issuer: &Certificate,
    signer: &dyn Signer,
) -> Result<IssuedCert> {
    profile.validate()?;
    let key = SignerKey::new(signer)?;
    check_issuer(issuer, &key, false)?;
    let now = OffsetDateTime::now_utc();
    let ttl = Duration::try_from(profile.ttl).map_err(|_| Error::InvalidProfile {
        field: "ttl",
        reason: "too long".to_owned(),
    })?;
    let (not_before, not_after) = window(issuer, now, ttl)?;
    // Istio's workload certificates have an empty subject (the SAN is then critical).
    let mut params = base_params(DistinguishedName::new())?;
    params.not_before = not_before;
    params.not_after = not_after;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.subject_alt_names = vec![to_rcgen_san(&San::Uri(profile.spiffe_id()))?];
    let subject_key = subject_key(subject_spki_der, "workload")?;
    let cert = sign_with(&params, &subject_key, issuer, &key, "workload certificate")?;
    if !cert.has_public_key(subject_spki_der) {
        return Err(Error::KeyMismatch {
            subject: profile.spiffe_id(),
            expected: "workload's",
        });
    }
    Ok(cert)
}

/// Creates a PKCS#10 CSR for `subject` and `sans`, signed by `signer` (the requester's key):
/// what istiod or an operator produces for [`sign_istiod_ca`], used by tests and examples.
///
/// # Errors
/// [`Error::SignerKey`], [`Error::Sign`], [`Error::Encode`], [`Error::InvalidProfile`].
pub fn create_csr(subject: &Subject, sans: &[San], signer: &dyn Signer) -> Result<Csr> {
    let key = SignerKey::new(signer)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = subject.to_rcgen()?;
    params.subject_alt_names = sans.iter().map(to_rcgen_san).collect::<Result<_>>()?;
    let req = params
        .serialize_request(&key)
        .map_err(|e| key.map_error(e, "CSR"))?;
    Csr::from_der(req.der().to_vec())
}

/// Parameters every profile starts from: explicit DN, random serial, SHA-256 key ids.
fn base_params(dn: DistinguishedName) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.serial_number = Some(random_serial()?);
    params.key_identifier_method = KeyIdMethod::Sha256;
    Ok(params)
}

/// A positive random serial of up to 159 bits (20 bytes, top bit clear), never zero.
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 20];
    loop {
        openssl::rand::rand_bytes(&mut bytes).map_err(Error::openssl("drawing a random serial"))?;
        bytes[0] &= 0x7f;
        if bytes.iter().any(|b| *b != 0) {
            return Ok(SerialNumber::from_slice(&bytes));
        }
    }
}

/// Signs `params` for `subject_key` under `issuer` and checks the result against the issuer.
fn sign_with(
    params: &CertificateParams,
    subject_key: &rcgen::SubjectPublicKeyInfo,
    issuer: &Certificate,
    key: &SignerKey<'_>,
    what: &'static str,
) -> Result<Certificate> {
    let mut issuer_params = CertificateParams::default();
    issuer_params.distinguished_name = dn_from_der(issuer.subject_der(), "issuer subject")?;
    issuer_params.key_identifier_method = match issuer.subject_key_id() {
        Some(id) => KeyIdMethod::PreSpecified(id.to_vec()),
        None => KeyIdMethod::Sha256,
    };
    let rcgen_issuer = Issuer::new(issuer_params, key);
    let cert = params
        .signed_by(subject_key, &rcgen_issuer)
        .map_err(|e| key.map_error(e, what))?;
    let cert = Certificate::from_der(cert.der().to_vec())?;
    if cert.issuer_der() != issuer.subject_der() {
        return Err(Error::UnsupportedName {
            what: "issuer subject",
            name: issuer.subject().to_owned(),
            reason: "it does not re-encode byte for byte".to_owned(),
        });
    }
    if !cert.is_issued_by(issuer) {
        return Err(Error::BadSignature);
    }
    Ok(cert)
}

/// Checks `issuer` may issue (a CA with keyCertSign, and room for a CA below it when
/// `child_is_ca`) and that `key` is its key.
fn check_issuer(issuer: &Certificate, key: &SignerKey<'_>, child_is_ca: bool) -> Result<()> {
    let name = || issuer.subject().to_owned();
    if !issuer.has_public_key(&key.spki) {
        return Err(Error::SignerMismatch { issuer: name() });
    }
    let Some(bc) = issuer.basic_constraints().filter(|b| b.ca) else {
        return Err(Error::IssuerNotCa {
            issuer: name(),
            reason: "it lacks basicConstraints CA:TRUE".to_owned(),
        });
    };
    if issuer.key_cert_sign() == Some(false) {
        return Err(Error::IssuerNotCa {
            issuer: name(),
            reason: "its keyUsage lacks keyCertSign".to_owned(),
        });
    }
    if child_is_ca && bc.path_len == Some(0) {
        return Err(Error::IssuerNotCa {
            issuer: name(),
            reason: "its pathlen:0 forbids a CA below it".to_owned(),
        });
    }
    Ok(())
}

/// The validity window of a certificate issued now for `length` under `issuer`.
fn window(
    issuer: &Certificate,
    now: OffsetDateTime,
    length: Duration,
) -> Result<(OffsetDateTime, OffsetDateTime)> {
    let fmt = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| t.to_string())
    };
    if now < issuer.not_before() || now >= issuer.not_after() {
        return Err(Error::IssuerNotValidNow {
            issuer: issuer.subject().to_owned(),
            not_before: fmt(issuer.not_before()),
            not_after: fmt(issuer.not_after()),
        });
    }
    let not_after = now + length;
    if not_after > issuer.not_after() {
        return Err(Error::IssuerExpiresTooSoon {
            issuer: issuer.subject().to_owned(),
            issuer_not_after: fmt(issuer.not_after()),
            requested_not_after: fmt(not_after),
            max_days: (issuer.not_after() - now).whole_days(),
        });
    }
    let not_before = (now - BACKDATE).max(issuer.not_before());
    Ok((not_before, not_after))
}

fn subject_key(spki_der: &[u8], whose: &'static str) -> Result<rcgen::SubjectPublicKeyInfo> {
    rcgen::SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| Error::CertParse {
        what: format!("the {whose} public key"),
        reason: e.to_string(),
    })
}

fn to_rcgen_san(san: &San) -> Result<SanType> {
    let bad = |e: rcgen::Error| Error::InvalidProfile {
        field: "sans",
        reason: format!("{san} cannot be encoded: {e}"),
    };
    Ok(match san {
        San::Dns(v) => SanType::DnsName(v.as_str().try_into().map_err(bad)?),
        San::Uri(v) => SanType::URI(v.as_str().try_into().map_err(bad)?),
        San::Email(v) => SanType::Rfc822Name(v.as_str().try_into().map_err(bad)?),
        San::Ip(v) => SanType::IpAddress(*v),
        San::Other(_) => {
            return Err(Error::InvalidProfile {
                field: "sans",
                reason: format!("{san} cannot be copied; only DNS, URI, email and IP SANs can"),
            });
        }
    })
}

/// Converts a DER name to rcgen's, keeping order and string types so the bytes match (Go
/// compares issuer and subject names byte for byte).
fn dn_from_der(der: &[u8], what: &'static str) -> Result<DistinguishedName> {
    use x509_parser::der_parser::asn1_rs::Tag;

    let unsupported = |name: String, reason: &str| Error::UnsupportedName {
        what,
        name,
        reason: reason.to_owned(),
    };
    let (_, name) =
        X509Name::from_der(der).map_err(|e| unsupported(String::new(), &e.to_string()))?;
    let text = name.to_string();
    let mut dn = DistinguishedName::new();
    let mut seen = Vec::new();
    for rdn in name.iter() {
        let mut attrs = rdn.iter();
        let (Some(attr), None) = (attrs.next(), attrs.next()) else {
            return Err(unsupported(
                text,
                "multi-valued or empty RDNs are not supported",
            ));
        };
        let Some(arcs) = attr.attr_type().iter() else {
            return Err(unsupported(text, "an attribute type OID is too large"));
        };
        let ty = DnType::from_oid(&arcs.collect::<Vec<_>>());
        if seen.contains(&ty) {
            return Err(unsupported(text, "an attribute type repeats"));
        }
        seen.push(ty.clone());
        let data = attr.attr_value().data;
        let utf8 = || {
            std::str::from_utf8(data).map_err(|_| unsupported(text.clone(), "a value is not UTF-8"))
        };
        let conv = |e: rcgen::Error| unsupported(text.clone(), &e.to_string());
        let value = match attr.attr_value().header.tag() {
            Tag::Utf8String => DnValue::Utf8String(utf8()?.to_owned()),
            Tag::PrintableString => DnValue::PrintableString(utf8()?.try_into().map_err(conv)?),
            Tag::Ia5String => DnValue::Ia5String(utf8()?.try_into().map_err(conv)?),
            Tag::T61String => DnValue::TeletexString(utf8()?.try_into().map_err(conv)?),
            Tag::BmpString => DnValue::BmpString(
                rcgen::string::BmpString::from_utf16be(data.to_vec()).map_err(conv)?,
            ),
            Tag::UniversalString => DnValue::UniversalString(
                rcgen::string::UniversalString::from_utf32be(data.to_vec()).map_err(conv)?,
            ),
            _ => return Err(unsupported(text, "a value has an unsupported string type")),
        };
        dn.push(ty, value);
    }
    Ok(dn)
}

/// Presents a [`Signer`] to rcgen: the raw public key bits from its SPKI, its algorithm, and
/// its signature; keeps the signer's own error for the caller.
struct SignerKey<'a> {
    signer: &'a dyn Signer,
    spki: Vec<u8>,
    raw_public_key: Vec<u8>,
    algorithm: &'static rcgen::SignatureAlgorithm,
    failure: Mutex<Option<SignError>>,
}

impl<'a> SignerKey<'a> {
    fn new(signer: &'a dyn Signer) -> Result<Self> {
        let algorithm = signer.algorithm();
        let spki = signer.public_key_spki_der();
        let bad = |reason: String| Error::SignerKey { algorithm, reason };
        let (rest, parsed) = SubjectPublicKeyInfo::from_der(&spki)
            .map_err(|e| bad(format!("not a DER SubjectPublicKeyInfo ({e})")))?;
        if !rest.is_empty() {
            return Err(bad(
                "trailing bytes after the SubjectPublicKeyInfo".to_owned()
            ));
        }
        let key = openssl::pkey::PKey::public_key_from_der(&spki)
            .map_err(|e| bad(format!("OpenSSL cannot read it ({e})")))?;
        let info = crate::pubkey::PublicKeyInfo::from_pkey(&key)?;
        let (fits, rcgen_alg) = match algorithm {
            SignatureAlgorithm::EcdsaP256Sha256 => (
                matches!(&info.kind, crate::KeyKind::Ec { curve, .. } if curve == "P-256"),
                &rcgen::PKCS_ECDSA_P256_SHA256,
            ),
            SignatureAlgorithm::EcdsaP384Sha384 => (
                matches!(&info.kind, crate::KeyKind::Ec { curve, .. } if curve == "P-384"),
                &rcgen::PKCS_ECDSA_P384_SHA384,
            ),
            SignatureAlgorithm::RsaPkcs1Sha256 => (
                matches!(info.kind, crate::KeyKind::Rsa { bits } if bits >= 2048),
                &rcgen::PKCS_RSA_SHA256,
            ),
        };
        if !fits {
            return Err(bad(format!("the key is {}", info.kind)));
        }
        Ok(Self {
            signer,
            raw_public_key: parsed.subject_public_key.data.to_vec(),
            spki,
            algorithm: rcgen_alg,
            failure: Mutex::new(None),
        })
    }

    /// Turns rcgen's error into ours, preferring the signer's own failure.
    fn map_error(&self, source: rcgen::Error, what: &'static str) -> Error {
        let failure = self.failure.lock().ok().and_then(|mut f| f.take());
        match failure {
            Some(e) => Error::Sign(e),
            None => Error::Encode { what, source },
        }
    }
}

impl rcgen::PublicKeyData for SignerKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.raw_public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm
    }
}

impl rcgen::SigningKey for SignerKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.signer.sign(msg).map_err(|e| {
            if let Ok(mut slot) = self.failure.lock() {
                *slot = Some(e);
            }
            rcgen::Error::RemoteKeyError
        })
    }
}

#[cfg(test)]
mod tests {
    //! The signing logic against `MockSigner`: no key file, no token. Where a signature must
    //! verify, the mock signs with a key generated in memory for the test.

    use std::sync::Arc;

    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use x509_parser::prelude::{FromDer, X509Certificate};

    use super::*;
    use crate::csr::Csr;
    use crate::policy::CsrPolicy;
    use crate::signer::MockSigner;

    fn p256() -> PKey<Private> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
    }

    /// A mock that reports `key`'s public half and signs with it, recording what it signed.
    fn mock_signing_with(key: PKey<Private>, signed: Arc<Mutex<Vec<Vec<u8>>>>) -> MockSigner {
        let spki = key.public_key_to_der().unwrap();
        let mut m = MockSigner::new();
        m.expect_algorithm()
            .return_const(SignatureAlgorithm::EcdsaP256Sha256);
        m.expect_public_key_spki_der().return_const(spki);
        m.expect_sign().returning(move |msg| {
            signed.lock().unwrap().push(msg.to_vec());
            let mut s = openssl::sign::Signer::new(MessageDigest::sha256(), &key).unwrap();
            s.update(msg).unwrap();
            Ok(s.sign_to_vec().unwrap())
        });
        m
    }

    fn istiod_csr(sans: &[San]) -> ReviewedCsr {
        let key = p256();
        let signer = mock_signing_with(key, Arc::default());
        let csr = create_csr(&Subject::new("Istio", "Intermediate CA"), sans, &signer).unwrap();
        Csr::parse(csr.to_pem().as_bytes())
            .unwrap()
            .review(&CsrPolicy::default(), CsrPurpose::IstiodCa)
            .unwrap()
    }

    fn tbs_of(der: &[u8]) -> Vec<u8> {
        let (_, c) = X509Certificate::from_der(der).unwrap();
        c.tbs_certificate.as_ref().to_vec()
    }

    #[test]
    fn root_is_self_signed_by_the_signer_with_the_root_profile() {
        let messages = Arc::new(Mutex::new(Vec::new()));
        let signer = mock_signing_with(p256(), messages.clone());
        let root = issue_root(&RootProfile::default(), &signer).unwrap();

        assert_eq!(root.subject(), "O=Istio, CN=Root CA");
        assert!(root.is_self_signed());
        let bc = root.basic_constraints().unwrap();
        assert!(bc.ca && bc.critical && bc.path_len.is_none());
        assert_eq!(root.key_cert_sign(), Some(true));
        assert!(root.subject_key_id().is_some());
        assert!(root.has_public_key(&signer.public_key_spki_der()));
        // exactly one signature, over the certificate's own TBS
        let messages = messages.lock().unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0], tbs_of(root.der()));
        // explicit validity, not rcgen's 1975..4096 default
        let days = (root.not_after() - root.not_before()).whole_days();
        assert_eq!(days, 3650);
        // 159-bit serial: at most 20 bytes, positive
        assert!(root.serial_bytes().len() <= 20);
        assert!(root.serial_bytes()[0] < 0x80);
    }

    #[test]
    fn istiod_ca_gets_pathlen_zero_and_the_csr_key_and_sans() {
        let root_signer = mock_signing_with(p256(), Arc::default());
        let root = issue_root(&RootProfile::default(), &root_signer).unwrap();
        let csr = istiod_csr(&[]);

        let ca = sign_istiod_ca(&csr, &root, &root_signer, &IstiodCaProfile::default()).unwrap();

        assert!(ca.is_issued_by(&root));
        assert_eq!(ca.subject(), "O=Istio, CN=Intermediate CA");
        assert_eq!(ca.issuer_der(), root.subject_der());
        assert_eq!(
            ca.basic_constraints(),
            Some(crate::BasicConstraints {
                ca: true,
                path_len: Some(0),
                critical: true
            })
        );
        assert_eq!(ca.sans(), [San::Dns(ISTIOD_DNS_NAME.to_owned())]);
        assert!(ca.has_public_key(&csr.report().public_key.spki_der));
        assert!(!ca.has_public_key(&root_signer.public_key_spki_der()));
        let (_, parsed) = X509Certificate::from_der(ca.der()).unwrap();
        assert!(parsed.extended_key_usage().unwrap().is_none(), "no EKU");
        let ku = parsed.key_usage().unwrap().unwrap();
        assert!(ku.critical);
        assert!(ku.value.key_cert_sign() && ku.value.crl_sign() && ku.value.digital_signature());
        let aki = parsed
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => Some(a),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            aki.key_identifier.as_ref().unwrap().0,
            root.subject_key_id().unwrap()
        );
        assert_eq!((ca.not_after() - ca.not_before()).whole_days(), 730);
    }

    #[test]
    fn csr_sans_are_copied() {
        let root_signer = mock_signing_with(p256(), Arc::default());
        let root = issue_root(&RootProfile::default(), &root_signer).unwrap();
        let sans = [
            San::Dns(ISTIOD_DNS_NAME.to_owned()),
            San::Uri("spiffe://cluster.local/ns/istio-system/sa/istiod".to_owned()),
        ];
        let csr = istiod_csr(&sans);
        let ca = sign_istiod_ca(&csr, &root, &root_signer, &IstiodCaProfile::default()).unwrap();
        assert_eq!(ca.sans(), sans);
    }

    #[test]
    fn a_signer_that_is_not_the_roots_key_is_refused_before_signing() {
        let root_signer = mock_signing_with(p256(), Arc::default());
        let root = issue_root(&RootProfile::default(), &root_signer).unwrap();
        let mut other = MockSigner::new();
        other
            .expect_algorithm()
            .return_const(SignatureAlgorithm::EcdsaP256Sha256);
        other
            .expect_public_key_spki_der()
            .return_const(p256().public_key_to_der().unwrap());
        other.expect_sign().times(0);

        let err = sign_istiod_ca(&istiod_csr(&[]), &root, &other, &IstiodCaProfile::default())
            .unwrap_err();
        assert!(matches!(err, Error::SignerMismatch { .. }), "{err}");
    }

    #[test]
    fn signer_failure_surfaces_as_sign_error_naming_the_key() {
        let key = p256();
        let mut m = MockSigner::new();
        m.expect_algorithm()
            .return_const(SignatureAlgorithm::EcdsaP256Sha256);
        m.expect_public_key_spki_der()
            .return_const(key.public_key_to_der().unwrap());
        m.expect_sign().times(1).returning(|_| {
            Err(SignError {
                key: "token asm-ca / key root".to_owned(),
                source: "CKR_DEVICE_REMOVED".into(),
            })
        });
        let err = issue_root(&RootProfile::default(), &m).unwrap_err();
        let Error::Sign(e) = &err else {
            panic!("expected Error::Sign, got {err:?}")
        };
        assert_eq!(e.key, "token asm-ca / key root");
    }

    #[test]
    fn a_bad_signature_from_the_signer_is_caught() {
        let key = p256();
        let mut m = MockSigner::new();
        m.expect_algorithm()
            .return_const(SignatureAlgorithm::EcdsaP256Sha256);
        m.expect_public_key_spki_der()
            .return_const(key.public_key_to_der().unwrap());
        // a well-formed ECDSA-Sig-Value (r = s = 1) that is not a signature of anything
        m.expect_sign()
            .returning(|_| Ok(vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01]));
        let err = issue_root(&RootProfile::default(), &m).unwrap_err();
        assert!(matches!(err, Error::BadSignature), "{err}");
    }

    #[test]
    fn a_signer_whose_key_does_not_fit_its_algorithm_is_refused() {
        let mut m = MockSigner::new();
        m.expect_algorithm()
            .return_const(SignatureAlgorithm::EcdsaP384Sha384);
        m.expect_public_key_spki_der()
            .return_const(p256().public_key_to_der().unwrap());
        m.expect_sign().times(0);
        let err = issue_root(&RootProfile::default(), &m).unwrap_err();
        assert!(matches!(err, Error::SignerKey { .. }), "{err}");

        let mut m = MockSigner::new();
        m.expect_algorithm()
            .return_const(SignatureAlgorithm::EcdsaP256Sha256);
        m.expect_public_key_spki_der().return_const(vec![1, 2, 3]);
        m.expect_sign().times(0);
        assert!(matches!(
            issue_root(&RootProfile::default(), &m),
            Err(Error::SignerKey { .. })
        ));
    }

    #[test]
    fn validity_beyond_the_root_is_refused_with_the_longest_that_fits() {
        let root_signer = mock_signing_with(p256(), Arc::default());
        let short_root = RootProfile {
            validity_days: 365,
            ..RootProfile::default()
        };
        let root = issue_root(&short_root, &root_signer).unwrap();
        let err = sign_istiod_ca(
            &istiod_csr(&[]),
            &root,
            &root_signer,
            &IstiodCaProfile::default(),
        )
        .unwrap_err();
        let Error::IssuerExpiresTooSoon { max_days, .. } = err else {
            panic!("expected IssuerExpiresTooSoon, got {err:?}")
        };
        assert_eq!(max_days, 364);

        let fits = IstiodCaProfile {
            validity_days: 300,
            ..IstiodCaProfile::default()
        };
        sign_istiod_ca(&istiod_csr(&[]), &root, &root_signer, &fits).unwrap();
    }

    #[test]
    fn a_leaf_or_pathlen_zero_issuer_cannot_sign_a_ca() {
        let root_signer = mock_signing_with(p256(), Arc::default());
        let root = issue_root(&RootProfile::default(), &root_signer).unwrap();
        let ca_key = p256();
        let ca_signer = mock_signing_with(ca_key, Arc::default());
        let ca_csr = create_csr(&Subject::new("Istio", "Intermediate CA"), &[], &ca_signer)
            .unwrap()
            .review(&CsrPolicy::default(), CsrPurpose::IstiodCa)
            .unwrap();
        let ca = sign_istiod_ca(&ca_csr, &root, &root_signer, &IstiodCaProfile::default()).unwrap();

        let err = sign_istiod_ca(
            &istiod_csr(&[]),
            &ca,
            &ca_signer,
            &IstiodCaProfile::default(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::IssuerNotCa { .. }), "{err}");

        // the istiod CA can issue workload leaves
        let leaf_key = p256();
        let leaf = issue_workload(
            &WorkloadProfile::new("cluster.local", "default", "sleep"),
            &leaf_key.public_key_to_der().unwrap(),
            &ca,
            &ca_signer,
        )
        .unwrap();
        assert!(leaf.is_issued_by(&ca));
        assert!(!leaf.is_ca());
        assert_eq!(
            leaf.sans(),
            [San::Uri(
                "spiffe://cluster.local/ns/default/sa/sleep".to_owned()
            )]
        );
        assert_eq!((leaf.not_after() - leaf.not_before()).whole_hours(), 24);
    }

    #[test]
    fn a_csr_reviewed_for_a_workload_cannot_become_the_istiod_ca() {
        let root_signer = mock_signing_with(p256(), Arc::default());
        let root = issue_root(&RootProfile::default(), &root_signer).unwrap();
        let signer = mock_signing_with(p256(), Arc::default());
        let csr = create_csr(&Subject::new("Istio", "x"), &[], &signer)
            .unwrap()
            .review(&CsrPolicy::default(), CsrPurpose::Workload)
            .unwrap();
        assert!(matches!(
            sign_istiod_ca(&csr, &root, &root_signer, &IstiodCaProfile::default()),
            Err(Error::InvalidProfile { field: "csr", .. })
        ));
    }
}
