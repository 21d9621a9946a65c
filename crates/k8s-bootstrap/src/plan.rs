//! The pure core: compare a desired manifest with what the cluster holds.

use std::time::Duration;

use serde_json::Value;

use crate::port::{Kube, ObjectRef};
use crate::wait::{Progress, WaitOptions, poll_until};
use crate::{Mode, Outcome, Result};

/// What must happen to one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The object does not exist.
    Create,
    /// The object exists but differs at these paths (`spec.ports[2].targetPort`).
    Update {
        /// The differing paths.
        differences: Vec<String>,
    },
    /// The object already holds every desired field.
    Keep,
}

/// Plans one object: `Keep` when every field of `desired` is present in `observed` with the
/// same value. Fields the server adds (status, defaults, metadata) are ignored; arrays must
/// have the same length and match element by element; a `null` in `desired` means "absent".
pub fn plan_object(desired: &Value, observed: Option<&Value>) -> Action {
    let Some(observed) = observed else {
        return Action::Create;
    };
    let mut differences = Vec::new();
    if let (Value::Object(want), Value::Object(have)) = (desired, observed) {
        for (key, value) in want {
            if key == "apiVersion" || key == "kind" {
                continue;
            }
            diff(value, have.get(key), key, &mut differences);
        }
    } else {
        diff(desired, Some(observed), "", &mut differences);
    }
    if differences.is_empty() {
        Action::Keep
    } else {
        Action::Update { differences }
    }
}

fn diff(want: &Value, have: Option<&Value>, path: &str, out: &mut Vec<String>) {
    match (want, have) {
        (Value::Null, None | Some(Value::Null)) => {}
        (Value::Object(w), Some(Value::Object(h))) => {
            for (key, value) in w {
                diff(value, h.get(key), &format!("{path}.{key}"), out);
            }
        }
        (Value::Array(w), Some(Value::Array(h))) if w.len() == h.len() => {
            for (i, (wv, hv)) in w.iter().zip(h).enumerate() {
                diff(wv, Some(hv), &format!("{path}[{i}]"), out);
            }
        }
        (w, Some(h)) if w == h => {}
        _ => out.push(path.to_owned()),
    }
}

/// How long [`ensure_object`] waits for an object that is being deleted (a namespace in
/// `Terminating`, an object held by finalizers) to be gone before creating it anew.
pub(crate) const DELETION_WAIT: WaitOptions = WaitOptions {
    timeout: Duration::from_secs(300),
    interval: Duration::from_millis(500),
};

/// Makes `object` hold `desired`: reads it, plans, and applies (server-side apply, or a
/// server-side dry run under [`Mode::DryRun`]) only when something differs. An object that is
/// being deleted is waited for (up to five minutes) and then created anew: writing into a
/// `Terminating` namespace is refused, and anything written to a deleted object is lost.
pub async fn ensure_object(
    kube: &dyn Kube,
    object: &ObjectRef,
    desired: &Value,
    mode: Mode,
) -> Result<Outcome> {
    let mut observed = kube.get(object).await?;
    if observed.as_ref().is_some_and(is_being_deleted) {
        if mode.is_dry_run() {
            // A dry run would be refused inside a terminating namespace; after the deletion
            // the object is created.
            return Ok(Outcome::create(mode));
        }
        wait_until_deleted(kube, object, DELETION_WAIT).await?;
        observed = None;
    }
    let action = plan_object(desired, observed.as_ref());
    let outcome = match &action {
        Action::Keep => return Ok(Outcome::Unchanged),
        Action::Create => Outcome::create(mode),
        Action::Update { differences } => {
            tracing::debug!(k8s.object = %object, ?differences, "object differs");
            Outcome::update(mode)
        }
    };
    kube.apply(object, desired, mode).await?;
    tracing::info!(k8s.object = %object, k8s.outcome = %outcome, "applied");
    Ok(outcome)
}

fn is_being_deleted(object: &Value) -> bool {
    !object["metadata"]["deletionTimestamp"].is_null()
}

async fn wait_until_deleted(
    kube: &dyn Kube,
    object: &ObjectRef,
    options: WaitOptions,
) -> Result<()> {
    let what = format!("{object} to finish deleting");
    tracing::info!(k8s.object = %object, "waiting for the object to finish deleting");
    poll_until(&what, options, &mut |_| {}, || async {
        let gone = kube.get(object).await?.is_none();
        Ok(Progress {
            ready: usize::from(gone),
            total: 1,
            pending: if gone {
                Vec::new()
            } else {
                vec![object.to_string()]
            },
        })
    })
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use mockall::predicate::eq;
    use serde_json::json;

    use super::*;
    use crate::port::{Kind, MockKube};

    #[test]
    fn missing_objects_are_created() {
        assert_eq!(plan_object(&json!({"a": 1}), None), Action::Create);
    }

    #[test]
    fn server_added_fields_do_not_count_as_differences() {
        let desired = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "istiod", "labels": {"app": "istiod"}},
            "spec": {"ports": [{"port": 443, "targetPort": 15017}]},
        });
        let observed = json!({
            "metadata": {"name": "istiod", "uid": "u", "resourceVersion": "7",
                         "labels": {"app": "istiod", "extra": "x"}},
            "spec": {"ports": [{"port": 443, "targetPort": 15017, "protocol": "TCP"}],
                     "clusterIP": "10.0.0.1"},
            "status": {},
        });
        assert_eq!(plan_object(&desired, Some(&observed)), Action::Keep);
    }

    #[test]
    fn differences_are_reported_by_path() {
        let desired = json!({"spec": {"ports": [{"port": 443, "targetPort": 15017}]},
                             "metadata": {"labels": {"gone": null}}});
        let observed = json!({"spec": {"ports": [{"port": 443, "targetPort": 443}]},
                              "metadata": {"labels": {"gone": "yes"}}});
        let Action::Update { mut differences } = plan_object(&desired, Some(&observed)) else {
            panic!("expected an update");
        };
        differences.sort();
        assert_eq!(
            differences,
            ["metadata.labels.gone", "spec.ports[0].targetPort"]
        );
        let shorter = json!({"spec": {"ports": []}});
        assert!(matches!(
            plan_object(&desired, Some(&shorter)),
            Action::Update { .. }
        ));
    }

    #[tokio::test]
    async fn ensure_object_does_not_write_when_the_cluster_matches() {
        let ns = ObjectRef::cluster(Kind::Namespace, "vault");
        let desired = ns.manifest_skeleton();
        let mut kube = MockKube::new();
        let live = json!({"metadata": {"name": "vault", "uid": "1"}});
        kube.expect_get()
            .with(eq(ns.clone()))
            .times(1)
            .returning(move |_| Ok(Some(live.clone())));
        kube.expect_apply().never();
        let outcome = ensure_object(&kube, &ns, &desired, Mode::Apply)
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Unchanged);
    }

    #[tokio::test]
    async fn ensure_object_applies_in_the_requested_mode() {
        let ns = ObjectRef::cluster(Kind::Namespace, "vault");
        let desired = ns.manifest_skeleton();
        for (mode, expected) in [
            (Mode::Apply, Outcome::Created),
            (Mode::DryRun, Outcome::WouldCreate),
        ] {
            let mut kube = MockKube::new();
            kube.expect_get().times(1).returning(|_| Ok(None));
            let d = desired.clone();
            kube.expect_apply()
                .withf(move |o, m, md| o.name == "vault" && *m == d && *md == mode)
                .times(1)
                .returning(|_, m, _| Ok(m.clone()));
            assert_eq!(
                ensure_object(&kube, &ns, &desired, mode).await.unwrap(),
                expected
            );
        }
    }
}
