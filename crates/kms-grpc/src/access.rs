//! Access control, in one place: a tower layer in front of every service decides from the
//! peer's credentials (`SO_PEERCRED` of the Unix socket) and the gRPC method path whether a
//! call may proceed. The services hold no access checks; a refused call never reaches them,
//! not even their request decoder.
//!
//! The decision follows [`crate::policy`]: the path must name an RPC of the catalogue
//! ([`Rpc::from_path`]), the peer must be on the allowlist, and the profile must allow the
//! RPC. One RPC also depends on its request: `IssueCertificate` of an intermediate
//! (`purpose = ISTIOD_CA`, a CA:TRUE certificate) needs [`Profile::allows_ca_issuance`], so
//! under a profile without it the layer reads that one unary request (within the message
//! size limit) and looks at its `purpose` before letting it through.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf as _, Bytes};
use http_body_util::BodyExt as _;
use tonic::Status;
use tonic::body::Body;
use tonic::transport::server::UdsConnectInfo;

use crate::policy::{PeerCred, Profile, Rpc};
use crate::proto::signing as pb;
use crate::server::Shared;

/// The layer [`crate::server`] puts in front of every service.
#[derive(Clone)]
pub(crate) struct AccessLayer {
    shared: Arc<Shared>,
}

impl AccessLayer {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = Access<S>;

    fn layer(&self, inner: S) -> Access<S> {
        Access {
            shared: Arc::clone(&self.shared),
            inner,
        }
    }
}

/// The service [`AccessLayer`] builds.
#[derive(Clone)]
pub(crate) struct Access<S> {
    shared: Arc<Shared>,
    inner: S,
}

/// The peer credentials tonic records for a Unix-socket connection.
pub(crate) fn peer_of(extensions: &http::Extensions) -> Option<PeerCred> {
    let info = extensions.get::<UdsConnectInfo>()?;
    let cred = info.peer_cred?;
    Some(PeerCred {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
    })
}

/// What the layer decided from the peer and the path alone.
#[derive(Debug)]
enum Decision {
    /// Let the call through.
    Allow,
    /// Let it through once its request shows it is not an intermediate's issuance.
    CheckIssuance,
    /// Refuse it.
    Refuse(Option<Rpc>, Status),
}

fn decide(shared: &Shared, path: &str, peer: Option<&PeerCred>) -> Decision {
    let config = &shared.config;
    let Some(rpc) = Rpc::from_path(path) else {
        return Decision::Refuse(
            None,
            Status::permission_denied(format!(
                "{path} is not an RPC of this plugin's catalogue; the {} policy profile refuses it",
                config.profile
            )),
        );
    };
    if !config.peers.allows(peer) {
        let who = peer.map_or_else(
            || "a peer without credentials".to_owned(),
            ToString::to_string,
        );
        return Decision::Refuse(
            Some(rpc),
            Status::permission_denied(format!(
                "{rpc}: {who} is not allowed to call this plugin (allowed: {}; policy profile {})",
                config.peers.describe(),
                config.profile
            )),
        );
    }
    if !config.profile.allows(rpc) {
        return Decision::Refuse(Some(rpc), profile_refusal(rpc, config.profile, ""));
    }
    if rpc == Rpc::IssueCertificate && !config.profile.allows_ca_issuance() {
        return Decision::CheckIssuance;
    }
    Decision::Allow
}

fn profile_refusal(rpc: Rpc, profile: Profile, what: &str) -> Status {
    Status::permission_denied(format!(
        "{rpc}{what} is not allowed by the {profile} policy profile; run it against a server with --profile admin (hsm-plugin's default outside a Kubernetes pod)"
    ))
}

/// Whether an `IssueCertificate` request body (gRPC framing) asks for an intermediate.
/// `Err` when the request cannot be inspected.
fn asks_for_intermediate(body: &Bytes) -> Result<bool, Status> {
    let unreadable = |why: &str| {
        Status::invalid_argument(format!("{}: the request {why}", Rpc::IssueCertificate))
    };
    let mut frame = body.clone();
    if frame.remaining() < 5 {
        return Err(unreadable("is not a gRPC message"));
    }
    if frame.get_u8() != 0 {
        return Err(unreadable(
            "is compressed, which this plugin does not accept",
        ));
    }
    let len = usize::try_from(frame.get_u32()).map_err(|_| unreadable("is too large"))?;
    if frame.remaining() < len {
        return Err(unreadable("is truncated"));
    }
    let req = <pb::IssueCertificateRequest as prost::Message>::decode(frame.slice(..len))
        .map_err(|e| unreadable(&format!("cannot be decoded ({e})")))?;
    Ok(req.purpose == i32::from(pb::Purpose::IstiodCa))
}

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Access<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let start = Instant::now();
        let peer = peer_of(req.extensions());
        let decision = decide(&self.shared, req.uri().path(), peer.as_ref());
        // The ready service handles this call; a fresh clone takes its place (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        match decision {
            Decision::Allow => Box::pin(inner.call(req)),
            Decision::Refuse(rpc, status) => {
                let path = req.uri().path().to_owned();
                Box::pin(async move { Ok(refuse(&shared, rpc, &path, peer, start, status)) })
            }
            Decision::CheckIssuance => Box::pin(async move {
                let rpc = Rpc::IssueCertificate;
                let path = req.uri().path().to_owned();
                let (parts, body) = req.into_parts();
                let limit = shared.config.max_message_bytes.saturating_add(5);
                let bytes = match http_body_util::Limited::new(body, limit).collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(e) => {
                        let status = Status::invalid_argument(format!(
                            "{rpc}: the request could not be read ({e})"
                        ));
                        return Ok(refuse(&shared, Some(rpc), &path, peer, start, status));
                    }
                };
                match asks_for_intermediate(&bytes) {
                    Ok(false) => {
                        let req = http::Request::from_parts(
                            parts,
                            Body::new(http_body_util::Full::new(bytes)),
                        );
                        inner.call(req).await
                    }
                    Ok(true) => {
                        let status = profile_refusal(
                            rpc,
                            shared.config.profile,
                            " of an intermediate (purpose ISTIOD_CA, a CA:TRUE certificate)",
                        );
                        Ok(refuse(&shared, Some(rpc), &path, peer, start, status))
                    }
                    Err(status) => Ok(refuse(&shared, Some(rpc), &path, peer, start, status)),
                }
            }),
        }
    }
}

/// Records and logs a refusal, and answers it.
fn refuse(
    shared: &Shared,
    rpc: Option<Rpc>,
    path: &str,
    peer: Option<PeerCred>,
    start: Instant,
    status: Status,
) -> http::Response<Body> {
    if let Some(rpc) = rpc {
        shared.metrics.record(rpc, status.code(), start.elapsed());
    }
    tracing::warn!(
        path,
        peer = ?peer,
        profile = %shared.config.profile,
        code = ?status.code(),
        message = status.message(),
        "call refused"
    );
    status.into_http()
}
