//! The KEK layer through its PKCS#11 seam: tokens that misbehave are detected, and device
//! faults are never reported as a bad request or a failed authentication.

use std::cell::Cell;

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};

use super::{GcmDevice, MockGcmDevice, hsm_open, hsm_seal};
use crate::jwe::TAG_LEN;
use crate::{Error, ErrorKind, Iv, IvLength};

const KID: &str = "kek-1";

/// AES-256-GCM in software behind the seam, with the faults of real tokens on demand.
struct SoftGcm {
    key: [u8; 32],
    /// Bytes appended to every encryption output (Luna-style IV), or to every decryption.
    append: usize,
    append_on_decrypt: usize,
    /// Every call after the first `healthy_calls` fails with this code.
    fault: Option<RvError>,
    healthy_calls: Cell<usize>,
}

impl SoftGcm {
    fn sound() -> Self {
        Self {
            key: [9; 32],
            append: 0,
            append_on_decrypt: 0,
            fault: None,
            healthy_calls: Cell::new(usize::MAX),
        }
    }

    fn check(&self, function: Function) -> Result<(), CkError> {
        match self.fault {
            Some(rv) if self.healthy_calls.get() == 0 => Err(CkError::Pkcs11(rv, function)),
            _ => {
                self.healthy_calls
                    .set(self.healthy_calls.get().saturating_sub(1));
                Ok(())
            }
        }
    }
}

impl GcmDevice for SoftGcm {
    fn random(&self, buf: &mut [u8]) -> Result<(), CkError> {
        self.check(Function::GenerateRandom)?;
        openssl::rand::rand_bytes(buf)
            .map_err(|_| CkError::Pkcs11(RvError::GeneralError, Function::GenerateRandom))
    }

