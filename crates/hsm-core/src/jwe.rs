//! The compact JWE of the Thales plugin (KMS-PROTOCOL §4.1) and the DEK-as-JWK (§4.2).
//!
//! Shape: `B64U(header) . "" . B64U(iv) . B64U(ciphertext) . B64U(tag)`, unpadded base64url.
//! The header is `{"alg":"dir","kid":..,"_thales_aad":..,"enc":"A256GCM"}` in that order, as
//! Go's `encoding/json` writes it (`_thales_aad` only when the AAD is non-empty). The GCM AAD
//! is the ASCII of the first segment, so the caller's AAD is authenticated through the header.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

use crate::{Error, Result};

/// Length of the AES-GCM tag, in bytes.
pub const TAG_LEN: usize = 16;

/// Longest IV accepted when parsing (PKCS#11 2.40's limit).
const MAX_IV_LEN: usize = 256;

/// A parsed compact JWE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactJwe {
    /// The first segment exactly as received: the GCM AAD.
    pub protected: String,
    /// `kid` from the header.
    pub kid: String,
    /// `_thales_aad`, decoded (empty when absent).
    pub thales_aad: Vec<u8>,
    /// The IV (any length 1..=256; 16 in the Thales KEK layer, 12 in the DEK layer).
    pub iv: Vec<u8>,
    /// The ciphertext.
    pub ciphertext: Vec<u8>,
    /// The 16-byte tag.
    pub tag: Vec<u8>,
}

