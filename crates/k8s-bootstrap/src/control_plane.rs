//! Steps 7 and 8: the control-plane namespace, the Vault CA ConfigMap and the revisioned istiod
//! Service of the validation webhook.

use serde_json::{Value, json};

use crate::names::{
    ISTIO_NAMESPACE, ISTIOD_SERVICE, REVISION_LABEL, VAULT_TLS_CONFIGMAP, VAULT_TLS_CONFIGMAP_KEY,
};
use crate::plan::ensure_object;
use crate::port::{Kind, Kube, ObjectRef};
use crate::{CertificatePem, Error, Mode, Outcome, Report, Result};

/// The manifest of namespace `name`.
pub fn namespace(name: &str) -> (ObjectRef, Value) {
    let object = ObjectRef::cluster(Kind::Namespace, name);
    let manifest = object.manifest_skeleton();
    (object, manifest)
}

/// Makes namespace `name` exist.
pub async fn ensure_namespace(kube: &dyn Kube, name: &str, mode: Mode) -> Result<Outcome> {
    let (object, manifest) = namespace(name);
    ensure_object(kube, &object, &manifest, mode).await
}

/// Ensures a namespaced object after its namespace was ensured with `namespace_outcome`: when
/// the namespace itself would only be created by a dry run, the API server would refuse a dry
/// run inside it, so the object is reported `WouldCreate` without asking.
pub(crate) async fn ensure_in_namespace(
    kube: &dyn Kube,
    namespace_outcome: Outcome,
    object: &ObjectRef,
    manifest: &Value,
    mode: Mode,
) -> Result<Outcome> {
    if namespace_outcome == Outcome::WouldCreate {
        return Ok(Outcome::WouldCreate);
    }
    ensure_object(kube, object, manifest, mode).await
}

/// The step 7 ConfigMap `istio-system/vault-tls-cert` holding `vault_ca` under key `cert`.
pub fn vault_tls_configmap(vault_ca: &CertificatePem) -> (ObjectRef, Value) {
    let object = ObjectRef::namespaced(Kind::ConfigMap, ISTIO_NAMESPACE, VAULT_TLS_CONFIGMAP);
    let mut manifest = object.manifest_skeleton();
    manifest["data"] = json!({ VAULT_TLS_CONFIGMAP_KEY: vault_ca.as_str() });
    (object, manifest)
}

/// Step 7: namespace `istio-system` and ConfigMap `vault-tls-cert` with the Vault server's CA
/// certificate (validated PEM, see [`CertificatePem::from_file`]).
pub async fn ensure_vault_tls_configmap(
    kube: &dyn Kube,
    vault_ca: &CertificatePem,
    mode: Mode,
) -> Result<Report> {
    let mut report = Report::new(mode);
    let (ns, ns_manifest) = namespace(ISTIO_NAMESPACE);
    let ns_outcome = ensure_object(kube, &ns, &ns_manifest, mode).await?;
    report.push(ns.to_string(), ns_outcome);
    let (cm, manifest) = vault_tls_configmap(vault_ca);
    let outcome = ensure_in_namespace(kube, ns_outcome, &cm, &manifest, mode).await?;
    report.push(cm.to_string(), outcome);
    Ok(report)
}

/// Checks a revision is a valid label value (the guide's is `asm-183-2`).
pub fn validate_revision(revision: &str) -> Result<()> {
    let ok = !revision.is_empty()
        && revision.len() <= 63
        && revision
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && revision
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && revision
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput {
            what: "revision",
            reason: format!(
                "{revision:?} is not a label value (at most 63 letters, digits, '-', '_', '.', starting and ending alphanumeric), e.g. asm-183-2"
            ),
        })
    }
}

/// The step 8 Service `istio-system/istiod`, exactly as the guide lists it, for `revision`.
pub fn istiod_service(revision: &str) -> (ObjectRef, Value) {
    let object = ObjectRef::namespaced(Kind::Service, ISTIO_NAMESPACE, ISTIOD_SERVICE);
    let mut manifest = object.manifest_skeleton();
    manifest["metadata"]["labels"] = json!({
        REVISION_LABEL: revision,
        "app": "istiod",
        "istio": "pilot",
        "release": "istio",
    });
    manifest["spec"] = json!({
        "ports": [
            {"port": 15010, "name": "grpc-xds", "protocol": "TCP"},
            {"port": 15012, "name": "https-dns", "protocol": "TCP"},
            {"port": 443, "name": "https-webhook", "targetPort": 15017, "protocol": "TCP"},
            {"port": 15014, "name": "http-monitoring", "protocol": "TCP"},
        ],
        "selector": {"app": "istiod", REVISION_LABEL: revision},
    });
    (object, manifest)
}

