//! Step 3 of the guide (`import-ca`) and the check istiod runs later (`VerifyCertChain`):
//! the root becomes a certificate object on the token, read back on every verification, so a
//! restarted plugin still verifies.

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use std::sync::Arc;

use hsm_core::{
    HsmIstioKms, ImportCaCertRequest, ImportPolicy, IstioConfig, VerifyCertChainRequest,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

fn ca(cn: &str, pathlen: Option<u8>) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::OrganizationName, "Istio");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(pathlen.map_or(
        BasicConstraints::Unconstrained,
        BasicConstraints::Constrained,
    ));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2034, 1, 1);
    Ok(p)
}

fn main() -> anyhow::Result<()> {
    let (_hsm, token) = examples::user_token("asm-anchor")?;

    // The offline root and the istiod intermediate it signs.
    let root_key = KeyPair::generate()?;
    let root_params = ca("Root CA", None)?;
    let root = root_params.self_signed(&root_key)?;
    let int_key = KeyPair::generate()?;
    let int = ca("Intermediate CA", Some(0))?
        .signed_by(&int_key, &Issuer::new(root_params, &root_key))?;

    let kms = HsmIstioKms::new(Arc::clone(&token), IstioConfig::default());
    let import = ImportCaCertRequest {
        ca_id: None,
        cert: root.pem().into_bytes(),
        policy: ImportPolicy::KeepExisting,
    };
    println!("import-ca: {}", kms.import_ca_cert_blocking(&import)?);
    println!("import-ca again: {}", kms.import_ca_cert_blocking(&import)?);
    for anchor in token.list_anchors()? {
        println!(
            "anchor {} label {:?} sha256 {}",
            anchor.ca_id, anchor.label, anchor.sha256
        );
    }

    // A new operations object (as after a restart) verifies against the token's anchor.
    let restarted = HsmIstioKms::new(token, IstioConfig::default());
    let verified = restarted.verify_cert_chain_blocking(&VerifyCertChainRequest {
        certificates: vec![int.der().to_vec()],
        expected_spki: None,
    })?;
    println!(
        "verified {} under {}",
        verified.target_subject, verified.anchor_subject
    );

    // A certificate from another root is refused with a reason.
    let stranger_key = KeyPair::generate()?;
    let stranger = ca("Stranger", Some(0))?.self_signed(&stranger_key)?;
    match restarted.verify_cert_chain_blocking(&VerifyCertChainRequest {
        certificates: vec![stranger.der().to_vec()],
        expected_spki: None,
    }) {
        Err(err) => println!("refused: {err}"),
        Ok(_) => anyhow::bail!("a foreign certificate verified"),
    }
    Ok(())
}
