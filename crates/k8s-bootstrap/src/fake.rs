//! An in-memory `Kube` for run-twice unit tests (stateful scenarios read better than long
//! expectation lists).

use std::collections::BTreeMap;
use std::sync::Mutex;

use base64::Engine as _;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::port::{Kind, Kube, ListQuery, ObjectRef, TokenSpec};
use crate::{Mode, Result};

type Key = (Kind, Option<String>, String);

#[derive(Default)]
pub(crate) struct FakeKube {
    objects: Mutex<BTreeMap<Key, Value>>,
    writes: Mutex<Vec<String>>,
    tokens: Mutex<u32>,
}

fn key(o: &ObjectRef) -> Key {
    (
        o.kind,
        o.namespace.clone().filter(|_| o.kind.is_namespaced()),
        o.name.clone(),
    )
}

/// RFC 7386 merge; also how the fake approximates server-side apply.
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

pub(crate) fn jwt(claims: &Value) -> String {
    let e = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.sig",
        e(br#"{"alg":"ES256"}"#),
        e(claims.to_string().as_bytes())
    )
}

impl FakeKube {
    pub(crate) fn insert(&self, object: &ObjectRef, value: Value) {
        let mut value = value;
        merge(&mut value, &object.manifest_skeleton());
        self.objects.lock().unwrap().insert(key(object), value);
    }

    pub(crate) fn object(&self, object: &ObjectRef) -> Option<Value> {
        self.objects.lock().unwrap().get(&key(object)).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.objects.lock().unwrap().len()
    }

    /// Writes that changed the store, as `verb object`.
    pub(crate) fn writes(&self) -> Vec<String> {
        self.writes.lock().unwrap().clone()
    }

    pub(crate) fn tokens_issued(&self) -> u32 {
        *self.tokens.lock().unwrap()
    }

    fn write(&self, verb: &str, object: &ObjectRef, patch: &Value, mode: Mode) -> Value {
        let mut store = self.objects.lock().unwrap();
        let mut value = store.get(&key(object)).cloned().unwrap_or_else(|| {
            let mut v = object.manifest_skeleton();
            v["metadata"]["uid"] = json!(format!("uid-{}", object.name));
            v
        });
        merge(&mut value, patch);
        if value.get("type") == Some(&json!("kubernetes.io/service-account-token"))
            && value.pointer("/data/token").is_none()
        {
            value["data"] =
                json!({"token": base64::engine::general_purpose::STANDARD.encode("legacy-jwt")});
        }
        if !mode.is_dry_run() {
            if object.kind == Kind::Namespace && !store.contains_key(&key(object)) {
                // The service-account controller's work.
                let sa = ObjectRef::namespaced(Kind::ServiceAccount, &object.name, "default");
                store.insert(key(&sa), sa.manifest_skeleton());
            }
            store.insert(key(object), value.clone());
            self.writes.lock().unwrap().push(format!("{verb} {object}"));
        }
        value
    }
}

fn matches(labels: Option<&Value>, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        labels.and_then(|l| l.get(k)).and_then(Value::as_str) == Some(v)
    })
}

#[async_trait::async_trait]
impl Kube for FakeKube {
    async fn get(&self, object: &ObjectRef) -> Result<Option<Value>> {
        Ok(self.object(object))
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Value>> {
        let store = self.objects.lock().unwrap();
        Ok(store
            .iter()
            .filter(|((kind, ns, _), _)| {
                *kind == query.kind
                    && (query.namespace.is_none()
                        || !kind.is_namespaced()
                        || *ns == query.namespace)
            })
            .map(|(_, v)| v.clone())
            .filter(|v| {
                query
                    .label_selector
                    .as_deref()
                    .is_none_or(|s| matches(v.pointer("/metadata/labels"), s))
            })
            .collect())
    }

    async fn apply(&self, object: &ObjectRef, manifest: &Value, mode: Mode) -> Result<Value> {
        Ok(self.write("apply", object, manifest, mode))
    }

    async fn merge_patch(&self, object: &ObjectRef, patch: &Value, mode: Mode) -> Result<Value> {
        Ok(self.write("patch", object, patch, mode))
    }

    async fn delete(&self, object: &ObjectRef, mode: Mode) -> Result<bool> {
        if mode.is_dry_run() {
            return Ok(self.object(object).is_some());
        }
        Ok(self.objects.lock().unwrap().remove(&key(object)).is_some())
    }

    async fn request_token(
        &self,
        namespace: &str,
        name: &str,
        spec: &TokenSpec,
    ) -> Result<SecretString> {
        *self.tokens.lock().unwrap() += 1;
        let exp = jiff::Timestamp::now().as_second() + spec.expiration_seconds;
        Ok(SecretString::from(jwt(&json!({
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "aud": if spec.audiences.is_empty() { vec!["https://kubernetes.default.svc".to_owned()] } else { spec.audiences.clone() },
            "exp": exp,
            "n": *self.tokens.lock().unwrap(),
        }))))
    }
}
