//! `saga_secrets`: inputs of a saga too sensitive for `saga_runs.inputs`, which every reader
//! of sagas (the `ci` role included) sees: a droplet's cloud-init `user_data`, an archive
//! restore's one-off age identity. A secret is written with its saga, read only by the step
//! (or the task delivery) that needs it, dropped once that step is done with it, and in any
//! case when the saga is over (completed, compensated, cancelled, abandoned). No API returns a
//! row of this table.

use sqlx::{Any, Transaction};

use super::{Store, StoreError};

pub(super) const MIGRATION: &[&str] = &["CREATE TABLE saga_secrets (
    saga_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (saga_id, name)
)"];

/// Writes a new saga's secrets in the transaction that inserts the saga.
pub(super) async fn insert(
    tx: &mut Transaction<'_, Any>,
    saga_id: &str,
    secrets: &[(&str, &str)],
) -> Result<(), StoreError> {
    for (name, value) in secrets {
        sqlx::query("INSERT INTO saga_secrets (saga_id, name, value) VALUES ($1, $2, $3)")
            .bind(saga_id)
            .bind(*name)
            .bind(*value)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Forgets every secret of saga `saga_id`, in the transaction that ends it.
pub(super) async fn forget_all(
    tx: &mut Transaction<'_, Any>,
    saga_id: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM saga_secrets WHERE saga_id = $1")
        .bind(saga_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// The secret `name` of saga `saga_id`, if it was given and not dropped yet.
    pub async fn saga_secret(
        &self,
        saga_id: &str,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM saga_secrets WHERE saga_id = $1 AND name = $2")
                .bind(saga_id)
                .bind(name)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// Forgets the secret `name` of saga `saga_id` (nothing happens if it is gone already).
    pub async fn drop_saga_secret(&self, saga_id: &str, name: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM saga_secrets WHERE saga_id = $1 AND name = $2")
            .bind(saga_id)
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
