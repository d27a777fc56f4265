//! `jobs`: one row per periodic job (`inventory.sync`, `drift.detect`) holding its shared
//! schedule and a lease with a fencing epoch, so that with several coordinators on one database
//! exactly one runs a due job, and a holder that stalled past its lease cannot write as if it
//! still held it.
//!
//! A claim is a conditional `UPDATE … WHERE lease_expires_at_ms < now`: PostgreSQL re-checks
//! the condition on the row a racing claimer just changed (so only one wins), SQLite has a
//! single writer. Writes that must not come from a stale holder (marking a resource gone)
//! renew the lease in the same transaction, as the saga ledger's writes do.

use serde_json::Value;
use sqlx::Row;

use super::inventory::resource_event;
use super::{Store, StoreError};

pub(super) const JOBS: &str = "CREATE TABLE jobs (
    name TEXT PRIMARY KEY,
    owner_id TEXT,
    epoch BIGINT NOT NULL,
    lease_expires_at_ms BIGINT NOT NULL,
    next_due_at_ms BIGINT NOT NULL,
    last_started_at_ms BIGINT,
    last_finished_at_ms BIGINT,
    last_outcome TEXT
)";

/// A coordinator's hold on a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobClaim {
    pub name: String,
    pub owner_id: String,
    pub epoch: i64,
    pub lease_ms: i64,
}

/// A job's row.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub name: String,
    /// Who holds it now (`None` when idle).
    pub owner_id: Option<String>,
    pub epoch: i64,
    pub lease_expires_at_ms: i64,
    pub next_due_at_ms: i64,
    pub last_started_at_ms: Option<i64>,
    pub last_finished_at_ms: Option<i64>,
    /// What the last run reported (JSON), or its error.
    pub last_outcome: Option<Value>,
}

/// What a fenced "gone" mark did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoneMark {
    Marked,
    /// Already marked, or seen again since the sync started.
    Skipped,
    /// The job's lease is no longer ours: nothing was written.
    LeaseLost,
}

/// When a job may be claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Once its next run is due.
    WhenDue,
    /// At once (an operator asked for a run), as soon as its lease is free.
    Now,
}

/// Renews `c`'s lease inside `tx`, fencing the transaction's other writes: false (write
/// nothing) when the job is no longer ours.
pub(super) async fn renew_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    c: &JobClaim,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let held = sqlx::query(
        "UPDATE jobs SET lease_expires_at_ms = $1 \
         WHERE name = $2 AND owner_id = $3 AND epoch = $4",
    )
    .bind(now_ms + c.lease_ms)
    .bind(&c.name)
    .bind(&c.owner_id)
    .bind(c.epoch)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(held > 0)
}

