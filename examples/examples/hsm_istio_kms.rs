//! What istiod asks the plugin for at bootstrap (FLOW.md steps 7–11), through the async port
//! kms-grpc serves: a DEK wrapped by the HSM KEK, a software CA key under the DEK, and the
//! CSR encrypted with its csr-id as AAD — then the operator's `decrypt-csr`.

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use std::sync::Arc;

use hsm_core::{
    AuthenticatedDecryptRequest, AuthenticatedEncryptRequest, GenerateDekRequest,
    GenerateSKeyRequest, HsmIstioKms, IstioConfig, IstioKms, KekId, LoadSKeyRequest, SKeySpec,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (_hsm, token) = examples::user_token("asm-istio")?;
    let kms: Arc<dyn IstioKms> = Arc::new(HsmIstioKms::new(token, IstioConfig::default()));

    let kek = kms.generate_kek(Some(KekId::new("asm-kek")?)).await?;
    println!("KEK ID: {kek}");
    let dek = kms
        .generate_dek(GenerateDekRequest {
            kek_id: kek.clone(),
        })
        .await?;
    println!(
        "encrypted-dek: {} bytes, starts {}",
        dek.len(),
        String::from_utf8_lossy(&dek[..24])
    );

    let skey = kms
        .generate_skey(GenerateSKeyRequest {
            kek_id: kek.clone(),
            encrypted_dek: dek.clone(),
            spec: SKeySpec::EcdsaP256,
        })
        .await?;
    let pem = kms
        .load_skey(LoadSKeyRequest {
            kek_id: kek.clone(),
            encrypted_dek: dek.clone(),
            encrypted_skey: skey,
        })
        .await?;
    println!(
        "LoadSKey returned a {}-byte PEM ({:?})",
        pem.expose().len(),
        pem
    );

    let csr =
        b"-----BEGIN CERTIFICATE REQUEST-----\n...\n-----END CERTIFICATE REQUEST-----\n".to_vec();
    let encrypted_csr = kms
        .authenticated_encrypt(AuthenticatedEncryptRequest {
            kek_id: kek.clone(),
            encrypted_dek: dek.clone(),
            plaintext: csr.clone(),
            aad: b"csr-0001".to_vec(),
        })
        .await?;
    let decrypted = kms
        .authenticated_decrypt(AuthenticatedDecryptRequest {
            kek_id: kek.clone(),
            encrypted_dek: dek.clone(),
            ciphertext: encrypted_csr.clone(),
            aad: b"csr-0001".to_vec(),
        })
        .await?;
    anyhow::ensure!(
        decrypted.as_slice() == csr.as_slice(),
        "the CSR did not round-trip"
    );
    println!("decrypt-csr: {} bytes, identical", decrypted.len());

    let wrong = kms
        .authenticated_decrypt(AuthenticatedDecryptRequest {
            kek_id: kek,
            encrypted_dek: dek,
            ciphertext: encrypted_csr,
            aad: b"csr-9999".to_vec(),
        })
        .await;
    match wrong {
        Err(err) => println!("wrong csr-id refused: {err}"),
        Ok(_) => anyhow::bail!("a wrong AAD was accepted"),
    }
    Ok(())
}
