//! Who may call what: the RPC catalogue (every method path the server answers), per-RPC
//! policy profiles and the peer-credential allowlist. The server's access layer
//! (`access.rs`) applies them to every call; services hold no checks of their own.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Every RPC the server answers, for policy, metrics and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Rpc {
    /// Istio GenerateKEK.
    GenerateKek,
    /// Istio GenerateDEK.
    GenerateDek,
    /// Istio GenerateSKey.
    GenerateSKey,
    /// Istio LoadSKey.
    LoadSKey,
    /// Istio AuthenticatedEncrypt.
    AuthenticatedEncrypt,
    /// Istio AuthenticatedDecrypt.
    AuthenticatedDecrypt,
    /// Istio ImportCACert.
    ImportCaCert,
    /// Istio VerifyCertChain.
    VerifyCertChain,
    /// Kubernetes KMS v2 Status.
    V2Status,
    /// Kubernetes KMS v2 Encrypt.
    V2Encrypt,
    /// Kubernetes KMS v2 Decrypt.
    V2Decrypt,
    /// Kubernetes KMS v1beta1 Version.
    V1Version,
    /// Kubernetes KMS v1beta1 Encrypt.
    V1Encrypt,
    /// Kubernetes KMS v1beta1 Decrypt.
    V1Decrypt,
    /// Signing GetPublicKey.
    GetPublicKey,
    /// Signing Sign.
    Sign,
    /// Signing CreateCsr.
    CreateCsr,
    /// Signing IssueCertificate.
    IssueCertificate,
    /// Health Check.
    HealthCheck,
    /// Health Watch.
    HealthWatch,
}

impl Rpc {
    /// Every RPC.
    pub const ALL: [Self; 20] = [
        Self::GenerateKek,
        Self::GenerateDek,
        Self::GenerateSKey,
        Self::LoadSKey,
        Self::AuthenticatedEncrypt,
        Self::AuthenticatedDecrypt,
        Self::ImportCaCert,
        Self::VerifyCertChain,
        Self::V2Status,
        Self::V2Encrypt,
        Self::V2Decrypt,
        Self::V1Version,
        Self::V1Encrypt,
        Self::V1Decrypt,
        Self::GetPublicKey,
        Self::Sign,
        Self::CreateCsr,
        Self::IssueCertificate,
        Self::HealthCheck,
        Self::HealthWatch,
    ];

