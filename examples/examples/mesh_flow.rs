//! The guide as one flow through `mesh-install`, in-process, against a SoftHSM2 token, a TLS
//! OpenBao server and the emulated API server: a plan, an apply, and a second apply that
//! changes nothing. Step 9 only renders here (`install.method = "manual"`), so steps 10-11
//! wait for an istiod; `mesh_install_handoff` runs them against the emulated istiod.

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use mesh_common::Mode;
use mesh_install::flow::{self, BUILT};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mesh = examples::MeshSandbox::start().await?;

    // The guide's defaults, with this sandbox's token, Vault and a fresh root certificate.
    let root_key = ca_signing::SoftwareSigner::generate(
        ca_signing::KeyAlgorithm::EcdsaP256,
        "example root key",
    )?;
    let root = ca_signing::issue_root(&ca_signing::RootProfile::default(), &root_key)?;
    let mut spec = mesh.flow_spec()?;
    spec.root_cert = Some(root.pem().into_bytes());

    // The three ports, as meshca connects them.
    let ports = mesh.ports();
    for (round, mode) in [Mode::DryRun, Mode::Apply, Mode::Apply]
        .into_iter()
        .enumerate()
    {
        let mut quiet = |_: flow::Event<'_>| {};
        let report = flow::run(&spec, ports, &BUILT, mode, &mut quiet)
            .await
            .map_err(|failure| anyhow::Error::new(*failure))?;
        println!("--- {mode:?}\n{report}");
        anyhow::ensure!(
            report.is_unchanged() == (round == 2),
            "only the second apply may be free of changes"
        );
    }
    Ok(())
}
