//! The meshca configuration file (TOML): raw serde sections with the guide's defaults, then
//! validation that names the offending field.
//!
//! Secrets never appear inline: a PIN or token is a [`SecretSource`] (`{ file = "..." }` or
//! `{ env = "NAME" }`) that the binary resolves.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The guide's revision label.
pub const DEFAULT_REVISION: &str = "asm-183-2";
/// Default label of the HSM token (slot) holding the mesh keys.
pub const DEFAULT_TOKEN_LABEL: &str = "asm-ca";
/// Default KEK id.
pub const DEFAULT_KEK_ID: &str = "asm-kek";
/// Default id of the root CA anchor on the token: `k8s-kms-plugin`'s `--ca-id` default, which
/// istiod's HSM adapter expects unless told otherwise.
pub const DEFAULT_CA_ID: &str = "1c3d30d5-dfa8-4167-a9f9-2c768464181b";

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// The cluster and the mesh revision.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// The HSM token and its objects.
    #[serde(default)]
    pub hsm: HsmConfig,
    /// The Vault (or OpenBao) server.
    #[serde(default)]
    pub vault: VaultConfig,
    /// Sidecar images for the install.
    #[serde(default)]
    pub images: ImagesConfig,
    /// The root CA.
    #[serde(default)]
    pub root_ca: RootCaConfig,
    /// Sidecar injection.
    #[serde(default)]
    pub injection: InjectionConfig,
    /// The ingress gateway's external address.
    #[serde(default)]
    pub ingress: IngressConfig,
    /// The audit log of changes.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The downloaded release and its detached signature (step 6).
    #[serde(default)]
    pub release: ReleaseConfig,
    /// The control-plane install, the CSR hand-off and the verification (steps 9-11).
    #[serde(default)]
    pub install: InstallConfig,
}

/// How step 9 installs the control plane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstallMethod {
    /// `istioctl install -y -f <rendered file>`.
    #[default]
    Istioctl,
    /// Only render `install.manifest`; the operator installs it (steps 10 and 11 then wait
    /// for an istiod to appear, and report blocked until it does).
    Manual,
}

/// Which charts the rendering targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstallFlavour {
    /// Anthos Service Mesh with its `values.hsm.*`.
    #[default]
    Asm,
    /// Upstream Istio, with an overlay that adds our sidecars to istiod.
    Upstream,
}

/// `[install]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct InstallConfig {
    /// `istioctl` or `manual`.
    pub method: InstallMethod,
    /// `asm` or `upstream`.
    pub flavour: InstallFlavour,
    /// The `IstioOperator` profile.
    pub profile: String,
    /// The `istioctl` binary; unset: looked up on `PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istioctl: Option<PathBuf>,
    /// Where the rendered `IstioOperator` is written; unset: `istio-operator.yaml` next to the
    /// configuration (manual method), or a temporary file (istioctl).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<PathBuf>,
    /// The mesh trust domain the istiod CA is signed for (step 10).
    pub trust_domain: String,
    /// How long steps 9-11 wait for istiod (pods, the CSR Secret, the CA load), in seconds.
    pub wait_seconds: u64,
    /// Directory for `cert-chain.pem`, `ca-cert.pem` and `root-cert.pem` of step 10; unset:
    /// not written (the chain is in Secret `istio-ca-cert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_dir: Option<PathBuf>,
}

impl Default for InstallConfig {
    fn default() -> Self {
        Self {
            method: InstallMethod::default(),
            flavour: InstallFlavour::default(),
            profile: crate::install::DEFAULT_PROFILE.to_owned(),
            istioctl: None,
            manifest: None,
            trust_domain: "cluster.local".to_owned(),
            wait_seconds: 300,
            out_dir: None,
        }
    }
}

/// `[release]`: step 6 checks `file` against `signature` with `public-key` (the guide's
/// `openssl dgst -sha256 -verify`); unset `file` leaves step 6 out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReleaseConfig {
    /// The downloaded archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Its detached DER ECDSA signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<PathBuf>,
    /// The release signing public key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PathBuf>,
}

