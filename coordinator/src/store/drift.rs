//! The drift inbox: `cloud_drift`, one row per drifted field of a resource, and the writes that
//! open, move, close and settle those rows, each with its resource event in one transaction.
//!
//! At most one row per (resource, field) is `open`: a partial unique index says so, on SQLite
//! and PostgreSQL alike, so two detections racing (two coordinators) cannot open two. Every
//! write is conditional on the row still being what the caller saw (`status = 'open'`, the
//! revert saga it read), so a racing writer changes nothing and writes no event.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value, json};
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use super::inventory::{DesiredSpec, resource_event};
use super::sql::Sql;
use super::{Store, StoreError};

/// Where a drift row is in its life. Only `Open` rows are unsettled; the others are history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DriftStatus {
    Open,
    /// The live value became the desired one.
    Accepted,
    /// A saga changed the resource back and a detection confirmed it.
    Reverted,
    /// The field matched again without being settled here.
    Stale,
}

impl DriftStatus {
    pub const ALL: [DriftStatus; 4] = [
        DriftStatus::Open,
        DriftStatus::Accepted,
        DriftStatus::Reverted,
        DriftStatus::Stale,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DriftStatus::Open => "open",
            DriftStatus::Accepted => "accepted",
            DriftStatus::Reverted => "reverted",
            DriftStatus::Stale => "stale",
        }
    }
}

impl FromStr for DriftStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| {
                format!("unknown drift status {s:?}; use one of open, accepted, reverted, stale")
            })
    }
}

impl fmt::Display for DriftStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// DDL of the drift migration (the same on both backends).
pub(super) const MIGRATION: &[&str] = &[
    "CREATE TABLE cloud_drift (
        drift_id TEXT PRIMARY KEY,
        resource_id TEXT NOT NULL,
        field TEXT NOT NULL,
        expected TEXT NOT NULL,
        actual TEXT NOT NULL,
        status TEXT NOT NULL,
        detected_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL,
        resolved_at_ms BIGINT,
        resolved_by TEXT,
        reason TEXT,
        revert_saga_id TEXT,
        revert_requested_by TEXT
    )",
    "CREATE UNIQUE INDEX cloud_drift_one_open ON cloud_drift (resource_id, field) \
     WHERE status = 'open'",
    "CREATE INDEX cloud_drift_status ON cloud_drift (status, drift_id)",
    "CREATE INDEX cloud_drift_resource ON cloud_drift (resource_id, drift_id)",
    super::jobs::JOBS,
];

const COLUMNS: &str = "drift_id, resource_id, field, expected, actual, status, detected_at_ms, \
    updated_at_ms, resolved_at_ms, resolved_by, reason, revert_saga_id, revert_requested_by";

/// One drifted field, open or settled.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftRow {
    /// A uuid v7: ids sort by the time the drift was found.
    pub drift_id: String,
    pub resource_id: String,
    pub field: String,
    pub expected: Value,
    pub actual: Value,
    pub status: DriftStatus,
    pub detected_at_ms: i64,
    pub updated_at_ms: i64,
    pub resolved_at_ms: Option<i64>,
    /// `admin:<token id>` for an accept or a revert, `detection` for a stale close.
    pub resolved_by: Option<String>,
    pub reason: Option<String>,
    /// The saga started to change the resource back, if any.
    pub revert_saga_id: Option<String>,
    pub revert_requested_by: Option<String>,
}

/// Filters for the inbox, newest first, paged by drift id.
#[derive(Debug, Clone, Default)]
pub struct DriftFilter {
    /// Empty: every status.
    pub statuses: Vec<DriftStatus>,
    pub resource_id: Option<String>,
    pub field: Option<String>,
    /// Rows whose id sorts before this one (the last id of the previous page).
    pub before_id: Option<String>,
    pub limit: i64,
}

/// What accepting a drift did.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub drift: DriftRow,
    pub spec: DesiredSpec,
}

fn text(v: &Value) -> String {
    serde_json::to_string(v).expect("json values serialize")
}

