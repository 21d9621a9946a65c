//! Kubernetes KMS v2 on the HSM: Status reports the key id (KEK id plus a version marker),
//! Encrypt returns it, and Decrypt uses exactly the key the request names.

#![expect(clippy::print_stdout, reason = "an example reports to the terminal")]

use std::collections::BTreeMap;
use std::sync::Arc;

use hsm_core::{
    HsmKubeKms, KekId, KeyRef, KubeDecryptRequest, KubeEncryptRequest, KubeKms, KubeKmsConfig, Mode,
};
use zeroize::Zeroizing;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (_hsm, token) = examples::user_token("asm-kms-v2")?;
    let kek = KekId::new("apiserver-kek")?;
    token.ensure_kek(&kek, Mode::Apply)?;
    let kms: Arc<dyn KubeKms> =
        Arc::new(HsmKubeKms::new(token, KubeKmsConfig::new(KeyRef::kek(kek))));

    let status = kms.status().await?;
    println!(
        "Status: version={} healthz={} key_id={}",
        status.version, status.healthz, status.key_id
    );
    let encrypted = kms
        .encrypt(KubeEncryptRequest {
            plaintext: Zeroizing::new(b"a 32-byte apiserver DEK........".to_vec()),
            uid: "req-1".into(),
        })
        .await?;
    println!(
        "Encrypt: {} bytes under {}",
        encrypted.ciphertext.len(),
        encrypted.key_id
    );
    let plain = kms
        .decrypt(KubeDecryptRequest {
            ciphertext: encrypted.ciphertext.clone(),
            uid: "req-2".into(),
            key_id: encrypted.key_id,
            annotations: BTreeMap::new(),
        })
        .await?;
    println!("Decrypt: {:?}", String::from_utf8_lossy(&plain));
    let unknown = kms
        .decrypt(KubeDecryptRequest {
            ciphertext: encrypted.ciphertext,
            uid: "req-3".into(),
            key_id: "other:v1".into(),
            annotations: BTreeMap::new(),
        })
        .await;
    match unknown {
        Err(err) => println!("unknown key id refused: {err}"),
        Ok(_) => anyhow::bail!("an unknown key id was accepted"),
    }
    Ok(())
}
