//! Per-kind defaulting and validation, run after every create, update, patch and apply.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::resources::ResourceType;
use super::status::{ApiError, Cause};

/// What defaulting needs to know about the rest of the cluster.
pub(crate) struct Ctx<'a> {
    /// Cluster IPs already allocated.
    pub(crate) cluster_ips: BTreeSet<String>,
    /// Node ports already allocated.
    pub(crate) node_ports: BTreeSet<i64>,
    /// The node pods are scheduled on.
    pub(crate) node_name: &'a str,
    /// The requesting user (for CSRs).
    pub(crate) user: (&'a str, &'a str, &'a [String]),
}

const META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// The top-level fields an object of `kind` may carry besides `apiVersion`, `kind`, `metadata`.
fn known_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "ServiceAccount" => &[
            "secrets",
            "imagePullSecrets",
            "automountServiceAccountToken",
        ],
        "Secret" => &["data", "stringData", "type", "immutable"],
        "ConfigMap" => &["data", "binaryData", "immutable"],
        "Endpoints" => &["subsets"],
        "ClusterRole" => &["rules", "aggregationRule"],
        "Role" => &["rules"],
        "ClusterRoleBinding" | "RoleBinding" => &["subjects", "roleRef"],
        _ => &["spec", "status"],
    }
}

/// Unknown top-level and metadata fields of `obj` (`.foo`, `.metadata.bar`), removed from it.
pub(crate) fn prune_unknown(kind: &str, obj: &mut Value) -> Vec<String> {
    let mut unknown = Vec::new();
    if let Value::Object(m) = obj {
        let known = known_fields(kind);
        m.retain(|k, _| {
            let ok = matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
                || known.contains(&k.as_str());
            if !ok {
                unknown.push(k.clone());
            }
            ok
        });
        if let Some(Value::Object(meta)) = m.get_mut("metadata") {
            meta.retain(|k, _| {
                let ok = META_FIELDS.contains(&k.as_str());
                if !ok {
                    unknown.push(format!("metadata.{k}"));
                }
                ok
            });
        }
    }
    unknown
}

/// Fields whose JSON type the defaulting relies on: (path, wants an object).
const SHAPES: &[(&[&str], bool)] = &[
    (&["metadata"], true),
    (&["metadata", "labels"], true),
    (&["metadata", "annotations"], true),
    (&["metadata", "ownerReferences"], false),
    (&["metadata", "finalizers"], false),
    (&["metadata", "managedFields"], false),
    (&["spec"], true),
    (&["status"], true),
    (&["data"], true),
    (&["binaryData"], true),
    (&["stringData"], true),
    (&["roleRef"], true),
    (&["subjects"], false),
    (&["rules"], false),
    (&["secrets"], false),
    (&["imagePullSecrets"], false),
    (&["subsets"], false),
    (&["spec", "finalizers"], false),
    (&["spec", "ports"], false),
    (&["spec", "selector"], true),
    (&["spec", "containers"], false),
    (&["spec", "template"], true),
    (&["spec", "template", "metadata"], true),
    (&["spec", "template", "metadata", "labels"], true),
    (&["spec", "template", "metadata", "annotations"], true),
    (&["spec", "template", "spec"], true),
    (&["spec", "template", "spec", "containers"], false),
    (&["spec", "selector", "matchLabels"], true),
    (&["status", "conditions"], false),
];

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Rejects bodies whose structure does not fit the kind (`labels: "x"`), as the API server's
/// decoder does, before any defaulting touches them.
pub(crate) fn check_shapes(kind: &str, obj: &Value) -> Result<(), ApiError> {
    for (path, object) in SHAPES {
        let mut cur = obj;
        let mut present = true;
        for seg in *path {
            match cur.get(seg) {
                Some(next) if !next.is_null() => cur = next,
                _ => {
                    present = false;
                    break;
                }
            }
        }
        let fits = if *object {
            cur.is_object()
        } else {
            cur.is_array()
        };
        if present && !fits {
            let found = type_name(cur);
            let want = if *object { "object" } else { "array" };
            return Err(ApiError::bad_request(format!(
                "json: cannot unmarshal {found} into Go struct field {kind}.{} of type {want}",
                path.join(".")
            )));
        }
    }
    for field in ["labels", "annotations"] {
        if let Some(m) = obj["metadata"][field].as_object()
            && let Some((k, v)) = m.iter().find(|(_, v)| !v.is_string())
        {
            return Err(ApiError::bad_request(format!(
                "json: cannot unmarshal {} into Go struct field ObjectMeta.metadata.{field} of type string (key {k:?})",
                type_name(v)
            )));
        }
    }
    let lists = [
        ("spec", "ports"),
        ("spec", "containers"),
        ("", "subjects"),
        ("", "rules"),
    ];
    for (parent, list) in lists {
        let items = if parent.is_empty() {
            &obj[list]
        } else {
            &obj[parent][list]
        };
        if let Some(bad) = items
            .as_array()
            .and_then(|a| a.iter().find(|i| !i.is_object()))
        {
            return Err(ApiError::bad_request(format!(
                "json: cannot unmarshal {} into Go struct field {kind}.{list} of type object",
                type_name(bad)
            )));
        }
    }
    Ok(())
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_label)
}

