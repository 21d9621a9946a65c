//! The `ensure_*` operations of step 5 and `apply`, which runs them in order.

use crate::plan::{self, Action};
use crate::{
    AuthSpec, BootstrapSpec, Change, Mode, MountSpec, ObjectKind, Outcome, PolicySpec, Report,
    Result, SecretSpec, Vault,
};

/// Applies (or, with [`Mode::DryRun`], plans) the whole step-5 configuration: mount, tune,
/// secret, policy, auth mount, auth config, role, in that order. Each object is read, compared
/// and only written when it differs, so running it again reports everything `Unchanged`.
///
/// # Errors
/// The first failing operation's error; objects before it stay applied, and running again
/// converges.
pub async fn apply(vault: &dyn Vault, spec: &BootstrapSpec, mode: Mode) -> Result<Report> {
    let mut changes = vec![
        ensure_secrets_mount(vault, &spec.mount, mode).await?,
        ensure_mount_tune(vault, &spec.mount, mode).await?,
    ];
    if let Some(secret) = &spec.secret {
        changes.push(ensure_secret(vault, &spec.mount, secret, mode).await?);
    }
    changes.push(ensure_policy(vault, &spec.policy, &spec.policy_rules(), mode).await?);
    changes.push(ensure_auth_mount(vault, &spec.auth, mode).await?);
    changes.push(ensure_kubernetes_config(vault, &spec.auth, mode).await?);
    changes.push(ensure_kubernetes_role(vault, &spec.auth, mode).await?);
    Ok(Report {
        dry_run: mode == Mode::DryRun,
        changes,
    })
}

/// What [`apply`] would change, changing nothing (a dry run).
///
/// # Errors
/// As for [`apply`] (reads only).
pub async fn plan(vault: &dyn Vault, spec: &BootstrapSpec) -> Result<Report> {
    apply(vault, spec, Mode::DryRun).await
}

/// Ensures the KV mount exists with the desired version.
///
/// # Errors
/// [`crate::Error::Conflict`] when another engine or KV version is mounted there; server errors.
#[tracing::instrument(skip_all, fields(vault.mount = %spec.path))]
pub async fn ensure_secrets_mount(
    vault: &dyn Vault,
    spec: &MountSpec,
    mode: Mode,
) -> Result<Change> {
    let found = vault.read_secrets_mount(&spec.path).await?;
    let action = plan::secrets_mount(spec, found.as_ref())?;
    let change = change(ObjectKind::SecretsMount, &spec.path, &action, mode);
    if mode == Mode::Apply && action != Action::Keep {
        vault
            .enable_secrets_mount(&spec.path, spec.kv_version)
            .await?;
    }
    Ok(logged(change))
}

/// Ensures the mount's `max_lease_ttl`.
///
/// # Errors
/// Server errors.
#[tracing::instrument(skip_all, fields(vault.mount = %spec.path))]
pub async fn ensure_mount_tune(vault: &dyn Vault, spec: &MountSpec, mode: Mode) -> Result<Change> {
    let found = vault.read_secrets_mount(&spec.path).await?;
    let action = plan::mount_tune(spec, found.as_ref());
    let change = change(ObjectKind::MountTune, &spec.path, &action, mode);
    if mode == Mode::Apply && action != Action::Keep {
        vault
            .tune_max_lease_ttl(&spec.path, spec.max_lease_ttl)
            .await?;
    }
    Ok(logged(change))
}

/// Ensures the HSM credential secret holds exactly these fields (compared without printing).
///
/// # Errors
/// Server errors.
#[tracing::instrument(skip_all, fields(vault.mount = %mount.path, vault.secret = %secret.path))]
pub async fn ensure_secret(
    vault: &dyn Vault,
    mount: &MountSpec,
    secret: &SecretSpec,
    mode: Mode,
) -> Result<Change> {
    let found = vault
        .read_secret(&mount.path, mount.kv_version, &secret.path)
        .await?;
    let action = plan::secret(&secret.fields, found.as_ref());
    let object = format!("{}/{}", mount.path, secret.path);
    let change = change(ObjectKind::Secret, &object, &action, mode);
    if mode == Mode::Apply && action != Action::Keep {
        vault
            .write_secret(&mount.path, mount.kv_version, &secret.path, &secret.fields)
            .await?;
    }
    Ok(logged(change))
}