fn drift_row(r: &AnyRow) -> Result<DriftRow, StoreError> {
    let expected: String = r.try_get("expected")?;
    let actual: String = r.try_get("actual")?;
    let status: String = r.try_get("status")?;
    Ok(DriftRow {
        drift_id: r.try_get("drift_id")?,
        resource_id: r.try_get("resource_id")?,
        field: r.try_get("field")?,
        expected: serde_json::from_str(&expected).unwrap_or(Value::Null),
        actual: serde_json::from_str(&actual).unwrap_or(Value::Null),
        status: status
            .parse()
            .map_err(|e: String| StoreError::Conflict(format!("cloud_drift row: {e}")))?,
        detected_at_ms: r.try_get("detected_at_ms")?,
        updated_at_ms: r.try_get("updated_at_ms")?,
        resolved_at_ms: r.try_get("resolved_at_ms")?,
        resolved_by: r.try_get("resolved_by")?,
        reason: r.try_get("reason")?,
        revert_saga_id: r.try_get("revert_saga_id")?,
        revert_requested_by: r.try_get("revert_requested_by")?,
    })
}

impl Store {
    async fn drift_in(
        tx: &mut Transaction<'_, Any>,
        drift_id: &str,
    ) -> Result<Option<DriftRow>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM cloud_drift WHERE drift_id = $1"
        )))
        .bind(drift_id)
        .fetch_optional(&mut **tx)
        .await?;
        row.as_ref().map(drift_row).transpose()
    }

    pub async fn get_drift(&self, drift_id: &str) -> Result<Option<DriftRow>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM cloud_drift WHERE drift_id = $1"
        )))
        .bind(drift_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(drift_row).transpose()
    }

    /// Every open row, by resource.
    pub async fn open_drift(&self) -> Result<Vec<DriftRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM cloud_drift WHERE status = 'open' ORDER BY resource_id, field"
        )))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(drift_row).collect()
    }

    /// The inbox: rows matching `filter`, newest first.
    pub async fn list_drift(&self, filter: &DriftFilter) -> Result<Vec<DriftRow>, StoreError> {
        let mut q = Sql::new(&format!("SELECT {COLUMNS} FROM cloud_drift WHERE 1 = 1"));
        if !filter.statuses.is_empty() {
            let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
            q.push(" AND status IN ").text_list(&statuses);
        }
        if let Some(r) = &filter.resource_id {
            q.push(" AND resource_id = ").text(r);
        }
        if let Some(f) = &filter.field {
            q.push(" AND field = ").text(f);
        }
        if let Some(before) = &filter.before_id {
            q.push(" AND drift_id < ").text(before);
        }
        q.push(" ORDER BY drift_id DESC LIMIT ").int(filter.limit);
        let rows = q.query().fetch_all(self.pool()).await?;
        rows.iter().map(drift_row).collect()
    }

    /// Open rows per field, with 0 for every field that ever drifted (for the gauge).
    pub async fn open_drift_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT field, COUNT(CASE WHEN status = 'open' THEN 1 END) AS n \
             FROM cloud_drift GROUP BY field ORDER BY field",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("field")?, r.try_get("n")?)))
            .collect()
    }

    /// Opens a drift row and writes its `drift_detected` event. `None` when a row for the same
    /// (resource, field) is already open: the unique index refused this one (another detection
    /// got there first), and nothing is written.
    pub async fn open_drift_row(
        &self,
        resource_id: &str,
        field: &str,
        expected: &Value,
        actual: &Value,
        now_ms: i64,
    ) -> Result<Option<DriftRow>, StoreError> {
        let drift_id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO cloud_drift (drift_id, resource_id, field, expected, actual, status, \
                detected_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, 'open', $6, $6) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&drift_id)
        .bind(resource_id)
        .bind(field)
        .bind(text(expected))
        .bind(text(actual))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let detail = json!({
            "drift_id": drift_id, "field": field, "expected": expected, "actual": actual,
        });
        resource_event(
            &mut tx,
            resource_id,
            "drift_detected",
            &detail,
            None,
            now_ms,
        )
        .await?;
        let row = Self::drift_in(&mut tx, &drift_id).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Moves an open row to new values (and writes `drift_detected` again). False when the row
    /// is no longer open or already holds these values.
    pub async fn update_drift_row(
        &self,
        drift_id: &str,
        expected: &Value,
        actual: &Value,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        // The write comes first in every transaction here: on SQLite a transaction that read
        // first cannot always take the write lock while another connection writes.
        let mut tx = self.pool().begin().await?;
        let moved = sqlx::query(
            "UPDATE cloud_drift SET expected = $1, actual = $2, updated_at_ms = $3 \
             WHERE drift_id = $4 AND status = 'open' AND (expected <> $1 OR actual <> $2) \
             RETURNING resource_id, field",
        )
        .bind(text(expected))
        .bind(text(actual))
        .bind(now_ms)
        .bind(drift_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(moved) = moved else {
            tx.rollback().await?;
            return Ok(false);
        };
        let rid: String = moved.try_get("resource_id")?;
        let field: String = moved.try_get("field")?;
        let detail = json!({
            "drift_id": drift_id, "field": field, "expected": expected, "actual": actual,
            "moved": true,
        });
        resource_event(&mut tx, &rid, "drift_detected", &detail, None, now_ms).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Closes an open row as `stale` or `reverted` (the field matches again) with its event
    /// (`drift_stale`, `drift_reverted`). False when it was no longer open.
    pub async fn close_drift_row(
        &self,
        drift_id: &str,
        status: DriftStatus,
        resolved_by: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        debug_assert!(matches!(status, DriftStatus::Stale | DriftStatus::Reverted));
        let mut tx = self.pool().begin().await?;
        let closed = sqlx::query(
            "UPDATE cloud_drift SET status = $1, resolved_at_ms = $2, updated_at_ms = $2, \
                resolved_by = $3 WHERE drift_id = $4 AND status = 'open'",
        )
        .bind(status.as_str())
        .bind(now_ms)
        .bind(resolved_by)
        .bind(drift_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let row = match closed {
            0 => None,
            _ => Self::drift_in(&mut tx, drift_id).await?,
        };
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(false);
        };
        let detail = json!({
            "drift_id": drift_id, "field": row.field, "expected": row.expected,
            "actual": row.actual, "by": resolved_by,
        });
        let kind = format!("drift_{status}");
        let saga = row.revert_saga_id.as_deref();
        resource_event(&mut tx, &row.resource_id, &kind, &detail, saga, now_ms).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Accepts an open drift: the value it found becomes the desired one (the spec's version
    /// goes up) and the row closes `accepted`, with `spec_recorded` and `drift_accepted`
    /// events, in one transaction. `Ok(None)` when the row is no longer open or its revert saga
    /// is no longer `revert_saga_id` (someone settled it meanwhile).
    pub async fn accept_drift(
        &self,
        drift_id: &str,
        revert_saga_id: Option<&str>,
        by: &str,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<Accepted>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let closed = sqlx::query(
            "UPDATE cloud_drift SET status = 'accepted', resolved_at_ms = $1, updated_at_ms = $1, \
                resolved_by = $2, reason = $3 \
             WHERE drift_id = $4 AND status = 'open' AND COALESCE(revert_saga_id, '') = $5",
        )
        .bind(now_ms)
        .bind(by)
        .bind(reason)
        .bind(drift_id)
        .bind(revert_saga_id.unwrap_or(""))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let drift = match closed {
            0 => None,
            _ => Self::drift_in(&mut tx, drift_id).await?,
        };
        let Some(drift) = drift else {
            tx.rollback().await?;
            return Ok(None);
        };
        let rid = &drift.resource_id;
        let spec_row =
            sqlx::query("SELECT spec, spec_version FROM cloud_provisioned WHERE resource_id = $1")
                .bind(rid)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(spec_row) = spec_row else {
            tx.rollback().await?;
            return Err(StoreError::NotFound {
                what: format!("desired spec of {rid}"),
            });
        };
        let old_text: String = spec_row.try_get("spec")?;
        let version: i64 = spec_row.try_get("spec_version")?;
        let old: Map<String, Value> = serde_json::from_str(&old_text).unwrap_or_default();
        let mut spec = old.clone();
        spec.insert(drift.field.clone(), drift.actual.clone());
        let recorded_by = format!("drift:accept:{by}");
        let mut new_version = version;
        if spec != old {
            let bumped = sqlx::query(
                "UPDATE cloud_provisioned SET spec = $1, spec_version = spec_version + 1, \
                    recorded_by = $2, saga_id = NULL, updated_at_ms = $3 \
                 WHERE resource_id = $4 AND spec_version = $5",
            )
            .bind(text(&Value::Object(spec.clone())))
            .bind(&recorded_by)
            .bind(now_ms)
            .bind(rid)
            .bind(version)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if bumped == 0 {
                tx.rollback().await?;
                return Err(StoreError::Conflict(format!(
                    "the desired spec of {rid} changed while accepting drift {drift_id}; retry"
                )));
            }
            new_version = version + 1;
            let detail = json!({
                "from": old, "to": spec, "spec_version": new_version, "recorded_by": recorded_by,
            });
            resource_event(&mut tx, rid, "spec_recorded", &detail, None, now_ms).await?;
        }
        let detail = json!({
            "drift_id": drift_id, "field": drift.field, "value": drift.actual,
            "previous": drift.expected, "spec_version": new_version, "by": by, "reason": reason,
        });
        resource_event(&mut tx, rid, "drift_accepted", &detail, None, now_ms).await?;
        let spec = Self::desired_spec_in(&mut tx, rid).await?;
        tx.commit().await?;
        Ok(Some(Accepted { drift, spec }))
    }

    async fn desired_spec_in(
        tx: &mut Transaction<'_, Any>,
        rid: &str,
    ) -> Result<DesiredSpec, StoreError> {
        let r = sqlx::query(
            "SELECT resource_id, spec, spec_version, recorded_by, saga_id, created_at_ms, \
                updated_at_ms FROM cloud_provisioned WHERE resource_id = $1",
        )
        .bind(rid)
        .fetch_one(&mut **tx)
        .await?;
        let spec: String = r.try_get("spec")?;
        Ok(DesiredSpec {
            resource_id: r.try_get("resource_id")?,
            spec: serde_json::from_str(&spec).unwrap_or_default(),
            spec_version: r.try_get("spec_version")?,
            recorded_by: r.try_get("recorded_by")?,
            saga_id: r.try_get("saga_id")?,
            created_at_ms: r.try_get("created_at_ms")?,
            updated_at_ms: r.try_get("updated_at_ms")?,
        })
    }

    /// Marks an open drift as being reverted by `saga_id` (with a `drift_revert_started`
    /// event), if it is still open and its revert saga is still `previous`. False otherwise.
    pub async fn mark_drift_reverting(
        &self,
        drift_id: &str,
        previous: Option<&str>,
        saga_id: &str,
        by: &str,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let marked = sqlx::query(
            "UPDATE cloud_drift SET revert_saga_id = $1, revert_requested_by = $2, \
                reason = $3, updated_at_ms = $4 \
             WHERE drift_id = $5 AND status = 'open' AND COALESCE(revert_saga_id, '') = $6",
        )
        .bind(saga_id)
        .bind(by)
        .bind(reason)
        .bind(now_ms)
        .bind(drift_id)
        .bind(previous.unwrap_or(""))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let row = match marked {
            0 => None,
            _ => Self::drift_in(&mut tx, drift_id).await?,
        };
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(false);
        };
        let detail = json!({
            "drift_id": drift_id, "field": row.field, "to": row.expected, "by": by,
            "reason": reason, "previous_saga_id": previous,
        });
        resource_event(
            &mut tx,
            &row.resource_id,
            "drift_revert_started",
            &detail,
            Some(saga_id),
            now_ms,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Whether the last deletion recorded for a resource was a saga's (`droplet.destroy`):
    /// `Some(true)` when Berth deleted it, `Some(false)` when the sync found it gone, `None`
    /// when no deletion is recorded.
    pub async fn deleted_by_saga(&self, resource_id: &str) -> Result<Option<bool>, StoreError> {
        let row = sqlx::query(
            "SELECT saga_id FROM cloud_resource_events WHERE resource_id = $1 AND kind = 'deleted' \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(resource_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| Ok(r.try_get::<Option<String>, _>("saga_id")?.is_some()))
            .transpose()
    }
}
