//! Step 13: the ingress gateway's external address.
//!
//! Integrated load-balancer mode sets `spec.loadBalancerIP` on `istio-ingressgateway` (and, as
//! that field is deprecated, optionally the `MetalLB` or kube-vip annotation). Manual mode reads
//! the gateway's nodePorts and the nodes' addresses and gives the `VIP:port -> node:nodePort`
//! table to configure on the external load balancer.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::names::{
    INGRESS_GATEWAY_SERVICE, ISTIO_NAMESPACE, KUBE_VIP_IPS_ANNOTATION, METALLB_IPS_ANNOTATION,
};
use crate::plan::{Action, plan_object};
use crate::port::{Kind, Kube, ListQuery, ObjectRef};
use crate::{Error, Mode, Outcome, Report, Result};

/// A load-balancer implementation's annotation for the requested address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LbAnnotation {
    /// `metallb.io/loadBalancerIPs`.
    MetalLb,
    /// `kube-vip.io/loadbalancerIPs`.
    KubeVip,
}

impl LbAnnotation {
    /// The annotation key.
    pub fn key(self) -> &'static str {
        match self {
            Self::MetalLb => METALLB_IPS_ANNOTATION,
            Self::KubeVip => KUBE_VIP_IPS_ANNOTATION,
        }
    }
}

/// Integrated mode: what to set on the gateway Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntegratedLb {
    /// The static external address.
    pub ip: IpAddr,
    /// Set `spec.loadBalancerIP` (the guide's way; deprecated since Kubernetes 1.24).
    pub set_field: bool,
    /// Annotations to set as well.
    pub annotations: Vec<LbAnnotation>,
}

impl IntegratedLb {
    /// The guide's choice: only `spec.loadBalancerIP`.
    pub fn field(ip: IpAddr) -> Self {
        Self {
            ip,
            set_field: true,
            annotations: Vec::new(),
        }
    }
}

fn gateway() -> ObjectRef {
    ObjectRef::namespaced(Kind::Service, ISTIO_NAMESPACE, INGRESS_GATEWAY_SERVICE)
}

/// The partial manifest applied in integrated mode (only the fields meshca owns).
pub fn load_balancer_manifest(lb: &IntegratedLb) -> Value {
    let mut manifest = gateway().manifest_skeleton();
    if !lb.annotations.is_empty() {
        let annotations: Map<String, Value> = lb
            .annotations
            .iter()
            .map(|a| (a.key().to_owned(), Value::String(lb.ip.to_string())))
            .collect();
        manifest["metadata"]["annotations"] = Value::Object(annotations);
    }
    if lb.set_field {
        manifest["spec"] = json!({"loadBalancerIP": lb.ip.to_string()});
    }
    manifest
}

/// Integrated mode: sets the address on `istio-system/istio-ingressgateway`.
///
/// # Errors
/// [`Error::NotFound`] when the gateway is not installed; [`Error::InvalidInput`] when
/// neither the field nor an annotation is asked for.
pub async fn ensure_load_balancer_ip(
    kube: &dyn Kube,
    lb: &IntegratedLb,
    mode: Mode,
) -> Result<Report> {
    if !lb.set_field && lb.annotations.is_empty() {
        return Err(Error::InvalidInput {
            what: "load balancer options",
            reason: "neither spec.loadBalancerIP nor an annotation is selected".into(),
        });
    }
    let object = gateway();
    let live = kube.get(&object).await?.ok_or_else(|| Error::NotFound {
        object: object.to_string(),
        hint: "install the mesh first (step 9)",
    })?;
    let manifest = load_balancer_manifest(lb);
    let outcome = match plan_object(&manifest, Some(&live)) {
        Action::Keep => Outcome::Unchanged,
        Action::Create | Action::Update { .. } => {
            kube.apply(&object, &manifest, mode).await?;
            Outcome::update(mode)
        }
    };
    let mut report = Report::new(mode);
    report.push(format!("{object} load balancer IP {}", lb.ip), outcome);
    Ok(report)
}