/// Ensures the policy holds exactly `rules`.
///
/// # Errors
/// Server errors.
#[tracing::instrument(skip_all, fields(vault.policy = %policy.name))]
pub async fn ensure_policy(
    vault: &dyn Vault,
    policy: &PolicySpec,
    rules: &str,
    mode: Mode,
) -> Result<Change> {
    let found = vault.read_policy(&policy.name).await?;
    let action = plan::policy(rules, found.as_deref());
    let change = change(ObjectKind::Policy, &policy.name, &action, mode);
    if mode == Mode::Apply && action != Action::Keep {
        vault.write_policy(&policy.name, rules).await?;
    }
    Ok(logged(change))
}

/// Ensures the Kubernetes auth method is enabled at the auth path.
///
/// # Errors
/// [`crate::Error::Conflict`] when another method is mounted there; server errors.
#[tracing::instrument(skip_all, fields(vault.auth = %auth.path))]
pub async fn ensure_auth_mount(vault: &dyn Vault, auth: &AuthSpec, mode: Mode) -> Result<Change> {
    const KIND: &str = "kubernetes";
    let found = vault.read_auth_mount(&auth.path).await?;
    let action = plan::auth_mount(&auth.path, KIND, found.as_deref())?;
    let change = change(ObjectKind::AuthMount, &auth.path, &action, mode);
    if mode == Mode::Apply && action != Action::Keep {
        vault.enable_auth_mount(&auth.path, KIND).await?;
    }
    Ok(logged(change))
}

/// Ensures the Kubernetes auth configuration.
///
/// # Errors
/// Server errors.
#[tracing::instrument(skip_all, fields(vault.auth = %auth.path))]
pub async fn ensure_kubernetes_config(
    vault: &dyn Vault,
    auth: &AuthSpec,
    mode: Mode,
) -> Result<Change> {
    let found = vault.read_kubernetes_config(&auth.path).await?;
    let action = plan::kubernetes_config(&auth.config, found.as_ref());
    let object = format!("auth/{}/config", auth.path);
    let change = change(ObjectKind::AuthConfig, &object, &action, mode);
    if mode == Mode::Apply && action != Action::Keep {
        vault
            .write_kubernetes_config(&auth.path, &auth.config)
            .await?;
    }
    Ok(logged(change))
}

/// Ensures the Kubernetes auth role.
///
/// # Errors
/// Server errors.
#[tracing::instrument(skip_all, fields(vault.auth = %auth.path, vault.role = %auth.role.name))]
pub async fn ensure_kubernetes_role(
    vault: &dyn Vault,
    auth: &AuthSpec,
    mode: Mode,
) -> Result<Change> {
    let found = vault
        .read_kubernetes_role(&auth.path, &auth.role.name)
        .await?;
    let action = plan::kubernetes_role(&auth.role, found.as_ref());
    let object = format!("auth/{}/role/{}", auth.path, auth.role.name);
    let change = change(ObjectKind::AuthRole, &object, &action, mode);
    if mode == Mode::Apply && action != Action::Keep {
        vault.write_kubernetes_role(&auth.path, &auth.role).await?;
    }
    Ok(logged(change))
}

fn change(kind: ObjectKind, object: &str, action: &Action, mode: Mode) -> Change {
    let (outcome, differences) = match action {
        Action::Create => (Outcome::create(mode), Vec::new()),
        Action::Update(diff) => (Outcome::update(mode), diff.clone()),
        Action::Keep => (Outcome::Unchanged, Vec::new()),
    };
    Change {
        kind,
        object: object.to_owned(),
        outcome,
        differences,
    }
}

