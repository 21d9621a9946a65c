//! Step 4: what Vault's Kubernetes auth method needs from the cluster.
//!
//! Namespace `vault`; ClusterRoleBinding `role-tokenreview-binding` of `system:auth-delegator` to
//! `vault/default`; a reviewer JWT for that account (TokenRequest, or a legacy
//! `kubernetes.io/service-account-token` Secret when asked); the API server address and CA from
//! the kubeconfig. The three values are written as `<s>-tokenreview_jwt`, `<s>-k8s_addr` and
//! `<s>-k8s_cert` (0600, atomically), or returned to the caller.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use kube::config::Kubeconfig;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};

use crate::control_plane::{ensure_in_namespace, namespace};
use crate::files::ensure_secret_file;
use crate::names::{
    AUTH_DELEGATOR_ROLE, LEGACY_TOKEN_SECRET, TOKENREVIEW_BINDING, VAULT_NAMESPACE,
    VAULT_SERVICE_ACCOUNT,
};
use crate::plan::ensure_object;
use crate::port::{Kind, Kube, ObjectRef, TokenSpec};
use crate::wait::{Progress, WaitOptions, poll_until};
use crate::{CertificatePem, ClusterSuffix, Error, Mode, Outcome, Report, Result};

/// How the reviewer JWT is obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReviewerToken {
    /// The TokenRequest API (no Secret stored in the cluster).
    TokenRequest {
        /// Audiences; empty means the API server's own, which is what TokenReview accepts.
        audiences: Vec<String>,
        /// Requested lifetime; the API server may shorten it. A stored token is reused while
        /// more than half of this remains.
        expiration: Duration,
    },
    /// A `kubernetes.io/service-account-token` Secret of this name in `vault`, filled by the
    /// token controller (the pre-1.24 behaviour the guide relies on).
    LegacySecret {
        /// The Secret's name.
        name: String,
    },
}

impl Default for ReviewerToken {
    /// TokenRequest with the server's audiences, for one year.
    fn default() -> Self {
        Self::TokenRequest {
            audiences: Vec::new(),
            expiration: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

impl ReviewerToken {
    /// A legacy token Secret with the default name.
    pub fn legacy() -> Self {
        Self::LegacySecret {
            name: LEGACY_TOKEN_SECRET.to_owned(),
        }
    }
}

/// Where the three values go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Write `<s>-tokenreview_jwt`, `<s>-k8s_addr`, `<s>-k8s_cert` in this directory.
    Files(PathBuf),
    /// Return them in [`VaultAuthReport::material`].
    Return,
}

/// What step 4 should do.
#[derive(Clone, Debug)]
pub struct VaultAuthSpec {
    /// The cluster suffix that names the files.
    pub suffix: ClusterSuffix,
    /// How to get the reviewer JWT.
    pub token: ReviewerToken,
    /// Where the values go.
    pub output: Output,
    /// How long to wait for the service account to exist and a legacy Secret to be filled.
    pub wait: WaitOptions,
}

impl VaultAuthSpec {
    /// TokenRequest, files in `dir`, default waits.
    pub fn files(suffix: ClusterSuffix, dir: impl Into<PathBuf>) -> Self {
        Self {
            suffix,
            token: ReviewerToken::default(),
            output: Output::Files(dir.into()),
            wait: WaitOptions {
                timeout: Duration::from_secs(60),
                interval: Duration::from_millis(500),
            },
        }
    }
}

/// The API server address and CA certificate Vault uses to call TokenReview.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterEndpoint {
    /// The server URL (`https://10.0.0.1:443`).
    pub addr: String,
    /// The CA certificate(s), validated.
    pub ca: CertificatePem,
}

impl ClusterEndpoint {
    /// Reads the server and CA of `context` (or the current context) from a kubeconfig: the
    /// CA comes from `certificate-authority-data` or the `certificate-authority` file.
    ///
    /// # Errors
    /// [`Error::Kubeconfig`] naming what is missing; [`Error::InvalidCertificate`] for a CA
    /// that is not PEM certificates.
    pub fn from_kubeconfig(kubeconfig: &Kubeconfig, context: Option<&str>) -> Result<Self> {
        let missing = |detail: String| Error::Kubeconfig { detail };
        let context_name = context
            .map(str::to_owned)
            .or_else(|| kubeconfig.current_context.clone())
            .ok_or_else(|| missing("no current-context; pass a context name".into()))?;
        let cluster_name = kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == context_name)
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .ok_or_else(|| missing(format!("context {context_name:?} not found")))?;
        let cluster = kubeconfig
            .clusters
            .iter()
            .find(|c| c.name == cluster_name)
            .and_then(|c| c.cluster.as_ref())
            .ok_or_else(|| missing(format!("cluster {cluster_name:?} not found")))?;
        let addr = cluster
            .server
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing(format!("cluster {cluster_name:?} has no server")))?;
        let what = format!("the CA of cluster {cluster_name:?} in the kubeconfig");
        let ca = if let Some(data) = &cluster.certificate_authority_data {
            let bytes = STANDARD
                .decode(data.trim())
                .map_err(|e| Error::InvalidCertificate {
                    what: what.clone(),
                    reason: format!("certificate-authority-data is not base64 ({e})"),
                })?;
            CertificatePem::parse(bytes, &what)?
        } else if let Some(path) = &cluster.certificate_authority {
            CertificatePem::from_file(std::path::Path::new(path))?
        } else {
            return Err(missing(format!(
                "cluster {cluster_name:?} has no certificate-authority(-data); Vault needs the CA to call TokenReview"
            )));
        };
        Ok(Self { addr, ca })
    }
}

