//! Process lifecycle: the shutdown signal, and gRPC health that reports a service SERVING only
//! when it is ready and NOT_SERVING as soon as shutdown starts.

use tokio_util::sync::CancellationToken;

/// Completes on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for sigterm");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Cancels `token` when a shutdown signal arrives.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal received");
        token.cancel();
    });
}

/// gRPC health of the named services of one server.
#[derive(Clone)]
pub struct Health {
    reporter: tonic_health::server::HealthReporter,
    services: Vec<&'static str>,
}

impl Health {
    /// A health service whose named services start NOT_SERVING.
    pub async fn new(
        services: Vec<&'static str>,
    ) -> (
        Self,
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    ) {
        let (reporter, server) = tonic_health::server::health_reporter();
        for name in &services {
            reporter
                .set_service_status(*name, tonic_health::ServingStatus::NotServing)
                .await;
        }
        (Self { reporter, services }, server)
    }

    pub async fn set_serving(&self) {
        for name in &self.services {
            self.reporter
                .set_service_status(*name, tonic_health::ServingStatus::Serving)
                .await;
        }
    }

    pub async fn set_not_serving(&self) {
        for name in &self.services {
            self.reporter
                .set_service_status(*name, tonic_health::ServingStatus::NotServing)
                .await;
        }
    }

    /// Sets one health name (outside the service names, for example a process's followers).
    pub async fn set(&self, name: &str, serving: bool) {
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        self.reporter.set_service_status(name, status).await;
    }
}
