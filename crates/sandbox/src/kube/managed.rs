//! Field ownership (`metadata.managedFields`, `FieldsV1`) for server-side apply and updates.

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use super::patch::{ListKind, key_of, list_kind, same_key};

/// One step of a field path in `FieldsV1` notation (`f:spec`, `k:{"port":443}`, `v:"x"`, `.`).
type Path = Vec<String>;

const OWNED_METADATA: &[&str] = &["labels", "annotations", "ownerReferences", "finalizers"];

/// The `FieldsV1` set of every field present in `obj` (an object of `kind`), leaving out the
/// server-owned parts (`status`, identity metadata).
pub(crate) fn field_set(obj: &Value, kind: &str) -> Value {
    let mut out = Map::new();
    if let Value::Object(m) = obj {
        for (k, v) in m {
            match k.as_str() {
                "apiVersion" | "kind" | "status" => {}
                "metadata" => {
                    let mut meta = Map::new();
                    for f in OWNED_METADATA {
                        if let Some(child) = v.get(*f) {
                            let path = vec!["metadata".to_owned(), (*f).to_owned()];
                            meta.insert(format!("f:{f}"), node(child, kind, &path));
                        }
                    }
                    if !meta.is_empty() {
                        out.insert("f:metadata".to_owned(), Value::Object(meta));
                    }
                }
                _ => {
                    out.insert(format!("f:{k}"), node(v, kind, std::slice::from_ref(k)));
                }
            }
        }
    }
    Value::Object(out)
}

fn node(v: &Value, kind: &str, path: &[String]) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, child) in m {
                let mut p = path.to_vec();
                p.push(k.clone());
                out.insert(format!("f:{k}"), node(child, kind, &p));
            }
            Value::Object(out)
        }
        Value::Array(items) => match list_kind(kind, path) {
            ListKind::Atomic => json!({}),
            ListKind::Set => {
                let mut out = Map::new();
                for item in items {
                    out.insert(format!("v:{item}"), json!({}));
                }
                Value::Object(out)
            }
            ListKind::Map(keys) => {
                let mut out = Map::new();
                for item in items {
                    let mut child = match node(item, kind, path) {
                        Value::Object(m) => m,
                        _ => Map::new(),
                    };
                    child.insert(".".to_owned(), json!({}));
                    out.insert(format!("k:{}", key_of(item, keys)), Value::Object(child));
                }
                Value::Object(out)
            }
        },
        _ => json!({}),
    }
}

/// Every leaf path of a `FieldsV1` set (a keyed item counts as a leaf through its `.` entry).
pub(crate) fn leaves(set: &Value) -> Vec<Path> {
    let mut out = Vec::new();
    walk(set, &mut Vec::new(), &mut out);
    out
}

fn walk(set: &Value, prefix: &mut Path, out: &mut Vec<Path>) {
    let Value::Object(m) = set else { return };
    for (k, child) in m {
        prefix.push(k.clone());
        if k == "." || child.as_object().is_none_or(Map::is_empty) {
            out.push(prefix.clone());
        } else {
            walk(child, prefix, out);
        }
        prefix.pop();
    }
}

/// Rebuilds a `FieldsV1` set from leaf paths.
pub(crate) fn from_leaves(paths: &[Path]) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut cur = &mut root;
        for seg in p {
            let entry = cur.entry(seg.clone()).or_insert_with(|| json!({}));
            let Value::Object(next) = entry else { break };
            cur = next;
        }
    }
    Value::Object(root)
}

/// The value a field path points at in `obj`, if present.
pub(crate) fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path {
        if seg == "." {
            return Some(cur);
        }
        if let Some(f) = seg.strip_prefix("f:") {
            cur = cur.get(f)?;
        } else if let Some(k) = seg.strip_prefix("k:") {
            let key: Value = serde_json::from_str(k).ok()?;
            let keys: Vec<&str> = key.as_object()?.keys().map(String::as_str).collect();
            cur = cur.as_array()?.iter().find(|i| same_key(i, &key, &keys))?;
        } else if let Some(v) = seg.strip_prefix("v:") {
            let want: Value = serde_json::from_str(v).ok()?;
            cur = cur.as_array()?.iter().find(|i| **i == want)?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Removes the field a path points at from `obj` (no-op when absent).
pub(crate) fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if last == "." {
        remove_at(obj, parents);
        return;
    }
    let mut cur = obj;
    for seg in parents {
        let next = if let Some(f) = seg.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = seg.strip_prefix("k:") {
            let Ok(key) = serde_json::from_str::<Value>(k) else {
                return;
            };
            let keys: Vec<String> = key
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            cur.as_array_mut()
                .and_then(|a| a.iter_mut().find(|i| same_key(i, &key, &keys)))
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        if let (Ok(key), Some(a)) = (serde_json::from_str::<Value>(k), cur.as_array_mut()) {
            let keys: Vec<String> = key
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            a.retain(|i| !same_key(i, &key, &keys));
        }
    } else if let Some(v) = last.strip_prefix("v:")
        && let (Ok(want), Some(a)) = (serde_json::from_str::<Value>(v), cur.as_array_mut())
    {
        a.retain(|i| *i != want);
    }
}

/// `.spec.ports[port=443,protocol="TCP"].targetPort`, as conflict messages print paths.
pub(crate) fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            let parts: Vec<String> = serde_json::from_str::<Value>(k)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_default()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = write!(out, "[{}]", parts.join(","));
        } else if let Some(v) = seg.strip_prefix("v:") {
            let _ = write!(out, "[{v}]");
        }
    }
    out
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) manager: String,
    pub(crate) operation: String,
    pub(crate) api_version: String,
    pub(crate) time: String,
    pub(crate) fields: Vec<Path>,
    pub(crate) subresource: Option<String>,
}

