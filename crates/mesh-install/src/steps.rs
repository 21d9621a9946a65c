//! The guide's steps, in order.

use serde::Serialize;

/// One step of the guide (FLOW.md numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// 0: pre-flight checks.
    Prerequisites,
    /// 1: HSM credentials and slot.
    HsmSlot,
    /// 2: key-encryption key.
    Kek,
    /// 3: root certificate import.
    RootImport,
    /// 4: Kubernetes objects for Vault's TokenReview.
    VaultKubeAuth,
    /// 5: Vault configuration for the HSM credentials.
    VaultSetup,
    /// 6: release download and signature check.
    Download,
    /// 7: control-plane namespace and Vault CA ConfigMap.
    ControlPlaneResources,
    /// 8: the istiod validation-webhook Service.
    WebhookService,
    /// 9: control-plane install.
    Install,
    /// 10: istiod CA signing.
    SignCa,
    /// 11: verification.
    Verify,
    /// 12: sidecar injection.
    Injection,
    /// 13: ingress external IP.
    ExternalIp,
}

impl Step {
    /// Every step, in the guide's order.
    pub const ALL: [Self; 14] = [
        Self::Prerequisites,
        Self::HsmSlot,
        Self::Kek,
        Self::RootImport,
        Self::VaultKubeAuth,
        Self::VaultSetup,
        Self::Download,
        Self::ControlPlaneResources,
        Self::WebhookService,
        Self::Install,
        Self::SignCa,
        Self::Verify,
        Self::Injection,
        Self::ExternalIp,
    ];

    /// The guide's step number.
    pub fn number(self) -> u8 {
        match self {
            Self::Prerequisites => 0,
            Self::HsmSlot => 1,
            Self::Kek => 2,
            Self::RootImport => 3,
            Self::VaultKubeAuth => 4,
            Self::VaultSetup => 5,
            Self::Download => 6,
            Self::ControlPlaneResources => 7,
            Self::WebhookService => 8,
            Self::Install => 9,
            Self::SignCa => 10,
            Self::Verify => 11,
            Self::Injection => 12,
            Self::ExternalIp => 13,
        }
    }

    /// The step with this number.
    pub fn from_number(number: u8) -> Option<Self> {
        Self::ALL.get(usize::from(number)).copied()
    }

    /// One-line description.
    pub fn title(self) -> &'static str {
        match self {
            Self::Prerequisites => "pre-flight checks",
            Self::HsmSlot => "HSM credentials and token",
            Self::Kek => "key-encryption key in the HSM",
            Self::RootImport => "root CA certificate into the HSM",
            Self::VaultKubeAuth => "Kubernetes objects for Vault's TokenReview",
            Self::VaultSetup => "Vault: HSM credentials, policy, Kubernetes auth",
            Self::Download => "release download and signature check",
            Self::ControlPlaneResources => "istio-system and the Vault CA ConfigMap",
            Self::WebhookService => "istiod validation-webhook Service",
            Self::Install => "control-plane install with HSM values",
            Self::SignCa => "sign the istiod CA with the root",
            Self::Verify => "verify the control plane and the chain",
            Self::Injection => "sidecar injection by revision",
            Self::ExternalIp => "ingress external IP",
        }
    }

    /// The crate that owns the step.
    pub fn owner(self) -> &'static str {
        match self {
            Self::Prerequisites | Self::Download | Self::Install | Self::Verify => "mesh-install",
            Self::HsmSlot | Self::Kek | Self::RootImport => "hsm-core",
            Self::VaultKubeAuth
            | Self::ControlPlaneResources
            | Self::WebhookService
            | Self::Injection
            | Self::ExternalIp => "k8s-bootstrap",
            Self::VaultSetup => "vault-bootstrap",
            Self::SignCa => "ca-signing",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {:>2}: {}", self.number(), self.title())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_numbered_in_guide_order() {
        for (i, step) in Step::ALL.iter().enumerate() {
            assert_eq!(usize::from(step.number()), i);
            assert_eq!(Step::from_number(step.number()), Some(*step));
        }
        assert_eq!(Step::from_number(14), None);
    }

    #[test]
    fn steps_serialise_as_kebab_case_names() {
        let json = serde_json::to_string(&Step::VaultKubeAuth).unwrap();
        assert_eq!(json, "\"vault-kube-auth\"");
    }
}