/// Step 8: namespace `istio-system` and the revisioned istiod Service.
///
/// # Errors
/// [`Error::InvalidInput`] for a revision that is not a label value, or the API errors.
pub async fn ensure_istiod_service(kube: &dyn Kube, revision: &str, mode: Mode) -> Result<Report> {
    validate_revision(revision)?;
    let mut report = Report::new(mode);
    let (ns, ns_manifest) = namespace(ISTIO_NAMESPACE);
    let ns_outcome = ensure_object(kube, &ns, &ns_manifest, mode).await?;
    report.push(ns.to_string(), ns_outcome);
    let (svc, manifest) = istiod_service(revision);
    let outcome = ensure_in_namespace(kube, ns_outcome, &svc, &manifest, mode).await?;
    report.push(svc.to_string(), outcome);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use mockall::Sequence;
    use serde_json::json;

    use super::*;
    use crate::certs::tests::self_signed;
    use crate::port::MockKube;

    #[test]
    fn istiod_service_matches_the_guide() {
        let (object, svc) = istiod_service("asm-183-2");
        assert_eq!(object.to_string(), "service istio-system/istiod");
        assert_eq!(
            svc,
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "istiod", "namespace": "istio-system", "labels": {
                    "istio.io/rev": "asm-183-2", "app": "istiod", "istio": "pilot", "release": "istio"}},
                "spec": {
                    "ports": [
                        {"port": 15010, "name": "grpc-xds", "protocol": "TCP"},
                        {"port": 15012, "name": "https-dns", "protocol": "TCP"},
                        {"port": 443, "name": "https-webhook", "targetPort": 15017, "protocol": "TCP"},
                        {"port": 15014, "name": "http-monitoring", "protocol": "TCP"}],
                    "selector": {"app": "istiod", "istio.io/rev": "asm-183-2"}}
            })
        );
    }

    #[test]
    fn revisions_must_be_label_values() {
        validate_revision("asm-183-2").unwrap();
        for bad in ["", "-x", "a b", "x/y", &"a".repeat(64)] {
            assert!(validate_revision(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn step7_creates_namespace_then_configmap() {
        let ca = CertificatePem::parse(self_signed("vault-ca"), "ca").unwrap();
        let pem = ca.as_str().to_owned();
        let mut kube = MockKube::new();
        let mut seq = Sequence::new();
        kube.expect_get()
            .withf(|o| o.kind == Kind::Namespace && o.name == "istio-system")
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(None));
        kube.expect_apply()
            .withf(|o, _, m| o.kind == Kind::Namespace && *m == Mode::Apply)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, m, _| Ok(m.clone()));
        kube.expect_get()
            .withf(|o| o.kind == Kind::ConfigMap && o.name == "vault-tls-cert")
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(None));
        kube.expect_apply()
            .withf(move |o, m, _| {
                o.namespace.as_deref() == Some("istio-system") && m["data"]["cert"] == pem.as_str()
            })
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, m, _| Ok(m.clone()));
        let report = ensure_vault_tls_configmap(&kube, &ca, Mode::Apply)
            .await
            .unwrap();
        assert_eq!(
            report.changes.iter().map(|c| c.action).collect::<Vec<_>>(),
            [Outcome::Created, Outcome::Created]
        );
    }

    #[tokio::test]
    async fn step7_is_unchanged_when_the_configmap_matches() {
        let ca = CertificatePem::parse(self_signed("vault-ca"), "ca").unwrap();
        let (_, live) = vault_tls_configmap(&ca);
        let mut kube = MockKube::new();
        kube.expect_get().times(2).returning(move |o| {
            Ok(Some(if o.kind == Kind::Namespace {
                json!({"metadata": {"name": "istio-system"}})
            } else {
                live.clone()
            }))
        });
        kube.expect_apply().never();
        let report = ensure_vault_tls_configmap(&kube, &ca, Mode::Apply)
            .await
            .unwrap();
        assert!(report.is_unchanged());
    }

    #[tokio::test]
    async fn step8_dry_run_in_a_missing_namespace_asks_only_once() {
        let mut kube = MockKube::new();
        kube.expect_get()
            .withf(|o| o.kind == Kind::Namespace)
            .times(1)
            .returning(|_| Ok(None));
        kube.expect_apply()
            .withf(|o, _, m| o.kind == Kind::Namespace && *m == Mode::DryRun)
            .times(1)
            .returning(|_, m, _| Ok(m.clone()));
        let report = ensure_istiod_service(&kube, "asm-183-2", Mode::DryRun)
            .await
            .unwrap();
        assert!(report.dry_run);
        assert_eq!(
            report.outcome_of("service istio-system/istiod"),
            Some(Outcome::WouldCreate)
        );
    }

    #[tokio::test]
    async fn step8_updates_a_service_with_another_revision() {
        let (_, old) = istiod_service("asm-182-1");
        let mut kube = MockKube::new();
        kube.expect_get().returning(move |o| {
            Ok(Some(if o.kind == Kind::Namespace {
                json!({"metadata": {"name": "istio-system"}})
            } else {
                old.clone()
            }))
        });
        kube.expect_apply()
            .withf(|o, m, _| {
                o.kind == Kind::Service && m["spec"]["selector"]["istio.io/rev"] == "asm-183-2"
            })
            .times(1)
            .returning(|_, m, _| Ok(m.clone()));
        let report = ensure_istiod_service(&kube, "asm-183-2", Mode::Apply)
            .await
            .unwrap();
        assert_eq!(
            report.outcome_of("service istio-system/istiod"),
            Some(Outcome::Updated)
        );
    }
}
