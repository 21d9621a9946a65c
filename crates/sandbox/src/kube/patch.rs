//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch, and
//! the merge step of server-side apply, with the list semantics of the built-in kinds.

use serde_json::{Map, Value};

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListKind {
    /// Replaced whole.
    Atomic,
    /// Merged item by item, keyed by these fields (the first is the strategic-merge key).
    Map(&'static [&'static str]),
    /// A set of scalars.
    Set,
}

const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// The list semantics of the field at `path` (field names from the object root) in `kind`.
pub(crate) fn list_kind(kind: &str, path: &[String]) -> ListKind {
    let n = path.len();
    let last = path.last().map_or("", String::as_str);
    let parent = if n >= 2 { path[n - 2].as_str() } else { "" };
    match last {
        "containers" | "initContainers" | "ephemeralContainers" if parent == "spec" => {
            ListKind::Map(&["name"])
        }
        "volumes" if parent == "spec" => ListKind::Map(&["name"]),
        "imagePullSecrets" => ListKind::Map(&["name"]),
        "hostAliases" if parent == "spec" => ListKind::Map(&["ip"]),
        "topologySpreadConstraints" if parent == "spec" => {
            ListKind::Map(&["topologyKey", "whenUnsatisfiable"])
        }
        "ports" if CONTAINER_LISTS.contains(&parent) => {
            ListKind::Map(&["containerPort", "protocol"])
        }
        "ports" if kind == "Service" && n == 2 && parent == "spec" => {
            ListKind::Map(&["port", "protocol"])
        }
        "env" if CONTAINER_LISTS.contains(&parent) => ListKind::Map(&["name"]),
        "volumeMounts" if CONTAINER_LISTS.contains(&parent) => ListKind::Map(&["mountPath"]),
        "volumeDevices" if CONTAINER_LISTS.contains(&parent) => ListKind::Map(&["devicePath"]),
        "ownerReferences" if n == 2 && parent == "metadata" => ListKind::Map(&["uid"]),
        "finalizers" if n == 2 && parent == "metadata" => ListKind::Set,
        "conditions" if parent == "status" => ListKind::Map(&["type"]),
        "secrets" if kind == "ServiceAccount" && n == 1 => ListKind::Map(&["name"]),
        _ => ListKind::Atomic,
    }
}

/// Default values of key fields that are absent, so `{port: 80}` and `{port: 80, protocol: TCP}`
/// name the same list item.
fn key_value<'a>(item: &'a Value, key: &str) -> Option<std::borrow::Cow<'a, Value>> {
    match item.get(key) {
        Some(v) if !v.is_null() => Some(std::borrow::Cow::Borrowed(v)),
        _ if key == "protocol" => Some(std::borrow::Cow::Owned(Value::from("TCP"))),
        _ => None,
    }
}

/// Whether two list items have equal values for `keys`.
pub(crate) fn same_key(a: &Value, b: &Value, keys: &[&str]) -> bool {
    keys.iter().all(|k| key_value(a, k) == key_value(b, k))
}

/// The key object (`{"port":443,"protocol":"TCP"}`) of a keyed list item.
pub(crate) fn key_of(item: &Value, keys: &[&str]) -> Value {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = key_value(item, k) {
            m.insert((*k).to_owned(), v.into_owned());
        }
    }
    Value::Object(m)
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {pointer:?}"))?;
    Ok(rest.split('/').map(unescape).collect())
}

fn parent_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(t)
                .ok_or_else(|| format!("doc is missing path: /{}", tokens.join("/")))?,
            Value::Array(a) => {
                let i: usize = t
                    .parse()
                    .map_err(|_| format!("invalid array index {t:?}"))?;
                a.get_mut(i)
                    .ok_or_else(|| format!("array index {i} out of bounds"))?
            }
            _ => return Err(format!("doc is missing path: /{}", tokens.join("/"))),
        };
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let tokens = split_pointer(path)?;
    let Some((last, parents)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parents)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            let i: usize = last
                .parse()
                .map_err(|_| format!("invalid array index {last:?}"))?;
            if i > a.len() {
                return Err(format!("array index {i} out of bounds"));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!("cannot add at {path}: parent is not a container")),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let tokens = split_pointer(path)?;
    let Some((last, parents)) = tokens.split_last() else {
        return Err("cannot remove the whole document".to_owned());
    };
    match parent_mut(doc, parents)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| format!("unable to remove nonexistent key: {last}: missing value")),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("invalid array index {last:?}"))?;
            if i >= a.len() {
                return Err(format!("array index {i} out of bounds"));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("cannot remove {path}: parent is not a container")),
    }
}

