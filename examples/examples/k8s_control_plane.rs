//! Steps 7, 8 and 10 of the guide against the emulated API server: the `vault-tls-cert`
//! ConfigMap, the revisioned istiod Service, then the CA hand-off Secrets (reading the
//! `istio-ca-cert-csr` istiod writes, and storing the signed chain in `istio-ca-cert`).

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use k8s_bootstrap::{CertificatePem, KubeClient, Mode, ca_secrets, control_plane, names};
use secrecy::ExposeSecret as _;

fn certificate(cn: &str) -> anyhow::Result<CertificatePem> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![cn.to_owned()])?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    Ok(CertificatePem::parse(params.self_signed(&key)?.pem(), cn)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sandbox::init_crypto();
    let server = sandbox::kube::ApiServer::start()?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(
        server.kubeconfig_yaml(server.admin_token()).expose_secret(),
    )?;
    let kube = KubeClient::from_kubeconfig(kubeconfig, None).await?;

    let vault_ca = certificate("vault-ca")?;
    for mode in [Mode::DryRun, Mode::Apply, Mode::Apply] {
        let step7 = control_plane::ensure_vault_tls_configmap(&kube, &vault_ca, mode).await?;
        let step8 =
            control_plane::ensure_istiod_service(&kube, names::DEFAULT_REVISION, mode).await?;
        println!("--- {mode:?}\n{step7}{step8}");
    }

    // What istiod writes when it starts with the HSM CA (step 9).
    server.cluster().create(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": names::CA_CSR_SECRET, "namespace": names::ISTIO_NAMESPACE},
        "data": {"kek-id": "a2VrLTE=", "encrypted-dek": "AQID", "csr-id": "Y3NyLTE=", "encrypted-csr": "BAUG"},
    }))?;
    let csr = ca_secrets::read_csr_secret(&kube).await?;
    println!("encrypted_csr.json: {}", csr.data_json());

    let chain = CertificatePem::parse(
        format!(
            "{}{}",
            certificate("istiod-ca")?.as_str(),
            certificate("root")?.as_str()
        ),
        "cert-chain.pem",
    )?;
    for mode in [Mode::Apply, Mode::Apply] {
        print!(
            "{}",
            ca_secrets::ensure_ca_cert_secret(&kube, &chain, mode).await?
        );
    }
    Ok(())
}
