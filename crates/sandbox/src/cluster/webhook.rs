//! A sidecar-injection webhook for one Istio revision, served over HTTPS on loopback and
//! registered with a `MutatingWebhookConfiguration`, so the real API server calls it for every
//! pod created in a namespace labelled `istio.io/rev=<revision>` — as istiod's injector is
//! called. It adds what injection leaves on a pod: the `istio-proxy` container, the revision
//! label and the `sidecar.istio.io/status` annotation.

use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use super::api::ClusterApi;
use crate::{Error, Result};

/// The injection webhook of one revision; stops serving when dropped.
pub struct InjectionWebhook {
    revision: String,
    url: String,
    ca_pem: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for InjectionWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InjectionWebhook")
            .field("revision", &self.revision)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn fail(what: &'static str) -> impl FnOnce(String) -> Error {
    move |detail| Error::ClusterApi {
        operation: what,
        detail,
    }
}

impl InjectionWebhook {
    /// Serves the webhook of `revision` on a free 127.0.0.1 port, on a thread of its own (so it
    /// outlives any test runtime).
    pub fn start(revision: &str) -> Result<Self> {
        let (ca_pem, config) = tls().map_err(fail("creating the webhook's certificates"))?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| fail("binding the webhook")(e.to_string()))?;
        let port = listener
            .local_addr()
            .map_err(|e| fail("binding the webhook")(e.to_string()))?
            .port();
        let (stop, stopped) = oneshot::channel();
        let acceptor = TlsAcceptor::from(config);
        let rev = revision.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("injection-webhook-{revision}"))
            .spawn(move || serve(listener, acceptor, rev, stopped))
            .map_err(|e| fail("starting the webhook thread")(e.to_string()))?;
        Ok(Self {
            revision: revision.to_owned(),
            url: format!("https://127.0.0.1:{port}/inject"),
            ca_pem,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The URL the API server calls.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The name of the `MutatingWebhookConfiguration` [`Self::register`] creates:
    /// `istio-sidecar-injector-<revision>`, as istioctl names a revision's injector.
    pub fn configuration_name(&self) -> String {
        format!("istio-sidecar-injector-{}", self.revision)
    }

    /// Registers the webhook with the cluster: pods created in namespaces labelled
    /// `istio.io/rev=<revision>` are sent to it, and a failure to reach it fails the creation.
    pub async fn register(&self, api: &ClusterApi) -> Result<()> {
        let configuration = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {
                "name": self.configuration_name(),
                "labels": { "istio.io/rev": self.revision },
            },
            "webhooks": [{
                "name": "rev.namespace.sidecar-injector.istio.io",
                "clientConfig": {
                    "url": self.url,
                    "caBundle": STANDARD.encode(&self.ca_pem),
                },
                "rules": [{
                    "operations": ["CREATE"],
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "resources": ["pods"],
                }],
                "namespaceSelector": { "matchLabels": { "istio.io/rev": self.revision } },
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Fail",
                "timeoutSeconds": 10,
            }],
        });
        api.create_object(&configuration).await.map(|_| ())
    }
}

impl Drop for InjectionWebhook {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A CA of the webhook's own and a serving certificate for 127.0.0.1.
fn tls() -> std::result::Result<(String, Arc<rustls::ServerConfig>), String> {
    let text = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(text)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(text)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, ca_key).map_err(text)?;
    let key = KeyPair::generate().map_err(text)?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .map_err(text)?
        .signed_by(&key, &ca)
        .map_err(text)?;
    let private =
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).map_err(str::to_owned)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone(), ca.der().clone()], private)
    .map_err(|e| e.to_string())?;
    Ok((ca.pem(), Arc::new(config)))
}

fn serve(
    listener: std::net::TcpListener,
    acceptor: TlsAcceptor,
    revision: String,
    stop: oneshot::Receiver<()>,
) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        tracing::error!("the injection webhook could not build its runtime");
        return;
    };
    rt.block_on(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            tracing::error!("the injection webhook could not register its listener");
            return;
        };
        let revision = Arc::new(revision);
        let accept = async {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let revision = Arc::clone(&revision);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let revision = Arc::clone(&revision);
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(http_body_util::Collected::to_bytes)
                                .unwrap_or_default();
                            let review: Value = serde_json::from_slice(&body).unwrap_or_default();
                            let answer = review_response(&review, &revision);
                            let response = hyper::Response::builder()
                                .header(http::header::CONTENT_TYPE, "application/json")
                                .body(Full::new(bytes::Bytes::from(answer.to_string())))
                                .unwrap_or_default();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        };
        tokio::select! {
            () = accept => {}
            _ = stop => {}
        }
    });
}

/// The `AdmissionReview` answer for `review`: allowed, with the injection patch for a pod.
fn review_response(review: &Value, revision: &str) -> Value {
    let request = &review["request"];
    let pod = &request["object"];
    let mut patch = Vec::new();
    if pod["metadata"]["labels"].is_null() {
        patch.push(json!({"op": "add", "path": "/metadata/labels", "value": {}}));
    }
    patch.push(json!({"op": "add", "path": "/metadata/labels/istio.io~1rev", "value": revision}));
    if pod["metadata"]["annotations"].is_null() {
        patch.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
    }
    patch.push(json!({
        "op": "add",
        "path": "/metadata/annotations/sidecar.istio.io~1status",
        "value": json!({"containers": ["istio-proxy"], "revision": revision}).to_string(),
    }));
    patch.push(json!({
        "op": "add",
        "path": "/spec/containers/-",
        "value": {"name": "istio-proxy", "image": "example.invalid/istio/proxyv2:sandbox",
                  "args": ["proxy", "sidecar"]},
    }));
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": request["uid"],
            "allowed": true,
            "patchType": "JSONPatch",
            "patch": STANDARD.encode(Value::Array(patch).to_string()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_adds_the_proxy_the_label_and_the_status() {
        let review = json!({"request": {"uid": "u-1", "object": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web"}]}}}});
        let answer = review_response(&review, "asm-183-2");
        assert_eq!(answer["response"]["uid"], "u-1");
        assert_eq!(answer["response"]["allowed"], true);
        let patch: Value = serde_json::from_slice(
            &STANDARD
                .decode(answer["response"]["patch"].as_str().unwrap_or_default())
                .unwrap_or_default(),
        )
        .unwrap_or_default();
        let ops = patch.as_array().cloned().unwrap_or_default();
        assert_eq!(ops.len(), 4, "{patch}");
        assert_eq!(ops[0]["path"], "/metadata/labels/istio.io~1rev");
        assert_eq!(ops[3]["value"]["name"], "istio-proxy");
    }
}
