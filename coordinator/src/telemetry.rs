//! Logs and metrics: set-up for the binary, and the gauges kept from the store.

use std::net::SocketAddr;
use std::time::Duration;

use berth_shared::saga::SagaStatus;
use tokio_util::sync::CancellationToken;

use crate::config::LogFormat;
use crate::store::Store;

/// Structured logs to stderr, filtered by `RUST_LOG` (default `info`); text logs colour
/// only a terminal (journald and files get plain text).
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Serves Prometheus metrics on `addr` at `/metrics`.
/// Durations (`*_seconds`) are histograms with these buckets, so quantiles and rates can be
/// taken over any window (a summary's quantiles fall to 0 a minute after the last sample).
const SECONDS_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    3600.0,
];

pub fn init_metrics(addr: SocketAddr) -> Result<(), String> {
    use metrics_exporter_prometheus::Matcher;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .map_err(|e| format!("metric buckets: {e}"))?
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))
}

/// Keeps the per-host gauges current (every 15 s, from the store, so every replica reports the
/// same): `berth_host_online{host_id}` (1 or 0), `berth_host_last_heartbeat_age_seconds` and
/// `berth_host_warm_root_free_bytes`.
pub(crate) async fn report_host_gauges(
    store: Store,
    heartbeat_timeout_ms: i64,
    shutdown: CancellationToken,
) {
    loop {
        match store.list_hosts().await {
            Ok(hosts) => {
                let now = berth_shared::time::unix_ms(std::time::SystemTime::now());
                for h in hosts {
                    let online = h.is_online(now, heartbeat_timeout_ms);
                    let age = (now - h.last_heartbeat_ms).max(0) as f64 / 1000.0;
                    let id = h.host_id;
                    metrics::gauge!("berth_host_online", "host_id" => id.clone()).set(if online {
                        1.0
                    } else {
                        0.0
                    });
                    metrics::gauge!("berth_host_last_heartbeat_age_seconds", "host_id" => id.clone())
                        .set(age);
                    if let Some(free) = h.warm_root_free_bytes {
                        metrics::gauge!("berth_host_warm_root_free_bytes", "host_id" => id)
                            .set(free as f64);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot list hosts for metrics"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(15)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
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
