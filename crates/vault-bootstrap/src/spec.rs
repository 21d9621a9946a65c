//! The desired Vault configuration of FLOW.md step 5, with the guide's defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

use crate::{Error, KvVersion, Result, SecretFields};

/// Field names of the HSM credential secret, as the guide writes them.
pub mod fields {
    /// The HSM client certificate (PEM).
    pub const CLIENT_CERT: &str = "clientcert";
    /// The HSM client private key (PEM).
    pub const CLIENT_KEY: &str = "clientkey";
    /// The HSM server certificate (PEM).
    pub const SERVER_CERT: &str = "servercert";
    /// The HSM partition PIN.
    pub const PIN: &str = "PIN";
    /// All four, in the order above.
    pub const ALL: [&str; 4] = [CLIENT_CERT, CLIENT_KEY, SERVER_CERT, PIN];
}

/// The guide's `max_lease_ttl` for the KV mount: 87600h (ten years).
pub const DEFAULT_MAX_LEASE_TTL: Duration = Duration::from_secs(87_600 * 3600);
/// The guide's token TTL for the `istiod` role: 768h.
pub const DEFAULT_ROLE_TTL: Duration = Duration::from_secs(768 * 3600);
/// The guide's role name.
pub const DEFAULT_ROLE: &str = "istiod";
/// The guide's service account for istiod.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "istiod-service-account";
/// The guide's istiod namespace.
pub const DEFAULT_NAMESPACE: &str = "istio-system";
/// The secret's path inside the mount.
pub const DEFAULT_SECRET_PATH: &str = "hsm";

/// Everything step 5 configures.
#[derive(Clone, Debug)]
pub struct BootstrapSpec {
    /// The KV mount.
    pub mount: MountSpec,
    /// The HSM credential secret; `None` leaves the secret alone (managed elsewhere).
    pub secret: Option<SecretSpec>,
    /// The read-only policy.
    pub policy: PolicySpec,
    /// The Kubernetes auth method, its configuration and role.
    pub auth: AuthSpec,
}

/// A KV secrets engine mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    /// Mount path (`asm-<suffix>`).
    pub path: String,
    /// KV version (the guide uses 1).
    pub kv_version: KvVersion,
    /// Tuned `max_lease_ttl`.
    pub max_lease_ttl: Duration,
}

/// The HSM credential secret.
#[derive(Clone, Debug)]
pub struct SecretSpec {
    /// Path inside the mount (`hsm`).
    pub path: String,
    /// Field values (see [`fields`]).
    pub fields: SecretFields,
}

/// The ACL policy granting `read` on the secret and nothing else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySpec {
    /// Policy name (`asm-<suffix>-hsm-policy`).
    pub name: String,
}

/// The Kubernetes auth method.
#[derive(Clone, Debug)]
pub struct AuthSpec {
    /// Auth mount path (`asm-<suffix>/hsm`, so login is at `auth/asm-<suffix>/hsm/login`).
    pub path: String,
    /// Its configuration.
    pub config: KubernetesAuthConfig,
    /// The role istiod logs in with.
    pub role: KubernetesRole,
}

/// Configuration of a Kubernetes auth mount (`auth/<path>/config`).
#[derive(Clone, Debug, Default)]
pub struct KubernetesAuthConfig {
    /// API server address as OpenBao reaches it (`https://host:port`).
    pub kubernetes_host: String,
    /// PEM CA certificate of the API server.
    pub kubernetes_ca_cert: Option<String>,
    /// JWT of the reviewer service account (`vault/default` in the guide). The server never
    /// returns it, so it is compared by presence only.
    pub token_reviewer_jwt: Option<SecretString>,
    /// Expected `iss` of service-account tokens.
    pub issuer: Option<String>,
    /// PEM public keys to verify service-account JWT signatures with (optional; TokenReview
    /// is the check otherwise).
    pub pem_keys: Vec<String>,
    /// Do not fall back to the local service-account CA and JWT (set when OpenBao runs
    /// outside the cluster without a CA or reviewer JWT).
    pub disable_local_ca_jwt: bool,
}

