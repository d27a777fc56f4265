//! `archive_checks`: the outcome of every `archive.verify` saga, one row per saga. The
//! authority on whether an archive passed its latest verification (the `verify-failed` label
//! in the bucket is for people and other tools; anyone who can write the bucket can change
//! it). An archive's latest row wins: a later good verify clears an earlier failure.

use sqlx::Row;

use super::sql::Sql;
use super::{Fence, Store, StoreError};

pub(super) const MIGRATION: &[&str] = &[
    "CREATE TABLE archive_checks (
    saga_id TEXT PRIMARY KEY,
    uuid TEXT NOT NULL,
    host_id TEXT NOT NULL,
    checked_at_ms BIGINT NOT NULL,
    ok BIGINT NOT NULL,
    problem TEXT
)",
    "CREATE INDEX archive_checks_uuid ON archive_checks (uuid, checked_at_ms)",
];

/// One verification of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveCheck {
    pub uuid: String,
    pub saga_id: String,
    pub host_id: String,
    pub checked_at_ms: i64,
    pub ok: bool,
    /// Why it failed, as the agent named it.
    pub problem: Option<String>,
}

const COLUMNS: &str = "uuid, saga_id, host_id, checked_at_ms, ok, problem";

fn check_of(r: &sqlx::any::AnyRow) -> Result<ArchiveCheck, StoreError> {
    Ok(ArchiveCheck {
        uuid: r.try_get("uuid")?,
        saga_id: r.try_get("saga_id")?,
        host_id: r.try_get("host_id")?,
        checked_at_ms: r.try_get("checked_at_ms")?,
        ok: r.try_get::<i64, _>("ok")? != 0,
        problem: r.try_get("problem")?,
    })
}

impl Store {
    /// Records a verify saga's outcome under its claim; a repeat of the same saga keeps the
    /// first row (the step is idempotent).
    pub async fn record_archive_check(
        &self,
        f: &Fence,
        check: &ArchiveCheck,
    ) -> Result<(), StoreError> {
        let (mut tx, _) = self.fenced(f, check.checked_at_ms).await?;
        sqlx::query(
            "INSERT INTO archive_checks (uuid, saga_id, host_id, checked_at_ms, ok, problem) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (saga_id) DO NOTHING",
        )
        .bind(&check.uuid)
        .bind(&f.saga_id)
        .bind(&check.host_id)
        .bind(check.checked_at_ms)
        .bind(i64::from(check.ok))
        .bind(check.problem.as_deref())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The latest verification of each archive in `uuids` that has one.
    pub async fn latest_archive_checks(
        &self,
        uuids: &[&str],
    ) -> Result<Vec<ArchiveCheck>, StoreError> {
        let mut out: Vec<ArchiveCheck> = Vec::new();
        // A few hundred bound values per query, far below either backend's limit.
        for chunk in uuids.chunks(500) {
            let mut q = Sql::new(&format!(
                "SELECT {COLUMNS} FROM archive_checks WHERE uuid IN "
            ));
            q.text_list(chunk)
                .push(" ORDER BY uuid, checked_at_ms DESC, saga_id DESC");
            for row in q.query().fetch_all(self.pool()).await? {
                let check = check_of(&row)?;
                if out.last().is_none_or(|c| c.uuid != check.uuid) {
                    out.push(check);
                }
            }
        }
        Ok(out)
    }
}
