//! Step 5 of the guide, first part: a Vault (OpenBao) KV v1 mount holding the HSM credentials,
//! written and read back. The PIN comes from a file, never from the command line.

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use std::collections::HashMap;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bao = sandbox::OpenBao::builder().start().await?;
    println!("OpenBao at {}", bao.addr());
    let client = bao.client()?;

    let mut options = HashMap::new();
    options.insert("version".to_owned(), "1".to_owned());
    vaultrs::sys::mount::enable(
        &client,
        "asm-c1",
        "kv",
        Some(vaultrs::api::sys::requests::EnableEngineRequest::builder().options(options)),
    )
    .await?;

    let dir = tempfile::tempdir()?;
    let pin_file = dir.path().join("pin");
    sandbox::write_secret_file(&pin_file, sandbox::random_string(12).as_bytes())?;
    let pin = std::fs::read_to_string(&pin_file)?;

    let mut secret = HashMap::new();
    secret.insert("PIN", pin.trim_end());
    vaultrs::kv1::set(&client, "asm-c1", "hsm", &secret).await?;
    let back: HashMap<String, String> = vaultrs::kv1::get(&client, "asm-c1", "hsm").await?;
    anyhow::ensure!(back.get("PIN").map(String::as_str) == Some(pin.trim_end()));
    println!(
        "asm-c1/hsm holds fields {:?}",
        back.keys().collect::<Vec<_>>()
    );
    Ok(())
}
