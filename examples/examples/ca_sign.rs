//! Step 10, signing: the root key signs istiod's CSR into `cert-chain.pem` and the
//! `istio-ca-cert` Secret.
//!
//! The root key here is a software key stored as encrypted PKCS#8 PEM with its passphrase in a
//! 0600 file (in the guide it lives in the HSM; any `ca_signing::Signer` works the same way).

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use ca_signing::ops::{SignIstiodCaRequest, sign_istiod_ca_to_dir};
use ca_signing::{
    CsrPolicy, FileMode, IstiodCaProfile, KeyAlgorithm, RootProfile, San, SoftwareSigner, Subject,
    write_file_atomic,
};
use secrecy::SecretString;

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let key_path = dir.path().join("root-key.pem");
    let pass_path = dir.path().join("root-key.pass");

    // a throw-away root key, stored encrypted; the passphrase only ever goes through a file
    let passphrase = SecretString::from(sandbox::random_string(24));
    sandbox::write_secret_file(
        &pass_path,
        secrecy::ExposeSecret::expose_secret(&passphrase).as_bytes(),
    )?;
    let generated = SoftwareSigner::generate(KeyAlgorithm::EcdsaP384, "root key")?;
    write_file_atomic(
        &key_path,
        &generated.encrypted_private_key_pem(&passphrase)?,
        FileMode::Secret,
    )?;
    let root_key = SoftwareSigner::from_file(&key_path, Some(&pass_path))?;
    let root = ca_signing::issue_root(&RootProfile::default(), &root_key)?;
    println!("root: {} (serial {})", root.subject(), root.serial_hex());

    // istiod's CSR
    let istiod_key = SoftwareSigner::generate(KeyAlgorithm::EcdsaP256, "istiod key")?;
    let csr = ca_signing::create_csr(
        &Subject::new("Istio", "Intermediate CA"),
        &[San::Dns(ca_signing::ISTIOD_DNS_NAME.to_owned())],
        &istiod_key,
    )?;

    let out = dir.path().join("out");
    std::fs::create_dir(&out)?;
    let root_pem = root.pem();
    let csr_pem = csr.to_pem();
    let signed = sign_istiod_ca_to_dir(
        &SignIstiodCaRequest {
            csr: csr_pem.as_bytes(),
            root_cert: root_pem.as_bytes(),
            policy: &CsrPolicy::default(),
            profile: &IstiodCaProfile::default(),
        },
        &root_key,
        &out,
    )?;
    println!(
        "istiod CA: {} valid until {}",
        signed.istiod_ca.subject(),
        signed.istiod_ca.not_after()
    );
    print!("cert-chain.pem verified:\n{}", signed.verification);
    for f in &signed.files {
        println!("wrote {}", f.display());
    }
    Ok(())
}