/// Writes a JSON string the way Go's `encoding/json` does (HTML-safe escapes included), so
/// headers we make are byte-identical to the plugin's.
fn go_json_string(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The protected header as the plugin serialises it.
pub fn protected_header(kid: &str, thales_aad: &[u8]) -> String {
    let mut json = String::from("{\"alg\":\"dir\",\"kid\":");
    go_json_string(&mut json, kid);
    if !thales_aad.is_empty() {
        json.push_str(",\"_thales_aad\":");
        go_json_string(&mut json, &URL_SAFE_NO_PAD.encode(thales_aad));
    }
    json.push_str(",\"enc\":\"A256GCM\"}");
    URL_SAFE_NO_PAD.encode(json.as_bytes())
}

/// Joins the five segments.
pub fn compact(protected: &str, iv: &[u8], ciphertext: &[u8], tag: &[u8]) -> String {
    format!(
        "{protected}..{}.{}.{}",
        URL_SAFE_NO_PAD.encode(iv),
        URL_SAFE_NO_PAD.encode(ciphertext),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

#[derive(serde::Deserialize)]
struct Header {
    alg: Option<String>,
    enc: Option<String>,
    kid: Option<String>,
    zip: Option<serde_json::Value>,
    #[serde(rename = "_thales_aad")]
    thales_aad: Option<String>,
}

fn b64(what: &'static str, part: &'static str, text: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| Error::MalformedEnvelope {
            what,
            reason: format!("the {part} is not unpadded base64url ({e})"),
        })
}

/// Parses a compact JWE and checks `alg`/`enc`/`zip`; `what` names the blob in errors.
///
/// # Errors
/// [`Error::MalformedEnvelope`] (truncated, wrong part count, bad base64 or JSON, empty kid,
/// bad IV or tag length), [`Error::UnsupportedEnvelope`] (other `alg`/`enc`, `zip`).
pub fn parse(what: &'static str, blob: &[u8]) -> Result<CompactJwe> {
    let text = std::str::from_utf8(blob).map_err(|_| Error::MalformedEnvelope {
        what,
        reason: "it is not UTF-8 text".to_owned(),
    })?;
    let text = text.trim_end();
    let parts: Vec<&str> = text.split('.').collect();
    let [protected, key, iv, ciphertext, tag] = parts.as_slice() else {
        return Err(Error::MalformedEnvelope {
            what,
            reason: format!(
                "a compact JWE has 5 dot-separated parts, this has {}",
                parts.len()
            ),
        });
    };
    if !key.is_empty() {
        return Err(Error::UnsupportedEnvelope {
            what,
            reason: "the encrypted-key part must be empty for alg \"dir\"".to_owned(),
        });
    }
    let header_json = b64(what, "header", protected)?;
    let header: Header =
        serde_json::from_slice(&header_json).map_err(|e| Error::MalformedEnvelope {
            what,
            reason: format!("the header is not a JSON object ({e})"),
        })?;
    if header.alg.as_deref() != Some("dir") {
        return Err(Error::UnsupportedEnvelope {
            what,
            reason: format!("alg is {:?}, only \"dir\" is accepted", header.alg),
        });
    }
    if header.enc.as_deref() != Some("A256GCM") {
        return Err(Error::UnsupportedEnvelope {
            what,
            reason: format!("enc is {:?}, only \"A256GCM\" is accepted", header.enc),
        });
    }
    if header.zip.is_some() {
        return Err(Error::UnsupportedEnvelope {
            what,
            reason: "compressed (zip) payloads are refused".to_owned(),
        });
    }
    let kid = header
        .kid
        .filter(|k| !k.is_empty())
        .ok_or_else(|| Error::MalformedEnvelope {
            what,
            reason: "the header has no kid".to_owned(),
        })?;
    let thales_aad = match header.thales_aad {
        Some(aad) => b64(what, "_thales_aad header field", &aad)?,
        None => Vec::new(),
    };
    let iv = b64(what, "IV", iv)?;
    if iv.is_empty() || iv.len() > MAX_IV_LEN {
        return Err(Error::MalformedEnvelope {
            what,
            reason: format!("the IV is {} bytes, expected 1 to {MAX_IV_LEN}", iv.len()),
        });
    }
    let ciphertext = b64(what, "ciphertext", ciphertext)?;
    let tag = b64(what, "tag", tag)?;
    if tag.len() != TAG_LEN {
        return Err(Error::MalformedEnvelope {
            what,
            reason: format!("the tag is {} bytes, expected {TAG_LEN}", tag.len()),
        });
    }
    Ok(CompactJwe {
        protected: (*protected).to_owned(),
        kid,
        thales_aad,
        iv,
        ciphertext,
        tag,
    })
}

/// A 256-bit data-encryption key, zeroised on drop, with the `kid` its envelopes carry.
///
/// The kid travels in the clear, in the header of every blob sealed under the DEK
/// (`encrypted-skey`, `encrypted-csr`). The Thales plugin derives it from the key (a
/// SHA-256 key-check value, KMS-PROTOCOL W4); new DEKs get a random kid instead
/// ([`Dek::with_random_kid`]), so no header reveals anything computed from key material.
/// This stays byte-compatible with the plugin: gose takes the kid of a DEK from the `kid`
/// field of its JWK (`NewAesGcmCryptorFromJwk` uses `jwk.Kid()`), never recomputes it, and
/// only checks that a blob's header names that kid; the JWK keeps its field order and shape
/// (64 lowercase hex digits). Old DEKs keep the kid in their JWK, so their blobs still open.
#[derive(Clone)]
pub struct Dek {
    key: Zeroizing<[u8; 32]>,
    kid: String,
}

impl std::fmt::Debug for Dek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dek")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct Jwk {
    kty: Option<String>,
    k: Option<String>,
    kid: Option<String>,
}

impl Dek {
    /// Wraps 32 key bytes with the Thales plugin's key-derived kid ([`Dek::legacy_kid`]).
    /// Only for reproducing the plugin's blobs; new DEKs use [`Dek::with_random_kid`].
    pub fn from_bytes(key: [u8; 32]) -> Self {
        let kid = legacy_kid(&key);
        Self {
            key: Zeroizing::new(key),
            kid,
        }
    }

    /// Wraps 32 key bytes with a kid made of 32 random bytes (`kid_bytes`, lowercase hex):
    /// the kid says nothing about the key (W4).
    pub fn with_random_kid(key: [u8; 32], kid_bytes: &[u8; 32]) -> Self {
        Self {
            key: Zeroizing::new(key),
            kid: hex(kid_bytes),
        }
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// The JWK `kid`: random for DEKs made here, whatever the JWK said for DEKs read from an
    /// `encrypted-dek` blob.
    pub fn kid(&self) -> String {
        self.kid.clone()
    }

    /// The kid the Thales plugin derives from the key: lowercase hex SHA-256 of
    /// `"v1.jwk.oct." + b64url(key)`. A key-check value: never written by this crate for new
    /// DEKs.
    pub fn legacy_kid(&self) -> String {
        legacy_kid(&self.key)
    }

    /// The JWK JSON, byte-identical to the plugin's:
    /// `{"key_ops":["encrypt","decrypt","sign","verify"],"alg":"A256GCM","kid":..,"k":..,"kty":"oct"}`.
    pub fn to_jwk_json(&self) -> Zeroizing<Vec<u8>> {
        let k = Zeroizing::new(URL_SAFE_NO_PAD.encode(self.key.as_slice()));
        let mut json = Zeroizing::new(String::with_capacity(200));
        json.push_str(
            "{\"key_ops\":[\"encrypt\",\"decrypt\",\"sign\",\"verify\"],\"alg\":\"A256GCM\",\"kid\":\"",
        );
        json.push_str(&self.kid);
        json.push_str("\",\"k\":\"");
        json.push_str(&k);
        json.push_str("\",\"kty\":\"oct\"}");
        Zeroizing::new(json.as_bytes().to_vec())
    }

    /// Parses a JWK made by [`Dek::to_jwk_json`] or the plugin (fields in any order).
    ///
    /// # Errors
    /// [`Error::MalformedEnvelope`] when it is not an `oct` JWK with a 32-byte `k`.
    pub fn from_jwk_json(json: &[u8]) -> Result<(Self, String)> {
        const WHAT: &str = "DEK JWK";
        let jwk: Jwk = serde_json::from_slice(json).map_err(|_| Error::MalformedEnvelope {
            what: WHAT,
            reason: "it is not a JSON object".to_owned(),
        })?;
        if jwk.kty.as_deref() != Some("oct") {
            return Err(Error::MalformedEnvelope {
                what: WHAT,
                reason: format!("kty is {:?}, expected \"oct\"", jwk.kty),
            });
        }
        let k = Zeroizing::new(jwk.k.unwrap_or_default());
        let bytes = Zeroizing::new(b64(WHAT, "k field", &k)?);
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| Error::MalformedEnvelope {
                what: WHAT,
                reason: format!("k is {} bytes, expected 32", bytes.len()),
            })?;
        let mut dek = Self::from_bytes(key);
        if let Some(kid) = jwk.kid.filter(|k| !k.is_empty()) {
            dek.kid = kid;
        }
        let kid = dek.kid.clone();
        Ok((dek, kid))
    }

    /// Encrypts `plaintext` in software as a compact JWE with `kid`, a random 12-byte IV and
    /// `aad` carried in `_thales_aad`.
    ///
    /// # Errors
    /// [`Error::Crypto`].
    pub fn seal(&self, kid: &str, aad: &[u8], plaintext: &[u8]) -> Result<String> {
        let mut iv = [0u8; 12];
        openssl::rand::rand_bytes(&mut iv).map_err(Error::crypto("drawing a GCM IV"))?;
        self.seal_with_iv(kid, aad, &iv, plaintext)
    }

    /// [`Dek::seal`] with a caller-chosen IV. Only for interoperability tests: an IV must
    /// never be used twice with one key.
    ///
    /// # Errors
    /// [`Error::Crypto`].
    pub fn seal_with_iv(
        &self,
        kid: &str,
        aad: &[u8],
        iv: &[u8],
        plaintext: &[u8],
    ) -> Result<String> {
        let protected = protected_header(kid, aad);
        let mut tag = [0u8; TAG_LEN];
        let ciphertext = openssl::symm::encrypt_aead(
            openssl::symm::Cipher::aes_256_gcm(),
            self.key.as_slice(),
            Some(iv),
            protected.as_bytes(),
            plaintext,
            &mut tag,
        )
        .map_err(Error::crypto("AES-GCM encryption under the DEK"))?;
        Ok(compact(&protected, iv, &ciphertext, &tag))
    }

    /// Decrypts a JWE made under this DEK; returns the plaintext and the `_thales_aad`.
    ///
    /// # Errors
    /// The errors of [`parse`]; [`Error::KeyMismatch`] when its kid is not `kid`;
    /// [`Error::AuthenticationFailed`] when the tag does not verify.
    pub fn open(
        &self,
        what: &'static str,
        kid: &str,
        blob: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>)> {
        let jwe = parse(what, blob)?;
        if jwe.kid != kid {
            return Err(Error::KeyMismatch {
                what,
                expected: kid.to_owned(),
                found: jwe.kid,
            });
        }
        let plaintext = openssl::symm::decrypt_aead(
            openssl::symm::Cipher::aes_256_gcm(),
            self.key.as_slice(),
            Some(&jwe.iv),
            jwe.protected.as_bytes(),
            &jwe.ciphertext,
            &jwe.tag,
        )
        .map_err(|_| Error::AuthenticationFailed { what })?;
        Ok((Zeroizing::new(plaintext), jwe.thales_aad))
    }
}

fn legacy_kid(key: &[u8; 32]) -> String {
    let mut input = Zeroizing::new(b"v1.jwk.oct.".to_vec());
    input.extend_from_slice(Zeroizing::new(URL_SAFE_NO_PAD.encode(key)).as_bytes());
    hex(&openssl::sha::sha256(&input))
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_matches_go_field_order_and_escaping() {
        let h = protected_header("kek-<1>", b"csr-1");
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"alg":"dir","kid":"kek-\u003c1\u003e","_thales_aad":"Y3NyLTE","enc":"A256GCM"}"#
        );
        let h = protected_header("k", b"");
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
        assert_eq!(json, r#"{"alg":"dir","kid":"k","enc":"A256GCM"}"#);
    }

    #[test]
    fn jwk_round_trips_and_kid_is_the_legacy_key_check_value() {
        let dek = Dek::from_bytes([7u8; 32]);
        let json = dek.to_jwk_json();
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.starts_with(
            r#"{"key_ops":["encrypt","decrypt","sign","verify"],"alg":"A256GCM","kid":""#
        ));
        assert!(text.ends_with(r#"","kty":"oct"}"#));
        let (back, kid) = Dek::from_jwk_json(&json).unwrap();
        assert_eq!(back.as_bytes(), dek.as_bytes());
        assert_eq!(kid, dek.kid());
        assert_eq!(kid.len(), 64);
    }

    #[test]
    fn software_layer_round_trips_and_rejects_tampering() {
        let dek = Dek::from_bytes([1u8; 32]);
        let jwe = dek.seal("kid-1", b"aad", b"hello").unwrap();
        let (pt, aad) = dek.open("ciphertext", "kid-1", jwe.as_bytes()).unwrap();
        assert_eq!(
            (pt.as_slice(), aad.as_slice()),
            (&b"hello"[..], &b"aad"[..])
        );

        let mut parts: Vec<String> = jwe.split('.').map(str::to_owned).collect();
        let mut ct = URL_SAFE_NO_PAD.decode(&parts[3]).unwrap();
        ct[0] ^= 1;
        parts[3] = URL_SAFE_NO_PAD.encode(ct);
        let tampered = parts.join(".");
        assert!(matches!(
            dek.open("ciphertext", "kid-1", tampered.as_bytes()),
            Err(Error::AuthenticationFailed { .. })
        ));
        assert!(matches!(
            dek.open("ciphertext", "kid-2", jwe.as_bytes()),
            Err(Error::KeyMismatch { .. })
        ));
        let truncated = &jwe[..jwe.rfind('.').unwrap()];
        assert!(matches!(
            dek.open("ciphertext", "kid-1", truncated.as_bytes()),
            Err(Error::MalformedEnvelope { .. })
        ));
    }

    #[test]
    fn parse_refuses_other_algorithms_and_zip() {
        let header =
            URL_SAFE_NO_PAD.encode(r#"{"alg":"dir","kid":"k","enc":"A256GCM","zip":"DEF"}"#);
        let blob = format!("{header}..AAAAAAAAAAAAAAAA.AA.AAAAAAAAAAAAAAAAAAAAAA");
        assert!(matches!(
            parse("x", blob.as_bytes()),
            Err(Error::UnsupportedEnvelope { .. })
        ));
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RSA-OAEP","kid":"k","enc":"A256GCM"}"#);
        let blob = format!("{header}..AAAAAAAAAAAAAAAA.AA.AAAAAAAAAAAAAAAAAAAAAA");
        assert!(matches!(
            parse("x", blob.as_bytes()),
            Err(Error::UnsupportedEnvelope { .. })
        ));
    }
}