    fn gcm_encrypt(&self, iv: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CkError> {
        self.check(Function::Encrypt)?;
        let mut tag = [0u8; TAG_LEN];
        let mut out = openssl::symm::encrypt_aead(
            openssl::symm::Cipher::aes_256_gcm(),
            &self.key,
            Some(iv),
            aad,
            plaintext,
            &mut tag,
        )
        .map_err(|_| CkError::Pkcs11(RvError::GeneralError, Function::Encrypt))?;
        out.extend_from_slice(&tag);
        out.extend(std::iter::repeat_n(0xA5, self.append));
        Ok(out)
    }

    fn gcm_decrypt(&self, iv: &[u8], aad: &[u8], input: &[u8]) -> Result<Vec<u8>, CkError> {
        self.check(Function::Decrypt)?;
        let (ciphertext, tag) = input.split_at(input.len().saturating_sub(TAG_LEN));
        // SoftHSM2's answer to a tag that does not verify.
        let mut out = openssl::symm::decrypt_aead(
            openssl::symm::Cipher::aes_256_gcm(),
            &self.key,
            Some(iv),
            aad,
            ciphertext,
            tag,
        )
        .map_err(|_| CkError::Pkcs11(RvError::GeneralError, Function::Decrypt))?;
        out.extend(std::iter::repeat_n(0, self.append_on_decrypt));
        Ok(out)
    }
}

fn seal(device: &SoftGcm, plaintext: &[u8]) -> crate::Result<String> {
    hsm_seal(
        device,
        KID,
        b"aad",
        &Iv::Random(IvLength::Bytes16),
        plaintext,
    )
}

#[test]
fn a_token_that_appends_its_iv_to_the_ciphertext_is_refused_with_the_cause() {
    for appended in [12, 16] {
        let device = SoftGcm {
            append: appended,
            ..SoftGcm::sound()
        };
        let err = seal(&device, b"a DEK as JWK").unwrap_err();
        assert!(
            matches!(err, Error::HsmOutput { expected, actual, .. } if expected == 12 + TAG_LEN && actual == expected + appended),
            "{err}"
        );
        assert!(err.to_string().contains("appends its own IV"), "{err}");
        assert_eq!(err.kind(), ErrorKind::Internal);
    }
}

#[test]
fn a_mocked_token_returning_iv_then_ciphertext_and_tag_is_refused() {
    let mut device = MockGcmDevice::new();
    device.expect_random().returning(|buf| {
        buf.fill(1);
        Ok(())
    });
    // What some HSMs return for CKM_AES_GCM: IV || ciphertext || tag.
    device
        .expect_gcm_encrypt()
        .times(1)
        .returning(|iv, _, plaintext| {
            let mut out = iv.to_vec();
            out.extend_from_slice(plaintext);
            out.extend_from_slice(&[0u8; TAG_LEN]);
            Ok(out)
        });
    let err = hsm_seal(
        &device,
        KID,
        b"",
        &Iv::Random(IvLength::Bytes12),
        b"0123456789",
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::HsmOutput {
                expected: 26,
                actual: 38,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_sound_token_round_trips_and_a_tampered_blob_fails_authentication() {
    let device = SoftGcm::sound();
    let blob = seal(&device, b"payload").unwrap();
    let opened = hsm_open(&device, "blob", KID, blob.as_bytes()).unwrap();
    assert_eq!(opened.plaintext.as_slice(), b"payload");
    assert_eq!(opened.aad, b"aad");

    let mut parts: Vec<&str> = blob.split('.').collect();
    let other_tag = "AAAAAAAAAAAAAAAAAAAAAA";
    parts[4] = other_tag;
    let tampered = parts.join(".");
    let err = hsm_open(&device, "blob", KID, tampered.as_bytes()).unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed { .. }), "{err}");
}

#[test]
fn a_decryption_of_the_wrong_length_is_refused() {
    let sealer = SoftGcm::sound();
    let blob = seal(&sealer, b"payload").unwrap();
    let device = SoftGcm {
        append_on_decrypt: 16,
        ..SoftGcm::sound()
    };
    let err = hsm_open(&device, "blob", KID, blob.as_bytes()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::HsmOutput {
                expected: 7,
                actual: 23,
                ..
            }
        ),
        "{err}"
    );
}

/// Device faults, whatever call they hit, are Unavailable (retry later) and never a bad
/// request or a failed authentication.
#[test]
fn device_faults_are_unavailable_never_invalid_argument_or_authentication_failed() {
    let blob = seal(&SoftGcm::sound(), b"payload").unwrap();
    let faults = [
        RvError::DeviceError,
        RvError::DeviceMemory,
        RvError::GeneralError,
        RvError::FunctionFailed,
        RvError::DeviceRemoved,
        RvError::TokenNotPresent,
        RvError::SessionHandleInvalid,
        RvError::SessionClosed,
    ];
    for rv in faults {
        // 0 healthy calls: the first call fails (C_Decrypt, or C_GenerateRandom for the IV);
        // 1: the IV is drawn and C_Encrypt fails.
        for (what, healthy_calls) in [("decrypt", 0), ("IV", 0), ("encrypt", 1)] {
            let device = SoftGcm {
                fault: Some(rv),
                healthy_calls: Cell::new(healthy_calls),
                ..SoftGcm::sound()
            };
            let result = if what == "decrypt" {
                hsm_open(&device, "blob", KID, blob.as_bytes()).map(|_| ())
            } else {
                seal(&device, b"payload").map(|_| ())
            };
            let err = result.unwrap_err();
            assert!(
                !matches!(err, Error::AuthenticationFailed { .. }),
                "{rv:?} on {what}: {err}"
            );
            assert_eq!(
                err.kind(),
                ErrorKind::Unavailable,
                "{rv:?} on {what}: {err}"
            );
        }
    }
    let lost = [
        Error::SessionLost {
            operation: "x",
            attempts: 4,
            source: CkError::Pkcs11(RvError::SessionHandleInvalid, Function::Encrypt),
        },
        Error::TokenUnavailable {
            operation: "x",
            label: "t".to_owned(),
            attempts: 4,
            source: Box::new(Error::TokenNotFound {
                label: "t".to_owned(),
                module: "m".into(),
                available: "none".to_owned(),
            }),
        },
    ];
    for err in lost {
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    }
    let no_anchor = Error::ChainRejected {
        problems: vec![crate::ChainProblem::NoAnchors],
    };
    assert_eq!(no_anchor.kind(), ErrorKind::NotFound);
}
