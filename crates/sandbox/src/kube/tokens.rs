//! Service-account tokens: ES256 JWTs with the projected-token (and legacy Secret) claims.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use serde_json::{Value, json};

/// The issuer of legacy Secret-based tokens.
pub(crate) const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

/// Clock skew tolerated on `nbf` and `exp`, as the API server does.
const LEEWAY_SECONDS: i64 = 60;

/// The signing key of the emulated cluster.
pub(crate) struct Signer {
    key: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// DER prefix of a P-256 `SubjectPublicKeyInfo` holding an uncompressed point.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// What a valid token says.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    pub(crate) namespace: String,
    pub(crate) service_account: String,
    /// The service account's uid (projected tokens carry it; legacy ones name it too).
    pub(crate) sa_uid: Option<String>,
    /// The Secret a legacy token came from.
    pub(crate) secret: Option<String>,
    /// The token's audiences that were accepted.
    pub(crate) audiences: Vec<String>,
    /// The `jti` claim.
    pub(crate) id: Option<String>,
    /// The pod a token is bound to (name, uid).
    pub(crate) pod: Option<(String, String)>,
}

impl Signer {
    /// A fresh P-256 key.
    pub(crate) fn generate() -> Result<Self, ring::error::Unspecified> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| ring::error::Unspecified)?;
        let spki = spki_der(key.public_key().as_ref());
        let digest = ring::digest::digest(&ring::digest::SHA256, &spki);
        let kid = URL_SAFE_NO_PAD.encode(digest.as_ref());
        Ok(Self { key, kid, rng })
    }

    /// The public key as a PEM `PUBLIC KEY` block.
    pub(crate) fn public_key_pem(&self) -> String {
        let der = spki_der(self.key.public_key().as_ref());
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(chunk));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }

    /// A compact JWS of `claims`.
    pub(crate) fn sign(&self, claims: &Value) -> Result<String, ring::error::Unspecified> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self.key.sign(&self.rng, signing_input.as_bytes())?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(sig.as_ref())
        ))
    }

    /// The claims of `token` if its signature is ours; the error is the API server's wording.
    fn claims(&self, token: &str) -> Result<Value, String> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("token is not a JWT".to_owned());
        };
        let header: Value = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("token header is malformed")?;
        if header["alg"] != "ES256" {
            return Err("unexpected signature algorithm".to_owned());
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| "token signature is malformed")?;
        let public =
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref());
        public
            .verify(format!("{h}.{c}").as_bytes(), &sig)
            .map_err(|_| "error in cryptographic primitive")?;
        URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| "token claims are malformed".to_owned())
    }

    /// Checks signature, issuer, time window and audiences. `wanted` are the audiences the
    /// caller accepts; an empty list means the API server's own audiences `api_audiences`.
    pub(crate) fn verify(
        &self,
        token: &str,
        issuer: &str,
        api_audiences: &[String],
        wanted: &[String],
        now: i64,
    ) -> Result<Verified, String> {
        let claims = self.claims(token)?;
        let wanted = if wanted.is_empty() {
            api_audiences
        } else {
            wanted
        };
        match claims["iss"].as_str() {
            Some(LEGACY_ISSUER) => {
                let get = |k: &str| {
                    claims[format!("kubernetes.io/serviceaccount/{k}")]
                        .as_str()
                        .map(str::to_owned)
                };
                let (Some(namespace), Some(service_account), Some(secret)) = (
                    get("namespace"),
                    get("service-account.name"),
                    get("secret.name"),
                ) else {
                    return Err("token lacks the service account claims".to_owned());
                };
                Ok(Verified {
                    namespace,
                    service_account,
                    sa_uid: get("service-account.uid"),
                    secret: Some(secret),
                    audiences: wanted.to_vec(),
                    id: None,
                    pod: None,
                })
            }
            Some(iss) if iss == issuer => {
                let exp = claims["exp"].as_i64().ok_or("token has no expiry")?;
                if now > exp + LEEWAY_SECONDS {
                    return Err(
                        "square/go-jose/jwt: validation failed, token is expired (exp)".to_owned(),
                    );
                }
                if let Some(nbf) = claims["nbf"].as_i64()
                    && now + LEEWAY_SECONDS < nbf
                {
                    return Err(
                        "square/go-jose/jwt: validation failed, token not valid yet (nbf)"
                            .to_owned(),
                    );
                }
                let aud: Vec<String> = match &claims["aud"] {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(a) => a
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                    _ => Vec::new(),
                };
                let accepted: Vec<String> =
                    wanted.iter().filter(|w| aud.contains(w)).cloned().collect();
                if accepted.is_empty() {
                    return Err(format!(
                        "token audiences {aud:?} is invalid for the target audiences {wanted:?}"
                    ));
                }
                let k = &claims["kubernetes.io"];
                let namespace = k["namespace"]
                    .as_str()
                    .ok_or("token has no namespace claim")?;
                let sa = k["serviceaccount"]["name"]
                    .as_str()
                    .ok_or("token has no service account claim")?;
                let pod = k["pod"]["name"].as_str().map(|n| {
                    (
                        n.to_owned(),
                        k["pod"]["uid"].as_str().unwrap_or_default().to_owned(),
                    )
                });
                Ok(Verified {
                    namespace: namespace.to_owned(),
                    service_account: sa.to_owned(),
                    sa_uid: k["serviceaccount"]["uid"].as_str().map(str::to_owned),
                    secret: None,
                    audiences: accepted,
                    id: claims["jti"].as_str().map(str::to_owned),
                    pod,
                })
            }
            _ => Err("token issuer is not trusted".to_owned()),
        }
    }
}

