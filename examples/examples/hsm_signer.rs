//! hsm-key mode: the istiod CA key pair is generated inside the HSM and never leaves it; a
//! root certificate is signed with it through rcgen, and the `openssl` CLI verifies it.

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use hsm_core::{HsmKey, KeyAlgorithm, KeyPairId, Mode, ObjectLabel};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, PublicKeyData, SignatureAlgorithm,
    SigningKey,
};

struct Hsm(HsmKey);

impl PublicKeyData for Hsm {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_key_raw()
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for Hsm {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

fn main() -> anyhow::Result<()> {
    let (_hsm, token) = examples::user_token("asm-hsm-key")?;
    let id = KeyPairId::new("istiod-ca")?;
    let label = ObjectLabel::new("istiod-ca")?;
    println!(
        "key pair: {}",
        token.ensure_key_pair(&id, &label, KeyAlgorithm::EcdsaP256, Mode::Apply)?
    );
    println!(
        "key pair again: {}",
        token.ensure_key_pair(&id, &label, KeyAlgorithm::EcdsaP256, Mode::Apply)?
    );
    let key = HsmKey::open(token, &id)?;
    println!("public key: {} bytes of SPKI DER", key.spki_der().len());

    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Istio");
    params
        .distinguished_name
        .push(DnType::CommonName, "HSM Root CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2034, 1, 1);
    let cert = params.self_signed(&Hsm(key))?;

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("root.pem");
    std::fs::write(&path, cert.pem())?;
    let out = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&path)
        .arg(&path)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "openssl rejected the certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    print!("openssl verify: {}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}