/// `[audit]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuditConfig {
    /// The JSON-lines file every applied change is appended to; unset: `meshca-audit.jsonl`
    /// next to the configuration file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
}

/// Where a secret is read from; never the secret itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum SecretSource {
    /// A file (owner-only permissions), trailing whitespace trimmed.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// `[cluster]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterConfig {
    /// The suffix naming the Vault mount (`asm-<suffix>`) and the step-4 files.
    pub suffix: String,
    /// The kubeconfig; unset means `$KUBECONFIG` or `~/.kube/config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; unset means the current context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The control-plane revision.
    pub revision: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            suffix: "c1".to_owned(),
            kubeconfig: None,
            context: None,
            revision: DEFAULT_REVISION.to_owned(),
        }
    }
}

/// How the istiod CA key is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HsmMode {
    /// The guide's (Thales-compatible) mode: a software key encrypted under the KEK.
    Compat,
    /// The CA key pair is generated and used inside the HSM.
    #[default]
    HsmKey,
}

/// `[hsm]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct HsmConfig {
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// The token (slot) label.
    pub token_label: String,
    /// Where the user PIN comes from.
    pub pin: SecretSource,
    /// The KEK id.
    pub kek_id: String,
    /// The id of the root CA anchor.
    pub ca_id: String,
    /// `compat` or `hsm-key`.
    pub mode: HsmMode,
}

impl Default for HsmConfig {
    fn default() -> Self {
        Self {
            module: PathBuf::from(hsm_core::DEFAULT_SOFTHSM_MODULE),
            token_label: DEFAULT_TOKEN_LABEL.to_owned(),
            pin: SecretSource::Env("MESHCA_HSM_PIN".to_owned()),
            kek_id: DEFAULT_KEK_ID.to_owned(),
            ca_id: DEFAULT_CA_ID.to_owned(),
            mode: HsmMode::default(),
        }
    }
}

/// `[vault]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct VaultConfig {
    /// The server address.
    pub address: String,
    /// The server's CA certificate (PEM); also stored in the `vault-tls-cert` ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// Where the operator token comes from.
    pub token: SecretSource,
    /// Enterprise namespace, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// HSM client certificate (PEM) stored in the secret beside the PIN (network HSMs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsm_client_cert: Option<PathBuf>,
    /// HSM client key (PEM) stored in the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsm_client_key: Option<PathBuf>,
    /// HSM server certificate (PEM) stored in the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsm_server_cert: Option<PathBuf>,
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            address: "https://127.0.0.1:8200".to_owned(),
            ca_cert: None,
            token: SecretSource::Env("VAULT_TOKEN".to_owned()),
            namespace: None,
            hsm_client_cert: None,
            hsm_client_key: None,
            hsm_server_cert: None,
        }
    }
}

/// `[images]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ImagesConfig {
    /// `values.hsm.hsmPluginImage`.
    pub hsm_plugin_image: String,
    /// `values.hsm.vaultClientImage`.
    pub vault_client_image: String,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        Self {
            hsm_plugin_image: "registry.example/mesh-hsm/hsm-plugin:0.1.0".to_owned(),
            vault_client_image: "registry.example/mesh-hsm/vault-client:0.1.0".to_owned(),
        }
    }
}

/// Where the root CA's private key lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum RootKey {
    /// A PEM private key file.
    File(PathBuf),
    /// A key pair on the HSM token, by id.
    Hsm(String),
}

/// `[root-ca]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RootCaConfig {
    /// The root certificate (PEM), imported as a CA anchor in step 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// The root key, used to sign the istiod CA in step 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<RootKey>,
}

/// `[injection]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct InjectionConfig {
    /// Namespaces labelled with the revision (step 12).
    pub namespaces: Vec<String>,
    /// How long to wait for restarted pods to carry the revision, in seconds.
    pub wait_seconds: u64,
}

impl Default for InjectionConfig {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            wait_seconds: 300,
        }
    }
}

