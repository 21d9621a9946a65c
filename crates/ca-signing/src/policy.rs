//! The signing policy a CSR must meet before the security admin signs it.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use crate::csr::{CsrReport, San};
use crate::error::{Error, Result};
use crate::pubkey::KeyKind;

/// The DNS name istiod serves its CA under, the default SAN of the istiod CA certificate.
pub const ISTIOD_DNS_NAME: &str = "istiod.istio-system.svc";

/// What a CSR is to become; decides whether a CA request is acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CsrPurpose {
    /// The istiod intermediate CA (the only profile that may ask for CA:TRUE).
    IstiodCa,
    /// A workload leaf certificate.
    Workload,
}

impl fmt::Display for CsrPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::IstiodCa => "istiod CA",
            Self::Workload => "workload",
        })
    }
}

/// One way a CSR breaks the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "violation", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PolicyViolation {
    /// The RSA key is too short.
    WeakRsaKey {
        /// Its modulus size.
        bits: u32,
        /// The minimum.
        min_bits: u32,
    },
    /// The EC key is on a curve other than P-256 or P-384.
    CurveNotAllowed {
        /// The curve.
        curve: String,
    },
    /// The key is neither RSA nor ECDSA.
    KeyTypeNotAllowed {
        /// The key type.
        key: String,
    },
    /// The CSR is signed with a weak or unknown signature algorithm.
    SignatureAlgorithmNotAllowed {
        /// The algorithm's name or OID.
        algorithm: String,
    },
    /// A SAN is outside the allowed set.
    SanNotAllowed {
        /// The SAN, e.g. `DNS:evil.example`.
        san: String,
    },
    /// The CSR asks for a CA certificate but the purpose is not the istiod CA.
    CaNotAllowed {
        /// What the CSR was reviewed for.
        purpose: CsrPurpose,
    },
    /// The CSR asks for a CA with a path length above 0.
    PathLenTooLarge {
        /// The requested `pathLenConstraint`.
        requested: u32,
    },
}

impl fmt::Display for PolicyViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WeakRsaKey { bits, min_bits } => {
                write!(
                    f,
                    "RSA key of {bits} bits is below the minimum of {min_bits}"
                )
            }
            Self::CurveNotAllowed { curve } => {
                write!(f, "EC curve {curve} is not allowed (use P-256 or P-384)")
            }
            Self::KeyTypeNotAllowed { key } => {
                write!(f, "{key} keys are not allowed (use RSA or ECDSA)")
            }
            Self::SignatureAlgorithmNotAllowed { algorithm } => {
                write!(f, "signature algorithm {algorithm} is weak or unknown")
            }
            Self::SanNotAllowed { san } => write!(f, "SAN {san} is outside the allowed set"),
            Self::CaNotAllowed { purpose } => {
                write!(
                    f,
                    "the CSR asks for a CA certificate, which only the istiod CA profile may, not the {purpose} profile"
                )
            }
            Self::PathLenTooLarge { requested } => {
                write!(
                    f,
                    "the CSR asks for pathlen:{requested}; the istiod CA gets pathlen:0"
                )
            }
        }
    }
}

/// Which CSRs the admin signs.
///
/// Defaults: RSA of at least 2048 bits or ECDSA P-256/P-384; SHA-256 or stronger; SANs limited
/// to `DNS:istiod.istio-system.svc` and SPIFFE URIs of the trust domain (`cluster.local`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrPolicy {
    trust_domain: String,
    allowed_dns: BTreeSet<String>,
    min_rsa_bits: u32,
}

impl Default for CsrPolicy {
    fn default() -> Self {
        Self {
            trust_domain: "cluster.local".to_owned(),
            allowed_dns: BTreeSet::from([ISTIOD_DNS_NAME.to_owned()]),
            min_rsa_bits: 2048,
        }
    }
}

impl CsrPolicy {
    /// The default policy for a mesh whose trust domain is `trust_domain`.
    ///
    /// # Errors
    /// [`Error::InvalidProfile`] when the trust domain is not a DNS-like name.
    pub fn for_trust_domain(trust_domain: &str) -> Result<Self> {
        validate_trust_domain(trust_domain)?;
        Ok(Self {
            trust_domain: trust_domain.to_ascii_lowercase(),
            ..Self::default()
        })
    }

