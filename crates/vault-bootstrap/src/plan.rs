//! Pure decisions: compare a desired object with what the server reports. No I/O.

use std::collections::BTreeSet;

use crate::api::{KubernetesConfigInfo, MountInfo};
use crate::{Error, KubernetesAuthConfig, KubernetesRole, MountSpec, Result, SecretFields};

/// What has to happen to one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// It does not exist: create it.
    Create,
    /// It exists but differs in these settings (names only): update it.
    Update(Vec<String>),
    /// It already matches.
    Keep,
}

impl Action {
    fn from_differences(differences: Vec<String>) -> Self {
        if differences.is_empty() {
            Self::Keep
        } else {
            Self::Update(differences)
        }
    }
}

/// The KV mount: created when absent; a different engine or KV version is a conflict (changing
/// either would lose data).
pub fn secrets_mount(desired: &MountSpec, observed: Option<&MountInfo>) -> Result<Action> {
    let Some(found) = observed else {
        return Ok(Action::Create);
    };
    let object = format!("secrets mount {}", desired.path);
    if found.kind != "kv" {
        return Err(Error::Conflict {
            object,
            detail: format!("it is a {} engine, not kv", found.kind),
        });
    }
    if found.kv_version != Some(desired.kv_version) {
        return Err(Error::Conflict {
            object,
            detail: format!(
                "it is kv version {}, not {}",
                found.kv_version.map_or("unknown", |v| v.option()),
                desired.kv_version.option()
            ),
        });
    }
    Ok(Action::Keep)
}

/// The mount's `max_lease_ttl`.
pub fn mount_tune(desired: &MountSpec, observed: Option<&MountInfo>) -> Action {
    match observed {
        None => Action::Create,
        Some(m) if m.max_lease_ttl == desired.max_lease_ttl => Action::Keep,
        Some(_) => Action::Update(vec!["max_lease_ttl".to_owned()]),
    }
}

/// The secret: compared field by field without printing values.
pub fn secret(desired: &SecretFields, observed: Option<&SecretFields>) -> Action {
    match observed {
        None => Action::Create,
        Some(found) => Action::from_differences(desired.differing_fields(found)),
    }
}

/// A policy: compared after normalising line ends and surrounding whitespace.
pub fn policy(desired_rules: &str, observed: Option<&str>) -> Action {
    match observed {
        None => Action::Create,
        Some(found) if normalise_hcl(found) == normalise_hcl(desired_rules) => Action::Keep,
        Some(_) => Action::Update(vec!["rules".to_owned()]),
    }
}

/// The auth mount: created when absent; another method type is a conflict.
pub fn auth_mount(path: &str, kind: &str, observed: Option<&str>) -> Result<Action> {
    match observed {
        None => Ok(Action::Create),
        Some(found) if found == kind => Ok(Action::Keep),
        Some(found) => Err(Error::Conflict {
            object: format!("auth mount {path}"),
            detail: format!("it is a {found} auth method, not {kind}"),
        }),
    }
}

/// The Kubernetes auth configuration. The reviewer JWT is compared by presence (the server
/// never returns it).
pub fn kubernetes_config(
    desired: &KubernetesAuthConfig,
    observed: Option<&KubernetesConfigInfo>,
) -> Action {
    let Some(found) = observed else {
        return Action::Create;
    };
    let mut diff = Vec::new();
    if desired.kubernetes_host.trim_end_matches('/') != found.kubernetes_host.trim_end_matches('/')
    {
        diff.push("kubernetes_host");
    }
    if opt_text(desired.kubernetes_ca_cert.as_deref())
        != opt_text(found.kubernetes_ca_cert.as_deref())
    {
        diff.push("kubernetes_ca_cert");
    }
    if desired.token_reviewer_jwt.is_some() != found.token_reviewer_jwt_set {
        diff.push("token_reviewer_jwt");
    }
    if opt_text(desired.issuer.as_deref()) != opt_text(found.issuer.as_deref()) {
        diff.push("issuer");
    }
    let keys = |k: &[String]| {
        k.iter()
            .map(|s| s.trim().to_owned())
            .collect::<BTreeSet<_>>()
    };
    if keys(&desired.pem_keys) != keys(&found.pem_keys) {
        diff.push("pem_keys");
    }
    if desired.disable_local_ca_jwt != found.disable_local_ca_jwt {
        diff.push("disable_local_ca_jwt");
    }
    Action::from_differences(diff.into_iter().map(str::to_owned).collect())
}