/// Which node address manual mode forwards to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum AddressType {
    /// `InternalIP` (the guide's user-cluster node addresses).
    #[default]
    InternalIP,
    /// `ExternalIP`.
    ExternalIP,
}

impl AddressType {
    fn as_str(self) -> &'static str {
        match self {
            Self::InternalIP => "InternalIP",
            Self::ExternalIP => "ExternalIP",
        }
    }
}

/// One gateway port in manual mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortForward {
    /// The Service port's name (`http2`).
    pub name: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// What clients reach: `VIP:port`.
    pub frontend: String,
    /// Where the load balancer sends it: `node:nodePort` for every node.
    pub backends: Vec<String>,
}

/// The manual-mode table: `VIP:port -> node:nodePort` for every gateway port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ForwardingTable {
    /// The load balancer's virtual address.
    pub vip: IpAddr,
    /// The Service the ports belong to.
    pub service: String,
    /// One entry per port, in the Service's order.
    pub ports: Vec<PortForward>,
}

impl fmt::Display for ForwardingTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<18} {:<8} {:<24} BACKENDS",
            "PORT", "PROTOCOL", "FRONTEND"
        )?;
        for p in &self.ports {
            writeln!(
                f,
                "{:<18} {:<8} {:<24} {}",
                p.name,
                p.protocol,
                p.frontend,
                p.backends.join(",")
            )?;
        }
        Ok(())
    }
}

fn endpoint(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    }
}

fn port_number(value: Option<&Value>) -> Option<u16> {
    value
        .and_then(Value::as_u64)
        .and_then(|v| u16::try_from(v).ok())
}