    /// Also allows `DNS:<name>` (for example a revision-specific istiod service).
    #[must_use]
    pub fn allow_dns_name(mut self, name: &str) -> Self {
        self.allowed_dns.insert(name.to_ascii_lowercase());
        self
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The allowed DNS names.
    pub fn allowed_dns_names(&self) -> impl Iterator<Item = &str> {
        self.allowed_dns.iter().map(String::as_str)
    }

    /// Every way `report` breaks this policy for `purpose` (empty when it passes).
    pub fn check(&self, report: &CsrReport, purpose: CsrPurpose) -> Vec<PolicyViolation> {
        let mut out = Vec::new();
        match &report.public_key.kind {
            KeyKind::Rsa { bits } if *bits < self.min_rsa_bits => {
                out.push(PolicyViolation::WeakRsaKey {
                    bits: *bits,
                    min_bits: self.min_rsa_bits,
                });
            }
            KeyKind::Ec { curve, .. } if curve != "P-256" && curve != "P-384" => {
                out.push(PolicyViolation::CurveNotAllowed {
                    curve: curve.clone(),
                });
            }
            KeyKind::Other { name, .. } => {
                out.push(PolicyViolation::KeyTypeNotAllowed { key: name.clone() });
            }
            KeyKind::Rsa { .. } | KeyKind::Ec { .. } => {}
        }
        if !is_strong_signature_oid(&report.signature_algorithm_oid) {
            out.push(PolicyViolation::SignatureAlgorithmNotAllowed {
                algorithm: report.signature_algorithm.clone(),
            });
        }
        for san in &report.sans {
            if !self.san_allowed(san) {
                out.push(PolicyViolation::SanNotAllowed {
                    san: san.to_string(),
                });
            }
        }
        if let Some(bc) = &report.requested_basic_constraints
            && bc.ca
        {
            match purpose {
                CsrPurpose::IstiodCa => {
                    // An absent pathLenConstraint is fine: the profile imposes pathlen:0.
                    if let Some(n) = bc.path_len
                        && n > 0
                    {
                        out.push(PolicyViolation::PathLenTooLarge { requested: n });
                    }
                }
                CsrPurpose::Workload => out.push(PolicyViolation::CaNotAllowed { purpose }),
            }
        }
        out
    }

    /// Checks `report` and fails with every violation found.
    ///
    /// # Errors
    /// [`Error::PolicyRejected`] listing the violations.
    pub fn enforce(&self, report: &CsrReport, purpose: CsrPurpose) -> Result<()> {
        let violations = self.check(report, purpose);
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Error::PolicyRejected { violations })
        }
    }

    fn san_allowed(&self, san: &San) -> bool {
        match san {
            San::Dns(name) => self.allowed_dns.contains(&name.to_ascii_lowercase()),
            San::Uri(uri) => {
                let Some(rest) = uri.strip_prefix("spiffe://") else {
                    return false;
                };
                let domain = rest.split('/').next().unwrap_or_default();
                domain.eq_ignore_ascii_case(&self.trust_domain)
            }
            San::Ip(_) | San::Email(_) | San::Other(_) => false,
        }
    }
}

/// Checks a trust domain is a lower-case DNS-like name, as SPIFFE requires.
pub(crate) fn validate_trust_domain(trust_domain: &str) -> Result<()> {
    let ok = !trust_domain.is_empty()
        && trust_domain.len() <= 255
        && trust_domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidProfile {
            field: "trust_domain",
            reason: format!(
                "`{trust_domain}` is not a trust domain; use letters, digits, `.`, `-` and `_` (e.g. cluster.local)"
            ),
        })
    }
}

/// Signature algorithms accepted on a CSR: RSA PKCS#1 v1.5 and ECDSA with SHA-256 or stronger.
fn is_strong_signature_oid(oid: &str) -> bool {
    matches!(
        oid,
        "1.2.840.113549.1.1.11" // sha256WithRSAEncryption
            | "1.2.840.113549.1.1.12" // sha384WithRSAEncryption
            | "1.2.840.113549.1.1.13" // sha512WithRSAEncryption
            | "1.2.840.10045.4.3.2" // ecdsa-with-SHA256
            | "1.2.840.10045.4.3.3" // ecdsa-with-SHA384
            | "1.2.840.10045.4.3.4" // ecdsa-with-SHA512
    )
}

