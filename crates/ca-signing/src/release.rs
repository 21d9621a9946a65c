//! Detached-signature checks for downloaded releases (the guide's
//! `openssl dgst -sha256 -verify key.pem -signature file.sig file`).

use std::io::Read;

use openssl::ec::EcKey;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};
use openssl::sign::Verifier;

/// Errors of the release check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The public key is not a PEM ECDSA P-256 key.
    #[error("the release public key is not a PEM ECDSA P-256 public key: {reason}")]
    BadPublicKey {
        /// What is wrong.
        reason: String,
    },
    /// The signature does not verify: the file or the signature is not what was published.
    #[error("signature mismatch: the file does not match its signature under the release key")]
    Mismatch,
    /// Reading the file failed.
    #[error("cannot read the release file")]
    Read(#[source] std::io::Error),
    /// OpenSSL failed while verifying.
    #[error("openssl failed while verifying")]
    OpenSsl(#[source] openssl::error::ErrorStack),
}

/// A release public key: ECDSA on P-256, as the guide's download page publishes it.
#[derive(Clone)]
pub struct ReleaseKey(PKey<Public>);

impl std::fmt::Debug for ReleaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReleaseKey(ECDSA P-256)")
    }
}

impl ReleaseKey {
    /// Parses a PEM `PUBLIC KEY` and checks it is ECDSA P-256.
    ///
    /// # Errors
    /// [`Error::BadPublicKey`] otherwise.
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        let key = PKey::public_key_from_pem(pem).map_err(|e| Error::BadPublicKey {
            reason: e.to_string(),
        })?;
        let ec: EcKey<Public> = key.ec_key().map_err(|_| Error::BadPublicKey {
            reason: "not an EC key".to_owned(),
        })?;
        if ec.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
            return Err(Error::BadPublicKey {
                reason: "the curve is not P-256".to_owned(),
            });
        }
        Ok(Self(key))
    }
}

/// Verifies `data` (streamed) against a DER ECDSA signature over its SHA-256 digest.
///
/// # Errors
/// [`Error::Mismatch`] when the signature does not match (including a malformed signature),
/// [`Error::Read`] when reading fails.
pub fn verify_detached(
    key: &ReleaseKey,
    mut data: impl Read,
    signature_der: &[u8],
) -> Result<(), Error> {
    let mut verifier = Verifier::new(MessageDigest::sha256(), &key.0).map_err(Error::OpenSsl)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = data.read(&mut buf).map_err(Error::Read)?;
        if n == 0 {
            break;
        }
        verifier.update(&buf[..n]).map_err(Error::OpenSsl)?;
    }
    // OpenSSL reports a malformed DER signature as an error, a wrong one as `false`; both mean
    // the download is not what was signed.
    match verifier.verify(signature_der) {
        Ok(true) => Ok(()),
        Ok(false) | Err(_) => Err(Error::Mismatch),
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Signs with the `openssl` CLI, exactly as a release pipeline would.
    fn openssl_signed(dir: &std::path::Path, payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("the openssl CLI is needed for this test (apt-get install openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(dir.join("istio.tar.gz"), payload).unwrap();
        run(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "key.pem",
        ]);
        run(&["ec", "-in", "key.pem", "-pubout", "-out", "pub.pem"]);
        run(&[
            "dgst",
            "-sha256",
            "-sign",
            "key.pem",
            "-out",
            "istio.tar.gz.1.sig",
            "istio.tar.gz",
        ]);
        (
            std::fs::read(dir.join("pub.pem")).unwrap(),
            std::fs::read(dir.join("istio.tar.gz.1.sig")).unwrap(),
        )
    }

    #[test]
    fn accepts_what_openssl_signed_and_rejects_a_tampered_file() {
        let dir = tempfile::tempdir().unwrap();
        let payload = vec![7u8; 200_000]; // larger than one read buffer
        let (pub_pem, sig) = openssl_signed(dir.path(), &payload);
        let key = ReleaseKey::from_pem(&pub_pem).unwrap();

        verify_detached(&key, payload.as_slice(), &sig).unwrap();

        let mut tampered = payload.clone();
        tampered[100_000] ^= 1;
        assert!(matches!(
            verify_detached(&key, tampered.as_slice(), &sig),
            Err(Error::Mismatch)
        ));
        assert!(matches!(
            verify_detached(&key, payload.as_slice(), b"junk"),
            Err(Error::Mismatch)
        ));
    }

    #[test]
    fn rejects_keys_that_are_not_p256() {
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let pem = PKey::from_rsa(rsa).unwrap().public_key_to_pem().unwrap();
        assert!(matches!(
            ReleaseKey::from_pem(&pem),
            Err(Error::BadPublicKey { .. })
        ));

        let group = openssl::ec::EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
        let p384 = EcKey::generate(&group).unwrap();
        let pem = PKey::from_ec_key(p384)
            .unwrap()
            .public_key_to_pem()
            .unwrap();
        let err = ReleaseKey::from_pem(&pem).unwrap_err();
        assert!(err.to_string().contains("P-256"), "{err}");
    }
}
