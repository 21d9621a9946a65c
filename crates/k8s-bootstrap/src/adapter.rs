//! [`KubeClient`]: the [`Kube`] port over a `kube::Client`.

use kube::api::{DeleteParams, GetParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::Request;
use secrecy::SecretString;
use secrecy::zeroize::Zeroize as _;
use serde_json::Value;

use crate::names::FIELD_MANAGER;
use crate::port::{Kube, ListQuery, ObjectRef, TokenSpec};
use crate::retry::RetryPolicy;
use crate::{Error, Mode, Result, Verb};

/// The [`Kube`] port implemented with a `kube::Client`.
///
/// Writes are server-side apply with field manager `meshca`, without `force`: a field another
/// manager owns with a different value is a [`Error::Conflict`] naming it, never taken over
/// silently. Dry runs add `dryRun=All`. Transient failures are retried per [`RetryPolicy`].
#[derive(Clone)]
pub struct KubeClient {
    client: kube::Client,
    retry: RetryPolicy,
}

impl std::fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClient")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl KubeClient {
    /// Wraps a client with the default [`RetryPolicy`].
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            retry: RetryPolicy::default(),
        }
    }

    /// Builds a client for `context` (or the current context) of `kubeconfig`.
    ///
    /// The rustls crypto provider must be installed first.
    ///
    /// # Errors
    /// [`Error::Client`] when the kubeconfig cannot be turned into a working configuration.
    pub async fn from_kubeconfig(kubeconfig: Kubeconfig, context: Option<&str>) -> Result<Self> {
        let options = KubeConfigOptions {
            context: context.map(str::to_owned),
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| Error::Client {
                source: kube::Error::InferKubeconfig(e),
            })?;
        let client = kube::Client::try_from(config).map_err(|source| Error::Client { source })?;
        Ok(Self::new(client))
    }

    /// Replaces the retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sends the request `build` makes (once per attempt) and returns the response body.
    async fn send<F>(&self, verb: Verb, target: &Target<'_>, build: F) -> Result<String>
    where
        F: Fn() -> std::result::Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    {
        let what = format!("{verb} {}", target.resource);
        self.retry
            .run(&what, || {
                let req = build().map_err(|e| build_error(verb, target, e));
                async move {
                    self.client
                        .request_text(req?)
                        .await
                        .map_err(|e| map_error(verb, target, e))
                }
            })
            .await
    }
}

/// What a request is about, for error messages.
struct Target<'a> {
    resource: String,
    namespace: Option<&'a str>,
}

impl<'a> Target<'a> {
    fn object(object: &'a ObjectRef) -> Self {
        Self {
            resource: format!("{}/{}", object.kind.plural(), object.name),
            namespace: object
                .namespace
                .as_deref()
                .filter(|_| object.kind.is_namespaced()),
        }
    }

    fn list(query: &'a ListQuery) -> Self {
        Self {
            resource: query.kind.plural().to_owned(),
            namespace: query
                .namespace
                .as_deref()
                .filter(|_| query.kind.is_namespaced()),
        }
    }
}

fn map_error(verb: Verb, target: &Target<'_>, err: kube::Error) -> Error {
    let resource = target.resource.clone();
    let namespace = target.namespace.map(str::to_owned);
    match err {
        kube::Error::Api(status) => match status.code {
            401 => Error::Unauthorized {
                verb,
                resource,
                namespace,
            },
            403 => Error::Forbidden {
                verb,
                resource,
                namespace,
                message: status.message,
            },
            409 if verb == Verb::Apply => Error::Conflict {
                object: match &namespace {
                    Some(ns) => format!("{resource} in namespace {ns}"),
                    None => resource,
                },
                detail: format!(
                    "{}; another field manager set these fields to other values. Set them back, \
                     or hand them to meshca with `kubectl apply --server-side \
                     --force-conflicts --field-manager={FIELD_MANAGER}`",
                    status.message
                ),
            },
            code => Error::Api {
                verb,
                resource,
                namespace,
                code,
                reason: status.reason,
                message: status.message,
            },
        },
        kube::Error::HyperError(e) => Error::Unavailable {
            verb,
            resource,
            source: Box::new(e),
        },
        kube::Error::Service(e) => Error::Unavailable {
            verb,
            resource,
            source: e,
        },
        other => Error::Protocol {
            verb,
            resource,
            detail: other.to_string(),
        },
    }
}

fn build_error(verb: Verb, target: &Target<'_>, err: impl std::fmt::Display) -> Error {
    Error::Protocol {
        verb,
        resource: target.resource.clone(),
        detail: format!("could not build the request: {err}"),
    }
}