/// How the ingress gateway gets its external address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IngressMode {
    /// Step 13 is left out.
    #[default]
    None,
    /// The integrated load balancer: `spec.loadBalancerIP` on the gateway Service.
    Integrated,
}

/// `[ingress]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct IngressConfig {
    /// `none` or `integrated`.
    #[serde(default)]
    pub mode: IngressMode,
    /// The static external address (integrated mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
}

/// A commented configuration that parses back into [`Config`] (what `meshca init` writes).
pub const SAMPLE: &str = r#"# meshca configuration: the ASM 1.8 "on-premises with HSM and Vault" guide as settings.
# Secrets are never written here: a PIN or token is read from a file ({ file = "..." },
# owner-only permissions) or an environment variable ({ env = "NAME" }).

[cluster]
# Names the Vault mount (asm-<suffix>) and the step-4 files.
suffix = "c1"
# Unset: $KUBECONFIG, then ~/.kube/config.
# kubeconfig = "/home/operator/.kube/config"
# context = "on-prem-1"
revision = "asm-183-2"

[hsm]
# The PKCS#11 module (Luna: /usr/safenet/lunaclient/lib/libCryptoki2_64.so).
module = "/usr/lib/softhsm/libsofthsm2.so"
# The token (slot) is found by label, never by slot number.
token-label = "asm-ca"
pin = { env = "MESHCA_HSM_PIN" }
kek-id = "asm-kek"
# Id of the root CA anchor imported in step 3 (k8s-kms-plugin's default).
ca-id = "1c3d30d5-dfa8-4167-a9f9-2c768464181b"
# "hsm-key": the istiod CA key never leaves the HSM; "compat": the guide's encrypted software key.
mode = "hsm-key"

[vault]
address = "https://vault.example:8200"
# The server's CA (also stored in ConfigMap istio-system/vault-tls-cert).
# ca-cert = "/etc/meshca/vault-ca.pem"
token = { env = "VAULT_TOKEN" }
# namespace = "admin"
# Network HSM credentials stored beside the PIN in asm-<suffix>/hsm:
# hsm-client-cert = "/etc/meshca/hsm-client.pem"
# hsm-client-key = "/etc/meshca/hsm-client-key.pem"
# hsm-server-cert = "/etc/meshca/hsm-server.pem"

[images]
hsm-plugin-image = "registry.example/mesh-hsm/hsm-plugin:0.1.0"
vault-client-image = "registry.example/mesh-hsm/vault-client:0.1.0"

[root-ca]
# cert = "/etc/meshca/root-cert.pem"
# key = { file = "/etc/meshca/root-key.pem" }   # or { hsm = "asm-root-key" }

[injection]
# Namespaces labelled istio.io/rev=<revision> (their deployments are restarted).
namespaces = []
wait-seconds = 300

[ingress]
# "none" leaves step 13 out; "integrated" sets spec.loadBalancerIP on istio-ingressgateway.
mode = "none"
# ip = "10.200.0.34"

[audit]
# JSON lines (time, step, plane, object, outcome; never a secret) for every change `apply`
# makes. Unset: meshca-audit.jsonl next to this file.
# log = "/var/log/meshca/audit.jsonl"

[release]
# Step 6: the downloaded release, its signature and the signing key (all three, or none).
# file = "istio-1.8.3-asm.2-linux-amd64.tar.gz"
# signature = "istio-1.8.3-asm.2-linux-amd64.tar.gz.1.sig"
# public-key = "asm-release-key.pem"

[install]
# Step 9: "istioctl" runs `istioctl install -y -f <rendered file>`; "manual" only writes the
# file (manifest) for you to install.
method = "istioctl"
# "asm": the guide's values.hsm.*; "upstream": Istio's charts plus our sidecars as an overlay.
flavour = "asm"
profile = "asm-multicloud"
# istioctl = "/opt/istio-1.8.3-asm.2/bin/istioctl"   # unset: looked up on PATH
# manifest = "istio-operator.yaml"
# Step 10 signs the istiod CA for this trust domain; steps 9-11 wait this long for istiod.
trust-domain = "cluster.local"
wait-seconds = 300
# out-dir = "/etc/meshca/istiod-ca"   # cert-chain.pem, ca-cert.pem, root-cert.pem
"#;