/// A Kubernetes auth role; lists compare as sets.
pub fn kubernetes_role(desired: &KubernetesRole, observed: Option<&KubernetesRole>) -> Action {
    let Some(found) = observed else {
        return Action::Create;
    };
    let mut diff = Vec::new();
    if set(&desired.bound_service_account_names) != set(&found.bound_service_account_names) {
        diff.push("bound_service_account_names");
    }
    if set(&desired.bound_service_account_namespaces)
        != set(&found.bound_service_account_namespaces)
    {
        diff.push("bound_service_account_namespaces");
    }
    if set(&desired.policies) != set(&found.policies) {
        diff.push("token_policies");
    }
    if desired.ttl != found.ttl {
        diff.push("token_ttl");
    }
    if opt_text(desired.audience.as_deref()) != opt_text(found.audience.as_deref()) {
        diff.push("audience");
    }
    Action::from_differences(diff.into_iter().map(str::to_owned).collect())
}

fn set(v: &[String]) -> BTreeSet<&str> {
    v.iter().map(String::as_str).collect()
}

fn opt_text(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

fn normalise_hcl(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;

    use super::*;
    use crate::KvVersion;

    fn mount() -> MountSpec {
        MountSpec {
            path: "asm-c1".into(),
            kv_version: KvVersion::V1,
            max_lease_ttl: Duration::from_secs(315_360_000),
        }
    }

    fn info(kind: &str, v: Option<KvVersion>, ttl: u64) -> MountInfo {
        MountInfo {
            kind: kind.into(),
            kv_version: v,
            max_lease_ttl: Duration::from_secs(ttl),
        }
    }

    #[test]
    fn mount_is_created_kept_or_refused() {
        assert_eq!(secrets_mount(&mount(), None).unwrap(), Action::Create);
        let same = info("kv", Some(KvVersion::V1), 0);
        assert_eq!(secrets_mount(&mount(), Some(&same)).unwrap(), Action::Keep);
        let v2 = info("kv", Some(KvVersion::V2), 0);
        let err = secrets_mount(&mount(), Some(&v2)).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
        let pki = info("pki", None, 0);
        assert!(secrets_mount(&mount(), Some(&pki)).is_err());
    }

    #[test]
    fn tune_compares_the_ttl() {
        assert_eq!(mount_tune(&mount(), None), Action::Create);
        let tuned = info("kv", Some(KvVersion::V1), 315_360_000);
        assert_eq!(mount_tune(&mount(), Some(&tuned)), Action::Keep);
        let default = info("kv", Some(KvVersion::V1), 0);
        assert_eq!(
            mount_tune(&mount(), Some(&default)),
            Action::Update(vec!["max_lease_ttl".into()])
        );
    }

    #[test]
    fn policy_ignores_whitespace_only() {
        let rules = crate::policy_rules("asm-c1/hsm");
        let reformatted = rules.replace("  ", "\t").replace('\n', "\r\n\n");
        assert_eq!(policy(&rules, Some(&reformatted)), Action::Keep);
        let wider = crate::policy_rules("asm-c1/*");
        assert_eq!(
            policy(&rules, Some(&wider)),
            Action::Update(vec!["rules".into()])
        );
    }

    #[test]
    fn kubernetes_config_names_what_differs() {
        let desired = KubernetesAuthConfig {
            kubernetes_host: "https://10.0.0.1:443".into(),
            kubernetes_ca_cert: Some("PEM\n".into()),
            token_reviewer_jwt: Some(SecretString::from("jwt")),
            ..KubernetesAuthConfig::default()
        };
        let mut found = KubernetesConfigInfo {
            kubernetes_host: "https://10.0.0.1:443/".into(),
            kubernetes_ca_cert: Some("PEM".into()),
            token_reviewer_jwt_set: true,
            ..KubernetesConfigInfo::default()
        };
        assert_eq!(kubernetes_config(&desired, Some(&found)), Action::Keep);
        found.kubernetes_host = "https://10.0.0.2".into();
        found.token_reviewer_jwt_set = false;
        assert_eq!(
            kubernetes_config(&desired, Some(&found)),
            Action::Update(vec!["kubernetes_host".into(), "token_reviewer_jwt".into()])
        );
    }

    #[test]
    fn role_lists_compare_as_sets() {
        let desired = KubernetesRole {
            name: "istiod".into(),
            bound_service_account_names: vec!["a".into(), "b".into()],
            bound_service_account_namespaces: vec!["ns".into()],
            policies: vec!["p".into()],
            ttl: Duration::from_secs(60),
            audience: None,
        };
        let mut found = desired.clone();
        found.bound_service_account_names.reverse();
        found.audience = Some(String::new());
        assert_eq!(kubernetes_role(&desired, Some(&found)), Action::Keep);
        found.ttl = Duration::from_secs(61);
        assert_eq!(
            kubernetes_role(&desired, Some(&found)),
            Action::Update(vec!["token_ttl".into()])
        );
    }
}
