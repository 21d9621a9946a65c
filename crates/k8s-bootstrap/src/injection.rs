//! Step 12: sidecar injection by revision label, rolling restarts, and waiting for the
//! restarted pods to carry the revision.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::names::{INJECTION_LABEL, RESTARTED_AT_ANNOTATION, REVISION_LABEL};
use crate::port::{Kind, Kube, ListQuery, ObjectRef};
use crate::wait::{Progress, WaitOptions, poll_until};
use crate::{Error, Mode, Outcome, Report, Result};

/// What [`plan_namespace_labels`] decided for one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelPlan {
    /// The merge patch to send (`istio.io/rev=REV` set and `istio-injection` removed together),
    /// or `None` when the labels already match.
    pub patch: Option<Value>,
    /// Set when both labels were present (injection fails in that state).
    pub warning: Option<String>,
}

fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Plans the labels of `namespace` (its live object) for `revision`.
pub fn plan_namespace_labels(namespace: &Value, revision: &str) -> LabelPlan {
    let labels = labels_of(namespace);
    let name = namespace
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let warning = (labels.contains_key(INJECTION_LABEL) && labels.contains_key(REVISION_LABEL))
        .then(|| {
            format!(
                "namespace {name} had both {INJECTION_LABEL} and {REVISION_LABEL}; injection fails while both are set, so {INJECTION_LABEL} is removed"
            )
        });
    let matches = labels.get(REVISION_LABEL).map(String::as_str) == Some(revision)
        && !labels.contains_key(INJECTION_LABEL);
    let patch = (!matches).then(
        || json!({"metadata": {"labels": {REVISION_LABEL: revision, INJECTION_LABEL: null}}}),
    );
    LabelPlan { patch, warning }
}

/// Labels `namespace` with `istio.io/rev=<revision>` and removes `istio-injection` in one
/// merge patch (the guide's `kubectl label namespace NS istio-injection- istio.io/rev=REV
/// --overwrite`), warning when both were present.
///
/// # Errors
/// [`Error::NotFound`] when the namespace does not exist.
pub async fn ensure_revision_label(
    kube: &dyn Kube,
    namespace: &str,
    revision: &str,
    mode: Mode,
) -> Result<Report> {
    crate::control_plane::validate_revision(revision)?;
    let object = ObjectRef::cluster(Kind::Namespace, namespace);
    let live = kube.get(&object).await?.ok_or_else(|| Error::NotFound {
        object: object.to_string(),
        hint: "create it and deploy the workloads first",
    })?;
    let plan = plan_namespace_labels(&live, revision);
    let mut report = Report::new(mode);
    if let Some(w) = plan.warning {
        report.warn(w);
    }
    let outcome = match plan.patch {
        None => Outcome::Unchanged,
        Some(patch) => {
            kube.merge_patch(&object, &patch, mode).await?;
            Outcome::update(mode)
        }
    };
    report.push(
        format!("{object} label {REVISION_LABEL}={revision}"),
        outcome,
    );
    Ok(report)
}

fn name_of(object: &Value) -> String {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn is_live_pod(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && !matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        )
}

/// The pods (of `pods`) a deployment selects with its `spec.selector.matchLabels`.
fn selected<'a>(deployment: &Value, pods: &'a [Value]) -> Vec<&'a Value> {
    let selector: BTreeMap<String, String> = deployment
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    if selector.is_empty() {
        return Vec::new();
    }
    pods.iter()
        .filter(|p| is_live_pod(p))
        .filter(|p| {
            let labels = labels_of(p);
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .collect()
}

fn has_revision(pod: &Value, revision: &str) -> bool {
    labels_of(pod).get(REVISION_LABEL).map(String::as_str) == Some(revision)
}

/// The deployments (names, in list order) with at least one live pod lacking
/// `istio.io/rev=<revision>`: the ones a restart would re-inject. Deployments whose pods all
/// carry the revision are left alone, so restarting is idempotent.
pub fn deployments_to_restart(
    deployments: &[Value],
    pods: &[Value],
    revision: &str,
) -> Vec<String> {
    deployments
        .iter()
        .filter(|d| selected(d, pods).iter().any(|p| !has_revision(p, revision)))
        .map(name_of)
        .collect()
}

/// How far the deployments' pods have got: every live pod a deployment selects counts, and it
/// is ready when it carries `istio.io/rev=<revision>`.
pub fn revision_progress(deployments: &[Value], pods: &[Value], revision: &str) -> Progress {
    let mut seen = std::collections::BTreeSet::new();
    let mut progress = Progress::default();
    for d in deployments {
        for pod in selected(d, pods) {
            let name = name_of(pod);
            if !seen.insert(name.clone()) {
                continue;
            }
            progress.total += 1;
            if has_revision(pod, revision) {
                progress.ready += 1;
            } else {
                progress.pending.push(name);
            }
        }
    }
    progress
}

/// The merge patch `kubectl rollout restart` sends, stamped `restarted_at` (RFC 3339).
pub fn restart_patch(restarted_at: &str) -> Value {
    json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: restarted_at}}}}})
}

