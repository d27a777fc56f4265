//! Writes to the inventory: each in one transaction, under the writing step's claim when a
//! saga step writes ([`Writer::fence`]), and idempotent (no event when nothing changed).

use serde_json::{Map, Value};
use sqlx::{Any, AssertSqlSafe, Transaction};

use super::{
    CloudResource, DesiredSpec, ObservedResource, RESOURCE_COLUMNS, SPEC_COLUMNS, Upserted, Writer,
    changes, json_text, resource_row, spec_row,
};
use crate::store::{Store, StoreError};

impl Store {
    /// A transaction under the step's claim (or a plain one for writers without a saga).
    async fn inventory_tx(&self, w: Writer<'_>) -> Result<Transaction<'_, Any>, StoreError> {
        match w.fence {
            Some(f) => Ok(self.fenced(f, w.now_ms).await?.0),
            None => Ok(self.pool().begin().await?),
        }
    }

    async fn resource_in(
        tx: &mut Transaction<'_, Any>,
        resource_id: &str,
    ) -> Result<Option<CloudResource>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RESOURCE_COLUMNS} FROM cloud_resources WHERE resource_id = $1"
        )))
        .bind(resource_id)
        .fetch_optional(&mut **tx)
        .await?;
        row.as_ref().map(resource_row).transpose()
    }

    async fn spec_in(
        tx: &mut Transaction<'_, Any>,
        resource_id: &str,
    ) -> Result<Option<DesiredSpec>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SPEC_COLUMNS} FROM cloud_provisioned WHERE resource_id = $1"
        )))
        .bind(resource_id)
        .fetch_optional(&mut **tx)
        .await?;
        row.as_ref().map(spec_row).transpose()
    }

    async fn event_in(
        tx: &mut Transaction<'_, Any>,
        w: Writer<'_>,
        resource_id: &str,
        kind: &str,
        detail: &Value,
    ) -> Result<(), StoreError> {
        super::resource_event(tx, resource_id, kind, detail, w.saga_id, w.now_ms).await
    }

    async fn upsert_in(
        tx: &mut Transaction<'_, Any>,
        w: Writer<'_>,
        r: &ObservedResource,
    ) -> Result<Upserted, StoreError> {
        let existing = Self::resource_in(tx, &r.resource_id).await?;
        let (outcome, changed) = match &existing {
            None => (Upserted::Created, Map::new()),
            Some(old) => {
                let mut changed = changes(old, r);
                let attrs_changed = old.attributes != r.attributes;
                if changed.is_empty() && !attrs_changed {
                    sqlx::query(
                        "UPDATE cloud_resources SET last_seen_ms = $1 WHERE resource_id = $2",
                    )
                    .bind(w.now_ms)
                    .bind(&r.resource_id)
                    .execute(&mut **tx)
                    .await?;
                    return Ok(Upserted::Unchanged);
                }
                if changed.is_empty() {
                    changed.insert("attributes".into(), Value::Bool(true));
                }
                (Upserted::Changed, changed)
            }
        };
        let tags = json_text(&r.tags);
        let attributes = json_text(&r.attributes);
        if outcome == Upserted::Created {
            sqlx::query(
                "INSERT INTO cloud_resources (resource_id, provider, kind, provider_id, name, \
                    region, size_slug, image, status, tags, public_ipv4, attributes, \
                    first_seen_ms, last_seen_ms, changed_at_ms, deleted_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $13, NULL)",
            )
            .bind(&r.resource_id)
            .bind(&r.provider)
            .bind(&r.kind)
            .bind(&r.provider_id)
            .bind(&r.name)
            .bind(r.region.as_deref())
            .bind(r.size_slug.as_deref())
            .bind(r.image.as_deref())
            .bind(&r.status)
            .bind(&tags)
            .bind(r.public_ipv4.as_deref())
            .bind(&attributes)
            .bind(w.now_ms)
            .execute(&mut **tx)
            .await?;
            let detail = serde_json::json!({
                "name": r.name, "region": r.region, "size_slug": r.size_slug, "image": r.image,
                "status": r.status, "public_ipv4": r.public_ipv4, "tags": r.tags,
            });
            Self::event_in(tx, w, &r.resource_id, "created", &detail).await?;
        } else {
            sqlx::query(
                "UPDATE cloud_resources SET name = $1, region = $2, size_slug = $3, image = $4, \
                    status = $5, tags = $6, public_ipv4 = $7, attributes = $8, last_seen_ms = $9, \
                    changed_at_ms = $9, deleted_at_ms = NULL WHERE resource_id = $10",
            )
            .bind(&r.name)
            .bind(r.region.as_deref())
            .bind(r.size_slug.as_deref())
            .bind(r.image.as_deref())
            .bind(&r.status)
            .bind(&tags)
            .bind(r.public_ipv4.as_deref())
            .bind(&attributes)
            .bind(w.now_ms)
            .bind(&r.resource_id)
            .execute(&mut **tx)
            .await?;
            let detail = serde_json::json!({ "changes": changed });
            Self::event_in(tx, w, &r.resource_id, "changed", &detail).await?;
        }
        Ok(outcome)
    }

    async fn record_spec_in(
        tx: &mut Transaction<'_, Any>,
        w: Writer<'_>,
        resource_id: &str,
        spec: &Map<String, Value>,
        recorded_by: &str,
    ) -> Result<DesiredSpec, StoreError> {
        let existing = Self::spec_in(tx, resource_id).await?;
        let text = json_text(spec);
        match existing {
            Some(old) if &old.spec == spec => return Ok(old),
            Some(old) => {
                sqlx::query(
                    "UPDATE cloud_provisioned SET spec = $1, spec_version = spec_version + 1, \
                        recorded_by = $2, saga_id = $3, updated_at_ms = $4 WHERE resource_id = $5",
                )
                .bind(&text)
                .bind(recorded_by)
                .bind(w.saga_id)
                .bind(w.now_ms)
                .bind(resource_id)
                .execute(&mut **tx)
                .await?;
                let detail = serde_json::json!({
                    "from": old.spec, "to": spec, "spec_version": old.spec_version + 1,
                    "recorded_by": recorded_by,
                });
                Self::event_in(tx, w, resource_id, "spec_recorded", &detail).await?;
            }
            None => {
                sqlx::query(
                    "INSERT INTO cloud_provisioned (resource_id, spec, spec_version, recorded_by, \
                        saga_id, created_at_ms, updated_at_ms) VALUES ($1, $2, 1, $3, $4, $5, $5)",
                )
                .bind(resource_id)
                .bind(&text)
                .bind(recorded_by)
                .bind(w.saga_id)
                .bind(w.now_ms)
                .execute(&mut **tx)
                .await?;
                let detail = serde_json::json!({
                    "to": spec, "spec_version": 1, "recorded_by": recorded_by,
                });
                Self::event_in(tx, w, resource_id, "spec_recorded", &detail).await?;
            }
        }
        Self::spec_in(tx, resource_id)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: format!("desired spec of {resource_id}"),
            })
    }

    /// Records a resource as observed: created, changed (with a `changed` event naming each
    /// field) or only seen again.
    pub async fn upsert_resource(
        &self,
        w: Writer<'_>,
        r: &ObservedResource,
    ) -> Result<Upserted, StoreError> {
        let mut tx = self.inventory_tx(w).await?;
        let outcome = Self::upsert_in(&mut tx, w, r).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Registers a resource Berth made: its inventory row and its desired spec, in one
    /// transaction.
    pub async fn register_resource(
        &self,
        w: Writer<'_>,
        r: &ObservedResource,
        spec: &Map<String, Value>,
        recorded_by: &str,
    ) -> Result<(Upserted, DesiredSpec), StoreError> {
        let mut tx = self.inventory_tx(w).await?;
        let outcome = Self::upsert_in(&mut tx, w, r).await?;
        let spec = Self::record_spec_in(&mut tx, w, &r.resource_id, spec, recorded_by).await?;
        tx.commit().await?;
        Ok((outcome, spec))
    }

    /// Undoes [`Store::register_resource`]: removes the row and the spec (the history keeps an
    /// `unregistered` event). False if there was nothing to remove.
    pub async fn unregister_resource(
        &self,
        w: Writer<'_>,
        resource_id: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.inventory_tx(w).await?;
        let mut removed = 0;
        for table in ["cloud_provisioned", "cloud_resources"] {
            removed += sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE resource_id = $1"
            )))
            .bind(resource_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        if removed > 0 {
            Self::event_in(
                &mut tx,
                w,
                resource_id,
                "unregistered",
                &Value::Object(Map::new()),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(removed > 0)
    }

    /// Records (or replaces) a resource's desired spec; the version goes up only when the spec
    /// changes.
    pub async fn record_desired_spec(
        &self,
        w: Writer<'_>,
        resource_id: &str,
        spec: &Map<String, Value>,
        recorded_by: &str,
    ) -> Result<DesiredSpec, StoreError> {
        let mut tx = self.inventory_tx(w).await?;
        let spec = Self::record_spec_in(&mut tx, w, resource_id, spec, recorded_by).await?;
        tx.commit().await?;
        Ok(spec)
    }

    /// Sets one field of a resource's desired spec and returns the value it replaced (absent
    /// field: `None`) with the new spec; `Ok(None)` if no spec is recorded for the resource.
    pub async fn set_desired_field(
        &self,
        w: Writer<'_>,
        resource_id: &str,
        field: &str,
        value: Value,
        recorded_by: &str,
    ) -> Result<Option<(Option<Value>, DesiredSpec)>, StoreError> {
        let mut tx = self.inventory_tx(w).await?;
        let Some(old) = Self::spec_in(&mut tx, resource_id).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let previous = old.spec.get(field).cloned();
        let mut spec = old.spec;
        spec.insert(field.to_owned(), value);
        let spec = Self::record_spec_in(&mut tx, w, resource_id, &spec, recorded_by).await?;
        tx.commit().await?;
        Ok(Some((previous, spec)))
    }

    /// Marks a resource gone from the cloud (the row stays). False if it was unknown or already
    /// marked.
    pub async fn mark_resource_deleted(
        &self,
        w: Writer<'_>,
        resource_id: &str,
        detail: &Value,
    ) -> Result<bool, StoreError> {
        let mut tx = self.inventory_tx(w).await?;
        let marked = sqlx::query(
            "UPDATE cloud_resources SET deleted_at_ms = $1, status = 'deleted', changed_at_ms = $1 \
             WHERE resource_id = $2 AND deleted_at_ms IS NULL",
        )
        .bind(w.now_ms)
        .bind(resource_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if marked > 0 {
            Self::event_in(&mut tx, w, resource_id, "deleted", detail).await?;
        }
        tx.commit().await?;
        Ok(marked > 0)
    }

    /// Appends an event to a resource's history.
    pub async fn append_resource_event(
        &self,
        w: Writer<'_>,
        resource_id: &str,
        kind: &str,
        detail: &Value,
    ) -> Result<(), StoreError> {
        let mut tx = self.inventory_tx(w).await?;
        Self::event_in(&mut tx, w, resource_id, kind, detail).await?;
        tx.commit().await?;
        Ok(())
    }
}
