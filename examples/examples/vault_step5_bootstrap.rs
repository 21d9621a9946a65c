//! Step 5 of the guide: Vault (OpenBao) configured for the HSM credentials as idempotent
//! `ensure_*` operations. A dry run shows the plan, the apply creates every object, and a second
//! apply reports everything unchanged. The credentials come from files, never from arguments.

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use vault_bootstrap::{BootstrapSpec, HsmCredentialFiles, HttpVault, KubernetesAuthConfig, Mode};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bao = sandbox::OpenBao::builder().tls(true).start().await?;
    println!(
        "OpenBao at {} (TLS, CA {:?})",
        bao.addr(),
        bao.ca_cert_path()
    );
    let vault = HttpVault::new(bao.connection()?, Some(bao.root_token()))?;

    // The operator's HSM credential files (throw-away ones here).
    let dir = tempfile::tempdir()?;
    let client = rcgen::generate_simple_self_signed(vec!["hsm-client".to_owned()])?;
    let server = rcgen::generate_simple_self_signed(vec!["hsm.example".to_owned()])?;
    let files = HsmCredentialFiles {
        client_cert: dir.path().join("client.pem"),
        client_key: dir.path().join("client-key.pem"),
        server_cert: dir.path().join("server.pem"),
        pin: dir.path().join("pin"),
    };
    sandbox::write_secret_file(&files.client_cert, client.cert.pem().as_bytes())?;
    sandbox::write_secret_file(
        &files.client_key,
        client.signing_key.serialize_pem().as_bytes(),
    )?;
    sandbox::write_secret_file(&files.server_cert, server.cert.pem().as_bytes())?;
    sandbox::write_secret_file(&files.pin, sandbox::random_string(12).as_bytes())?;

    // Step 4 would supply the API server address, its CA and the reviewer JWT.
    let api_ca = rcgen::generate_simple_self_signed(vec!["kubernetes.default.svc".to_owned()])?;
    let kubernetes = KubernetesAuthConfig {
        kubernetes_host: "https://10.0.0.1:443".to_owned(),
        kubernetes_ca_cert: Some(api_ca.cert.pem()),
        token_reviewer_jwt: Some(sandbox::random_string(40).into()),
        disable_local_ca_jwt: true,
        ..KubernetesAuthConfig::default()
    };
    let spec = BootstrapSpec::for_cluster("c1", kubernetes, Some(files.read()?))?;

    let plan = vault_bootstrap::plan(&vault, &spec).await?;
    println!("plan:\n{plan}");
    let applied = vault_bootstrap::apply(&vault, &spec, Mode::Apply).await?;
    println!("apply:\n{applied}");
    let again = vault_bootstrap::apply(&vault, &spec, Mode::Apply).await?;
    println!("apply again:\n{again}");
    anyhow::ensure!(again.is_unchanged(), "the second apply changed something");
    println!("istiod logs in at {} with role istiod", spec.login_path());
    Ok(())
}