/// Rolling restart of the deployments in `namespace` whose pods lack the revision label
/// (`kubectl rollout restart deployment -n NS`, limited to what needs re-injection).
pub async fn restart_deployments(
    kube: &dyn Kube,
    namespace: &str,
    revision: &str,
    mode: Mode,
) -> Result<Report> {
    let deployments = kube
        .list(&ListQuery::in_namespace(Kind::Deployment, namespace))
        .await?;
    let pods = kube
        .list(&ListQuery::in_namespace(Kind::Pod, namespace))
        .await?;
    let restart = deployments_to_restart(&deployments, &pods, revision);
    let stamp = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string());
    let mut report = Report::new(mode);
    for d in &deployments {
        let name = name_of(d);
        let object = ObjectRef::namespaced(Kind::Deployment, namespace, &name);
        let outcome = if restart.contains(&name) {
            kube.merge_patch(&object, &restart_patch(&stamp), mode)
                .await?;
            tracing::info!(k8s.object = %object, "rollout restart");
            Outcome::update(mode)
        } else {
            Outcome::Unchanged
        };
        report.push(format!("{object} rollout"), outcome);
    }
    Ok(report)
}

/// Waits until a `MutatingWebhookConfiguration` labelled `istio.io/rev=<revision>` (the
/// revision's sidecar injector, which istioctl installs with istiod) is registered.
///
/// # Errors
/// [`Error::Timeout`] naming the missing injector.
pub async fn wait_for_injector(
    kube: &dyn Kube,
    revision: &str,
    options: WaitOptions,
    on_progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<Progress> {
    let what = format!(
        "the sidecar injector of revision {revision} (a MutatingWebhookConfiguration labelled \
         {REVISION_LABEL}={revision}; install the control plane first, step 9)"
    );
    poll_until(&what, options, on_progress, || async {
        let query = ListQuery::all(Kind::MutatingWebhookConfiguration)
            .with_labels(format!("{REVISION_LABEL}={revision}"));
        let found = kube.list(&query).await?;
        Ok(Progress {
            ready: usize::from(!found.is_empty()),
            total: 1,
            pending: if found.is_empty() {
                vec![format!(
                    "mutatingwebhookconfiguration {REVISION_LABEL}={revision}"
                )]
            } else {
                Vec::new()
            },
        })
    })
    .await
}

/// Waits until every live pod of the deployments in `namespace` carries
/// `istio.io/rev=<revision>`, reporting progress on each change.
///
/// # Errors
/// [`Error::Timeout`] with the pods still pending.
pub async fn wait_for_revision(
    kube: &dyn Kube,
    namespace: &str,
    revision: &str,
    options: WaitOptions,
    on_progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<Progress> {
    let what = format!("pods in {namespace} to carry {REVISION_LABEL}={revision}");
    poll_until(&what, options, on_progress, || async {
        let deployments = kube
            .list(&ListQuery::in_namespace(Kind::Deployment, namespace))
            .await?;
        let pods = kube
            .list(&ListQuery::in_namespace(Kind::Pod, namespace))
            .await?;
        Ok(revision_progress(&deployments, &pods, revision))
    })
    .await
}

/// Step 12 for one namespace: label, restart what needs it, and (unless dry run) wait for the
/// pods to carry the revision.
pub async fn enable_injection(
    kube: &dyn Kube,
    namespace: &str,
    revision: &str,
    options: WaitOptions,
    mode: Mode,
    on_progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<Report> {
    let mut report = ensure_revision_label(kube, namespace, revision, mode).await?;
    report.extend(restart_deployments(kube, namespace, revision, mode).await?);
    if !mode.is_dry_run() {
        wait_for_revision(kube, namespace, revision, options, on_progress).await?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fake::FakeKube;
    use crate::port::MockKube;

    fn ns(labels: &Value) -> Value {
        json!({"metadata": {"name": "app", "labels": labels}})
    }

    fn deployment(name: &str) -> Value {
        json!({"metadata": {"name": name}, "spec": {"selector": {"matchLabels": {"app": name}}}})
    }

    fn pod(name: &str, app: &str, rev: Option<&str>) -> Value {
        let mut labels = json!({"app": app});
        if let Some(r) = rev {
            labels["istio.io/rev"] = json!(r);
        }
        json!({"metadata": {"name": name, "labels": labels}, "status": {"phase": "Running"}})
    }

    #[test]
    fn labels_are_set_and_injection_removed_in_one_patch() {
        let plan = plan_namespace_labels(&ns(&json!({"istio-injection": "enabled"})), "asm-183-2");
        assert_eq!(
            plan.patch,
            Some(
                json!({"metadata": {"labels": {"istio.io/rev": "asm-183-2", "istio-injection": null}}})
            )
        );
        assert_eq!(plan.warning, None);

        let both = plan_namespace_labels(
            &ns(&json!({"istio-injection": "enabled", "istio.io/rev": "asm-183-2"})),
            "asm-183-2",
        );
        assert!(both.patch.is_some());
        assert!(
            both.warning
                .unwrap()
                .contains("both istio-injection and istio.io/rev")
        );

        let done = plan_namespace_labels(
            &ns(&json!({"istio.io/rev": "asm-183-2", "team": "a"})),
            "asm-183-2",
        );
        assert_eq!(
            done,
            LabelPlan {
                patch: None,
                warning: None
            }
        );
    }

    #[test]
    fn only_deployments_with_uninjected_pods_are_restarted() {
        let deployments = [deployment("a"), deployment("b"), deployment("idle")];
        let mut terminating = pod("b-old", "b", None);
        terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let pods = [
            pod("a-1", "a", None),
            pod("a-2", "a", Some("asm-183-2")),
            pod("b-1", "b", Some("asm-183-2")),
            terminating,
        ];
        assert_eq!(
            deployments_to_restart(&deployments, &pods, "asm-183-2"),
            ["a"]
        );
        let progress = revision_progress(&deployments, &pods, "asm-183-2");
        assert_eq!(
            (progress.ready, progress.total, progress.pending),
            (2, 3, vec!["a-1".to_owned()])
        );
    }

    #[tokio::test]
    async fn labelling_sends_one_merge_patch_and_reports_the_warning() {
        let mut kube = MockKube::new();
        kube.expect_get().times(1).returning(|_| {
            Ok(Some(ns(
                &json!({"istio-injection": "enabled", "istio.io/rev": "old"}),
            )))
        });
        kube.expect_merge_patch()
            .withf(|o, p, m| {
                o.to_string() == "namespace app"
                    && p["metadata"]["labels"]["istio-injection"].is_null()
                    && p["metadata"]["labels"]["istio.io/rev"] == "asm-183-2"
                    && *m == Mode::DryRun
            })
            .times(1)
            .returning(|_, p, _| Ok(p.clone()));
        let report = ensure_revision_label(&kube, "app", "asm-183-2", Mode::DryRun)
            .await
            .unwrap();
        assert_eq!(report.changes[0].action, Outcome::WouldUpdate);
        assert_eq!(report.warnings.len(), 1);
    }

    #[tokio::test]
    async fn a_missing_namespace_is_named() {
        let mut kube = MockKube::new();
        kube.expect_get().returning(|_| Ok(None));
        let err = ensure_revision_label(&kube, "nope", "asm-183-2", Mode::Apply)
            .await
            .unwrap_err();
        assert!(
            err.to_string().starts_with("namespace nope not found"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn restarts_patch_the_pod_template_and_a_second_run_is_unchanged() {
        let kube = FakeKube::default();
        kube.insert(
            &ObjectRef::cluster(Kind::Namespace, "app"),
            ns(&json!({"istio-injection": "enabled"})),
        );
        for d in ["a", "b"] {
            kube.insert(
                &ObjectRef::namespaced(Kind::Deployment, "app", d),
                deployment(d),
            );
        }
        kube.insert(
            &ObjectRef::namespaced(Kind::Pod, "app", "a-1"),
            pod("a-1", "a", None),
        );
        kube.insert(
            &ObjectRef::namespaced(Kind::Pod, "app", "b-1"),
            pod("b-1", "b", Some("asm-183-2")),
        );

        let dry = enable_injection(
            &kube,
            "app",
            "asm-183-2",
            WaitOptions::default(),
            Mode::DryRun,
            &mut |_| {},
        )
        .await
        .unwrap();
        assert_eq!(
            dry.changes.iter().map(|c| c.action).collect::<Vec<_>>(),
            [
                Outcome::WouldUpdate,
                Outcome::WouldUpdate,
                Outcome::Unchanged
            ]
        );
        assert!(kube.writes().is_empty());

        let report = restart_deployments(&kube, "app", "asm-183-2", Mode::Apply)
            .await
            .unwrap();
        assert_eq!(
            report.outcome_of("deployment app/a rollout"),
            Some(Outcome::Updated)
        );
        assert_eq!(
            report.outcome_of("deployment app/b rollout"),
            Some(Outcome::Unchanged)
        );
        let a = kube
            .object(&ObjectRef::namespaced(Kind::Deployment, "app", "a"))
            .unwrap();
        let stamp =
            a.pointer("/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt");
        assert!(
            stamp
                .and_then(Value::as_str)
                .is_some_and(|s| s.parse::<jiff::Timestamp>().is_ok())
        );

        // The restarted pod comes back injected.
        kube.insert(
            &ObjectRef::namespaced(Kind::Pod, "app", "a-1"),
            pod("a-1", "a", Some("asm-183-2")),
        );
        let label = ensure_revision_label(&kube, "app", "asm-183-2", Mode::Apply)
            .await
            .unwrap();
        assert_eq!(label.changes[0].action, Outcome::Updated);
        let writes = kube.writes().len();
        let mut seen = Vec::new();
        let again = enable_injection(
            &kube,
            "app",
            "asm-183-2",
            WaitOptions::default(),
            Mode::Apply,
            &mut |p| {
                seen.push(p.ready);
            },
        )
        .await
        .unwrap();
        assert!(again.is_unchanged(), "{again}");
        assert_eq!(kube.writes().len(), writes);
        assert_eq!(seen, [2]);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_reports_progress_until_pods_carry_the_revision() {
        let mut kube = MockKube::new();
        let polls = std::sync::atomic::AtomicUsize::new(0);
        let polls = std::sync::Arc::new(polls);
        kube.expect_list()
            .withf(|q| q.kind == Kind::Deployment && q.namespace.as_deref() == Some("app"))
            .returning(|_| Ok(vec![deployment("a")]));
        let p = polls.clone();
        kube.expect_list()
            .withf(|q| q.kind == Kind::Pod)
            .returning(move |_| {
                let n = p.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(match n {
                    0 => vec![pod("a-1", "a", None), pod("a-2", "a", None)],
                    1 => vec![pod("a-1", "a", Some("asm-183-2")), pod("a-2", "a", None)],
                    _ => vec![
                        pod("a-1", "a", Some("asm-183-2")),
                        pod("a-2", "a", Some("asm-183-2")),
                    ],
                })
            });
        let mut seen = Vec::new();
        let done = wait_for_revision(
            &kube,
            "app",
            "asm-183-2",
            WaitOptions::default(),
            &mut |p| {
                seen.push((p.ready, p.total));
            },
        )
        .await
        .unwrap();
        assert!(done.is_done());
        assert_eq!(seen, [(0, 2), (1, 2), (2, 2)]);

        let mut stuck = MockKube::new();
        stuck
            .expect_list()
            .withf(|q| q.kind == Kind::Deployment)
            .returning(|_| Ok(vec![deployment("a")]));
        stuck
            .expect_list()
            .withf(|q| q.kind == Kind::Pod)
            .returning(|_| Ok(vec![pod("a-1", "a", None)]));
        let options = WaitOptions {
            timeout: Duration::from_secs(30),
            interval: Duration::from_secs(5),
        };
        let err = wait_for_revision(&stuck, "app", "asm-183-2", options, &mut |_| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("waiting for a-1"), "{err}");
    }
}
