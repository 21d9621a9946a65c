//! Step 10, the security admin's first look: review istiod's CSR before signing it.
//!
//! A throw-away key stands in for istiod's (in the guide the KMS plugin makes the CSR). The
//! review shows subject, SANs, key type and size, requested extensions and the public key's
//! SHA-256 fingerprint, then applies the policy; a CSR asking for a foreign SAN is refused.

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use ca_signing::{CsrPolicy, CsrPurpose, KeyAlgorithm, San, SoftwareSigner, Subject};

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let istiod_key = SoftwareSigner::generate(KeyAlgorithm::EcdsaP256, "istiod key")?;
    let subject = Subject::new("Istio", "Intermediate CA");
    let csr = ca_signing::create_csr(
        &subject,
        &[San::Dns(ca_signing::ISTIOD_DNS_NAME.to_owned())],
        &istiod_key,
    )?;
    let csr_path = dir.path().join("istiod.csr");
    std::fs::write(&csr_path, csr.to_pem())?;

    let policy = CsrPolicy::for_trust_domain("cluster.local")?;
    let reviewed =
        ca_signing::review_csr(&std::fs::read(&csr_path)?, &policy, CsrPurpose::IstiodCa)?;
    println!("CSR {}:\n{}", csr_path.display(), reviewed.report());
    println!("policy: accepted for the istiod CA profile");

    let foreign = ca_signing::create_csr(
        &subject,
        &[San::Dns("evil.example.com".to_owned())],
        &istiod_key,
    )?;
    match ca_signing::review_csr(foreign.to_pem().as_bytes(), &policy, CsrPurpose::IstiodCa) {
        Err(err) => println!("a CSR for DNS:evil.example.com is refused: {err}"),
        Ok(_) => anyhow::bail!("the policy accepted a foreign SAN"),
    }
    Ok(())
}
