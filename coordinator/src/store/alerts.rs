//! `alert_outbox`: alerts waiting to be posted to the webhook, written in the transaction that
//! decides them (a run recorded as failed, a schedule found overdue, a verify that failed), so
//! an alert is never lost between deciding and sending. The event id is the primary key: an
//! alert raised twice (two coordinators, a retry) is queued once.
//!
//! Delivery takes one due row at a time under a short lease (a conditional `UPDATE`, as the
//! `jobs` claims), so with several coordinators each row has one sender at a time; a sender
//! that dies leaves the row to the next after its lease. Delivery is at least once: a crash
//! after the receiver answered and before the row is marked sends it again, with the same id.

use sqlx::Row;

use super::{Store, StoreError};

pub(super) const MIGRATION: &[&str] = &[
    "CREATE TABLE alert_outbox (
    event_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    delivered_at_ms BIGINT,
    last_error TEXT,
    owner_id TEXT,
    lease_until_ms BIGINT NOT NULL
)",
    "CREATE INDEX alert_outbox_due ON alert_outbox (delivered_at_ms, next_attempt_ms)",
];

/// An alert to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAlert {
    /// Stable for one occurrence of the condition: the receiver de-duplicates on it.
    pub event_id: String,
    /// `schedule.run_failed`, `schedule.overdue`, `archive.verify_failed`.
    pub kind: String,
    /// The JSON document posted.
    pub body: String,
}

/// A queued alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRow {
    pub event_id: String,
    pub kind: String,
    pub body: String,
    pub created_at_ms: i64,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub delivered_at_ms: Option<i64>,
    pub last_error: Option<String>,
}

fn alert_row(r: &sqlx::any::AnyRow) -> Result<AlertRow, StoreError> {
    Ok(AlertRow {
        event_id: r.try_get("event_id")?,
        kind: r.try_get("kind")?,
        body: r.try_get("body")?,
        created_at_ms: r.try_get("created_at_ms")?,
        attempts: r.try_get("attempts")?,
        next_attempt_ms: r.try_get("next_attempt_ms")?,
        delivered_at_ms: r.try_get("delivered_at_ms")?,
        last_error: r.try_get("last_error")?,
    })
}

const COLUMNS: &str = "event_id, kind, body, created_at_ms, attempts, next_attempt_ms, \
    delivered_at_ms, last_error";

/// Queues `alert` inside `tx` unless an alert with its id is already queued.
pub(super) async fn insert_alert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    alert: &NewAlert,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO alert_outbox (event_id, kind, body, created_at_ms, attempts, \
            next_attempt_ms, lease_until_ms) VALUES ($1, $2, $3, $4, 0, $4, 0) \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&alert.event_id)
    .bind(&alert.kind)
    .bind(&alert.body)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Queues `alert` (once per event id).
    pub async fn queue_alert(&self, alert: &NewAlert, now_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        insert_alert(&mut tx, alert, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes the oldest due, undelivered alert no other sender holds, for `lease_ms`.
    pub async fn claim_alert(
        &self,
        owner_id: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<AlertRow>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE alert_outbox SET owner_id = $1, lease_until_ms = $2 \
             WHERE event_id = (SELECT event_id FROM alert_outbox \
                 WHERE delivered_at_ms IS NULL AND next_attempt_ms <= $3 \
                     AND lease_until_ms < $3 \
                 ORDER BY next_attempt_ms, event_id LIMIT 1) \
               AND delivered_at_ms IS NULL AND lease_until_ms < $3 \
             RETURNING {COLUMNS}"
        )))
        .bind(owner_id)
        .bind(now_ms + lease_ms)
        .bind(now_ms)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(alert_row).transpose()
    }

    /// Records a delivery attempt of a claimed alert: delivered, or failed with `error` and
    /// due again at `retry_at_ms`.
    pub async fn alert_attempted(
        &self,
        event_id: &str,
        owner_id: &str,
        now_ms: i64,
        result: Result<(), (&str, i64)>,
    ) -> Result<(), StoreError> {
        let (delivered, error, next) = match result {
            Ok(()) => (Some(now_ms), None, now_ms),
            Err((error, retry_at_ms)) => (None, Some(error), retry_at_ms),
        };
        sqlx::query(
            "UPDATE alert_outbox SET attempts = attempts + 1, delivered_at_ms = $1, \
                last_error = $2, next_attempt_ms = $3, owner_id = NULL, lease_until_ms = 0 \
             WHERE event_id = $4 AND owner_id = $5",
        )
        .bind(delivered)
        .bind(error)
        .bind(next)
        .bind(event_id)
        .bind(owner_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Alerts, newest first (delivered or not).
    pub async fn list_alerts(&self, limit: i64) -> Result<Vec<AlertRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM alert_outbox ORDER BY created_at_ms DESC, event_id LIMIT $1"
        )))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(alert_row).collect()
    }

    /// Alerts not delivered yet.
    pub async fn undelivered_alerts(&self) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM alert_outbox WHERE delivered_at_ms IS NULL")
                .fetch_one(self.pool())
                .await?;
        Ok(row.try_get("n")?)
    }

    /// Forgets alerts delivered before `before_ms`; returns how many went.
    pub async fn prune_alerts(&self, before_ms: i64) -> Result<u64, StoreError> {
        let gone = sqlx::query("DELETE FROM alert_outbox WHERE delivered_at_ms < $1")
            .bind(before_ms)
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(gone)
    }
}
