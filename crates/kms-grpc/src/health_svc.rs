//! `grpc.health.v1.Health`: SERVING when the token is open and the PIN accepted.

use std::sync::Arc;
use std::time::Duration;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::proto::health::health_check_response::ServingStatus;
use crate::proto::health::{HealthCheckRequest, HealthCheckResponse, health_server::Health};
use crate::proto::names;
use crate::server::{Backend, Shared};

pub(crate) struct HealthService {
    shared: Arc<Shared>,
}

impl HealthService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

fn known(shared: &Shared, service: &str) -> bool {
    let kube = match &shared.backend {
        Backend::Ready(b) => b.kube.is_some(),
        Backend::Unavailable { .. } => true,
    };
    match service {
        "" => true,
        s if s == names::ISTIO || s == names::SIGNING || s == names::HEALTH => true,
        s if s == names::V2 || s == names::V1BETA1 => kube,
        _ => false,
    }
}

async fn status_of(shared: &Shared) -> ServingStatus {
    if shared.readiness().await.is_ready() {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        // Health answers even when the backend is down: that is its purpose.
        let service = request.into_inner().service;
        if !known(&self.shared, &service) {
            return Err(Status::not_found(format!(
                "Health.Check: unknown service {service:?}"
            )));
        }
        Ok(Response::new(HealthCheckResponse {
            status: status_of(&self.shared).await.into(),
        }))
    }

    type WatchStream = ReceiverStream<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let status = if known(&shared, &service) {
                    status_of(&shared).await
                } else {
                    ServingStatus::ServiceUnknown
                };
                if last != Some(status) {
                    last = Some(status);
                    let msg = HealthCheckResponse {
                        status: status.into(),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        break;
                    }
                }
                tokio::select! {
                    () = tx.closed() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
