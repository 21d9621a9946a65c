//! Certificate profiles: the root, the istiod intermediate CA and workload leaves.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::csr::San;
use crate::error::{Error, Result};
use crate::policy::validate_trust_domain;

/// A subject distinguished name, written in this order: C, O, OU, L, CN.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Subject {
    /// `C`.
    #[serde(default)]
    pub country: Option<String>,
    /// `O`.
    #[serde(default)]
    pub organization: Option<String>,
    /// `OU`.
    #[serde(default)]
    pub organizational_unit: Option<String>,
    /// `L` (Istio's tooling puts the cluster name here).
    #[serde(default)]
    pub locality: Option<String>,
    /// `CN`.
    pub common_name: String,
}

impl Subject {
    /// `O=<organization>, CN=<common_name>`.
    pub fn new(organization: &str, common_name: &str) -> Self {
        Self {
            organization: Some(organization.to_owned()),
            common_name: common_name.to_owned(),
            ..Self::default()
        }
    }

    pub(crate) fn to_rcgen(&self) -> Result<rcgen::DistinguishedName> {
        if self.common_name.trim().is_empty() {
            return Err(Error::InvalidProfile {
                field: "subject.common_name",
                reason: "the common name is empty".to_owned(),
            });
        }
        let mut dn = rcgen::DistinguishedName::new();
        let parts = [
            (rcgen::DnType::CountryName, &self.country),
            (rcgen::DnType::OrganizationName, &self.organization),
            (
                rcgen::DnType::OrganizationalUnitName,
                &self.organizational_unit,
            ),
            (rcgen::DnType::LocalityName, &self.locality),
        ];
        for (ty, value) in parts {
            if let Some(v) = value {
                dn.push(ty, rcgen::DnValue::Utf8String(v.clone()));
            }
        }
        dn.push(
            rcgen::DnType::CommonName,
            rcgen::DnValue::Utf8String(self.common_name.clone()),
        );
        Ok(dn)
    }
}

/// Key algorithms for generated software keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// ECDSA P-256.
    EcdsaP256,
    /// ECDSA P-384 (the root's default).
    #[default]
    EcdsaP384,
    /// RSA 2048.
    Rsa2048,
    /// RSA 3072.
    Rsa3072,
    /// RSA 4096 (Istio's tooling default).
    Rsa4096,
}

/// The self-signed root: CA:TRUE (critical), keyUsage keyCertSign + cRLSign (critical), SKI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RootProfile {
    /// Subject (= issuer).
    pub subject: Subject,
    /// Validity in days from now.
    pub validity_days: u32,
    /// Key algorithm when the root key is generated (an existing key keeps its own).
    pub key_algorithm: KeyAlgorithm,
}

impl Default for RootProfile {
    fn default() -> Self {
        Self {
            subject: Subject::new("Istio", "Root CA"),
            validity_days: 3650,
            key_algorithm: KeyAlgorithm::EcdsaP384,
        }
    }
}

impl RootProfile {
    /// Checks the values are in range.
    ///
    /// # Errors
    /// [`Error::InvalidProfile`].
    pub fn validate(&self) -> Result<()> {
        check_days("validity_days", self.validity_days, 1, 36_500)
    }
}

/// The istiod intermediate CA: CA:TRUE pathlen:0 (critical), keyUsage keyCertSign + cRLSign +
/// digitalSignature (critical), SKI + AKI, a SAN, no EKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IstiodCaProfile {
    /// Validity in days from now; never beyond the root's end of validity.
    pub validity_days: u32,
    /// Subject; `None` copies the CSR's subject.
    #[serde(default)]
    pub subject: Option<Subject>,
    /// SANs; empty copies the CSR's, and a CSR without SANs gets `DNS:istiod.istio-system.svc`.
    #[serde(default, skip)]
    pub sans: Vec<San>,
}

impl Default for IstiodCaProfile {
    fn default() -> Self {
        Self {
            validity_days: 730,
            subject: None,
            sans: Vec::new(),
        }
    }
}

impl IstiodCaProfile {
    /// Checks the values are in range.
    ///
    /// # Errors
    /// [`Error::InvalidProfile`].
    pub fn validate(&self) -> Result<()> {
        check_days("validity_days", self.validity_days, 1, 3650)
    }
}

/// A workload leaf, as istiod issues them: URI SAN `spiffe://<td>/ns/<ns>/sa/<sa>`,
/// EKU serverAuth + clientAuth, CA:FALSE, a short lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadProfile {
    /// Trust domain.
    pub trust_domain: String,
    /// Namespace.
    pub namespace: String,
    /// Service account.
    pub service_account: String,
    /// Lifetime (default 24 hours, at most 90 days).
    pub ttl: Duration,
}

impl WorkloadProfile {
    /// A 24-hour workload certificate for `ns`/`sa` in `trust_domain`.
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
            ttl: Duration::from_secs(24 * 3600),
        }
    }

    /// The SPIFFE ID.
    pub fn spiffe_id(&self) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }

    /// Checks the values are in range.
    ///
    /// # Errors
    /// [`Error::InvalidProfile`].
    pub fn validate(&self) -> Result<()> {
        validate_trust_domain(&self.trust_domain)?;
        for (field, v) in [
            ("namespace", &self.namespace),
            ("service_account", &self.service_account),
        ] {
            let ok = !v.is_empty()
                && v.len() <= 253
                && v.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.')
                });
            if !ok {
                return Err(Error::InvalidProfile {
                    field,
                    reason: format!("`{v}` is not a Kubernetes name"),
                });
            }
        }
        if self.ttl < Duration::from_secs(60) || self.ttl > Duration::from_secs(90 * 86_400) {
            return Err(Error::InvalidProfile {
                field: "ttl",
                reason: format!("{:?} is outside 1 minute to 90 days", self.ttl),
            });
        }
        Ok(())
    }
}

fn check_days(field: &'static str, days: u32, min: u32, max: u32) -> Result<()> {
    if (min..=max).contains(&days) {
        Ok(())
    } else {
        Err(Error::InvalidProfile {
            field,
            reason: format!("{days} days is outside {min} to {max}"),
        })
    }
}
