//! Names the guide uses, kept as defaults so operators who know the guide recognise them.

use std::fmt;

/// Namespace that holds Vault's token-reviewer service account (step 4).
pub const VAULT_NAMESPACE: &str = "vault";
/// ClusterRoleBinding that lets Vault call TokenReview (step 4).
pub const TOKENREVIEW_BINDING: &str = "role-tokenreview-binding";
/// `ClusterRole` bound by [`TOKENREVIEW_BINDING`].
pub const AUTH_DELEGATOR_ROLE: &str = "system:auth-delegator";
/// Control-plane namespace (step 7).
pub const ISTIO_NAMESPACE: &str = "istio-system";
/// ConfigMap holding the Vault server's CA certificate under key `cert` (step 7).
pub const VAULT_TLS_CONFIGMAP: &str = "vault-tls-cert";
/// Secret istiod writes with its encrypted CSR (step 10).
pub const CA_CSR_SECRET: &str = "istio-ca-cert-csr";
/// Secret holding the signed istiod CA chain (step 10).
pub const CA_CERT_SECRET: &str = "istio-ca-cert";
/// Key of [`CA_CERT_SECRET`] holding the chain, istiod CA first, root last (step 10).
pub const CERT_CHAIN_KEY: &str = "cert-chain.pem";
/// Data fields of [`CA_CSR_SECRET`], in the order istiod writes them (step 10).
pub const CA_CSR_FIELDS: [&str; 4] = ["kek-id", "encrypted-dek", "csr-id", "encrypted-csr"];
/// Key of [`VAULT_TLS_CONFIGMAP`] holding the Vault CA certificate (step 7).
pub const VAULT_TLS_CONFIGMAP_KEY: &str = "cert";
/// Service account Vault's reviewer token belongs to, in [`VAULT_NAMESPACE`] (step 4).
pub const VAULT_SERVICE_ACCOUNT: &str = "default";
/// Default name of the legacy `kubernetes.io/service-account-token` Secret, when one is asked
/// for instead of a TokenRequest (step 4).
pub const LEGACY_TOKEN_SECRET: &str = "vault-tokenreview-token";
/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "meshca";
/// The guide's control-plane revision (steps 8, 9, 12).
pub const DEFAULT_REVISION: &str = "asm-183-2";
/// The revisioned istiod Service of the validation webhook (step 8).
pub const ISTIOD_SERVICE: &str = "istiod";
/// Label carrying the control-plane revision (steps 8, 12).
pub const REVISION_LABEL: &str = "istio.io/rev";
/// The old injection label that must not sit beside [`REVISION_LABEL`] (step 12).
pub const INJECTION_LABEL: &str = "istio-injection";
/// Pod-template annotation `kubectl rollout restart` sets (step 12).
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";
/// The ingress gateway Service (step 13).
pub const INGRESS_GATEWAY_SERVICE: &str = "istio-ingressgateway";
/// `MetalLB`'s annotation for a requested load-balancer address (step 13).
pub const METALLB_IPS_ANNOTATION: &str = "metallb.io/loadBalancerIPs";
/// kube-vip's annotation for a requested load-balancer address (step 13).
pub const KUBE_VIP_IPS_ANNOTATION: &str = "kube-vip.io/loadbalancerIPs";

/// The per-cluster suffix of the guide (`c1`): a lowercase DNS label of at most 40 characters,
/// because it is embedded in Vault paths and Kubernetes names.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClusterSuffix(String);

/// Why a cluster suffix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid cluster suffix {suffix:?}: {reason}; use lowercase letters, digits and '-', e.g. c1"
)]
pub struct InvalidSuffix {
    /// The suffix as given.
    pub suffix: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl ClusterSuffix {
    /// Validates a suffix.
    ///
    /// # Errors
    /// [`InvalidSuffix`] naming the suffix and the rule it breaks.
    pub fn new(suffix: impl Into<String>) -> Result<Self, InvalidSuffix> {
        let suffix = suffix.into();
        let reason = if suffix.is_empty() {
            Some("it is empty")
        } else if suffix.len() > 40 {
            Some("it is longer than 40 characters")
        } else if !suffix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            Some("it has characters other than lowercase letters, digits and '-'")
        } else if suffix.starts_with('-') || suffix.ends_with('-') {
            Some("it starts or ends with '-'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(InvalidSuffix { suffix, reason }),
            None => Ok(Self(suffix)),
        }
    }

    /// The suffix text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// File holding the token-reviewer JWT (`<s>-tokenreview_jwt`).
    pub fn tokenreview_jwt_file(&self) -> String {
        format!("{}-tokenreview_jwt", self.0)
    }

    /// File holding the API server address (`<s>-k8s_addr`).
    pub fn k8s_addr_file(&self) -> String {
        format!("{}-k8s_addr", self.0)
    }

    /// File holding the API server CA certificate (`<s>-k8s_cert`).
    pub fn k8s_cert_file(&self) -> String {
        format!("{}-k8s_cert", self.0)
    }
}

impl fmt::Display for ClusterSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClusterSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::str::FromStr for ClusterSuffix {
    type Err = InvalidSuffix;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guide_suffix_gives_the_guide_file_names() {
        let s = ClusterSuffix::new("c1").unwrap();
        assert_eq!(s.tokenreview_jwt_file(), "c1-tokenreview_jwt");
        assert_eq!(s.k8s_addr_file(), "c1-k8s_addr");
        assert_eq!(s.k8s_cert_file(), "c1-k8s_cert");
    }

    #[test]
    fn suffixes_that_break_paths_or_names_are_refused() {
        for bad in ["", "C1", "c_1", "-c1", "c1-", "c1/../x", &"a".repeat(41)] {
            let err = ClusterSuffix::new(bad).unwrap_err();
            assert_eq!(err.suffix, bad);
            assert!(err.to_string().contains("e.g. c1"));
        }
    }
}
