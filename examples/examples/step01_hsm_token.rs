//! Step 1 of the guide: find the mesh's HSM token by its label and log in.
//!
//! A throw-away SoftHSM2 token stands in for the Luna partition. The lookup goes by label, never
//! by slot number, because HSMs renumber slots between restarts.

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

fn main() -> anyhow::Result<()> {
    let hsm = sandbox::SoftHsm::builder().label("asm-ca").create()?;

    let module = hsm_core::Module::load(hsm.module_path())?;
    let token = module.find_token(hsm.label())?;
    println!(
        "token {:?}: serial {}, model {}, slot {} right now",
        token.label,
        token.serial,
        token.model,
        token.slot.id()
    );

    let _session = module.login_user(hsm.label(), hsm.user_pin())?;
    println!("logged in as the token user");
    Ok(())
}