fn spki_der(point: &[u8]) -> Vec<u8> {
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.extend_from_slice(point);
    der
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64, aud: &[&str]) -> Value {
        json!({"iss": "https://kubernetes.default.svc.cluster.local", "aud": aud, "exp": exp, "iat": exp - 3600, "nbf": exp - 3600,
               "sub": "system:serviceaccount:vault:default", "jti": "j",
               "kubernetes.io": {"namespace": "vault", "serviceaccount": {"name": "default", "uid": "u1"}}})
    }

    const ISS: &str = "https://kubernetes.default.svc.cluster.local";

    #[test]
    fn signed_token_verifies_and_reports_the_service_account() {
        let s = Signer::generate().unwrap();
        let t = s.sign(&claims(2_000, &["vault"])).unwrap();
        let v = s
            .verify(&t, ISS, &[ISS.to_owned()], &["vault".to_owned()], 1_000)
            .unwrap();
        assert_eq!(
            (v.namespace.as_str(), v.service_account.as_str()),
            ("vault", "default")
        );
        assert_eq!(v.sa_uid.as_deref(), Some("u1"));
        assert_eq!(v.audiences, vec!["vault".to_owned()]);
        assert!(
            s.public_key_pem()
                .starts_with("-----BEGIN PUBLIC KEY-----\n")
        );
    }

    #[test]
    fn expired_foreign_and_wrong_audience_tokens_are_refused() {
        let s = Signer::generate().unwrap();
        let other = Signer::generate().unwrap();
        let t = s.sign(&claims(2_000, &["vault"])).unwrap();
        let api = [ISS.to_owned()];
        let err = s
            .verify(&t, ISS, &api, &["vault".to_owned()], 2_100)
            .unwrap_err();
        assert!(err.contains("expired"), "{err}");
        let err = other
            .verify(&t, ISS, &api, &["vault".to_owned()], 1_000)
            .unwrap_err();
        assert!(err.contains("cryptographic"), "{err}");
        let err = s.verify(&t, ISS, &api, &[], 1_000).unwrap_err();
        assert!(err.contains("audiences"), "{err}");
        let mut tampered = t.clone();
        tampered.insert(t.find('.').unwrap() + 2, 'A');
        assert!(
            s.verify(&tampered, ISS, &api, &["vault".to_owned()], 1_000)
                .is_err()
        );
    }
}
