//! Step 13 of the guide against the emulated API server: integrated mode sets the gateway's
//! `spec.loadBalancerIP` (and the `MetalLB` annotation); manual mode prints the
//! `VIP:port -> node:nodePort` table for the external load balancer, as text and as JSON.

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use std::net::IpAddr;

use k8s_bootstrap::ingress::{self, AddressType, IntegratedLb, LbAnnotation};
use k8s_bootstrap::{KubeClient, Mode, names};
use secrecy::ExposeSecret as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sandbox::init_crypto();
    let server = sandbox::kube::ApiServer::start()?;
    let cluster = server.cluster();
    cluster.create(serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": names::ISTIO_NAMESPACE}}))?;
    cluster.create(serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": names::INGRESS_GATEWAY_SERVICE, "namespace": names::ISTIO_NAMESPACE},
        "spec": {"type": "LoadBalancer", "selector": {"app": "istio-ingressgateway"},
                 "ports": [{"name": "status-port", "port": 15020},
                           {"name": "http2", "port": 80, "targetPort": 8080},
                           {"name": "https", "port": 443, "targetPort": 8443}]}}))?;

    let kubeconfig = kube::config::Kubeconfig::from_yaml(
        server.kubeconfig_yaml(server.admin_token()).expose_secret(),
    )?;
    let kube = KubeClient::from_kubeconfig(kubeconfig, None).await?;
    let vip: IpAddr = "203.0.113.1".parse()?;

    let lb = IntegratedLb {
        annotations: vec![LbAnnotation::MetalLb],
        ..IntegratedLb::field(vip)
    };
    for mode in [Mode::DryRun, Mode::Apply, Mode::Apply] {
        print!(
            "{mode:?}: {}",
            ingress::ensure_load_balancer_ip(&kube, &lb, mode).await?
        );
    }

    let table = ingress::node_port_table(&kube, vip, AddressType::InternalIP).await?;
    print!("{table}");
    println!("{}", serde_json::to_string_pretty(&table)?);
    Ok(())
}
