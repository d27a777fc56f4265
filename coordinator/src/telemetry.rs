//! Logs and metrics: set-up for the binary, and the gauges kept from the store.

use std::net::SocketAddr;
use std::time::Duration;

use berth_shared::saga::SagaStatus;
use tokio_util::sync::CancellationToken;

use crate::config::LogFormat;
use crate::store::Store;

/// Structured logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Serves Prometheus metrics on `addr` at `/metrics`.
pub fn init_metrics(addr: SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))
}

/// Keeps the gauges read from the store current (every 15 s): `berth_sagas{status}`, and
/// `berth_alerts_undelivered` (alerts pile up there when no webhook takes them).
pub(crate) async fn report_store_gauges(store: Store, shutdown: CancellationToken) {
    loop {
        match store.saga_status_counts().await {
            Ok(counts) => {
                for status in SagaStatus::ALL {
                    let n = counts
                        .iter()
                        .find(|(s, _)| s == status)
                        .map_or(0, |(_, n)| *n);
                    metrics::gauge!("berth_sagas", "status" => status.as_str()).set(n as f64);
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot count sagas for metrics"),
        }
        match store.undelivered_alerts().await {
            Ok(n) => metrics::gauge!("berth_alerts_undelivered").set(n as f64),
            Err(e) => tracing::debug!(error = %e, "cannot count undelivered alerts for metrics"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(15)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