fn get<'a>(doc: &'a Value, path: &str) -> Result<&'a Value, String> {
    let tokens = split_pointer(path)?;
    let mut cur = doc;
    for t in &tokens {
        cur = match cur {
            Value::Object(m) => m.get(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        }
        .ok_or_else(|| format!("doc is missing path: {path}"))?;
    }
    Ok(cur)
}

/// RFC 6902 JSON patch.
pub(crate) fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch must be a list of operations")?;
    for op in ops {
        let name = op["op"].as_str().ok_or("operation is missing \"op\"")?;
        let path = op["path"].as_str().ok_or("operation is missing \"path\"")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("{name} operation is missing \"value\""))
        };
        let from = || {
            op["from"]
                .as_str()
                .ok_or_else(|| format!("{name} operation is missing \"from\""))
        };
        match name {
            "add" => add(doc, path, value()?)?,
            "remove" => {
                remove(doc, path)?;
            }
            "replace" => {
                let v = value()?;
                if path.is_empty() {
                    *doc = v;
                } else {
                    remove(doc, path).map_err(|_| {
                        format!("replace operation does not apply: doc is missing key: {path}")
                    })?;
                    add(doc, path, v)?;
                }
            }
            "move" => {
                let v = remove(doc, from()?)?;
                add(doc, path, v)?;
            }
            "copy" => {
                let v = get(doc, from()?)?.clone();
                add(doc, path, v)?;
            }
            "test" => {
                if *get(doc, path)? != value()? {
                    return Err(format!("testing value {path} failed: test failed"));
                }
            }
            other => return Err(format!("unexpected kind of operation {other:?}")),
        }
    }
    Ok(())
}

/// Removes `$`-directives from a value that is being inserted as a whole.
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|i| i.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A strategic merge patch on `original` (an object of `kind`).
pub(crate) fn strategic_merge(
    original: &Value,
    patch: &Value,
    kind: &str,
) -> Result<Value, String> {
    smp_map(original, patch, kind, &mut Vec::new()).map(|v| v.unwrap_or(Value::Null))
}

fn smp_map(
    original: &Value,
    overlay: &Value,
    kind: &str,
    path: &mut Vec<String>,
) -> Result<Option<Value>, String> {
    let Value::Object(directives) = overlay else {
        return Ok(Some(overlay.clone()));
    };
    match directives.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => return Ok(Some(strip_directives(overlay))),
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch type: {other} in map")),
    }
    let mut out = match original {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    for (k, v) in directives {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            let order = v.as_array().cloned().unwrap_or_default();
            orders.push((field.to_owned(), order));
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (out.get_mut(field), v.as_array()) {
                list.retain(|item| !del.contains(item));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        path.push(k.clone());
        let current = out.get(k).cloned().unwrap_or(Value::Null);
        let merged = match v {
            Value::Object(_) => smp_map(&current, v, kind, path)?,
            Value::Array(items) => Some(smp_list(&current, items, kind, path)?),
            scalar => Some(scalar.clone()),
        };
        path.pop();
        match merged {
            Some(m) => {
                out.insert(k.clone(), m);
            }
            None => {
                out.remove(k);
            }
        }
    }
    for (field, order) in orders {
        path.push(field.clone());
        let lk = list_kind(kind, path);
        path.pop();
        if let Some(Value::Array(list)) = out.get_mut(&field) {
            reorder(list, &order, lk);
        }
    }
    if let Some(Value::Array(keep)) = directives.get("$retainKeys") {
        out.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k)));
    }
    Ok(Some(Value::Object(out)))
}

