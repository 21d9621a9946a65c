//! Step 10's Secrets: the encrypted CSR istiod writes, and the signed chain it waits for.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use crate::control_plane::ensure_namespace;
use crate::names::{CA_CERT_SECRET, CA_CSR_FIELDS, CA_CSR_SECRET, CERT_CHAIN_KEY, ISTIO_NAMESPACE};
use crate::port::{Kind, Kube, ObjectRef};
use crate::{CertificatePem, Error, Mode, Report, Result};

/// The four fields of Secret `istio-ca-cert-csr`, base64-decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptedCsr {
    /// `kek-id`: the HSM KEK that wraps the DEK.
    pub kek_id: Vec<u8>,
    /// `encrypted-dek`: the data-encryption key, wrapped by the KEK.
    pub encrypted_dek: Vec<u8>,
    /// `csr-id`: identifies the CSR.
    pub csr_id: Vec<u8>,
    /// `encrypted-csr`: the CSR, encrypted with the DEK.
    pub encrypted_csr: Vec<u8>,
}

impl fmt::Debug for EncryptedCsr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedCsr")
            .field("kek_id", &String::from_utf8_lossy(&self.kek_id))
            .field("encrypted_dek_len", &self.encrypted_dek.len())
            .field("csr_id", &String::from_utf8_lossy(&self.csr_id))
            .field("encrypted_csr_len", &self.encrypted_csr.len())
            .finish()
    }
}

impl EncryptedCsr {
    /// The Secret's `.data` as `kubectl get secret istio-ca-cert-csr -o jsonpath={.data}`
    /// prints it (the guide's `encrypted_csr.json`): field name to base64 value.
    pub fn data_json(&self) -> Value {
        let mut data = Map::new();
        for (key, value) in CA_CSR_FIELDS.iter().zip(self.fields()) {
            data.insert((*key).to_owned(), Value::String(STANDARD.encode(value)));
        }
        Value::Object(data)
    }

    fn fields(&self) -> [&[u8]; 4] {
        [
            &self.kek_id,
            &self.encrypted_dek,
            &self.csr_id,
            &self.encrypted_csr,
        ]
    }

    /// Parses a Secret object.
    ///
    /// # Errors
    /// [`Error::MissingField`] for an absent, empty or non-base64 field.
    pub fn from_secret(secret: &Value) -> Result<Self> {
        let object =
            ObjectRef::namespaced(Kind::Secret, ISTIO_NAMESPACE, CA_CSR_SECRET).to_string();
        let field = |name: &str| -> Result<Vec<u8>> {
            secret
                .pointer(&format!("/data/{name}"))
                .and_then(Value::as_str)
                .and_then(|v| STANDARD.decode(v).ok())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Error::MissingField {
                    object: object.clone(),
                    field: name.to_owned(),
                    hint: "istiod writes it when started with the HSM CA (step 9); check its discovery log",
                })
        };
        let [kek, dek, csr_id, csr] = CA_CSR_FIELDS;
        Ok(Self {
            kek_id: field(kek)?,
            encrypted_dek: field(dek)?,
            csr_id: field(csr_id)?,
            encrypted_csr: field(csr)?,
        })
    }
}

/// Reads Secret `istio-system/istio-ca-cert-csr`.
///
/// # Errors
/// [`Error::NotFound`] when istiod has not written it yet; [`Error::MissingField`].
pub async fn read_csr_secret(kube: &dyn Kube) -> Result<EncryptedCsr> {
    let object = ObjectRef::namespaced(Kind::Secret, ISTIO_NAMESPACE, CA_CSR_SECRET);
    let secret = kube.get(&object).await?.ok_or_else(|| Error::NotFound {
        object: object.to_string(),
        hint: "istiod writes it once installed with the HSM CA (step 9); wait for its discovery container",
    })?;
    EncryptedCsr::from_secret(&secret)
}

/// The Secret `istio-system/istio-ca-cert` holding `chain` under `cert-chain.pem`.
pub fn ca_cert_secret(chain: &CertificatePem) -> (ObjectRef, Value) {
    let object = ObjectRef::namespaced(Kind::Secret, ISTIO_NAMESPACE, CA_CERT_SECRET);
    let mut manifest = object.manifest_skeleton();
    manifest["type"] = json!("Opaque");
    manifest["data"] = json!({ CERT_CHAIN_KEY: STANDARD.encode(chain.as_str()) });
    (object, manifest)
}