/// The values Vault's Kubernetes auth configuration takes.
#[derive(Clone, Debug)]
pub struct VaultAuthMaterial {
    /// `token_reviewer_jwt`.
    pub token_reviewer_jwt: SecretString,
    /// `kubernetes_host`.
    pub kubernetes_host: String,
    /// `kubernetes_ca_cert`.
    pub kubernetes_ca_cert: CertificatePem,
}

/// The result of [`prepare_vault_auth`].
#[derive(Clone, Debug)]
pub struct VaultAuthReport {
    /// What was done to the cluster and the files.
    pub report: Report,
    /// The values, under [`Output::Return`] (absent in a dry run, where no token is issued).
    pub material: Option<VaultAuthMaterial>,
}

/// The step 4 ClusterRoleBinding.
pub fn tokenreview_binding() -> (ObjectRef, Value) {
    let object = ObjectRef::cluster(Kind::ClusterRoleBinding, TOKENREVIEW_BINDING);
    let mut manifest = object.manifest_skeleton();
    manifest["roleRef"] = json!({
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": AUTH_DELEGATOR_ROLE,
    });
    manifest["subjects"] = json!([{
        "kind": "ServiceAccount",
        "name": VAULT_SERVICE_ACCOUNT,
        "namespace": VAULT_NAMESPACE,
    }]);
    (object, manifest)
}

/// The legacy token Secret `vault/<name>` for `vault/default`.
pub fn legacy_token_secret(name: &str) -> (ObjectRef, Value) {
    let object = ObjectRef::namespaced(Kind::Secret, VAULT_NAMESPACE, name);
    let mut manifest = object.manifest_skeleton();
    manifest["metadata"]["annotations"] =
        json!({ "kubernetes.io/service-account.name": VAULT_SERVICE_ACCOUNT });
    manifest["type"] = json!("kubernetes.io/service-account-token");
    (object, manifest)
}

/// Makes the binding exist; its `roleRef` is immutable, so a binding of another role is a
/// conflict rather than something to overwrite.
async fn ensure_binding(kube: &dyn Kube, mode: Mode) -> Result<Outcome> {
    let (object, manifest) = tokenreview_binding();
    if let Some(live) = kube.get(&object).await?
        && live.get("roleRef") != manifest.get("roleRef")
        && live
            .pointer("/roleRef/name")
            .is_some_and(|n| n != AUTH_DELEGATOR_ROLE)
    {
        return Err(Error::Conflict {
            object: object.to_string(),
            detail: format!(
                "it binds {} instead of {AUTH_DELEGATOR_ROLE} and roleRef cannot change; delete it (kubectl delete clusterrolebinding {TOKENREVIEW_BINDING}) and run again",
                live.pointer("/roleRef/name").unwrap_or(&Value::Null)
            ),
        });
    }
    ensure_object(kube, &object, &manifest, mode).await
}