/// A Kubernetes auth role (`auth/<path>/role/<name>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesRole {
    /// Role name (`istiod`).
    pub name: String,
    /// Service accounts allowed to log in.
    pub bound_service_account_names: Vec<String>,
    /// Namespaces they may be in.
    pub bound_service_account_namespaces: Vec<String>,
    /// Policies of the issued token.
    pub policies: Vec<String>,
    /// Token TTL.
    pub ttl: Duration,
    /// Required JWT audience, if any.
    pub audience: Option<String>,
}

/// Paths of the four credential files the operator hands to the bootstrap. Secrets are read
/// from files, never from arguments.
#[derive(Clone, Debug)]
pub struct HsmCredentialFiles {
    /// HSM client certificate (PEM).
    pub client_cert: PathBuf,
    /// HSM client key (PEM).
    pub client_key: PathBuf,
    /// HSM server certificate (PEM).
    pub server_cert: PathBuf,
    /// File holding the partition PIN (trailing newline ignored).
    pub pin: PathBuf,
}

impl HsmCredentialFiles {
    /// Reads the four files into secret fields named as the guide names them.
    ///
    /// # Errors
    /// [`Error::ReadFile`] naming the file, [`Error::InvalidConfig`] for an empty PIN.
    pub fn read(&self) -> Result<SecretFields> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
                what,
                path: path.to_owned(),
                source,
            })
        };
        let mut out = SecretFields::new();
        out.insert(
            fields::CLIENT_CERT,
            SecretString::from(read("the HSM client certificate", &self.client_cert)?),
        );
        out.insert(
            fields::CLIENT_KEY,
            SecretString::from(read("the HSM client key", &self.client_key)?),
        );
        out.insert(
            fields::SERVER_CERT,
            SecretString::from(read("the HSM server certificate", &self.server_cert)?),
        );
        let pin = read("the HSM PIN", &self.pin)?;
        let trimmed = pin.trim_end_matches(['\n', '\r']);
        if trimmed.is_empty() {
            return Err(Error::InvalidConfig {
                field: "pin",
                reason: format!("the PIN file {} is empty", self.pin.display()),
            });
        }
        out.insert(fields::PIN, SecretString::from(trimmed.to_owned()));
        Ok(out)
    }
}