/// A readable name for a signature algorithm OID.
pub(crate) fn signature_algorithm_name(oid: &str) -> String {
    match oid {
        "1.2.840.113549.1.1.4" => "md5WithRSAEncryption".to_owned(),
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption".to_owned(),
        "1.2.840.113549.1.1.10" => "RSASSA-PSS".to_owned(),
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption".to_owned(),
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption".to_owned(),
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption".to_owned(),
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1".to_owned(),
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256".to_owned(),
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384".to_owned(),
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512".to_owned(),
        "1.3.101.112" => "Ed25519".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csr::RequestedBasicConstraints;
    use crate::pubkey::PublicKeyInfo;

    fn report(kind: KeyKind, sans: Vec<San>, bc: Option<RequestedBasicConstraints>) -> CsrReport {
        CsrReport {
            subject: "O=Istio, CN=Intermediate CA".to_owned(),
            sans,
            public_key: PublicKeyInfo {
                kind,
                sha256_fingerprint: String::new(),
                spki_der: Vec::new(),
            },
            signature_algorithm: "ecdsa-with-SHA256".to_owned(),
            signature_algorithm_oid: "1.2.840.10045.4.3.2".to_owned(),
            requested_extensions: Vec::new(),
            requested_basic_constraints: bc,
        }
    }

    fn ec(curve: &str) -> KeyKind {
        KeyKind::Ec {
            curve: curve.to_owned(),
            bits: 256,
        }
    }

    #[test]
    fn default_policy_allows_istiod_dns_and_trust_domain_spiffe_ids_only() {
        let policy = CsrPolicy::for_trust_domain("mesh.example").unwrap();
        let ok = report(
            ec("P-256"),
            vec![
                San::Dns("istiod.istio-system.svc".to_owned()),
                San::Uri("spiffe://mesh.example/ns/istio-system/sa/istiod".to_owned()),
            ],
            None,
        );
        assert!(policy.check(&ok, CsrPurpose::IstiodCa).is_empty());

        let bad = report(
            ec("P-256"),
            vec![
                San::Uri("spiffe://cluster.local/ns/istio-system/sa/istiod".to_owned()),
                San::Uri("spiffe://mesh.example.evil/ns/a/sa/b".to_owned()),
                San::Ip("10.0.0.1".parse().unwrap()),
            ],
            None,
        );
        assert_eq!(policy.check(&bad, CsrPurpose::IstiodCa).len(), 3);

        let extra = policy.allow_dns_name("istiod-canary.istio-system.svc");
        let canary = report(
            ec("P-384"),
            vec![San::Dns("istiod-canary.istio-system.svc".to_owned())],
            None,
        );
        assert!(extra.check(&canary, CsrPurpose::IstiodCa).is_empty());
    }

    #[test]
    fn keys_outside_rsa_2048_and_p256_p384_are_refused() {
        let policy = CsrPolicy::default();
        for (kind, ok) in [
            (KeyKind::Rsa { bits: 2048 }, true),
            (KeyKind::Rsa { bits: 4096 }, true),
            (KeyKind::Rsa { bits: 1024 }, false),
            (ec("P-256"), true),
            (ec("P-384"), true),
            (ec("P-521"), false),
            (
                KeyKind::Other {
                    name: "ED25519".to_owned(),
                    bits: 256,
                },
                false,
            ),
        ] {
            let v = policy.check(&report(kind.clone(), vec![], None), CsrPurpose::IstiodCa);
            assert_eq!(v.is_empty(), ok, "{kind}: {v:?}");
        }
    }

    #[test]
    fn only_the_istiod_ca_profile_may_request_a_ca_and_only_with_pathlen_zero() {
        let policy = CsrPolicy::default();
        let ca = |path_len| {
            report(
                ec("P-256"),
                vec![],
                Some(RequestedBasicConstraints { ca: true, path_len }),
            )
        };
        assert!(policy.check(&ca(None), CsrPurpose::IstiodCa).is_empty());
        assert!(policy.check(&ca(Some(0)), CsrPurpose::IstiodCa).is_empty());
        assert_eq!(
            policy.check(&ca(Some(2)), CsrPurpose::IstiodCa),
            [PolicyViolation::PathLenTooLarge { requested: 2 }]
        );
        assert_eq!(
            policy.check(&ca(None), CsrPurpose::Workload),
            [PolicyViolation::CaNotAllowed {
                purpose: CsrPurpose::Workload
            }]
        );
        let err = policy
            .enforce(&ca(Some(2)), CsrPurpose::IstiodCa)
            .unwrap_err();
        assert!(err.to_string().contains("pathlen:2"), "{err}");
    }

    #[test]
    fn trust_domains_are_validated() {
        assert!(CsrPolicy::for_trust_domain("cluster.local").is_ok());
        assert!(CsrPolicy::for_trust_domain("").is_err());
        assert!(CsrPolicy::for_trust_domain("evil/../x").is_err());
    }
}