/// The claims of a JWT payload, read without verifying the signature (only to decide whether
/// a stored token can be kept).
fn jwt_claims(token: &str) -> Option<Value> {
    let payload = token.trim().split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// True when `token` (a stored reviewer JWT) is for `vault/default`, carries the requested
/// audiences and stays valid for more than half of `expiration` after `now`.
pub fn reusable_token(token: &str, audiences: &[String], expiration: Duration, now: i64) -> bool {
    let Some(claims) = jwt_claims(token) else {
        return false;
    };
    let subject = format!("system:serviceaccount:{VAULT_NAMESPACE}:{VAULT_SERVICE_ACCOUNT}");
    if claims.get("sub").and_then(Value::as_str) != Some(subject.as_str()) {
        return false;
    }
    let token_audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences
        .iter()
        .all(|a| token_audiences.contains(&a.as_str()))
    {
        return false;
    }
    let half = i64::try_from(expiration.as_secs() / 2).unwrap_or(i64::MAX);
    claims
        .get("exp")
        .and_then(Value::as_i64)
        .is_some_and(|exp| exp > now.saturating_add(half))
}

async fn wait_for_service_account(kube: &dyn Kube, wait: WaitOptions) -> Result<()> {
    let account =
        ObjectRef::namespaced(Kind::ServiceAccount, VAULT_NAMESPACE, VAULT_SERVICE_ACCOUNT);
    let what = format!("{account} (the service account controller creates it)");
    poll_until(&what, wait, &mut |_| {}, || async {
        let exists = kube.get(&account).await?.is_some();
        Ok(Progress {
            ready: usize::from(exists),
            total: 1,
            pending: if exists {
                vec![]
            } else {
                vec![account.to_string()]
            },
        })
    })
    .await
    .map(drop)
}

/// Reads `data.token` of a legacy token Secret, if the controller has filled it.
fn legacy_token(secret: &Value) -> Option<SecretString> {
    let data = secret.pointer("/data/token")?.as_str()?;
    let bytes = STANDARD.decode(data).ok()?;
    let token = String::from_utf8(bytes).ok()?;
    (!token.is_empty()).then(|| SecretString::from(token))
}

async fn wait_for_legacy_token(
    kube: &dyn Kube,
    secret: &ObjectRef,
    wait: WaitOptions,
) -> Result<SecretString> {
    let what = format!("the token controller to fill {secret}");
    let slot = std::sync::Mutex::new(None);
    poll_until(&what, wait, &mut |_| {}, || async {
        let token = kube.get(secret).await?.as_ref().and_then(legacy_token);
        let ready = token.is_some();
        if let Ok(mut guard) = slot.lock() {
            *guard = token;
        }
        Ok(Progress {
            ready: usize::from(ready),
            total: 1,
            pending: if ready {
                vec![]
            } else {
                vec![secret.to_string()]
            },
        })
    })
    .await?;
    slot.into_inner()
        .ok()
        .flatten()
        .ok_or_else(|| Error::Protocol {
            verb: crate::Verb::Get,
            resource: secret.to_string(),
            detail: "the token vanished while waiting".into(),
        })
}

/// Step 4: prepares the cluster for Vault's Kubernetes auth and writes or returns the reviewer
/// JWT, the API server address and its CA.
///
/// With [`ReviewerToken::TokenRequest`] and file output, a stored JWT is kept while it is for
/// `vault/default`, has the requested audiences and more than half its lifetime left, so a
/// second run changes nothing. In a dry run no token is issued and no file written.
pub async fn prepare_vault_auth(
    kube: &dyn Kube,
    spec: &VaultAuthSpec,
    endpoint: &ClusterEndpoint,
    mode: Mode,
) -> Result<VaultAuthReport> {
    let mut report = Report::new(mode);
    let (ns, ns_manifest) = namespace(VAULT_NAMESPACE);
    let ns_outcome = ensure_object(kube, &ns, &ns_manifest, mode).await?;
    report.push(ns.to_string(), ns_outcome);
    let binding = ensure_binding(kube, mode).await?;
    report.push(tokenreview_binding().0.to_string(), binding);

    let jwt_path = match &spec.output {
        Output::Files(dir) => Some(dir.join(spec.suffix.tokenreview_jwt_file())),
        Output::Return => None,
    };
    let token: Option<SecretString> = match &spec.token {
        ReviewerToken::TokenRequest {
            audiences,
            expiration,
        } => {
            let stored = jwt_path
                .as_ref()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .map(SecretString::from);
            let now = jiff::Timestamp::now().as_second();
            match stored {
                Some(t) if reusable_token(t.expose_secret(), audiences, *expiration, now) => {
                    Some(t)
                }
                _ if mode.is_dry_run() => None,
                _ => {
                    wait_for_service_account(kube, spec.wait).await?;
                    let spec = TokenSpec {
                        audiences: audiences.clone(),
                        expiration_seconds: i64::try_from(expiration.as_secs()).unwrap_or(i64::MAX),
                    };
                    let token = kube
                        .request_token(VAULT_NAMESPACE, VAULT_SERVICE_ACCOUNT, &spec)
                        .await?;
                    tracing::info!("issued a reviewer token for vault/default");
                    Some(token)
                }
            }
        }
        ReviewerToken::LegacySecret { name } => {
            let (secret, manifest) = legacy_token_secret(name);
            let outcome = ensure_in_namespace(kube, ns_outcome, &secret, &manifest, mode).await?;
            report.push(secret.to_string(), outcome);
            if mode.is_dry_run() {
                if outcome == Outcome::Unchanged {
                    kube.get(&secret).await?.as_ref().and_then(legacy_token)
                } else {
                    None
                }
            } else {
                Some(wait_for_legacy_token(kube, &secret, spec.wait).await?)
            }
        }
    };

    let material = match &spec.output {
        Output::Files(dir) => {
            let jwt_path = dir.join(spec.suffix.tokenreview_jwt_file());
            let jwt_outcome = match &token {
                Some(t) => ensure_secret_file(&jwt_path, t.expose_secret().as_bytes(), mode)?,
                None if jwt_path.exists() => Outcome::update(mode),
                None => Outcome::create(mode),
            };
            report.push(jwt_path.display().to_string(), jwt_outcome);
            let addr_path = dir.join(spec.suffix.k8s_addr_file());
            let outcome = ensure_secret_file(&addr_path, endpoint.addr.as_bytes(), mode)?;
            report.push(addr_path.display().to_string(), outcome);
            let cert_path = dir.join(spec.suffix.k8s_cert_file());
            let outcome = ensure_secret_file(&cert_path, endpoint.ca.as_str().as_bytes(), mode)?;
            report.push(cert_path.display().to_string(), outcome);
            None
        }
        Output::Return => token.map(|token_reviewer_jwt| VaultAuthMaterial {
            token_reviewer_jwt,
            kubernetes_host: endpoint.addr.clone(),
            kubernetes_ca_cert: endpoint.ca.clone(),
        }),
    };
    Ok(VaultAuthReport { report, material })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use mockall::Sequence;
    use serde_json::json;

    use super::*;
    use crate::certs::tests::self_signed;
    use crate::fake::{FakeKube, jwt};
    use crate::port::MockKube;

    fn endpoint() -> ClusterEndpoint {
        ClusterEndpoint {
            addr: "https://10.0.0.1:6443".into(),
            ca: CertificatePem::parse(self_signed("k8s-ca"), "ca").unwrap(),
        }
    }

    fn kubeconfig(ca_data: &str) -> Kubeconfig {
        Kubeconfig::from_yaml(&format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: onprem\n\
             clusters:\n- name: c\n  cluster:\n    server: https://10.0.0.1:6443\n    certificate-authority-data: {ca_data}\n\
             contexts:\n- name: onprem\n  context:\n    cluster: c\n    user: u\n\
             users:\n- name: u\n  user:\n    token: t\n"
        ))
        .unwrap()
    }

    #[test]
    fn the_endpoint_comes_from_the_current_context_with_a_checked_ca() {
        let ca = self_signed("k8s-ca");
        let kc = kubeconfig(&STANDARD.encode(&ca));
        let ep = ClusterEndpoint::from_kubeconfig(&kc, None).unwrap();
        assert_eq!(ep.addr, "https://10.0.0.1:6443");
        assert_eq!(ep.ca, CertificatePem::parse(&ca, "x").unwrap());

        let bad = kubeconfig(
            &STANDARD.encode("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        );
        let err = ClusterEndpoint::from_kubeconfig(&bad, None).unwrap_err();
        assert!(matches!(err, Error::InvalidCertificate { .. }), "{err}");
        let err = ClusterEndpoint::from_kubeconfig(&kc, Some("other")).unwrap_err();
        assert_eq!(err.to_string(), "kubeconfig: context \"other\" not found");
    }

    #[test]
    fn stored_tokens_are_reused_only_while_they_fit() {
        let sub = "system:serviceaccount:vault:default";
        let year = Duration::from_secs(365 * 86400);
        let now = 1_000_000;
        let fresh = jwt(&json!({"sub": sub, "aud": ["vault"], "exp": now + 300 * 86400}));
        assert!(reusable_token(&fresh, &[], year, now));
        assert!(reusable_token(&fresh, &["vault".into()], year, now));
        assert!(!reusable_token(&fresh, &["other".into()], year, now));
        let old = jwt(&json!({"sub": sub, "exp": now + 100 * 86400}));
        assert!(!reusable_token(&old, &[], year, now));
        let foreign = jwt(&json!({"sub": "system:serviceaccount:x:y", "exp": now + 300 * 86400}));
        assert!(!reusable_token(&foreign, &[], year, now));
        assert!(!reusable_token("garbage", &[], year, now));
    }

    #[tokio::test]
    async fn step4_calls_the_cluster_in_order() {
        let mut kube = MockKube::new();
        let mut seq = Sequence::new();
        kube.expect_get()
            .withf(|o| o.kind == Kind::Namespace && o.name == "vault")
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(None));
        kube.expect_apply()
            .withf(|o, _, _| o.kind == Kind::Namespace)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, m, _| Ok(m.clone()));
        kube.expect_get()
            .withf(|o| o.kind == Kind::ClusterRoleBinding && o.name == "role-tokenreview-binding")
            .times(2)
            .in_sequence(&mut seq)
            .returning(|_| Ok(None));
        kube.expect_apply()
            .withf(|o, m, _| {
                o.kind == Kind::ClusterRoleBinding
                    && m["roleRef"]["name"] == "system:auth-delegator"
                    && m["subjects"][0] == json!({"kind": "ServiceAccount", "name": "default", "namespace": "vault"})
            })
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, m, _| Ok(m.clone()));
        kube.expect_get()
            .withf(|o| {
                o.kind == Kind::ServiceAccount && o.to_string() == "serviceaccount vault/default"
            })
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(Some(json!({}))));
        kube.expect_request_token()
            .withf(|ns, name, spec| {
                ns == "vault"
                    && name == "default"
                    && spec.audiences == ["vault"]
                    && spec.expiration_seconds == 7200
            })
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(SecretString::from("issued.jwt.sig")));
        let spec = VaultAuthSpec {
            token: ReviewerToken::TokenRequest {
                audiences: vec!["vault".into()],
                expiration: Duration::from_secs(7200),
            },
            output: Output::Return,
            ..VaultAuthSpec::files(ClusterSuffix::new("c1").unwrap(), ".")
        };
        let out = prepare_vault_auth(&kube, &spec, &endpoint(), Mode::Apply)
            .await
            .unwrap();
        let material = out.material.unwrap();
        assert_eq!(
            material.token_reviewer_jwt.expose_secret(),
            "issued.jwt.sig"
        );
        assert_eq!(material.kubernetes_host, "https://10.0.0.1:6443");
        assert_eq!(
            out.report
                .changes
                .iter()
                .map(|c| c.action)
                .collect::<Vec<_>>(),
            [Outcome::Created, Outcome::Created]
        );
    }

    #[tokio::test]
    async fn a_binding_of_another_role_is_a_conflict_not_an_overwrite() {
        let mut kube = MockKube::new();
        kube.expect_get().returning(|o| {
            Ok(Some(if o.kind == Kind::Namespace {
                json!({"metadata": {"name": "vault"}})
            } else {
                json!({"metadata": {"name": "role-tokenreview-binding"},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"}})
            }))
        });
        kube.expect_apply().never();
        let spec = VaultAuthSpec::files(ClusterSuffix::new("c1").unwrap(), ".");
        let err = prepare_vault_auth(&kube, &spec, &endpoint(), Mode::Apply)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("binds \"cluster-admin\" instead of system:auth-delegator"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn step4_files_run_twice_and_the_second_run_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let kube = FakeKube::default();
        let spec = VaultAuthSpec::files(ClusterSuffix::new("c1").unwrap(), dir.path());
        let ep = endpoint();

        let dry = prepare_vault_auth(&kube, &spec, &ep, Mode::DryRun)
            .await
            .unwrap();
        assert!(
            dry.report.dry_run
                && dry
                    .report
                    .changes
                    .iter()
                    .all(|c| c.action == Outcome::WouldCreate)
        );
        assert_eq!((kube.len(), kube.tokens_issued()), (0, 0));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let first = prepare_vault_auth(&kube, &spec, &ep, Mode::Apply)
            .await
            .unwrap();
        assert_eq!(first.report.changes.len(), 5);
        assert!(
            first
                .report
                .changes
                .iter()
                .all(|c| c.action == Outcome::Created),
            "{}",
            first.report
        );
        let jwt_path = dir.path().join("c1-tokenreview_jwt");
        let token = std::fs::read_to_string(&jwt_path).unwrap();
        assert!(reusable_token(
            &token,
            &[],
            Duration::from_secs(365 * 86400),
            jiff::Timestamp::now().as_second()
        ));
        for f in ["c1-tokenreview_jwt", "c1-k8s_addr", "c1-k8s_cert"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join("c1-k8s_addr")).unwrap(),
            ep.addr
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("c1-k8s_cert")).unwrap(),
            ep.ca.as_str()
        );

        let writes = kube.writes().len();
        let second = prepare_vault_auth(&kube, &spec, &ep, Mode::Apply)
            .await
            .unwrap();
        assert!(second.report.is_unchanged(), "{}", second.report);
        assert_eq!((kube.writes().len(), kube.tokens_issued()), (writes, 1));
        assert_eq!(std::fs::read_to_string(&jwt_path).unwrap(), token);
    }

    #[tokio::test]
    async fn step4_legacy_secret_is_created_once_and_its_token_written() {
        let dir = tempfile::tempdir().unwrap();
        let kube = FakeKube::default();
        let ep = endpoint();
        let spec = VaultAuthSpec {
            token: ReviewerToken::legacy(),
            ..VaultAuthSpec::files(ClusterSuffix::new("c2").unwrap(), dir.path())
        };
        let first = prepare_vault_auth(&kube, &spec, &ep, Mode::Apply)
            .await
            .unwrap();
        assert_eq!(
            first
                .report
                .outcome_of("secret vault/vault-tokenreview-token"),
            Some(Outcome::Created)
        );
        let secret = kube
            .object(&ObjectRef::namespaced(
                Kind::Secret,
                "vault",
                "vault-tokenreview-token",
            ))
            .unwrap();
        assert_eq!(secret["type"], "kubernetes.io/service-account-token");
        assert_eq!(
            secret["metadata"]["annotations"]["kubernetes.io/service-account.name"],
            "default"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("c2-tokenreview_jwt")).unwrap(),
            "legacy-jwt"
        );
        let second = prepare_vault_auth(&kube, &spec, &ep, Mode::Apply)
            .await
            .unwrap();
        assert!(second.report.is_unchanged(), "{}", second.report);
        let dry = prepare_vault_auth(&kube, &spec, &ep, Mode::DryRun)
            .await
            .unwrap();
        assert!(dry.report.is_unchanged(), "{}", dry.report);
        assert_eq!(kube.tokens_issued(), 0);
    }
}