/// Builds the table from the gateway Service and the nodes (pure).
///
/// # Errors
/// [`Error::Conflict`] when a port has no `nodePort` (the Service is `ClusterIP`);
/// [`Error::NotFound`] when no node has an address of `address_type`.
pub fn forwarding_table(
    service: &Value,
    nodes: &[Value],
    vip: IpAddr,
    address_type: AddressType,
) -> Result<ForwardingTable> {
    let object = gateway();
    let addresses: Vec<String> = nodes
        .iter()
        .filter_map(|n| {
            n.pointer("/status/addresses")?
                .as_array()?
                .iter()
                .find(|a| a.get("type").and_then(Value::as_str) == Some(address_type.as_str()))?
                .get("address")?
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    if addresses.is_empty() {
        return Err(Error::NotFound {
            object: format!("a node with an {} address", address_type.as_str()),
            hint: "choose the other address type or check the nodes' status",
        });
    }
    let ports = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut table = ForwardingTable {
        vip,
        service: object.to_string(),
        ports: Vec::with_capacity(ports.len()),
    };
    for (i, p) in ports.iter().enumerate() {
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .map_or_else(|| format!("port-{i}"), str::to_owned);
        let port = port_number(p.get("port")).ok_or_else(|| Error::Protocol {
            verb: crate::Verb::Get,
            resource: object.to_string(),
            detail: format!("port {name} has no valid port number"),
        })?;
        let node_port = port_number(p.get("nodePort")).ok_or_else(|| Error::Conflict {
            object: object.to_string(),
            detail: format!(
                "port {name} has no nodePort; manual load balancing needs type NodePort or LoadBalancer"
            ),
        })?;
        table.ports.push(PortForward {
            protocol: p
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("TCP")
                .to_owned(),
            frontend: SocketAddr::new(vip, port).to_string(),
            backends: addresses.iter().map(|a| endpoint(a, node_port)).collect(),
            name,
        });
    }
    Ok(table)
}

/// Manual mode: reads the gateway's ports and the nodes and returns the forwarding table.
/// Read-only.
pub async fn node_port_table(
    kube: &dyn Kube,
    vip: IpAddr,
    address_type: AddressType,
) -> Result<ForwardingTable> {
    let object = gateway();
    let service = kube.get(&object).await?.ok_or_else(|| Error::NotFound {
        object: object.to_string(),
        hint: "install the mesh first (step 9)",
    })?;
    let nodes = kube.list(&ListQuery::all(Kind::Node)).await?;
    forwarding_table(&service, &nodes, vip, address_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeKube;
    use crate::port::MockKube;

    fn guide_gateway() -> Value {
        json!({"metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
               "spec": {"type": "LoadBalancer", "ports": [
                   {"name": "status-port", "nodePort": 30391, "port": 15020, "protocol": "TCP", "targetPort": 15020},
                   {"name": "http2", "nodePort": 31380, "port": 80, "protocol": "TCP", "targetPort": 80},
                   {"name": "https", "nodePort": 31390, "port": 443, "protocol": "TCP", "targetPort": 443}]}})
    }

    fn node(ip: &str) -> Value {
        json!({"metadata": {"name": ip}, "status": {"addresses": [
            {"type": "Hostname", "address": "n"}, {"type": "InternalIP", "address": ip}]}})
    }

    #[test]
    fn the_manual_table_matches_the_guide_example() {
        let nodes = [
            node("192.168.0.10"),
            node("192.168.0.11"),
            node("192.168.0.12"),
        ];
        let vip: IpAddr = "203.0.113.1".parse().unwrap();
        let table =
            forwarding_table(&guide_gateway(), &nodes, vip, AddressType::InternalIP).unwrap();
        let http2 = &table.ports[1];
        assert_eq!(http2.name, "http2");
        assert_eq!(http2.frontend, "203.0.113.1:80");
        assert_eq!(
            http2.backends,
            [
                "192.168.0.10:31380",
                "192.168.0.11:31380",
                "192.168.0.12:31380"
            ]
        );
        let text = table.to_string();
        assert!(text.lines().nth(2).unwrap().starts_with("http2"), "{text}");
        assert!(text.contains("192.168.0.12:31390"), "{text}");
        let json = serde_json::to_value(&table).unwrap();
        assert_eq!(json["ports"][1]["backends"][2], "192.168.0.12:31380");
        assert_eq!(json["vip"], "203.0.113.1");

        let v6 = forwarding_table(
            &guide_gateway(),
            &[node("fd00::1")],
            "2001:db8::1".parse().unwrap(),
            AddressType::InternalIP,
        )
        .unwrap();
        assert_eq!(v6.ports[1].frontend, "[2001:db8::1]:80");
        assert_eq!(v6.ports[1].backends, ["[fd00::1]:31380"]);
    }

    #[test]
    fn a_cluster_ip_gateway_or_addressless_nodes_are_refused() {
        let mut svc = guide_gateway();
        svc["spec"]["ports"][0]
            .as_object_mut()
            .unwrap()
            .remove("nodePort");
        let vip: IpAddr = "203.0.113.1".parse().unwrap();
        let err = forwarding_table(&svc, &[node("192.168.0.10")], vip, AddressType::InternalIP)
            .unwrap_err();
        assert!(
            err.to_string().contains("port status-port has no nodePort"),
            "{err}"
        );
        let err = forwarding_table(
            &guide_gateway(),
            &[node("192.168.0.10")],
            vip,
            AddressType::ExternalIP,
        )
        .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
    }

    #[tokio::test]
    async fn manual_mode_only_reads() {
        let mut kube = MockKube::new();
        kube.expect_get()
            .times(1)
            .returning(|_| Ok(Some(guide_gateway())));
        kube.expect_list()
            .withf(|q| q.kind == Kind::Node && q.label_selector.is_none())
            .times(1)
            .returning(|_| Ok(vec![node("192.168.0.10")]));
        kube.expect_apply().never();
        let table = node_port_table(
            &kube,
            "203.0.113.1".parse().unwrap(),
            AddressType::InternalIP,
        )
        .await
        .unwrap();
        assert_eq!(table.ports.len(), 3);
    }

    #[test]
    fn the_integrated_manifest_holds_only_the_owned_fields() {
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        let m = load_balancer_manifest(&IntegratedLb {
            ip,
            set_field: true,
            annotations: vec![LbAnnotation::MetalLb, LbAnnotation::KubeVip],
        });
        assert_eq!(m["spec"], json!({"loadBalancerIP": "203.0.113.1"}));
        assert_eq!(
            m["metadata"]["annotations"]["metallb.io/loadBalancerIPs"],
            "203.0.113.1"
        );
        assert_eq!(
            m["metadata"]["annotations"]["kube-vip.io/loadbalancerIPs"],
            "203.0.113.1"
        );
        let only_annotation = load_balancer_manifest(&IntegratedLb {
            ip,
            set_field: false,
            annotations: vec![LbAnnotation::MetalLb],
        });
        assert!(only_annotation.get("spec").is_none());
    }

    #[tokio::test]
    async fn integrated_mode_sets_the_ip_once() {
        let kube = FakeKube::default();
        let lb = IntegratedLb::field("203.0.113.1".parse().unwrap());
        let err = ensure_load_balancer_ip(&kube, &lb, Mode::Apply)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("install the mesh first"), "{err}");
        kube.insert(&gateway(), guide_gateway());
        let dry = ensure_load_balancer_ip(&kube, &lb, Mode::DryRun)
            .await
            .unwrap();
        assert_eq!(dry.changes[0].action, Outcome::WouldUpdate);
        assert!(kube.writes().is_empty());
        let first = ensure_load_balancer_ip(&kube, &lb, Mode::Apply)
            .await
            .unwrap();
        assert_eq!(first.changes[0].action, Outcome::Updated);
        let svc = kube.object(&gateway()).unwrap();
        assert_eq!(svc["spec"]["loadBalancerIP"], "203.0.113.1");
        assert_eq!(svc["spec"]["ports"].as_array().unwrap().len(), 3);
        let second = ensure_load_balancer_ip(&kube, &lb, Mode::Apply)
            .await
            .unwrap();
        assert!(second.is_unchanged());
    }

    #[tokio::test]
    async fn integrated_mode_reads_then_applies_only_the_owned_fields() {
        let mut kube = MockKube::new();
        let mut seq = mockall::Sequence::new();
        kube.expect_get()
            .withf(|o| o.to_string() == "service istio-system/istio-ingressgateway")
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(Some(guide_gateway())));
        kube.expect_apply()
            .withf(|o, m, mode| {
                o.name == "istio-ingressgateway"
                    && m["spec"] == json!({"loadBalancerIP": "203.0.113.1"})
                    && m["metadata"]["annotations"]["kube-vip.io/loadbalancerIPs"] == "203.0.113.1"
                    && *mode == Mode::Apply
            })
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, m, _| Ok(m.clone()));
        let lb = IntegratedLb {
            annotations: vec![LbAnnotation::KubeVip],
            ..IntegratedLb::field("203.0.113.1".parse().unwrap())
        };
        let report = ensure_load_balancer_ip(&kube, &lb, Mode::Apply)
            .await
            .unwrap();
        assert_eq!(report.changes[0].action, Outcome::Updated);

        let mut done = MockKube::new();
        let mut live = guide_gateway();
        live["spec"]["loadBalancerIP"] = json!("203.0.113.1");
        live["metadata"]["annotations"] = json!({"kube-vip.io/loadbalancerIPs": "203.0.113.1"});
        done.expect_get()
            .times(1)
            .returning(move |_| Ok(Some(live.clone())));
        done.expect_apply().never();
        assert!(
            ensure_load_balancer_ip(&done, &lb, Mode::Apply)
                .await
                .unwrap()
                .is_unchanged()
        );
    }
}