fn reorder(list: &mut Vec<Value>, order: &[Value], lk: ListKind) {
    let position = |item: &Value| -> Option<usize> {
        order.iter().position(|o| match lk {
            ListKind::Map(keys) => same_key(item, o, &keys[..1]),
            _ => o == item,
        })
    };
    let mut indexed: Vec<(usize, usize, Value)> = list
        .drain(..)
        .enumerate()
        .map(|(i, item)| (position(&item).unwrap_or(usize::MAX), i, item))
        .collect();
    indexed.sort_by_key(|(p, i, _)| (*p, *i));
    list.extend(indexed.into_iter().map(|(_, _, v)| v));
}

fn smp_list(
    current: &Value,
    items: &[Value],
    kind: &str,
    path: &mut Vec<String>,
) -> Result<Value, String> {
    let lk = list_kind(kind, path);
    let replace_all = items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
    let mut out = match current {
        Value::Array(a) if !replace_all => a.clone(),
        _ => Vec::new(),
    };
    match lk {
        ListKind::Atomic => return Ok(strip_directives(&Value::Array(items.to_vec()))),
        ListKind::Set => {
            for item in items {
                if item.get("$patch").is_some() {
                    continue;
                }
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
        }
        ListKind::Map(keys) => {
            let key = &keys[..1];
            for item in items {
                match item.get("$patch").and_then(Value::as_str) {
                    Some("replace") => continue,
                    Some("delete") => {
                        out.retain(|o| !same_key(o, item, key));
                        continue;
                    }
                    _ => {}
                }
                if item.get(key[0]).is_none() {
                    return Err(format!(
                        "map: {item} does not contain declared merge key: {}",
                        key[0]
                    ));
                }
                if let Some(existing) = out.iter_mut().find(|o| same_key(o, item, key)) {
                    if let Some(m) = smp_map(existing, item, kind, path)? {
                        *existing = m;
                    }
                } else if let Some(m) = smp_map(&Value::Null, item, kind, path)? {
                    out.push(m);
                }
            }
        }
    }
    Ok(Value::Array(out))
}

/// The merge step of server-side apply: `applied` (an apply configuration) over `live`.
pub(crate) fn apply_merge(
    live: &Value,
    applied: &Value,
    kind: &str,
    path: &mut Vec<String>,
) -> Value {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            let mut out = l.clone();
            for (k, v) in a {
                if v.is_null() {
                    out.remove(k);
                    continue;
                }
                path.push(k.clone());
                let merged = apply_merge(l.get(k).unwrap_or(&Value::Null), v, kind, path);
                path.pop();
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(a)) => match list_kind(kind, path) {
            ListKind::Atomic => applied.clone(),
            ListKind::Set => {
                let mut out = l.clone();
                for item in a {
                    if !out.contains(item) {
                        out.push(item.clone());
                    }
                }
                Value::Array(out)
            }
            ListKind::Map(keys) => {
                let mut out = l.clone();
                for item in a {
                    if let Some(existing) = out.iter_mut().find(|o| same_key(o, item, keys)) {
                        *existing = apply_merge(existing, item, kind, path);
                    } else {
                        out.push(item.clone());
                    }
                }
                Value::Array(out)
            }
        },
        _ => applied.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_sets_and_removes_labels() {
        let mut ns = json!({"metadata": {"labels": {"istio-injection": "enabled", "a": "b"}}});
        merge_patch(
            &mut ns,
            &json!({"metadata": {"labels": {"istio-injection": null, "istio.io/rev": "asm-183-2"}}}),
        );
        assert_eq!(
            ns,
            json!({"metadata": {"labels": {"a": "b", "istio.io/rev": "asm-183-2"}}})
        );
        let before = ns.clone();
        merge_patch(&mut ns, &json!({}));
        assert_eq!(ns, before);
    }

    #[test]
    fn json_patch_applies_every_operation_and_tests() {
        let mut doc = json!({"a": {"b": [1, 2]}, "c": "x"});
        json_patch(
            &mut doc,
            &json!([
                {"op": "add", "path": "/a/b/-", "value": 3},
                {"op": "replace", "path": "/c", "value": "y"},
                {"op": "copy", "from": "/c", "path": "/d"},
                {"op": "move", "from": "/d", "path": "/e"},
                {"op": "remove", "path": "/a/b/0"},
                {"op": "test", "path": "/e", "value": "y"},
                {"op": "add", "path": "/f~1g", "value": true}
            ]),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"a": {"b": [2, 3]}, "c": "y", "e": "y", "f/g": true})
        );
        let err = json_patch(
            &mut doc,
            &json!([{"op": "test", "path": "/c", "value": "z"}]),
        )
        .unwrap_err();
        assert!(err.contains("test failed"), "{err}");
        assert!(json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
    }

    #[test]
    fn strategic_merge_follows_service_port_merge_key_and_directives() {
        let svc = json!({"metadata": {"labels": {"istio": "pilot", "app": "istiod"}},
            "spec": {"ports": [
                {"name": "grpc-xds", "port": 15010, "protocol": "TCP", "targetPort": 15010},
                {"name": "https-dns", "port": 15012, "protocol": "TCP", "targetPort": 15012},
                {"name": "https-webhook", "port": 443, "protocol": "TCP", "targetPort": 15017},
                {"name": "http-monitoring", "port": 15014, "protocol": "TCP", "targetPort": 15014}]}});
        let patch = json!({"metadata": {"labels": {"istio": null}},
            "spec": {"$setElementOrder/ports": [{"port": 15020}, {"port": 15010}, {"port": 15012}, {"port": 443}],
                     "ports": [{"name": "grpc-new", "port": 15020, "protocol": "TCP"},
                               {"port": 443, "targetPort": 15018},
                               {"$patch": "delete", "port": 15014}]}});
        let out = strategic_merge(&svc, &patch, "Service").unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"app": "istiod"}));
        let ports: Vec<i64> = out["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_i64().unwrap())
            .collect();
        assert_eq!(ports, vec![15020, 15010, 15012, 443]);
        assert_eq!(out["spec"]["ports"][3]["targetPort"], 15018);
        assert_eq!(out["spec"]["ports"][3]["name"], "https-webhook");
    }

    #[test]
    fn strategic_merge_replaces_lists_without_merge_key() {
        let crb = json!({"subjects": [{"kind": "ServiceAccount", "name": "a", "namespace": "x"}]});
        let out = strategic_merge(
            &crb,
            &json!({"subjects": [{"kind": "User", "name": "b"}]}),
            "ClusterRoleBinding",
        )
        .unwrap();
        assert_eq!(out["subjects"], json!([{"kind": "User", "name": "b"}]));
    }

    #[test]
    fn strategic_merge_merges_containers_by_name_in_pod_templates() {
        let dep = json!({"spec": {"template": {"metadata": {"annotations": {"a": "1"}},
            "spec": {"containers": [{"name": "app", "image": "v1", "env": [{"name": "X", "value": "1"}]}]}}}});
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}},
            "spec": {"containers": [{"name": "app", "env": [{"name": "Y", "value": "2"}]}, {"name": "side", "image": "s"}]}}}});
        let out = strategic_merge(&dep, &patch, "Deployment").unwrap();
        let t = &out["spec"]["template"];
        assert_eq!(t["metadata"]["annotations"]["a"], "1");
        assert_eq!(
            t["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
            "now"
        );
        assert_eq!(t["spec"]["containers"][0]["image"], "v1");
        assert_eq!(
            t["spec"]["containers"][0]["env"].as_array().unwrap().len(),
            2
        );
        assert_eq!(t["spec"]["containers"][1]["name"], "side");
    }

    #[test]
    fn strategic_merge_handles_retain_keys_and_primitive_lists() {
        let obj = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let out = strategic_merge(&obj, &patch, "Deployment").unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn apply_merge_keys_service_ports_by_port_and_protocol() {
        let live = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}], "type": "ClusterIP"}});
        let applied = json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 443}]}});
        let out = apply_merge(&live, &applied, "Service", &mut Vec::new());
        assert_eq!(
            out["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 9090})
        );
        assert_eq!(out["spec"]["ports"][1], json!({"port": 443}));
        assert_eq!(out["spec"]["type"], "ClusterIP");
    }
}
