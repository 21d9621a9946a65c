use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::{Agent, serve_status};

/// Runs the sidecar until `shutdown` completes and returns its output: the agent's loop
/// ([`Agent::run`], which revokes the token at the end) and, when `status` is given,
/// `/readyz`, `/healthz` and `/metrics` on it ([`serve_status`]).
pub async fn run_sidecar<T>(
    agent: Agent,
    status: Option<TcpListener>,
    shutdown: impl Future<Output = T>,
) -> T {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        // An error means the sender is gone, which also means stop.
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let server = status.map(|listener| {
        tokio::spawn(serve_status(
            listener,
            Arc::clone(agent.metrics()),
            stopped(stop_rx.clone()),
        ))
    });
    let (value, ()) = tokio::join!(
        async {
            let value = shutdown.await;
            let _ = stop_tx.send(true);
            value
        },
        agent.run(stopped(stop_rx.clone())),
    );
    if let Some(server) = server {
        let _ = server.await;
    }
    value
}
