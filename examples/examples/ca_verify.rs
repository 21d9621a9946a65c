//! Step 10, checking: verify `cert-chain.pem` (order, CA flags, pathlen, validity) with
//! OpenSSL, prove a workload certificate chains through it, and see a reversed chain refused.

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use ca_signing::{
    CertChain, CsrPolicy, CsrPurpose, IstiodCaProfile, KeyAlgorithm, RootProfile, SecretLayout,
    Signer, SoftwareSigner, Subject, WorkloadProfile,
};

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root_key = SoftwareSigner::generate(KeyAlgorithm::EcdsaP256, "root key")?;
    let root = ca_signing::issue_root(&RootProfile::default(), &root_key)?;
    let istiod_key = SoftwareSigner::generate(KeyAlgorithm::EcdsaP256, "istiod key")?;
    let csr = ca_signing::create_csr(&Subject::new("Istio", "Intermediate CA"), &[], &istiod_key)?
        .review(&CsrPolicy::default(), CsrPurpose::IstiodCa)?;
    let istiod_ca =
        ca_signing::sign_istiod_ca(&csr, &root, &root_key, &IstiodCaProfile::default())?;

    let chain_path = dir.path().join("cert-chain.pem");
    std::fs::write(&chain_path, CertChain::build(&istiod_ca, &root)?.to_pem())?;

    // what an admin does with a cert-chain.pem received back
    let chain = CertChain::parse_pem(&std::fs::read(&chain_path)?)?;
    print!(
        "{} verifies:\n{}",
        chain_path.display(),
        chain.verify(Some(&root))?
    );

    // istiod would issue workload certificates like this one under it
    let leaf_key = SoftwareSigner::generate(KeyAlgorithm::EcdsaP256, "workload key")?;
    let leaf = ca_signing::issue_workload(
        &WorkloadProfile::new("cluster.local", "default", "sleep"),
        &leaf_key.public_key_spki_der(),
        &istiod_ca,
        &istiod_key,
    )?;
    chain.verify_leaf(&leaf)?;
    println!(
        "workload certificate {:?} verifies through the chain",
        leaf.sans()
    );

    let secret = SecretLayout::istio_ca_cert(&chain)?;
    println!(
        "Secret {}/{} with keys {:?}",
        secret.namespace(),
        secret.name(),
        secret.keys().collect::<Vec<_>>()
    );

    let reversed = CertChain::from_certs(vec![root.clone(), istiod_ca.clone()])?;
    match reversed.verify(None) {
        Err(err) => println!("a reversed chain is refused: {err}"),
        Ok(_) => anyhow::bail!("a reversed chain verified"),
    }
    Ok(())
}