fn parse(verb: Verb, target: &Target<'_>, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::Protocol {
        verb,
        resource: target.resource.clone(),
        detail: format!("response is not JSON ({e})"),
    })
}

fn is_not_found(err: &Error) -> bool {
    err.status_code() == Some(404)
}

#[async_trait::async_trait]
impl Kube for KubeClient {
    #[tracing::instrument(skip_all, fields(k8s.object = %object))]
    async fn get(&self, object: &ObjectRef) -> Result<Option<Value>> {
        let target = Target::object(object);
        let build =
            || Request::new(object.collection_path()).get(&object.name, &GetParams::default());
        match self.send(Verb::Get, &target, build).await {
            Ok(text) => parse(Verb::Get, &target, &text).map(Some),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    #[tracing::instrument(skip_all, fields(k8s.list = %query))]
    async fn list(&self, query: &ListQuery) -> Result<Vec<Value>> {
        let target = Target::list(query);
        let mut params = ListParams::default();
        if let Some(sel) = &query.label_selector {
            params = params.labels(sel);
        }
        let build =
            || Request::new(query.kind.collection_path(query.namespace.as_deref())).list(&params);
        let text = self.send(Verb::List, &target, build).await?;
        let mut list = parse(Verb::List, &target, &text)?;
        match list.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => Ok(items),
            Some(Value::Null) | None => Ok(Vec::new()),
            Some(_) => Err(Error::Protocol {
                verb: Verb::List,
                resource: target.resource,
                detail: "`items` is not an array".into(),
            }),
        }
    }

    #[tracing::instrument(skip_all, fields(k8s.object = %object, k8s.dry_run = mode.is_dry_run()))]
    async fn apply(&self, object: &ObjectRef, manifest: &Value, mode: Mode) -> Result<Value> {
        let target = Target::object(object);
        let mut params = PatchParams::apply(FIELD_MANAGER);
        if mode.is_dry_run() {
            params = params.dry_run();
        }
        let build = || {
            Request::new(object.collection_path()).patch(
                &object.name,
                &params,
                &Patch::Apply(manifest),
            )
        };
        let text = self.send(Verb::Apply, &target, build).await?;
        tracing::debug!("applied");
        parse(Verb::Apply, &target, &text)
    }

    #[tracing::instrument(skip_all, fields(k8s.object = %object, k8s.dry_run = mode.is_dry_run()))]
    async fn merge_patch(&self, object: &ObjectRef, patch: &Value, mode: Mode) -> Result<Value> {
        let target = Target::object(object);
        let mut params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        if mode.is_dry_run() {
            params = params.dry_run();
        }
        let build = || {
            Request::new(object.collection_path()).patch(
                &object.name,
                &params,
                &Patch::Merge(patch),
            )
        };
        let text = self.send(Verb::Patch, &target, build).await?;
        parse(Verb::Patch, &target, &text)
    }

    #[tracing::instrument(skip_all, fields(k8s.object = %object, k8s.dry_run = mode.is_dry_run()))]
    async fn delete(&self, object: &ObjectRef, mode: Mode) -> Result<bool> {
        let target = Target::object(object);
        let params = DeleteParams {
            dry_run: mode.is_dry_run(),
            ..DeleteParams::default()
        };
        let build = || Request::new(object.collection_path()).delete(&object.name, &params);
        match self.send(Verb::Delete, &target, build).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    #[tracing::instrument(skip_all, fields(k8s.service_account = %format_args!("{namespace}/{name}")))]
    async fn request_token(
        &self,
        namespace: &str,
        name: &str,
        spec: &TokenSpec,
    ) -> Result<SecretString> {
        let object = ObjectRef::namespaced(crate::Kind::ServiceAccount, namespace, name);
        let mut target = Target::object(&object);
        target.resource.push_str("/token");
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": spec.audiences,
                "expirationSeconds": spec.expiration_seconds,
            },
        });
        let build = || {
            Request::new(object.collection_path()).create_subresource(
                "token",
                name,
                &PostParams::default(),
                body.to_string().into_bytes(),
            )
        };
        let mut text = self.send(Verb::Create, &target, build).await?;
        let parsed: std::result::Result<Value, _> = serde_json::from_str(&text);
        text.zeroize();
        let mut value = parsed.map_err(|_| Error::Protocol {
            verb: Verb::Create,
            resource: target.resource.clone(),
            detail: "TokenRequest response is not JSON".into(),
        })?;
        let token = match value.pointer_mut("/status/token").map(Value::take) {
            Some(Value::String(t)) if !t.is_empty() => SecretString::from(t),
            _ => {
                return Err(Error::Protocol {
                    verb: Verb::Create,
                    resource: target.resource,
                    detail: "TokenRequest response has no status.token".into(),
                });
            }
        };
        Ok(token)
    }
}