fn is_qualified_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && s.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)
}

fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_qualified_name_part(s)
}

fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_subdomain(prefix) && is_qualified_name_part(name),
        None => is_qualified_name_part(s),
    }
}

fn is_config_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Validates `metadata.name` for the type.
pub(crate) fn validate_name(rt: &ResourceType, name: &str) -> Option<Cause> {
    let value = Value::String(name.to_owned());
    match rt.kind {
        "Namespace" if !is_label(name) => Some(Cause::invalid("metadata.name", &value, LABEL_MSG)),
        "Service"
            if !(is_label(name) && name.as_bytes().first().is_some_and(u8::is_ascii_lowercase)) =>
        {
            Some(Cause::invalid("metadata.name", &value, DNS1035_MSG))
        }
        "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding" => {
            if name.is_empty() || name == "." || name == ".." || name.contains(['/', '%']) {
                Some(Cause::invalid(
                    "metadata.name",
                    &value,
                    "may not contain '/' or '%' and may not be '.' or '..'",
                ))
            } else {
                None
            }
        }
        "Namespace" | "Service" => None,
        _ if !is_subdomain(name) => Some(Cause::invalid("metadata.name", &value, SUBDOMAIN_MSG)),
        _ => None,
    }
}

fn validate_meta(obj: &Value, causes: &mut Vec<Cause>) {
    if let Some(labels) = obj["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            if !is_qualified_name(k) {
                causes.push(Cause::invalid("metadata.labels", &json!(k), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
            }
            match v.as_str() {
                Some(s) if is_label_value(s) => {}
                _ => causes.push(Cause::invalid("metadata.labels", v, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")),
            }
        }
    }
    if let Some(ann) = obj["metadata"]["annotations"].as_object() {
        for (k, v) in ann {
            if !is_qualified_name(k) {
                causes.push(Cause::invalid("metadata.annotations", &json!(k), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
            }
            if !v.is_string() {
                causes.push(Cause::invalid(
                    format!("metadata.annotations[{k}]"),
                    v,
                    "must be a string",
                ));
            }
        }
    }
}

fn set_default(m: &mut Value, key: &str, v: Value) {
    if let Value::Object(map) = m
        && map.get(key).is_none_or(Value::is_null)
    {
        map.insert(key.to_owned(), v);
    }
}

/// Defaults and validates `obj` (the object about to be stored; `old` is the stored one on an
/// update). Identity metadata is handled by the caller.
pub(crate) fn prepare(
    rt: &ResourceType,
    old: Option<&Value>,
    obj: &mut Value,
    ctx: &Ctx<'_>,
) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut causes = Vec::new();
    validate_meta(obj, &mut causes);
    match rt.kind {
        "Namespace" => namespace(obj, &name),
        "Secret" => secret(old, obj, &mut causes),
        "ConfigMap" => config_map(old, obj, &mut causes),
        "Service" => service(old, obj, ctx, &mut causes),
        "Pod" => pod(old, obj, ctx, &mut causes),
        "Deployment" => deployment(old, obj, &mut causes),
        "ClusterRoleBinding" | "RoleBinding" => binding(rt, old, obj, &mut causes),
        "ClusterRole" | "Role" => role(obj, &mut causes),
        "CertificateSigningRequest" => csr(old, obj, ctx, &mut causes),
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(rt, &name, &causes))
    }
}

fn namespace(obj: &mut Value, name: &str) {
    obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
    if obj["spec"]["finalizers"].is_null() {
        obj["spec"]["finalizers"] = json!(["kubernetes"]);
    }
    obj["status"] = json!({"phase": "Active"});
}

fn check_keys(field: &str, map: &Value, causes: &mut Vec<Cause>) {
    if let Some(m) = map.as_object() {
        for k in m.keys() {
            if !is_config_key(k) {
                causes.push(Cause::invalid(
                    format!("{field}[{k}]"),
                    &json!(k),
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                ));
            }
        }
    }
}

fn check_base64(field: &str, map: &Value, causes: &mut Vec<Cause>) {
    if let Some(m) = map.as_object() {
        for (k, v) in m {
            let ok = v.as_str().is_some_and(|s| STANDARD.decode(s).is_ok());
            if !ok {
                causes.push(Cause::invalid(
                    format!("{field}[{k}]"),
                    v,
                    "must be base64-encoded bytes",
                ));
            }
        }
    }
}

fn immutable_data(old: Option<&Value>, obj: &Value, fields: &[&str], causes: &mut Vec<Cause>) {
    if let Some(old) = old
        && old["immutable"] == json!(true)
    {
        for f in fields {
            if old[*f] != obj[*f] {
                causes.push(Cause::forbidden(
                    *f,
                    "field is immutable when `immutable` is set",
                ));
            }
        }
        if obj["immutable"] != json!(true) {
            causes.push(Cause::forbidden(
                "immutable",
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

fn secret(old: Option<&Value>, obj: &mut Value, causes: &mut Vec<Cause>) {
    if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
        for (k, v) in sd {
            let text = v.as_str().unwrap_or_default().to_owned();
            obj["data"][k] = json!(STANDARD.encode(text));
        }
    }
    set_default(obj, "type", json!("Opaque"));
    check_keys("data", &obj["data"], causes);
    check_base64("data", &obj["data"], causes);
    immutable_data(old, obj, &["data"], causes);
    if let Some(old) = old
        && old["type"] != obj["type"]
    {
        causes.push(Cause::invalid("type", &obj["type"], "field is immutable"));
    }
    if obj["type"] == "kubernetes.io/service-account-token"
        && obj["metadata"]["annotations"]["kubernetes.io/service-account.name"]
            .as_str()
            .is_none_or(str::is_empty)
    {
        causes.push(Cause::required(
            "metadata.annotations[kubernetes.io/service-account.name]",
        ));
    }
}

fn config_map(old: Option<&Value>, obj: &mut Value, causes: &mut Vec<Cause>) {
    check_keys("data", &obj["data"], causes);
    check_keys("binaryData", &obj["binaryData"], causes);
    check_base64("binaryData", &obj["binaryData"], causes);
    if let (Some(d), Some(b)) = (obj["data"].as_object(), obj["binaryData"].as_object()) {
        for k in d.keys().filter(|k| b.contains_key(*k)) {
            causes.push(Cause::invalid(
                format!("data[{k}]"),
                &json!(k),
                "duplicate of key present in binaryData",
            ));
        }
    }
    if let Some(d) = obj["data"].as_object() {
        for (k, v) in d {
            if !v.is_string() {
                causes.push(Cause::invalid(format!("data[{k}]"), v, "must be a string"));
            }
        }
    }
    immutable_data(old, obj, &["data", "binaryData"], causes);
}

#[allow(
    clippy::too_many_lines,
    reason = "the Service registry's defaulting and validation in one place"
)]
fn service(old: Option<&Value>, obj: &mut Value, ctx: &Ctx<'_>, causes: &mut Vec<Cause>) {
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    let spec = &mut obj["spec"];
    set_default(spec, "type", json!("ClusterIP"));
    let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_owned();
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty.as_str()) {
        causes.push(Cause {
            field: "spec.type".into(),
            reason: "FieldValueNotSupported",
            message: format!("Unsupported value: \"{ty}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
        });
        return;
    }
    let old_spec = old.map(|o| &o["spec"]);
    if ty != "ExternalName" {
        let old_ip = old_spec
            .and_then(|s| s["clusterIP"].as_str())
            .map(str::to_owned);
        let ip = match (spec["clusterIP"].as_str(), &old_ip) {
            (None | Some(""), Some(o)) => o.clone(),
            (None | Some(""), None) => allocate_ip(&ctx.cluster_ips),
            (Some(ip), _) => ip.to_owned(),
        };
        if let Some(o) = &old_ip
            && *o != ip
        {
            causes.push(Cause::invalid(
                "spec.clusterIP",
                &json!(ip),
                "field is immutable",
            ));
        }
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
        if ip != "None" {
            set_default(spec, "ipFamilies", json!(["IPv4"]));
            set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        }
        set_default(spec, "sessionAffinity", json!("None"));
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    let headless = spec["clusterIP"] == "None";
    let mut used = ctx.node_ports.clone();
    let ports = spec["ports"]
        .as_array_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && !headless {
        causes.push(Cause::required("spec.ports"));
    }
    let mut names = BTreeSet::new();
    let mut keys = BTreeSet::new();
    let several = ports.len() > 1;
    let mut out = Vec::new();
    for (i, mut p) in ports.into_iter().enumerate() {
        set_default(&mut p, "protocol", json!("TCP"));
        let port = p["port"].as_i64().unwrap_or(0);
        if !(1..=65535).contains(&port) {
            causes.push(Cause::invalid(
                format!("spec.ports[{i}].port"),
                &p["port"],
                "must be between 1 and 65535, inclusive",
            ));
        }
        if p["targetPort"].is_null() {
            p["targetPort"] = json!(port);
        }
        let name = p["name"].as_str().unwrap_or_default().to_owned();
        if several && name.is_empty() {
            causes.push(Cause::required(format!("spec.ports[{i}].name")));
        }
        if !name.is_empty() && !names.insert(name.clone()) {
            causes.push(Cause::duplicate(
                format!("spec.ports[{i}].name"),
                &json!(name),
            ));
        }
        let key = (port, p["protocol"].as_str().unwrap_or("TCP").to_owned());
        if !keys.insert(key) {
            causes.push(Cause::duplicate(format!("spec.ports[{i}]"), &p));
        }
        if ty == "NodePort" || ty == "LoadBalancer" {
            if p["nodePort"].is_null() {
                let kept = old_spec.and_then(|s| s["ports"].as_array()).and_then(|a| {
                    a.iter()
                        .find(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"])
                        .and_then(|o| o["nodePort"].as_i64())
                });
                let np = kept.unwrap_or_else(|| {
                    let n = (30000..=32767).find(|n| !used.contains(n)).unwrap_or(32767);
                    used.insert(n);
                    n
                });
                p["nodePort"] = json!(np);
            }
        } else if !p["nodePort"].is_null() {
            causes.push(Cause::forbidden(
                format!("spec.ports[{i}].nodePort"),
                &format!("may not be used when `type` is '{ty}'"),
            ));
        }
        out.push(p);
    }
    if !out.is_empty() {
        spec["ports"] = Value::Array(out);
    }
    obj["status"] = old
        .map(|o| o["status"].clone())
        .filter(|s| !s.is_null())
        .unwrap_or_else(|| json!({"loadBalancer": {}}));
}

fn allocate_ip(used: &BTreeSet<String>) -> String {
    (2..=65_000_u32)
        .map(|n| format!("10.96.{}.{}", n / 250, n % 250 + 1))
        .find(|ip| !used.contains(ip))
        .unwrap_or_else(|| "10.96.255.254".to_owned())
}

fn pod_spec_defaults(spec: &mut Value, field: &str, causes: &mut Vec<Cause>) {
    if !spec.is_object() {
        *spec = json!({});
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    match spec["containers"].as_array_mut() {
        Some(cs) if !cs.is_empty() => {
            for (i, c) in cs.iter_mut().enumerate() {
                if c["name"].as_str().is_none_or(str::is_empty) {
                    causes.push(Cause::required(format!("{field}.containers[{i}].name")));
                }
                let image = c["image"].as_str().unwrap_or_default().to_owned();
                if image.is_empty() {
                    causes.push(Cause::required(format!("{field}.containers[{i}].image")));
                }
                let latest = image.ends_with(":latest")
                    || !image.rsplit('/').next().unwrap_or_default().contains(':');
                set_default(
                    c,
                    "imagePullPolicy",
                    json!(if latest { "Always" } else { "IfNotPresent" }),
                );
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                set_default(c, "resources", json!({}));
                if let Some(ports) = c["ports"].as_array_mut() {
                    for p in ports {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
        _ => causes.push(Cause::required(format!("{field}.containers"))),
    }
}

fn pod(old: Option<&Value>, obj: &mut Value, ctx: &Ctx<'_>, causes: &mut Vec<Cause>) {
    pod_spec_defaults(&mut obj["spec"], "spec", causes);
    set_default(&mut obj["spec"], "serviceAccountName", json!("default"));
    set_default(&mut obj["spec"], "nodeName", json!(ctx.node_name));
    if old.is_some() {
        // An update's status is settled by the caller: kept by `keep_status`, or replaced
        // through the status subresource.
        return;
    }
    let containers = obj["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            json!({
                "name": c["name"], "image": c["image"], "imageID": "", "ready": true, "started": true,
                "restartCount": 0, "state": {"running": {"startedAt": obj["metadata"]["creationTimestamp"]}},
            })
        })
        .collect();
    let now = obj["metadata"]["creationTimestamp"].clone();
    let cond = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    obj["status"] = json!({
        "phase": "Running",
        "conditions": [cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
        "hostIP": "192.0.2.10",
        "podIP": format!("10.244.0.{}", 2 + ctx.cluster_ips.len() % 250),
        "startTime": now,
        "qosClass": "BestEffort",
        "containerStatuses": statuses,
    });
}

fn deployment(old: Option<&Value>, obj: &mut Value, causes: &mut Vec<Cause>) {
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    let spec = &mut obj["spec"];
    set_default(spec, "replicas", json!(1));
    set_default(
        spec,
        "strategy",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
    );
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    pod_spec_defaults(&mut spec["template"]["spec"], "spec.template.spec", causes);
    let selector = spec["selector"]["matchLabels"].clone();
    match selector.as_object() {
        Some(sel) if !sel.is_empty() => {
            let labels = &spec["template"]["metadata"]["labels"];
            if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                causes.push(Cause::invalid(
                    "spec.template.metadata.labels",
                    labels,
                    "`selector` does not match template `labels`",
                ));
            }
        }
        _ => causes.push(Cause::required("spec.selector")),
    }
    if let Some(old) = old {
        if old["spec"]["selector"] != obj["spec"]["selector"] {
            causes.push(Cause::invalid(
                "spec.selector",
                &obj["spec"]["selector"],
                "field is immutable",
            ));
        }
        obj["status"] = old["status"].clone();
    } else {
        obj["status"] = json!({});
    }
}

fn binding(rt: &ResourceType, old: Option<&Value>, obj: &mut Value, causes: &mut Vec<Cause>) {
    let rr = &obj["roleRef"];
    if rr["name"].as_str().is_none_or(str::is_empty) {
        causes.push(Cause::required("roleRef.name"));
    }
    match rr["kind"].as_str() {
        Some("ClusterRole") => {}
        Some("Role") if rt.namespaced => {}
        _ => causes.push(Cause {
            field: "roleRef.kind".into(),
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {}: supported values: \"ClusterRole\"{}",
                rr["kind"],
                if rt.namespaced { ", \"Role\"" } else { "" }
            ),
        }),
    }
    if rr["apiGroup"] != "rbac.authorization.k8s.io" {
        causes.push(Cause {
            field: "roleRef.apiGroup".into(),
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {}: supported values: \"rbac.authorization.k8s.io\"",
                rr["apiGroup"]
            ),
        });
    }
    if let Some(old) = old
        && old["roleRef"] != obj["roleRef"]
    {
        causes.push(Cause::invalid(
            "roleRef",
            &obj["roleRef"],
            "cannot change roleRef",
        ));
    }
    if let Some(subjects) = obj["subjects"].as_array_mut() {
        for (i, s) in subjects.iter_mut().enumerate() {
            match s["kind"].as_str() {
                Some("ServiceAccount") => {
                    set_default(s, "apiGroup", json!(""));
                    if s["apiGroup"] == "" && let Some(m) = s.as_object_mut() {
                        m.remove("apiGroup");
                    }
                    if !rt.namespaced && s["namespace"].as_str().is_none_or(str::is_empty) {
                        causes.push(Cause::required(format!("subjects[{i}].namespace")));
                    }
                }
                Some("User" | "Group") => set_default(s, "apiGroup", json!("rbac.authorization.k8s.io")),
                _ => causes.push(Cause {
                    field: format!("subjects[{i}].kind"),
                    reason: "FieldValueNotSupported",
                    message: format!("Unsupported value: {}: supported values: \"ServiceAccount\", \"User\", \"Group\"", s["kind"]),
                }),
            }
            if s["name"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("subjects[{i}].name")));
            }
        }
    }
}

fn role(obj: &Value, causes: &mut Vec<Cause>) {
    if let Some(rules) = obj["rules"].as_array() {
        for (i, r) in rules.iter().enumerate() {
            if r["verbs"].as_array().is_none_or(Vec::is_empty) {
                causes.push(Cause::required(format!("rules[{i}].verbs")));
            }
        }
    }
}

fn csr(old: Option<&Value>, obj: &mut Value, ctx: &Ctx<'_>, causes: &mut Vec<Cause>) {
    let request = obj["spec"]["request"].as_str().unwrap_or_default();
    if request.is_empty() {
        causes.push(Cause::required("spec.request"));
    } else if STANDARD.decode(request).is_err() {
        causes.push(Cause::invalid(
            "spec.request",
            &json!("<bytes>"),
            "must be base64-encoded",
        ));
    }
    if obj["spec"]["signerName"].as_str().is_none_or(str::is_empty) {
        causes.push(Cause::required("spec.signerName"));
    }
    if let Some(old) = old {
        for f in ["request", "signerName", "username", "uid", "groups"] {
            obj["spec"][f] = old["spec"][f].clone();
        }
        if obj["status"].is_null() {
            obj["status"] = old["status"].clone();
        }
    } else {
        let (user, uid, groups) = ctx.user;
        obj["spec"]["username"] = json!(user);
        if !uid.is_empty() {
            obj["spec"]["uid"] = json!(uid);
        }
        obj["spec"]["groups"] = json!(groups);
        set_default(
            &mut obj["spec"],
            "usages",
            json!(["digital signature", "key encipherment"]),
        );
        set_default(obj, "status", json!({}));
    }
}

/// Keeps the server-owned `status` of kinds whose status only its subresource writes.
pub(crate) fn keep_status(kind: &str, old: &Value, obj: &mut Value) {
    if matches!(
        kind,
        "Namespace" | "Node" | "Deployment" | "Pod" | "Service" | "CertificateSigningRequest"
    ) && let Value::Object(m) = obj
    {
        match &old["status"] {
            Value::Null => {
                m.remove("status");
            }
            s => {
                m.insert("status".to_owned(), s.clone());
            }
        }
    }
}

/// Strips empty `metadata` maps (`labels: {}`) the way the API server's encoding drops them.
pub(crate) fn tidy(obj: &mut Value) {
    if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
        for k in ["labels", "annotations"] {
            if meta
                .get(k)
                .is_some_and(|v| v.as_object().is_some_and(Map::is_empty) || v.is_null())
            {
                meta.remove(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::resources::{RESOURCES, find};
    use super::*;

    fn ctx() -> Ctx<'static> {
        Ctx {
            cluster_ips: BTreeSet::new(),
            node_ports: BTreeSet::new(),
            node_name: "node-1",
            user: ("admin", "", &[]),
        }
    }

    fn rt(plural: &str) -> &'static ResourceType {
        RESOURCES.iter().find(|r| r.plural == plural).unwrap()
    }

    #[test]
    fn service_ports_get_protocol_target_port_and_a_cluster_ip() {
        let mut svc = json!({"metadata": {"name": "istiod"}, "spec": {"ports": [{"name": "a", "port": 15012}, {"name": "b", "port": 443, "targetPort": 15017}]}});
        prepare(rt("services"), None, &mut svc, &ctx()).unwrap();
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 15012);
        assert_eq!(svc["spec"]["ports"][1]["protocol"], "TCP");
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert!(
            svc["spec"]["clusterIP"]
                .as_str()
                .unwrap()
                .starts_with("10.96.")
        );
    }

    #[test]
    fn invalid_service_reports_every_cause() {
        let mut svc =
            json!({"metadata": {"name": "x"}, "spec": {"ports": [{"port": 0}, {"port": 80}]}});
        let err = prepare(rt("services"), None, &mut svc, &ctx()).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message.contains("spec.ports[0].port: Invalid value: 0"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("spec.ports[1].name: Required value"),
            "{}",
            err.message
        );
    }

    #[test]
    fn role_ref_cannot_change() {
        let old = json!({"metadata": {"name": "b"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "a"}});
        let mut new = old.clone();
        new["roleRef"]["name"] = json!("other");
        let err = prepare(rt("clusterrolebindings"), Some(&old), &mut new, &ctx()).unwrap_err();
        assert!(
            err.message.contains("cannot change roleRef"),
            "{}",
            err.message
        );
        assert!(find("rbac.authorization.k8s.io", "v1", "clusterrolebindings").is_some());
    }

    #[test]
    fn secret_string_data_moves_into_data_and_type_defaults() {
        let mut s = json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}});
        prepare(rt("secrets"), None, &mut s, &ctx()).unwrap();
        assert_eq!(
            s,
            json!({"metadata": {"name": "s"}, "data": {"k": "dg=="}, "type": "Opaque"})
        );
    }

    #[test]
    fn misshapen_bodies_are_bad_requests_not_panics() {
        for bad in [
            json!({"metadata": {"name": "x", "labels": "oops"}}),
            json!({"metadata": {"name": "x", "labels": {"a": 1}}}),
            json!({"metadata": {"name": "x"}, "spec": {"template": "oops"}}),
            json!({"metadata": {"name": "x"}, "spec": {"ports": [1]}}),
            json!({"metadata": {"name": "x"}, "data": []}),
        ] {
            let err = check_shapes("Service", &bad).unwrap_err();
            assert_eq!(err.code, 400, "{bad}");
            assert!(
                err.message.starts_with("json: cannot unmarshal"),
                "{}",
                err.message
            );
        }
        assert!(
            check_shapes(
                "Service",
                &json!({"metadata": {"name": "x"}, "spec": {"ports": [{"port": 1}]}})
            )
            .is_ok()
        );
    }

    #[test]
    fn unknown_fields_are_reported_and_dropped() {
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "bogus": 1}, "data": {}, "spec": {}});
        let unknown = prune_unknown("ConfigMap", &mut cm);
        assert_eq!(
            unknown,
            vec!["spec".to_owned(), "metadata.bogus".to_owned()]
        );
        assert!(cm.get("spec").is_none());
    }
}