    /// The name used in messages and metrics: the method name, prefixed for the Kubernetes
    /// services (`GenerateKEK`, `v2.Encrypt`, `v1beta1.Version`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GenerateKek => "GenerateKEK",
            Self::GenerateDek => "GenerateDEK",
            Self::GenerateSKey => "GenerateSKey",
            Self::LoadSKey => "LoadSKey",
            Self::AuthenticatedEncrypt => "AuthenticatedEncrypt",
            Self::AuthenticatedDecrypt => "AuthenticatedDecrypt",
            Self::ImportCaCert => "ImportCACert",
            Self::VerifyCertChain => "VerifyCertChain",
            Self::V2Status => "v2.Status",
            Self::V2Encrypt => "v2.Encrypt",
            Self::V2Decrypt => "v2.Decrypt",
            Self::V1Version => "v1beta1.Version",
            Self::V1Encrypt => "v1beta1.Encrypt",
            Self::V1Decrypt => "v1beta1.Decrypt",
            Self::GetPublicKey => "GetPublicKey",
            Self::Sign => "Sign",
            Self::CreateCsr => "CreateCsr",
            Self::IssueCertificate => "IssueCertificate",
            Self::HealthCheck => "Health.Check",
            Self::HealthWatch => "Health.Watch",
        }
    }

    /// The gRPC method path (`/package.Service/Method`) of the RPC.
    pub fn path(self) -> &'static str {
        match self {
            Self::GenerateKek => "/thalescpl.io.ekms.istio.v1.KeyManagementService/GenerateKEK",
            Self::GenerateDek => "/thalescpl.io.ekms.istio.v1.KeyManagementService/GenerateDEK",
            Self::GenerateSKey => "/thalescpl.io.ekms.istio.v1.KeyManagementService/GenerateSKey",
            Self::LoadSKey => "/thalescpl.io.ekms.istio.v1.KeyManagementService/LoadSKey",
            Self::AuthenticatedEncrypt => {
                "/thalescpl.io.ekms.istio.v1.KeyManagementService/AuthenticatedEncrypt"
            }
            Self::AuthenticatedDecrypt => {
                "/thalescpl.io.ekms.istio.v1.KeyManagementService/AuthenticatedDecrypt"
            }
            Self::ImportCaCert => "/thalescpl.io.ekms.istio.v1.KeyManagementService/ImportCACert",
            Self::VerifyCertChain => {
                "/thalescpl.io.ekms.istio.v1.KeyManagementService/VerifyCertChain"
            }
            Self::V2Status => "/v2.KeyManagementService/Status",
            Self::V2Encrypt => "/v2.KeyManagementService/Encrypt",
            Self::V2Decrypt => "/v2.KeyManagementService/Decrypt",
            Self::V1Version => "/v1beta1.KeyManagementService/Version",
            Self::V1Encrypt => "/v1beta1.KeyManagementService/Encrypt",
            Self::V1Decrypt => "/v1beta1.KeyManagementService/Decrypt",
            Self::GetPublicKey => "/meshhsm.signing.v1.SigningService/GetPublicKey",
            Self::Sign => "/meshhsm.signing.v1.SigningService/Sign",
            Self::CreateCsr => "/meshhsm.signing.v1.SigningService/CreateCsr",
            Self::IssueCertificate => "/meshhsm.signing.v1.SigningService/IssueCertificate",
            Self::HealthCheck => "/grpc.health.v1.Health/Check",
            Self::HealthWatch => "/grpc.health.v1.Health/Watch",
        }
    }

    /// The RPC of a gRPC method path; `None` for anything outside the catalogue (such a call
    /// is refused).
    pub fn from_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|rpc| rpc.path() == path)
    }

    /// True for RPCs that create long-lived keys or trust anchors on the token.
    pub fn is_administrative(self) -> bool {
        matches!(self, Self::GenerateKek | Self::ImportCaCert)
    }
}

impl fmt::Display for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which RPCs a server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// The istiod sidecar (the default): no GenerateKEK, no ImportCACert, no raw Sign (an
    /// arbitrary signature with the CA key) and no IssueCertificate of an intermediate.
    #[default]
    Sidecar,
    /// The operator's workstation server: everything.
    Admin,
}

impl Profile {
    /// Whether the profile allows `rpc`.
    pub fn allows(self, rpc: Rpc) -> bool {
        match self {
            Self::Admin => true,
            Self::Sidecar => !rpc.is_administrative() && rpc != Rpc::Sign,
        }
    }

    /// Whether the profile may issue an intermediate (IssueCertificate with purpose
    /// ISTIOD_CA: a CA:TRUE certificate under the HSM key).
    pub fn allows_ca_issuance(self) -> bool {
        matches!(self, Self::Admin)
    }

    /// The profile's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sidecar => "sidecar",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sidecar" => Ok(Self::Sidecar),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "unknown policy profile {other:?}; use sidecar or admin"
            )),
        }
    }
}

/// The credentials of the process at the other end of the socket (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
    /// Process id, when the kernel reports it.
    pub pid: Option<i32>,
}

impl fmt::Display for PeerCred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "uid {} gid {}", self.uid, self.gid)?;
        if let Some(pid) = self.pid {
            write!(f, " pid {pid}")?;
        }
        Ok(())
    }
}

/// The uids and gids allowed to call. A peer passes when its uid or its gid is listed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerAllowlist {
    any: bool,
    uids: BTreeSet<u32>,
    gids: BTreeSet<u32>,
}

