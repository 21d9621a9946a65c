//! Drift detection (`meshca status`) through `mesh-install`: apply the flow against a SoftHSM2
//! token, a TLS OpenBao server and the emulated API server, rewrite the Vault policy behind the
//! flow's back, and find it again with a dry run turned into status checks; the audit records of
//! the apply list what it created.

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use mesh_common::Mode;
use mesh_install::flow::{self, BUILT};
use mesh_install::status::{self, CheckState};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mesh = examples::MeshSandbox::start().await?;
    let spec = mesh.flow_spec()?;
    let ports = mesh.ports();
    let mut quiet = |_: flow::Event<'_>| {};

    let applied = flow::run(&spec, ports, &BUILT, Mode::Apply, &mut quiet)
        .await
        .map_err(|failure| anyhow::Error::new(*failure))?;
    let audit = mesh_install::audit::records(&applied, "2026-01-01T00:00:00Z");
    println!("--- audit: {} change(s)", audit.len());
    for record in &audit {
        println!("{}", serde_json::to_string(record)?);
    }

    let checks = |report: &flow::FlowReport| status::checks(report);
    let clean = flow::run(&spec, ports, &BUILT, Mode::DryRun, &mut quiet)
        .await
        .map_err(|failure| anyhow::Error::new(*failure))?;
    anyhow::ensure!(
        status::is_clean(&checks(&clean)),
        "no drift right after the apply"
    );

    // Someone widens the policy by hand.
    vaultrs::sys::policy::set(
        &mesh.bao.client()?,
        "asm-c1-hsm-policy",
        r#"path "*" { capabilities = ["read", "list"] }"#,
    )
    .await?;
    let drifted = flow::run(&spec, ports, &BUILT, Mode::DryRun, &mut quiet)
        .await
        .map_err(|failure| anyhow::Error::new(*failure))?;
    println!("--- status after the policy was changed by hand");
    let found = checks(&drifted);
    for c in found.iter().filter(|c| c.state != CheckState::Ok) {
        println!("\u{2718} {} ({})", c.name, c.hint);
    }
    anyhow::ensure!(
        found
            .iter()
            .any(|c| c.state == CheckState::Drift && c.name == "policy asm-c1-hsm-policy"),
        "the changed policy is reported"
    );
    Ok(())
}
