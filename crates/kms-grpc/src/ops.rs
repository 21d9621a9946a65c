//! The operations endpoints on a local HTTP port: `/metrics` (Prometheus text), `/healthz`
//! (the process is up) and `/readyz` (the token is open and the PIN accepted; 503 with the
//! reason otherwise).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::server::{PluginState, Readiness};

/// The operations HTTP server, bound.
#[derive(Debug)]
pub struct OpsServer {
    listener: TcpListener,
    state: PluginState,
}

impl OpsServer {
    /// Binds `addr` (use a loopback address; the endpoints carry no secrets but are not
    /// meant for the network).
    ///
    /// # Errors
    /// [`Error::OpsBind`].
    pub async fn bind(addr: SocketAddr, state: PluginState) -> Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::OpsBind { addr, source })?;
        Ok(Self { listener, state })
    }

    /// The bound address (useful with port 0).
    ///
    /// # Errors
    /// [`Error::OpsBind`] when the socket cannot report it.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(|source| Error::OpsBind {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            source,
        })
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        let Self { listener, state } = self;
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, _) = match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    tracing::warn!(%err, "operations port: accept failed");
                    continue;
                }
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(&state, &req).await) }
                });
                if let Err(err) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%err, "operations port: connection ended with an error");
                }
            });
        }
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}

async fn handle(state: &PluginState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != http::Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "only GET is served\n".into(),
        );
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/readyz" => match state.readiness().await {
            Readiness::Ready => text(StatusCode::OK, PLAIN, "ready\n".into()),
            Readiness::NotReady(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                format!("not ready: {reason}\n"),
            ),
        },
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.render_metrics().await,
        ),
        other => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            format!("{other} is not served; try /metrics, /healthz or /readyz\n"),
        ),
    }
}
