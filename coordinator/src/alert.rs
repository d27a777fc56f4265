//! Alerts: a failed scheduled run, a schedule overdue, a failed verification. Whoever decides
//! an alert queues it in the store's outbox in the same transaction ([`crate::store::NewAlert`],
//! one row per event id); [`Alerter`] posts queued alerts to the configured webhook, signed,
//! retried with backoff until the receiver answers 2xx. Delivery is at least once; receivers
//! de-duplicate on the `X-Berth-Event-Id` header (also the body's `id`).
//!
//! The signature is `X-Berth-Signature: sha256=<hex HMAC-SHA256(secret, "<ts>.<body>")>` with
//! `X-Berth-Timestamp: <ts>` (unix seconds), so a receiver can refuse replays of old bodies.

mod config;

use std::time::{Duration, SystemTime};

use berth_shared::Secret;
use berth_shared::time::unix_ms;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

pub use config::AlertConfig;

use crate::store::{AlertRow, NewAlert, Store};

/// How long one sender holds an alert it is posting.
const LEASE: Duration = Duration::from_secs(60);
/// Retry backoff: doubling from 1 s, at most this.
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// How often the outbox is looked at when it was empty.
const POLL: Duration = Duration::from_secs(1);

/// An alert to queue: its kind, a stable event id and what it says.
pub fn alert(kind: &str, event_id: String, message: String, fields: Value) -> NewAlert {
    let mut body = json!({
        "id": event_id,
        "kind": kind,
        "message": message,
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields) {
        body.extend(fields);
    }
    NewAlert {
        event_id,
        kind: kind.to_owned(),
        body: body.to_string(),
    }
}

/// The webhook alerts go to.
#[derive(Debug, Clone)]
struct Webhook {
    /// May hold a credential in its path (chat webhooks do): never logged whole.
    url: Secret,
    secret: Secret,
    client: reqwest::Client,
}

/// Posts queued alerts; every coordinator runs one (each alert has one sender at a time).
#[derive(Debug, Clone)]
pub struct Alerter {
    store: Store,
    owner_id: String,
    webhook: Option<Webhook>,
}

/// The signature header's value for `body` sent at `ts`.
pub fn signature(secret: &str, ts: i64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(format!("{ts}.{body}").as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Alerter {
    /// Reads the webhook secret file (`config` was checked at load).
    pub fn new(
        store: Store,
        owner_id: impl Into<String>,
        config: &AlertConfig,
    ) -> Result<Self, String> {
        let webhook = match config.webhook()? {
            Some((url, secret)) => Some(Webhook {
                url,
                secret,
                client: reqwest::Client::builder()
                    .timeout(config.timeout())
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| format!("cannot build the webhook client: {e}"))?,
            }),
            None => None,
        };
        Ok(Alerter {
            store,
            owner_id: owner_id.into(),
            webhook,
        })
    }

    /// Delivers until `shutdown`; without a webhook, alerts stay in the outbox.
    pub async fn run(self, shutdown: CancellationToken) {
        let Some(webhook) = &self.webhook else {
            tracing::info!("no [alerts] webhook_url: alerts are kept in the database only");
            return;
        };
        loop {
            if self.deliver_one(webhook).await {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Claims and posts one due alert; false when there was none (or the store failed).
    async fn deliver_one(&self, webhook: &Webhook) -> bool {
        let now = unix_ms(SystemTime::now());
        let claimed = self
            .store
            .claim_alert(&self.owner_id, now, LEASE.as_millis() as i64)
            .await;
        let alert = match claimed {
            Ok(Some(a)) => a,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the alert outbox");
                return false;
            }
        };
        let result = post(webhook, &alert).await;
        let done = unix_ms(SystemTime::now());
        let attempt = match &result {
            Ok(()) => {
                tracing::info!(
                    event_id = alert.event_id,
                    kind = alert.kind,
                    "alert delivered"
                );
                metrics::counter!("berth_alerts_delivered_total", "kind" => alert.kind.clone())
                    .increment(1);
                Ok(())
            }
            Err(e) => {
                let wait = backoff(alert.attempts);
                tracing::warn!(
                    event_id = alert.event_id,
                    kind = alert.kind,
                    attempt = alert.attempts + 1,
                    retry_in_secs = wait.as_secs(),
                    error = %e,
                    "alert delivery failed"
                );
                Err((e.as_str(), done + wait.as_millis() as i64))
            }
        };
        if let Err(e) = self
            .store
            .alert_attempted(&alert.event_id, &self.owner_id, done, attempt)
            .await
        {
            tracing::warn!(event_id = alert.event_id, error = %e, "cannot record an alert delivery");
        }
        true
    }
}

/// How long to wait after the `attempts`-th failure.
fn backoff(attempts: i64) -> Duration {
    let secs = 1u64 << attempts.clamp(0, 20);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

/// Posts one alert; the error names the receiver's status or the transport failure, never
/// the URL.
async fn post(webhook: &Webhook, alert: &AlertRow) -> Result<(), String> {
    let ts = unix_ms(SystemTime::now()) / 1000;
    let response = webhook
        .client
        .post(webhook.url.expose())
        .header("content-type", "application/json")
        .header("x-berth-event-id", &alert.event_id)
        .header("x-berth-event", &alert.kind)
        .header("x-berth-timestamp", ts.to_string())
        .header(
            "x-berth-signature",
            signature(webhook.secret.expose(), ts, &alert.body),
        )
        .body(alert.body.clone())
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot reach the webhook: {}",
                berth_shared::chain(&e.without_url())
            )
        })?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the webhook answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_and_body() {
        // printf '%s' '1700000000.{}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            signature("key", 1_700_000_000, "{}"),
            "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