impl BootstrapSpec {
    /// The guide's configuration for cluster suffix `suffix` (e.g. `c1`): mount `asm-<s>` (KV v1,
    /// `max_lease_ttl` 87600h), secret `asm-<s>/hsm`, policy `asm-<s>-hsm-policy`, Kubernetes
    /// auth at `asm-<s>/hsm` with role `istiod` for `istio-system/istiod-service-account`,
    /// TTL 768h. Every field can be changed afterwards.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the suffix is not lowercase letters, digits and dashes.
    pub fn for_cluster(
        suffix: &str,
        kubernetes: KubernetesAuthConfig,
        secret: Option<SecretFields>,
    ) -> Result<Self> {
        let valid = !suffix.is_empty()
            && suffix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(Error::InvalidConfig {
                field: "cluster suffix",
                reason: format!("{suffix:?} must be lowercase letters, digits and dashes"),
            });
        }
        let mount = format!("asm-{suffix}");
        let policy = format!("asm-{suffix}-hsm-policy");
        Ok(Self {
            secret: secret.map(|fields| SecretSpec {
                path: DEFAULT_SECRET_PATH.to_owned(),
                fields,
            }),
            auth: AuthSpec {
                path: format!("{mount}/{DEFAULT_SECRET_PATH}"),
                config: kubernetes,
                role: KubernetesRole {
                    name: DEFAULT_ROLE.to_owned(),
                    bound_service_account_names: vec![DEFAULT_SERVICE_ACCOUNT.to_owned()],
                    bound_service_account_namespaces: vec![DEFAULT_NAMESPACE.to_owned()],
                    policies: vec![policy.clone()],
                    ttl: DEFAULT_ROLE_TTL,
                    audience: None,
                },
            },
            mount: MountSpec {
                path: mount,
                kv_version: KvVersion::V1,
                max_lease_ttl: DEFAULT_MAX_LEASE_TTL,
            },
            policy: PolicySpec { name: policy },
        })
    }

    /// Switches the mount to KV v2 (the policy then grants `read` on the `data/` path).
    #[must_use]
    pub fn with_kv_version(mut self, version: KvVersion) -> Self {
        self.mount.kv_version = version;
        self
    }

    /// The secret's path inside the mount (`hsm`).
    pub fn secret_path(&self) -> &str {
        self.secret
            .as_ref()
            .map_or(DEFAULT_SECRET_PATH, |s| s.path.as_str())
    }

    /// The policy text: `read` on exactly the secret's API path, nothing else.
    pub fn policy_rules(&self) -> String {
        policy_rules(
            &self
                .mount
                .kv_version
                .policy_path(&self.mount.path, self.secret_path()),
        )
    }

    /// The login path for this auth mount (`auth/<path>/login`), as `values.hsm.vaultAuthPath`
    /// expects it.
    pub fn login_path(&self) -> String {
        format!("auth/{}/login", self.auth.path)
    }
}

/// An HCL policy granting only `read` on `path`.
pub fn policy_rules(path: &str) -> String {
    format!("path \"{path}\" {{\n  capabilities = [\"read\"]\n}}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guide_defaults_for_a_suffix() {
        let spec = BootstrapSpec::for_cluster("c1", KubernetesAuthConfig::default(), None).unwrap();
        assert_eq!(spec.mount.path, "asm-c1");
        assert_eq!(spec.mount.kv_version, KvVersion::V1);
        assert_eq!(spec.mount.max_lease_ttl, Duration::from_secs(315_360_000));
        assert_eq!(spec.policy.name, "asm-c1-hsm-policy");
        assert_eq!(spec.auth.path, "asm-c1/hsm");
        assert_eq!(spec.login_path(), "auth/asm-c1/hsm/login");
        assert_eq!(spec.auth.role.name, "istiod");
        assert_eq!(spec.auth.role.ttl, Duration::from_secs(2_764_800));
        assert_eq!(spec.auth.role.policies, ["asm-c1-hsm-policy"]);
        assert!(spec.policy_rules().contains("path \"asm-c1/hsm\""));
        let v2 = spec.with_kv_version(KvVersion::V2);
        assert!(v2.policy_rules().contains("path \"asm-c1/data/hsm\""));
        assert!(BootstrapSpec::for_cluster("C 1", KubernetesAuthConfig::default(), None).is_err());
    }

    #[test]
    fn credentials_are_read_from_files_and_the_pin_trimmed() {
        use secrecy::ExposeSecret as _;

        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("cc"), "CC").unwrap();
        std::fs::write(p("ck"), "CK").unwrap();
        std::fs::write(p("sc"), "SC").unwrap();
        std::fs::write(p("pin"), "1234\n").unwrap();
        let files = HsmCredentialFiles {
            client_cert: p("cc"),
            client_key: p("ck"),
            server_cert: p("sc"),
            pin: p("pin"),
        };
        let f = files.read().unwrap();
        assert_eq!(f.get("PIN").unwrap().expose_secret(), "1234");
        assert_eq!(
            f.names().collect::<Vec<_>>(),
            ["PIN", "clientcert", "clientkey", "servercert"]
        );
        std::fs::remove_file(p("ck")).unwrap();
        let err = files.read().unwrap_err();
        assert!(err.to_string().contains("client key"), "{err}");
    }
}