/// Values from the environment or flags that override the file (defaults < file < environment
/// < flags; the binary merges the last two, clap-style).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `cluster.kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `cluster.context`.
    pub context: Option<String>,
    /// `cluster.revision`.
    pub revision: Option<String>,
    /// `vault.address`.
    pub vault_address: Option<String>,
    /// `hsm.module`.
    pub hsm_module: Option<PathBuf>,
    /// `hsm.token-label`.
    pub token_label: Option<String>,
}

impl Config {
    /// Applies `overrides` and validates the result.
    ///
    /// # Errors
    /// As [`Config::validate`], naming the overridden field when its value is wrong.
    pub fn with_overrides(mut self, overrides: Overrides) -> Result<Self> {
        if let Some(v) = overrides.kubeconfig {
            self.cluster.kubeconfig = Some(v);
        }
        if let Some(v) = overrides.context {
            self.cluster.context = Some(v);
        }
        if let Some(v) = overrides.revision {
            self.cluster.revision = v;
        }
        if let Some(v) = overrides.vault_address {
            self.vault.address = v;
        }
        if let Some(v) = overrides.hsm_module {
            self.hsm.module = v;
        }
        if let Some(v) = overrides.token_label {
            self.hsm.token_label = v;
        }
        self.validate()?;
        Ok(self)
    }