impl PeerAllowlist {
    /// Only the listed uids and gids (an empty list allows nobody).
    pub fn new(uids: impl IntoIterator<Item = u32>, gids: impl IntoIterator<Item = u32>) -> Self {
        Self {
            any: false,
            uids: uids.into_iter().collect(),
            gids: gids.into_iter().collect(),
        }
    }

    /// Every peer (the socket's file mode is then the only guard).
    pub fn any() -> Self {
        Self {
            any: true,
            ..Self::default()
        }
    }

    /// Whether `peer` may call. A connection without credentials (not a Unix socket) only
    /// passes [`PeerAllowlist::any`].
    pub fn allows(&self, peer: Option<&PeerCred>) -> bool {
        if self.any {
            return true;
        }
        peer.is_some_and(|p| self.uids.contains(&p.uid) || self.gids.contains(&p.gid))
    }

    /// A short description for messages (`uids [0, 1337] gids [1337]`, `any peer`).
    pub fn describe(&self) -> String {
        if self.any {
            "any peer".to_owned()
        } else {
            format!("uids {:?} gids {:?}", self.uids, self.gids)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_refuses_only_administrative_rpcs() {
        for rpc in Rpc::ALL {
            assert!(Profile::Admin.allows(rpc), "{rpc}");
            assert_eq!(
                Profile::Sidecar.allows(rpc),
                !matches!(rpc, Rpc::GenerateKek | Rpc::ImportCaCert | Rpc::Sign),
                "{rpc}"
            );
        }
        assert!(Profile::Admin.allows_ca_issuance());
        assert!(!Profile::Sidecar.allows_ca_issuance());
        assert_eq!("admin".parse::<Profile>().unwrap(), Profile::Admin);
        assert!("root".parse::<Profile>().unwrap_err().contains("root"));
    }

    /// Every method of every service in our protos is in the catalogue, and nothing else.
    #[test]
    fn the_catalogue_covers_every_method_of_the_protos() {
        let protos = [
            include_str!("../proto/istio_v1.proto"),
            include_str!("../proto/k8s_v2.proto"),
            include_str!("../proto/k8s_v1beta1.proto"),
            include_str!("../proto/signing_v1.proto"),
            include_str!("../proto/health.proto"),
        ];
        let mut paths = BTreeSet::new();
        for proto in protos {
            let mut package = "";
            let mut service = "";
            for line in proto.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("package ") {
                    package = rest.trim_end_matches(';').trim();
                } else if let Some(rest) = line.strip_prefix("service ") {
                    service = rest.trim_end_matches('{').trim();
                } else if let Some(rest) = line.strip_prefix("rpc ") {
                    let method = rest.split('(').next().unwrap().trim();
                    paths.insert(format!("/{package}.{service}/{method}"));
                }
            }
        }
        assert_eq!(paths.len(), Rpc::ALL.len(), "{paths:?}");
        for path in &paths {
            let rpc = Rpc::from_path(path).unwrap_or_else(|| panic!("{path} is not covered"));
            assert_eq!(rpc.path(), path);
        }
        assert_eq!(Rpc::from_path("/grpc.health.v1.Health/List"), None);
        assert_eq!(
            Rpc::from_path("/meshhsm.signing.v1.SigningService/Sign/"),
            None
        );
        assert_eq!(Rpc::from_path(""), None);
    }

    #[test]
    fn allowlist_matches_uid_or_gid_and_never_a_missing_peer() {
        let list = PeerAllowlist::new([0], [1337]);
        let peer = |uid, gid| PeerCred {
            uid,
            gid,
            pid: None,
        };
        assert!(list.allows(Some(&peer(0, 5))));
        assert!(list.allows(Some(&peer(1000, 1337))));
        assert!(!list.allows(Some(&peer(1000, 1000))));
        assert!(!list.allows(None));
        assert!(PeerAllowlist::any().allows(None));
        assert!(!PeerAllowlist::default().allows(Some(&peer(0, 0))));
    }
}