fn logged(change: Change) -> Change {
    if change.outcome.is_change() {
        tracing::info!(
            vault.object = %change.object,
            vault.kind = %change.kind,
            outcome = %change.outcome,
            differences = ?change.differences,
            "Vault object"
        );
    } else {
        tracing::debug!(vault.object = %change.object, vault.kind = %change.kind, "unchanged");
    }
    change
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mockall::Sequence;
    use mockall::predicate::eq;
    use secrecy::SecretString;

    use super::*;
    use crate::api::{KubernetesConfigInfo, MockVault, MountInfo};
    use crate::{KubernetesAuthConfig, KvVersion, SecretFields};

    fn spec() -> BootstrapSpec {
        let mut fields = SecretFields::new();
        for f in crate::fields::ALL {
            fields.insert(f, SecretString::from(format!("value-of-{f}")));
        }
        BootstrapSpec::for_cluster(
            "c1",
            KubernetesAuthConfig {
                kubernetes_host: "https://10.0.0.1".into(),
                kubernetes_ca_cert: Some("CA".into()),
                token_reviewer_jwt: Some(SecretString::from("reviewer")),
                ..KubernetesAuthConfig::default()
            },
            Some(fields),
        )
        .unwrap()
    }

    /// A server that already holds exactly `spec`.
    fn matching_server(spec: &BootstrapSpec) -> MockVault {
        let mut vault = MockVault::new();
        let ttl = spec.mount.max_lease_ttl;
        vault.expect_read_secrets_mount().returning(move |_| {
            Ok(Some(MountInfo {
                kind: "kv".into(),
                kv_version: Some(KvVersion::V1),
                max_lease_ttl: ttl,
            }))
        });
        let fields = spec.secret.as_ref().unwrap().fields.clone();
        vault
            .expect_read_secret()
            .returning(move |_, _, _| Ok(Some(fields.clone())));
        let rules = spec.policy_rules();
        vault
            .expect_read_policy()
            .returning(move |_| Ok(Some(rules.clone())));
        vault
            .expect_read_auth_mount()
            .returning(|_| Ok(Some("kubernetes".into())));
        vault.expect_read_kubernetes_config().returning(|_| {
            Ok(Some(KubernetesConfigInfo {
                kubernetes_host: "https://10.0.0.1".into(),
                kubernetes_ca_cert: Some("CA".into()),
                token_reviewer_jwt_set: true,
                ..KubernetesConfigInfo::default()
            }))
        });
        let role = spec.auth.role.clone();
        vault
            .expect_read_kubernetes_role()
            .returning(move |_, _| Ok(Some(role.clone())));
        vault
    }

    #[tokio::test]
    #[expect(
        clippy::too_many_lines,
        reason = "one expectation per Vault call, in order"
    )]
    async fn empty_server_gets_every_object_in_order() {
        let spec = spec();
        let mut vault = MockVault::new();
        let mut seq = Sequence::new();
        vault
            .expect_read_secrets_mount()
            .with(eq("asm-c1"))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(None));
        vault
            .expect_enable_secrets_mount()
            .with(eq("asm-c1"), eq(KvVersion::V1))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        vault
            .expect_read_secrets_mount()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| {
                Ok(Some(MountInfo {
                    kind: "kv".into(),
                    kv_version: Some(KvVersion::V1),
                    max_lease_ttl: Duration::ZERO,
                }))
            });
        vault
            .expect_tune_max_lease_ttl()
            .with(eq("asm-c1"), eq(Duration::from_secs(87_600 * 3600)))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        vault
            .expect_read_secret()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _| Ok(None));
        vault
            .expect_write_secret()
            .withf(|m, v, p, f| m == "asm-c1" && *v == KvVersion::V1 && p == "hsm" && f.len() == 4)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _, _| Ok(()));
        vault
            .expect_read_policy()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(None));
        vault
            .expect_write_policy()
            .withf(|n, r| n == "asm-c1-hsm-policy" && r.contains("path \"asm-c1/hsm\""))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        vault
            .expect_read_auth_mount()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(None));
        vault
            .expect_enable_auth_mount()
            .with(eq("asm-c1/hsm"), eq("kubernetes"))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        vault
            .expect_read_kubernetes_config()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(None));
        vault
            .expect_write_kubernetes_config()
            .withf(|p, c| p == "asm-c1/hsm" && c.kubernetes_host == "https://10.0.0.1")
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));
        vault
            .expect_read_kubernetes_role()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(None));
        vault
            .expect_write_kubernetes_role()
            .withf(|p, r| p == "asm-c1/hsm" && r.name == "istiod")
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _| Ok(()));

        let report = apply(&vault, &spec, Mode::Apply).await.unwrap();
        let outcomes: Vec<_> = report.changes.iter().map(|c| c.outcome).collect();
        assert_eq!(
            outcomes,
            [
                Outcome::Created,
                Outcome::Updated,
                Outcome::Created,
                Outcome::Created,
                Outcome::Created,
                Outcome::Created,
                Outcome::Created
            ]
        );
    }

    #[tokio::test]
    async fn matching_server_is_unchanged_and_never_written() {
        let spec = spec();
        // No write expectation is set: any write call fails the test.
        let vault = matching_server(&spec);
        let report = apply(&vault, &spec, Mode::Apply).await.unwrap();
        assert!(report.is_unchanged(), "{report}");
        assert_eq!(report.changes.len(), 7);
    }

    #[tokio::test]
    async fn dry_run_reads_but_never_writes() {
        let spec = spec();
        let mut vault = matching_server(&spec);
        vault.checkpoint();
        vault.expect_read_secrets_mount().returning(|_| Ok(None));
        vault.expect_read_secret().returning(|_, _, _| Ok(None));
        vault.expect_read_policy().returning(|_| Ok(None));
        vault
            .expect_read_auth_mount()
            .returning(|_| Ok(Some("kubernetes".into())));
        vault
            .expect_read_kubernetes_config()
            .returning(|_| Ok(None));
        vault
            .expect_read_kubernetes_role()
            .returning(|_, _| Ok(None));
        let report = plan(&vault, &spec).await.unwrap();
        assert!(report.dry_run);
        assert_eq!(
            report.outcome(ObjectKind::SecretsMount),
            Some(Outcome::WouldCreate)
        );
        assert_eq!(
            report.outcome(ObjectKind::AuthMount),
            Some(Outcome::Unchanged)
        );
        assert_eq!(
            report.outcome(ObjectKind::AuthRole),
            Some(Outcome::WouldCreate)
        );
    }

    #[tokio::test]
    async fn a_changed_pin_updates_only_the_secret() {
        let spec = spec();
        let mut changed = spec.clone();
        changed
            .secret
            .as_mut()
            .unwrap()
            .fields
            .insert("PIN", SecretString::from("new-pin"));
        let mut vault = matching_server(&spec);
        vault
            .expect_write_secret()
            .times(1)
            .returning(|_, _, _, _| Ok(()));
        let report = apply(&vault, &changed, Mode::Apply).await.unwrap();
        let changed: Vec<_> = report.changed().into_iter().map(|c| c.kind).collect();
        assert_eq!(changed, [ObjectKind::Secret]);
        assert_eq!(report.changes[2].differences, ["PIN"]);
        assert!(!format!("{report:?}").contains("new-pin"));
    }

    #[tokio::test]
    async fn a_kv2_mount_where_v1_is_wanted_is_a_conflict() {
        let spec = spec();
        let mut vault = MockVault::new();
        vault.expect_read_secrets_mount().returning(|_| {
            Ok(Some(MountInfo {
                kind: "kv".into(),
                kv_version: Some(KvVersion::V2),
                max_lease_ttl: Duration::ZERO,
            }))
        });
        let err = apply(&vault, &spec, Mode::Apply).await.unwrap_err();
        assert!(matches!(err, crate::Error::Conflict { .. }), "{err}");
        assert!(err.to_string().contains("asm-c1"), "{err}");
    }
}