    /// Parses TOML (unknown fields are refused) and validates it; `origin` names the source in
    /// errors.
    ///
    /// # Errors
    /// [`Error::ParseConfig`] for TOML or type errors (the message names the field),
    /// [`Error::InvalidConfig`] for values that fail validation.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let config: Self = toml::from_str(text).map_err(|source| Error::ParseConfig {
            path: origin.to_owned(),
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a configuration file.
    ///
    /// # Errors
    /// [`Error::ReadFile`], then as [`Config::from_toml`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
            what: "the configuration",
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Checks every value the flow relies on.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first offending field.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field: &str, reason: String| Error::InvalidConfig {
            field: field.to_owned(),
            reason,
        };
        k8s_bootstrap::ClusterSuffix::new(self.cluster.suffix.clone())
            .map_err(|e| invalid("cluster.suffix", e.to_string()))?;
        k8s_bootstrap::control_plane::validate_revision(&self.cluster.revision)
            .map_err(|e| invalid("cluster.revision", e.to_string()))?;
        hsm_core::TokenLabel::new(self.hsm.token_label.clone())
            .map_err(|e| invalid("hsm.token-label", e.to_string()))?;
        hsm_core::KekId::new(self.hsm.kek_id.clone())
            .map_err(|e| invalid("hsm.kek-id", e.to_string()))?;
        hsm_core::CaId::new(self.hsm.ca_id.clone())
            .map_err(|e| invalid("hsm.ca-id", e.to_string()))?;
        vault_bootstrap::VaultAddr::parse(&self.vault.address)
            .map_err(|e| invalid("vault.address", e.to_string()))?;
        for (field, source) in [
            ("hsm.pin", &self.hsm.pin),
            ("vault.token", &self.vault.token),
        ] {
            match source {
                SecretSource::Env(name) if name.is_empty() || name.contains('=') => {
                    return Err(invalid(
                        field,
                        format!("{name:?} is not an environment variable name"),
                    ));
                }
                SecretSource::File(path) if path.as_os_str().is_empty() => {
                    return Err(invalid(field, "the file path is empty".to_owned()));
                }
                _ => {}
            }
        }
        for ns in &self.injection.namespaces {
            let ok = !ns.is_empty()
                && ns.len() <= 63
                && ns
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !ok {
                return Err(invalid(
                    "injection.namespaces",
                    format!("{ns:?} is not a namespace name (lowercase letters, digits, dashes)"),
                ));
            }
        }
        ca_signing::CsrPolicy::for_trust_domain(&self.install.trust_domain)
            .map_err(|e| invalid("install.trust-domain", e.to_string()))?;
        if self.install.profile.trim().is_empty() {
            return Err(invalid(
                "install.profile",
                "empty; the guide uses asm-multicloud".to_owned(),
            ));
        }
        if self.install.wait_seconds == 0 {
            return Err(invalid(
                "install.wait-seconds",
                "0 would never let istiod start; the default is 300".to_owned(),
            ));
        }
        if self.ingress.mode == IngressMode::Integrated && self.ingress.ip.is_none() {
            return Err(invalid(
                "ingress.ip",
                "integrated mode needs the static external address".to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_parses_back_with_the_guide_defaults() {
        let config = Config::from_toml(SAMPLE, Path::new("sample.toml")).unwrap();
        assert_eq!(config.cluster.revision, "asm-183-2");
        assert_eq!(config.hsm.mode, HsmMode::HsmKey);
        assert_eq!(
            config.hsm.pin,
            SecretSource::Env("MESHCA_HSM_PIN".to_owned())
        );
        assert_eq!(config.ingress.mode, IngressMode::None);
        // Everything the sample sets explicitly matches the defaults, so an empty file works too.
        let mut defaults = Config::default();
        defaults.vault.address = "https://vault.example:8200".to_owned();
        assert_eq!(config, defaults);
        let empty = Config::from_toml("", Path::new("empty.toml")).unwrap();
        assert_eq!(empty.injection.wait_seconds, 300);
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let err =
            Config::from_toml("[hsm]\ntoken-lable = \"x\"\n", Path::new("c.toml")).unwrap_err();
        let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(text.contains("token-lable"), "{text}");
        assert!(err.is_config());
    }

    #[test]
    fn invalid_values_name_the_field() {
        let cases = [
            ("[cluster]\nsuffix = \"C 1\"\n", "cluster.suffix"),
            ("[hsm]\nkek-id = \"\"\n", "hsm.kek-id"),
            ("[vault]\naddress = \"not a url\"\n", "vault.address"),
            ("[ingress]\nmode = \"integrated\"\n", "ingress.ip"),
            (
                "[install]\ntrust-domain = \"a b\"\n",
                "install.trust-domain",
            ),
            ("[install]\nwait-seconds = 0\n", "install.wait-seconds"),
            (
                "[injection]\nnamespaces = [\"Bad_NS\"]\n",
                "injection.namespaces",
            ),
        ];
        for (text, field) in cases {
            let err = Config::from_toml(text, Path::new("c.toml")).unwrap_err();
            assert!(err.to_string().contains(field), "{text}: {err}");
            assert!(err.is_config());
        }
    }

    #[test]
    fn overrides_win_over_the_file_and_are_validated() {
        let file = Config::from_toml(
            "[cluster]\nrevision = \"asm-183-1\"\n[vault]\naddress = \"https://a:8200\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let merged = file
            .clone()
            .with_overrides(Overrides {
                revision: Some("asm-183-2".into()),
                token_label: Some("other".into()),
                ..Overrides::default()
            })
            .unwrap();
        assert_eq!(merged.cluster.revision, "asm-183-2");
        assert_eq!(merged.hsm.token_label, "other");
        assert_eq!(merged.vault.address, "https://a:8200");
        let err = file
            .with_overrides(Overrides {
                vault_address: Some("nope".into()),
                ..Overrides::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("vault.address"), "{err}");
    }

    #[test]
    fn secrets_are_references_only() {
        let text = "[hsm]\npin = \"1234\"\n";
        let err = Config::from_toml(text, Path::new("c.toml")).unwrap_err();
        assert!(err.is_config());
        let ok = Config::from_toml(
            "[hsm]\npin = { file = \"/run/pin\" }\n[vault]\ntoken = { env = \"TOK\" }\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(ok.hsm.pin, SecretSource::File("/run/pin".into()));
    }
}