impl Entry {
    pub(crate) fn parse(v: &Value) -> Option<Self> {
        Some(Self {
            manager: v["manager"].as_str().unwrap_or_default().to_owned(),
            operation: v["operation"].as_str()?.to_owned(),
            api_version: v["apiVersion"].as_str().unwrap_or_default().to_owned(),
            time: v["time"].as_str().unwrap_or_default().to_owned(),
            fields: leaves(v.get("fieldsV1").unwrap_or(&Value::Null)),
            subresource: v["subresource"].as_str().map(str::to_owned),
        })
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": from_leaves(&self.fields),
        });
        if let Some(s) = &self.subresource {
            v["subresource"] = json!(s);
        }
        v
    }
}

/// The entries of an object's `metadata.managedFields`.
pub(crate) fn entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| a.iter().filter_map(Entry::parse).collect())
        .unwrap_or_default()
}

/// Fields of `applied_set` that another manager owns with a different value in `live`:
/// (manager, displayed path).
pub(crate) fn conflicts(
    entries: &[Entry],
    manager: &str,
    applied_set: &[Path],
    live: &Value,
    applied: &Value,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| e.manager != manager) {
        for p in applied_set {
            if p.last().is_some_and(|s| s == ".") {
                continue;
            }
            if e.fields.contains(p) && value_at(live, p) != value_at(applied, p) {
                out.push((e.manager.clone(), display_path(p)));
            }
        }
    }
    out
}

/// Drops paths that no longer resolve in `obj`, and entries left empty.
pub(crate) fn prune(entries: &mut Vec<Entry>, obj: &Value) {
    for e in entries.iter_mut() {
        e.fields.retain(|p| value_at(obj, p).is_some());
    }
    entries.retain(|e| !e.fields.is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_set_keys_service_ports_and_skips_identity() {
        let svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "istiod", "labels": {"app": "istiod"}, "uid": "u"},
            "spec": {"ports": [{"port": 443, "targetPort": 15017}]}, "status": {}});
        let set = field_set(&svc, "Service");
        assert_eq!(set["f:metadata"], json!({"f:labels": {"f:app": {}}}));
        let port = &set["f:spec"]["f:ports"]["k:{\"port\":443,\"protocol\":\"TCP\"}"];
        assert_eq!(port, &json!({".": {}, "f:port": {}, "f:targetPort": {}}));
        let ls = leaves(&set);
        assert!(ls.contains(&vec![
            "f:spec".into(),
            "f:ports".into(),
            "k:{\"port\":443,\"protocol\":\"TCP\"}".into(),
            "f:targetPort".into()
        ]));
        assert_eq!(from_leaves(&ls), set);
        for p in &ls {
            assert!(value_at(&svc, p).is_some(), "{p:?}");
        }
    }

    #[test]
    fn conflicts_name_the_other_manager_and_the_field() {
        let live = json!({"data": {"mesh": "a", "other": "x"}});
        let applied = json!({"data": {"mesh": "b"}});
        let owner = Entry {
            manager: "helm".into(),
            operation: "Apply".into(),
            api_version: "v1".into(),
            time: String::new(),
            fields: leaves(&field_set(&live, "ConfigMap")),
            subresource: None,
        };
        let set = leaves(&field_set(&applied, "ConfigMap"));
        let c = conflicts(&[owner], "meshca", &set, &live, &applied);
        assert_eq!(c, vec![("helm".to_owned(), ".data.mesh".to_owned())]);
    }

    #[test]
    fn remove_at_drops_keyed_items_and_fields() {
        let mut svc = json!({"spec": {"ports": [{"port": 1, "protocol": "TCP"}, {"port": 2}]}, "data": {"a": "1"}});
        remove_at(
            &mut svc,
            &[
                "f:spec".into(),
                "f:ports".into(),
                "k:{\"port\":2,\"protocol\":\"TCP\"}".into(),
                ".".into(),
            ],
        );
        remove_at(&mut svc, &["f:data".into(), "f:a".into()]);
        assert_eq!(
            svc,
            json!({"spec": {"ports": [{"port": 1, "protocol": "TCP"}]}, "data": {}})
        );
    }
}
