//! Server-side `Table` rendering for `kubectl get` (the columns kube-apiserver prints).

use serde_json::{Value, json};

use super::resources::ResourceType;

/// `HumanDuration` of apimachinery: `45s`, `5m3s`, `2d`, …
pub(crate) fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    let seconds = seconds.max(0);
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let d = days % 365;
        return if d == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{d}d")
        };
    }
    format!("{years}y")
}

fn age(obj: &Value, now: i64) -> String {
    obj["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map_or_else(
            || "<unknown>".to_owned(),
            |t| human_duration(now - t.as_second()),
        )
}

fn col(name: &str, ty: &str, priority: u8) -> Value {
    let mut c =
        json!({"name": name, "type": ty, "format": "", "description": "", "priority": priority});
    if name == "Name" {
        c["format"] = json!("name");
    }
    c
}

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".to_owned() } else { s }
}

fn count(v: &Value) -> usize {
    v.as_object().map_or(0, serde_json::Map::len)
}

fn labels_selector(v: &Value) -> String {
    or_none(
        v.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
    )
}

fn pod_cells(p: &Value, now: i64) -> Vec<Value> {
    let statuses = p["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let total = p["spec"]["containers"].as_array().map_or(0, Vec::len);
    let ready = statuses.iter().filter(|s| s["ready"] == true).count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|s| s["restartCount"].as_i64())
        .sum();
    let mut reason = p["status"]["phase"]
        .as_str()
        .unwrap_or("Pending")
        .to_owned();
    for s in &statuses {
        if let Some(r) = s["state"]["waiting"]["reason"]
            .as_str()
            .or(s["state"]["terminated"]["reason"].as_str())
        {
            r.clone_into(&mut reason);
        }
    }
    if p["metadata"]["deletionTimestamp"].is_string() {
        "Terminating".clone_into(&mut reason);
    }
    vec![
        json!(p["metadata"]["name"]),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts.to_string()),
        json!(age(p, now)),
        json!(or_none(
            p["status"]["podIP"].as_str().unwrap_or_default().to_owned()
        )),
        json!(or_none(
            p["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        )),
        json!("<none>"),
        json!("<none>"),
    ]
}

fn service_cells(s: &Value, now: i64) -> Vec<Value> {
    let spec = &s["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    let mut external: Vec<String> = spec["externalIPs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let external = match ty {
        "LoadBalancer" => {
            let ingress: Vec<String> = s["status"]["loadBalancer"]["ingress"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|i| {
                            i["ip"]
                                .as_str()
                                .or(i["hostname"].as_str())
                                .map(str::to_owned)
                        })
                        .collect()
                })
                .unwrap_or_default();
            external.extend(ingress);
            if external.is_empty() {
                "<pending>".to_owned()
            } else {
                external.join(",")
            }
        }
        "ExternalName" => spec["externalName"].as_str().unwrap_or_default().to_owned(),
        _ => or_none(external.join(",")),
    };
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64() {
                        Some(np) => format!("{}:{np}/{proto}", p["port"]),
                        None => format!("{}/{proto}", p["port"]),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    vec![
        json!(s["metadata"]["name"]),
        json!(ty),
        json!(or_none(
            spec["clusterIP"].as_str().unwrap_or_default().to_owned()
        )),
        json!(external),
        json!(or_none(ports.join(","))),
        json!(age(s, now)),
        json!(labels_selector(&spec["selector"])),
    ]
}

fn deployment_cells(d: &Value, now: i64) -> Vec<Value> {
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = containers
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let images: Vec<&str> = containers
        .iter()
        .filter_map(|c| c["image"].as_str())
        .collect();
    vec![
        json!(d["metadata"]["name"]),
        json!(format!(
            "{}/{}",
            n(&d["status"]["readyReplicas"]),
            n(&d["spec"]["replicas"])
        )),
        json!(n(&d["status"]["updatedReplicas"])),
        json!(n(&d["status"]["availableReplicas"])),
        json!(age(d, now)),
        json!(names.join(",")),
        json!(images.join(",")),
        json!(labels_selector(&d["spec"]["selector"]["matchLabels"])),
    ]
}

fn binding_cells(b: &Value, now: i64) -> Vec<Value> {
    let subjects = b["subjects"].as_array().cloned().unwrap_or_default();
    let of = |kind: &str| {
        subjects
            .iter()
            .filter(|s| s["kind"] == kind)
            .map(|s| match s["namespace"].as_str() {
                Some(ns) if kind == "ServiceAccount" => {
                    format!("{ns}/{}", s["name"].as_str().unwrap_or_default())
                }
                _ => s["name"].as_str().unwrap_or_default().to_owned(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        json!(b["metadata"]["name"]),
        json!(format!(
            "{}/{}",
            b["roleRef"]["kind"].as_str().unwrap_or_default(),
            b["roleRef"]["name"].as_str().unwrap_or_default()
        )),
        json!(age(b, now)),
        json!(of("User")),
        json!(of("Group")),
        json!(of("ServiceAccount")),
    ]
}

/// Renders the cells of one row.
type Cells = fn(&Value, i64) -> Vec<Value>;

/// Column definitions and one row of cells per object.
#[allow(clippy::too_many_lines, reason = "one table of printers")]
fn printer(kind: &str) -> (Vec<Value>, Cells) {
    match kind {
        "Pod" => (
            vec![
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Status", "string", 0),
                col("Restarts", "string", 0),
                col("Age", "string", 0),
                col("IP", "string", 1),
                col("Node", "string", 1),
                col("Nominated Node", "string", 1),
                col("Readiness Gates", "string", 1),
            ],
            pod_cells,
        ),
        "Service" => (
            vec![
                col("Name", "string", 0),
                col("Type", "string", 0),
                col("Cluster-IP", "string", 0),
                col("External-IP", "string", 0),
                col("Port(s)", "string", 0),
                col("Age", "string", 0),
                col("Selector", "string", 1),
            ],
            service_cells,
        ),
        "Deployment" => (
            vec![
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Up-to-date", "integer", 0),
                col("Available", "integer", 0),
                col("Age", "string", 0),
                col("Containers", "string", 1),
                col("Images", "string", 1),
                col("Selector", "string", 1),
            ],
            deployment_cells,
        ),
        "Namespace" => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Age", "string", 0),
            ],
            |n, now| {
                vec![
                    json!(n["metadata"]["name"]),
                    json!(n["status"]["phase"]),
                    json!(age(n, now)),
                ]
            },
        ),
        "ConfigMap" => (
            vec![
                col("Name", "string", 0),
                col("Data", "string", 0),
                col("Age", "string", 0),
            ],
            |c, now| {
                vec![
                    json!(c["metadata"]["name"]),
                    json!(count(&c["data"]) + count(&c["binaryData"])),
                    json!(age(c, now)),
                ]
            },
        ),
        "Secret" => (
            vec![
                col("Name", "string", 0),
                col("Type", "string", 0),
                col("Data", "string", 0),
                col("Age", "string", 0),
            ],
            |s, now| {
                vec![
                    json!(s["metadata"]["name"]),
                    json!(s["type"]),
                    json!(count(&s["data"])),
                    json!(age(s, now)),
                ]
            },
        ),
        "ServiceAccount" => (
            vec![
                col("Name", "string", 0),
                col("Secrets", "string", 0),
                col("Age", "string", 0),
            ],
            |s, now| {
                vec![
                    json!(s["metadata"]["name"]),
                    json!(s["secrets"].as_array().map_or(0, Vec::len)),
                    json!(age(s, now)),
                ]
            },
        ),
        "Node" => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Roles", "string", 0),
                col("Age", "string", 0),
                col("Version", "string", 0),
                col("Internal-IP", "string", 1),
            ],
            |n, now| {
                let ready = n["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                    .is_some_and(|c| c["status"] == "True");
                let ip = n["status"]["addresses"]
                    .as_array()
                    .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
                    .and_then(|a| a["address"].as_str())
                    .unwrap_or("<none>");
                vec![
                    json!(n["metadata"]["name"]),
                    json!(if ready { "Ready" } else { "NotReady" }),
                    json!("<none>"),
                    json!(age(n, now)),
                    json!(n["status"]["nodeInfo"]["kubeletVersion"]),
                    json!(ip),
                ]
            },
        ),
        "ClusterRoleBinding" | "RoleBinding" => (
            vec![
                col("Name", "string", 0),
                col("Role", "string", 0),
                col("Age", "string", 0),
                col("Users", "string", 1),
                col("Groups", "string", 1),
                col("ServiceAccounts", "string", 1),
            ],
            binding_cells,
        ),
        _ => (
            vec![col("Name", "string", 0), col("Created At", "date", 0)],
            |o, _| {
                vec![
                    json!(o["metadata"]["name"]),
                    json!(o["metadata"]["creationTimestamp"]),
                ]
            },
        ),
    }
}

/// A `meta.k8s.io/v1` Table of `objects`.
pub(crate) fn table(
    rt: &ResourceType,
    objects: &[&Value],
    resource_version: &str,
    now: i64,
) -> Value {
    let (columns, cells) = printer(rt.kind);
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut meta = o["metadata"].clone();
            if let Some(m) = meta.as_object_mut() {
                m.remove("managedFields");
            }
            json!({
                "cells": cells(o, now),
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta},
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_duration_matches_apimachinery() {
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 120, "3h2m"),
            (30 * 3600, "30h"),
            (3 * 86400 + 3600, "3d1h"),
            (10 * 86400, "10d"),
            (3 * 365 * 86400, "3y"),
            (9 * 365 * 86400, "9y"),
        ];
        for (s, want) in cases {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }

    #[test]
    fn pod_row_counts_ready_containers_and_restarts() {
        let pod = json!({"metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n"},
                         "status": {"phase": "Running", "podIP": "10.0.0.1", "containerStatuses": [{"ready": true, "restartCount": 1}, {"ready": false, "restartCount": 2}]}});
        let cells = pod_cells(
            &pod,
            jiff::Timestamp::from_second(1_767_225_600 + 90)
                .unwrap()
                .as_second(),
        );
        assert_eq!(
            cells[..5],
            [
                json!("p"),
                json!("1/2"),
                json!("Running"),
                json!("3"),
                json!("90s")
            ]
        );
    }
}