impl Store {
    /// Claims `name` for `owner_id` if its lease is free and it is due (or `Due::Now`). A job
    /// never seen before is created first, due at `first_due_at_ms`.
    pub async fn claim_job(
        &self,
        name: &str,
        owner_id: &str,
        now_ms: i64,
        lease_ms: i64,
        first_due_at_ms: i64,
        due: Due,
    ) -> Result<Option<JobClaim>, StoreError> {
        sqlx::query(
            "INSERT INTO jobs (name, owner_id, epoch, lease_expires_at_ms, next_due_at_ms) \
             VALUES ($1, NULL, 0, 0, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(first_due_at_ms)
        .execute(self.pool())
        .await?;
        let due = match due {
            Due::Now => "",
            Due::WhenDue => " AND next_due_at_ms <= $3",
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET owner_id = $1, epoch = epoch + 1, lease_expires_at_ms = $2, \
                last_started_at_ms = $3 \
             WHERE name = $4 AND lease_expires_at_ms < $3{due} RETURNING epoch"
        )))
        .bind(owner_id)
        .bind(now_ms + lease_ms)
        .bind(now_ms)
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(JobClaim {
                name: name.to_owned(),
                owner_id: owner_id.to_owned(),
                epoch: r.try_get("epoch")?,
                lease_ms,
            })
        })
        .transpose()
    }

    /// Extends the lease; false when it is no longer ours.
    pub async fn renew_job(&self, c: &JobClaim, now_ms: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let held = renew_in(&mut tx, c, now_ms).await?;
        tx.commit().await?;
        Ok(held)
    }

    /// Ends a run: frees the lease, records the outcome and when the job is next due. False
    /// when the claim was lost (nothing written).
    pub async fn finish_job(
        &self,
        c: &JobClaim,
        now_ms: i64,
        next_due_at_ms: i64,
        outcome: &Value,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE jobs SET owner_id = NULL, lease_expires_at_ms = 0, last_finished_at_ms = $1, \
                next_due_at_ms = $2, last_outcome = $3 \
             WHERE name = $4 AND owner_id = $5 AND epoch = $6",
        )
        .bind(now_ms)
        .bind(next_due_at_ms)
        .bind(outcome.to_string())
        .bind(&c.name)
        .bind(&c.owner_id)
        .bind(c.epoch)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Hands a job back unfinished (shutdown): another coordinator may claim it at once.
    pub async fn release_job(&self, c: &JobClaim) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET owner_id = NULL, lease_expires_at_ms = 0 \
             WHERE name = $1 AND owner_id = $2 AND epoch = $3",
        )
        .bind(&c.name)
        .bind(&c.owner_id)
        .bind(c.epoch)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Sets when `name` is next due (creating its row if needed).
    pub async fn schedule_job(&self, name: &str, due_at_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO jobs (name, owner_id, epoch, lease_expires_at_ms, next_due_at_ms) \
             VALUES ($1, NULL, 0, 0, $2) \
             ON CONFLICT (name) DO UPDATE SET next_due_at_ms = excluded.next_due_at_ms",
        )
        .bind(name)
        .bind(due_at_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn get_job(&self, name: &str) -> Result<Option<JobRow>, StoreError> {
        let row = sqlx::query(
            "SELECT name, owner_id, epoch, lease_expires_at_ms, next_due_at_ms, \
                last_started_at_ms, last_finished_at_ms, last_outcome FROM jobs WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            let outcome: Option<String> = r.try_get("last_outcome")?;
            Ok(JobRow {
                name: r.try_get("name")?,
                owner_id: r.try_get("owner_id")?,
                epoch: r.try_get("epoch")?,
                lease_expires_at_ms: r.try_get("lease_expires_at_ms")?,
                next_due_at_ms: r.try_get("next_due_at_ms")?,
                last_started_at_ms: r.try_get("last_started_at_ms")?,
                last_finished_at_ms: r.try_get("last_finished_at_ms")?,
                last_outcome: outcome.and_then(|o| serde_json::from_str(&o).ok()),
            })
        })
        .transpose()
    }

    /// Marks a resource gone from the cloud, under the job's claim: in one transaction the
    /// lease is renewed (nothing is written if it is no longer ours), the row is marked deleted
    /// unless it was seen at or after `seen_before_ms` (a newer sync or a saga saw it alive),
    /// and a `deleted` event is written.
    pub async fn mark_gone_fenced(
        &self,
        c: &JobClaim,
        resource_id: &str,
        seen_before_ms: i64,
        detail: &Value,
        now_ms: i64,
    ) -> Result<GoneMark, StoreError> {
        let mut tx = self.pool().begin().await?;
        if !renew_in(&mut tx, c, now_ms).await? {
            tx.rollback().await?;
            return Ok(GoneMark::LeaseLost);
        }
        let marked = sqlx::query(
            "UPDATE cloud_resources SET deleted_at_ms = $1, status = 'deleted', changed_at_ms = $1 \
             WHERE resource_id = $2 AND deleted_at_ms IS NULL AND last_seen_ms < $3",
        )
        .bind(now_ms)
        .bind(resource_id)
        .bind(seen_before_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if marked == 0 {
            tx.commit().await?;
            return Ok(GoneMark::Skipped);
        }
        resource_event(&mut tx, resource_id, "deleted", detail, None, now_ms).await?;
        tx.commit().await?;
        Ok(GoneMark::Marked)
    }
}
