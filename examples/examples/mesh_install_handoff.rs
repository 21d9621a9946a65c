//! Steps 9-11 through `mesh-install`: install the control plane through the sandbox's install
//! port (the emulated istiod, which logs in to OpenBao with its service-account token and runs
//! the real plugin on a Unix socket), hand its encrypted CSR to the root (decrypted in-process
//! through the HSM, reviewed, signed) and back as Secret `istio-ca-cert`, then verify the chain
//! and an mTLS handshake between two workloads. Both CA-key modes.

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use mesh_common::Mode;
use mesh_install::config::HsmMode;
use mesh_install::flow::{self, BUILT, StepStatus};
use mesh_install::steps::Step;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    for mode in [HsmMode::HsmKey, HsmMode::Compat] {
        run(mode).await?;
    }
    Ok(())
}

async fn run(mode: HsmMode) -> anyhow::Result<()> {
    let mesh = examples::MeshSandbox::start().await?;
    let dir = tempfile::tempdir()?;

    // The offline root: a software key here (`root-ca.key = { hsm = ... }` names a key pair
    // on a token for meshca).
    let root_key =
        ca_signing::SoftwareSigner::generate(ca_signing::KeyAlgorithm::EcdsaP384, "root key")?;
    let root = ca_signing::issue_root(&ca_signing::RootProfile::default(), &root_key)?;
    let root_cert = dir.path().join("root-cert.pem");
    std::fs::write(&root_cert, root.pem())?;

    // A network HSM's mTLS material, stored in Vault beside the PIN (SoftHSM2 needs none).
    let client_key =
        ca_signing::SoftwareSigner::generate(ca_signing::KeyAlgorithm::EcdsaP256, "hsm client")?;
    let client_cert = ca_signing::issue_root(
        &ca_signing::RootProfile {
            subject: ca_signing::Subject::new("example", "HSM client"),
            validity_days: 1,
            key_algorithm: ca_signing::KeyAlgorithm::EcdsaP256,
        },
        &client_key,
    )?;
    let cert_file = dir.path().join("hsm-client.pem");
    std::fs::write(&cert_file, client_cert.pem())?;
    let key_file = dir.path().join("hsm-client-key.pem");
    sandbox::write_secret_file(&key_file, &client_key.private_key_pkcs8_pem()?)?;

    let mut config = mesh.config();
    config.hsm.mode = mode;
    config.root_ca.cert = Some(root_cert);
    config.vault.hsm_client_cert = Some(cert_file.clone());
    config.vault.hsm_client_key = Some(key_file);
    // The server's certificate: the same self-signed stand-in.
    config.vault.hsm_server_cert = Some(cert_file);
    config.install.wait_seconds = 60;
    let spec = mesh.resolve(&config)?;

    let install = sandbox::istiod::EmulatedInstall::new(
        mesh.api.cluster().clone(),
        mesh.bao.connection()?,
        mesh.hsm.module_path(),
    );
    let probe = sandbox::istiod::HandshakeProbe(&install);
    let kms = hsm_core::HsmIstioKms::new(mesh.token.clone(), hsm_core::IstioConfig::default());
    let ports = flow::Ports {
        installer: Some(&install),
        kms: Some(&kms),
        root_signer: Some(&root_key),
        probe: Some(&probe),
        ..mesh.ports()
    };
    let mut progress = |e: flow::Event<'_>| {
        if let flow::Event::Progress { step, message } = e {
            println!("    {step}: {message}");
        }
    };
    let report = flow::run(&spec, ports, &BUILT, Mode::Apply, &mut progress)
        .await
        .map_err(|failure| anyhow::Error::new(*failure))?;
    println!("--- {mode:?}\n{report}");
    for step in [Step::Install, Step::SignCa, Step::Verify] {
        anyhow::ensure!(
            report
                .step(step)
                .is_some_and(|s| s.status == StepStatus::Done),
            "{step} did not complete"
        );
    }
    let again = flow::run(&spec, ports, &BUILT, Mode::Apply, &mut |_| {})
        .await
        .map_err(|failure| anyhow::Error::new(*failure))?;
    anyhow::ensure!(again.is_unchanged(), "the second apply changed:\n{again}");
    Ok(())
}
