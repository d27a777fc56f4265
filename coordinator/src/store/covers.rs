//! `archive_covers`: scheduled runs that found their source unchanged since an archive, so
//! wrote none. Retention counts that archive for the tiers those runs would have filled
//! (`RetentionEntry::covers`). One row per run (its saga), so a retried step adds nothing.

use std::collections::HashMap;

use sqlx::Row;

use super::sql::Sql;
use super::{Store, StoreError};

pub(super) const MIGRATION: &[&str] = &[
    "CREATE TABLE archive_covers (
    saga_id TEXT PRIMARY KEY,
    uuid TEXT NOT NULL,
    at_ms BIGINT NOT NULL
)",
    "CREATE INDEX archive_covers_uuid ON archive_covers (uuid)",
];

impl Store {
    /// Records that run `saga_id`, at `at_ms`, stands on archive `uuid` (once per run).
    pub async fn add_archive_cover(
        &self,
        saga_id: &str,
        uuid: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO archive_covers (saga_id, uuid, at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (saga_id) DO NOTHING",
        )
        .bind(saga_id)
        .bind(uuid)
        .bind(at_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The run times (unix ms) each of `uuids` stands for.
    pub async fn archive_covers(
        &self,
        uuids: &[&str],
    ) -> Result<HashMap<String, Vec<i64>>, StoreError> {
        let mut out: HashMap<String, Vec<i64>> = HashMap::new();
        for chunk in uuids.chunks(500) {
            let mut q = Sql::new("SELECT uuid, at_ms FROM archive_covers WHERE uuid IN ");
            q.text_list(chunk).push(" ORDER BY uuid, at_ms");
            for row in q.query().fetch_all(self.pool()).await? {
                out.entry(row.try_get("uuid")?)
                    .or_default()
                    .push(row.try_get("at_ms")?);
            }
        }
        Ok(out)
    }
}