/// Creates or updates Secret `istio-ca-cert` with the signed chain (istiod CA first, then the
/// root). A Secret of that name with another `type` is a conflict (the type is immutable).
pub async fn ensure_ca_cert_secret(
    kube: &dyn Kube,
    chain: &CertificatePem,
    mode: Mode,
) -> Result<Report> {
    if chain.count() < 2 {
        return Err(Error::InvalidInput {
            what: "certificate chain",
            reason: format!(
                "it holds {} certificate; istiod needs its CA certificate followed by the root",
                chain.count()
            ),
        });
    }
    let mut report = Report::new(mode);
    let ns = ensure_namespace(kube, ISTIO_NAMESPACE, mode).await?;
    report.push(format!("namespace {ISTIO_NAMESPACE}"), ns);
    let (object, manifest) = ca_cert_secret(chain);
    if ns != crate::Outcome::WouldCreate
        && let Some(live) = kube.get(&object).await?
        && let Some(kind) = live.get("type").and_then(Value::as_str)
        && kind != "Opaque"
    {
        return Err(Error::Conflict {
            object: object.to_string(),
            detail: format!(
                "it has type {kind}, not Opaque, and the type cannot change; delete it and run again"
            ),
        });
    }
    let outcome =
        crate::control_plane::ensure_in_namespace(kube, ns, &object, &manifest, mode).await?;
    report.push(object.to_string(), outcome);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::Outcome;
    use crate::certs::tests::self_signed;
    use crate::fake::FakeKube;
    use crate::port::MockKube;

    fn csr_secret() -> Value {
        json!({"metadata": {"name": "istio-ca-cert-csr", "namespace": "istio-system"},
               "data": {"kek-id": STANDARD.encode("kek-1"), "encrypted-dek": STANDARD.encode([1u8, 2, 3]),
                        "csr-id": STANDARD.encode("csr-1"), "encrypted-csr": STANDARD.encode([9u8; 40])}})
    }

    fn chain() -> CertificatePem {
        CertificatePem::parse(
            format!("{}{}", self_signed("istiod-ca"), self_signed("root")),
            "chain",
        )
        .unwrap()
    }

    #[tokio::test]
    async fn the_csr_secret_is_read_and_decoded() {
        let mut kube = MockKube::new();
        kube.expect_get()
            .withf(|o| o.to_string() == "secret istio-system/istio-ca-cert-csr")
            .times(1)
            .returning(|_| Ok(Some(csr_secret())));
        let csr = read_csr_secret(&kube).await.unwrap();
        assert_eq!(csr.kek_id, b"kek-1");
        assert_eq!(csr.encrypted_dek, [1, 2, 3]);
        assert_eq!(csr.csr_id, b"csr-1");
        assert_eq!(csr.encrypted_csr, [9; 40]);
        assert_eq!(csr.data_json(), csr_secret()["data"]);
        assert!(!format!("{csr:?}").contains("[9, 9"));
    }

    #[tokio::test]
    async fn a_missing_csr_or_field_says_what_writes_it() {
        let mut kube = MockKube::new();
        kube.expect_get().times(1).returning(|_| Ok(None));
        let err = read_csr_secret(&kube).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("secret istio-system/istio-ca-cert-csr not found; istiod writes it"),
            "{err}"
        );

        let mut partial = csr_secret();
        partial["data"].as_object_mut().unwrap().remove("csr-id");
        let err = EncryptedCsr::from_secret(&partial).unwrap_err();
        assert!(
            matches!(err, Error::MissingField { ref field, .. } if field == "csr-id"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn the_ca_cert_secret_is_created_once() {
        let kube = FakeKube::default();
        let chain = chain();
        let dry = ensure_ca_cert_secret(&kube, &chain, Mode::DryRun)
            .await
            .unwrap();
        assert_eq!(
            dry.outcome_of("secret istio-system/istio-ca-cert"),
            Some(Outcome::WouldCreate)
        );
        assert_eq!(kube.len(), 0);
        let first = ensure_ca_cert_secret(&kube, &chain, Mode::Apply)
            .await
            .unwrap();
        assert_eq!(
            first.outcome_of("secret istio-system/istio-ca-cert"),
            Some(Outcome::Created)
        );
        let stored = kube.object(&ca_cert_secret(&chain).0).unwrap();
        let pem = STANDARD
            .decode(stored["data"]["cert-chain.pem"].as_str().unwrap())
            .unwrap();
        assert_eq!(pem, chain.as_str().as_bytes());
        let second = ensure_ca_cert_secret(&kube, &chain, Mode::Apply)
            .await
            .unwrap();
        assert!(second.is_unchanged(), "{second}");

        let renewed = CertificatePem::parse(
            format!("{}{}", self_signed("istiod-ca-2"), self_signed("root")),
            "c",
        )
        .unwrap();
        let third = ensure_ca_cert_secret(&kube, &renewed, Mode::Apply)
            .await
            .unwrap();
        assert_eq!(
            third.outcome_of("secret istio-system/istio-ca-cert"),
            Some(Outcome::Updated)
        );
    }

    #[tokio::test]
    async fn a_single_certificate_or_a_foreign_secret_type_is_refused() {
        let kube = FakeKube::default();
        let one = CertificatePem::parse(self_signed("only"), "c").unwrap();
        assert!(matches!(
            ensure_ca_cert_secret(&kube, &one, Mode::Apply)
                .await
                .unwrap_err(),
            Error::InvalidInput { .. }
        ));
        let chain = chain();
        kube.insert(
            &ca_cert_secret(&chain).0,
            json!({"type": "kubernetes.io/tls"}),
        );
        let err = ensure_ca_cert_secret(&kube, &chain, Mode::Apply)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("type kubernetes.io/tls"), "{err}");
    }

    #[tokio::test]
    async fn the_chain_is_checked_against_the_live_secret_before_applying() {
        let chain = chain();
        let mut kube = MockKube::new();
        let mut seq = mockall::Sequence::new();
        kube.expect_get()
            .withf(|o| o.to_string() == "namespace istio-system")
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(Some(json!({"metadata": {"name": "istio-system"}}))));
        kube.expect_get()
            .withf(|o| o.to_string() == "secret istio-system/istio-ca-cert")
            .times(2)
            .in_sequence(&mut seq)
            .returning(|_| {
                Ok(Some(
                    json!({"type": "Opaque", "data": {"cert-chain.pem": "b2xk"}}),
                ))
            });
        let pem = STANDARD.encode(chain.as_str());
        kube.expect_apply()
            .withf(move |o, m, mode| {
                o.name == "istio-ca-cert"
                    && m["data"]["cert-chain.pem"] == pem.as_str()
                    && *mode == Mode::DryRun
            })
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, m, _| Ok(m.clone()));
        let report = ensure_ca_cert_secret(&kube, &chain, Mode::DryRun)
            .await
            .unwrap();
        assert_eq!(
            report.changes.iter().map(|c| c.action).collect::<Vec<_>>(),
            [Outcome::Unchanged, Outcome::WouldUpdate]
        );
    }
}
