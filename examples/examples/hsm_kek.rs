//! Steps 1–3 of the guide: log in to the token with a PIN file and make the KEK the way
//! `k8s-kms-plugin generate-kek` does, but idempotently: the second run is "unchanged".

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use std::sync::Arc;

use hsm_core::pin::{FileAccess, pin_from_file};
use hsm_core::{HsmToken, KekId, Mode, TokenOptions};

fn main() -> anyhow::Result<()> {
    let hsm = sandbox::SoftHsm::builder().label("asm-kek").create()?;
    let dir = tempfile::tempdir()?;
    let pin_file = dir.path().join("pin");
    hsm.write_user_pin_file(&pin_file)?;

    let pin = pin_from_file(&pin_file, FileAccess::OwnerOnly)?;
    let token = Arc::new(HsmToken::open(
        hsm.module(),
        hsm.label(),
        pin,
        TokenOptions::default(),
    )?);

    let kek = KekId::new("asm-kek-2026")?;
    println!("dry run: {}", token.ensure_kek(&kek, Mode::DryRun)?);
    println!("first run: {}", token.ensure_kek(&kek, Mode::Apply)?);
    println!("second run: {}", token.ensure_kek(&kek, Mode::Apply)?);
    let info = token.describe_kek(&kek)?;
    println!(
        "KEK ID: {} label={} sensitive={:?} extractable={:?} never_extractable={:?}",
        info.id, info.label, info.sensitive, info.extractable, info.never_extractable
    );
    match token.generate_kek(Some(kek.clone())) {
        Err(err) => println!("generating {kek} again is refused: {err}"),
        Ok(_) => anyhow::bail!("a duplicate KEK was created"),
    }
    println!(
        "a random id, as generate-kek without --kek-id: {}",
        token.generate_kek(None)?
    );
    Ok(())
}
