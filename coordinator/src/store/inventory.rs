//! The cloud inventory: `cloud_resources` (each resource as last seen in the cloud),
//! `cloud_provisioned` (the flat spec Berth asked for, per resource, versioned) and
//! `cloud_resource_events` (an append-only history per resource).
//!
//! A write made by a saga step passes the step's [`Fence`], so it lands only while the step's
//! claim holds; the inventory sync and admin calls pass `None`. Every write is idempotent: an
//! upsert that changes nothing writes no event, a spec recorded twice keeps its version.

use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use super::sql::Sql;
use super::{Fence, Store, StoreError};

/// DDL of migration 3, SQLite flavour (PostgreSQL differs only in the events' sequence).
pub(super) const MIGRATION_SQLITE: &[&str] = &[
    RESOURCES,
    "CREATE INDEX cloud_resources_kind ON cloud_resources (kind, deleted_at_ms)",
    PROVISIONED,
    "CREATE TABLE cloud_resource_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        resource_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL,
        saga_id TEXT,
        at_ms BIGINT NOT NULL
    )",
    "CREATE INDEX cloud_resource_events_resource ON cloud_resource_events (resource_id, seq)",
];

pub(super) const MIGRATION_POSTGRES: &[&str] = &[
    RESOURCES,
    "CREATE INDEX cloud_resources_kind ON cloud_resources (kind, deleted_at_ms)",
    PROVISIONED,
    "CREATE TABLE cloud_resource_events (
        seq BIGSERIAL PRIMARY KEY,
        resource_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL,
        saga_id TEXT,
        at_ms BIGINT NOT NULL
    )",
    "CREATE INDEX cloud_resource_events_resource ON cloud_resource_events (resource_id, seq)",
];

/// `resource_id` is `<provider short>:<kind>:<provider id>` (`do:droplet:123`); the columns
/// named like a spec field (`region`, `size_slug`, `image`, `status`) are what drift detection
/// reads first, `attributes` (the provider's whole object, JSON) after.
const RESOURCES: &str = "CREATE TABLE cloud_resources (
    resource_id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    kind TEXT NOT NULL,
    provider_id TEXT NOT NULL,
    name TEXT NOT NULL,
    region TEXT,
    size_slug TEXT,
    image TEXT,
    status TEXT NOT NULL,
    tags TEXT NOT NULL,
    public_ipv4 TEXT,
    attributes TEXT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    changed_at_ms BIGINT NOT NULL,
    deleted_at_ms BIGINT,
    UNIQUE (provider, kind, provider_id)
)";

/// `spec` is a flat JSON object, field → expected value.
const PROVISIONED: &str = "CREATE TABLE cloud_provisioned (
    resource_id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    spec_version BIGINT NOT NULL,
    recorded_by TEXT NOT NULL,
    saga_id TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
)";

const RESOURCE_COLUMNS: &str = "resource_id, provider, kind, provider_id, name, region, \
    size_slug, image, status, tags, public_ipv4, attributes, first_seen_ms, last_seen_ms, \
    changed_at_ms, deleted_at_ms";
const SPEC_COLUMNS: &str =
    "resource_id, spec, spec_version, recorded_by, saga_id, created_at_ms, updated_at_ms";

/// A resource as the inventory holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudResource {
    pub resource_id: String,
    /// `digitalocean`.
    pub provider: String,
    /// `droplet`.
    pub kind: String,
    pub provider_id: String,
    pub name: String,
    pub region: Option<String>,
    pub size_slug: Option<String>,
    pub image: Option<String>,
    pub status: String,
    pub tags: Vec<String>,
    pub public_ipv4: Option<String>,
    /// The provider's whole object, as last seen.
    pub attributes: Value,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// When a field last changed (not when it was last seen).
    pub changed_at_ms: i64,
    /// Set once the resource is gone from the cloud; the row stays as history.
    pub deleted_at_ms: Option<i64>,
}

/// A resource as just observed (or just made) in the cloud.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedResource {
    pub resource_id: String,
    pub provider: String,
    pub kind: String,
    pub provider_id: String,
    pub name: String,
    pub region: Option<String>,
    pub size_slug: Option<String>,
    pub image: Option<String>,
    pub status: String,
    pub tags: Vec<String>,
    pub public_ipv4: Option<String>,
    pub attributes: Value,
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    Created,
    Changed,
    Unchanged,
}

/// The desired state of a resource: what Berth asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredSpec {
    pub resource_id: String,
    /// Flat: field → expected value.
    pub spec: Map<String, Value>,
    /// 1 when first recorded, +1 on every change.
    pub spec_version: i64,
    /// `saga:<kind>`, `admin:<token id>`, `drift:accept`…
    pub recorded_by: String,
    pub saga_id: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// One entry of a resource's history.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceEvent {
    pub seq: i64,
    pub resource_id: String,
    /// `created`, `changed`, `deleted`, `spec_recorded`, `unregistered`, …
    pub kind: String,
    pub detail: Value,
    pub saga_id: Option<String>,
    pub at_ms: i64,
}

/// Who writes, for fencing and the history.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    /// The claim of the saga step writing, if a step writes.
    pub fence: Option<&'a Fence>,
    pub saga_id: Option<&'a str>,
    pub now_ms: i64,
}

/// Filters for listing resources, paged by resource id.
#[derive(Debug, Clone, Default)]
pub struct ResourceFilter {
    pub kind: Option<String>,
    /// Only resources carrying this tag (exactly).
    pub tag: Option<String>,
    pub include_deleted: bool,
    /// Resources whose id sorts after this one.
    pub after_id: Option<String>,
    pub limit: i64,
}

fn json_text(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).expect("json values serialize")
}

fn resource_row(r: &AnyRow) -> Result<CloudResource, StoreError> {
    let tags: String = r.try_get("tags")?;
    let attributes: String = r.try_get("attributes")?;
    Ok(CloudResource {
        resource_id: r.try_get("resource_id")?,
        provider: r.try_get("provider")?,
        kind: r.try_get("kind")?,
        provider_id: r.try_get("provider_id")?,
        name: r.try_get("name")?,
        region: r.try_get("region")?,
        size_slug: r.try_get("size_slug")?,
        image: r.try_get("image")?,
        status: r.try_get("status")?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        public_ipv4: r.try_get("public_ipv4")?,
        attributes: serde_json::from_str(&attributes).unwrap_or(Value::Null),
        first_seen_ms: r.try_get("first_seen_ms")?,
        last_seen_ms: r.try_get("last_seen_ms")?,
        changed_at_ms: r.try_get("changed_at_ms")?,
        deleted_at_ms: r.try_get("deleted_at_ms")?,
    })
}

fn spec_row(r: &AnyRow) -> Result<DesiredSpec, StoreError> {
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

/// The fields that changed between the stored row and an observation, `{field: {from, to}}`.
fn changes(old: &CloudResource, new: &ObservedResource) -> Map<String, Value> {
    let mut out = Map::new();
    let mut diff = |field: &str, from: Value, to: Value| {
        if from != to {
            out.insert(field.to_owned(), serde_json::json!({ "from": from, "to": to }));
        }
    };
    diff("name", old.name.clone().into(), new.name.clone().into());
    diff("region", old.region.clone().into(), new.region.clone().into());
    diff("size_slug", old.size_slug.clone().into(), new.size_slug.clone().into());
    diff("image", old.image.clone().into(), new.image.clone().into());
    diff("status", old.status.clone().into(), new.status.clone().into());
    diff("tags", old.tags.clone().into(), new.tags.clone().into());
    diff("public_ipv4", old.public_ipv4.clone().into(), new.public_ipv4.clone().into());
    if old.deleted_at_ms.is_some() {
        diff("deleted", true.into(), false.into());
    }
    out
}

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
        sqlx::query(
            "INSERT INTO cloud_resource_events (resource_id, kind, detail, saga_id, at_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(resource_id)
        .bind(kind)
        .bind(json_text(detail))
        .bind(w.saga_id)
        .bind(w.now_ms)
        .execute(&mut **tx)
        .await?;
        Ok(())
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
                    sqlx::query("UPDATE cloud_resources SET last_seen_ms = $1 WHERE resource_id = $2")
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
            Self::event_in(&mut tx, w, resource_id, "unregistered", &Value::Object(Map::new()))
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

    pub async fn get_resource(&self, resource_id: &str) -> Result<Option<CloudResource>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RESOURCE_COLUMNS} FROM cloud_resources WHERE resource_id = $1"
        )))
        .bind(resource_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(resource_row).transpose()
    }

    pub async fn get_desired_spec(&self, resource_id: &str) -> Result<Option<DesiredSpec>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SPEC_COLUMNS} FROM cloud_provisioned WHERE resource_id = $1"
        )))
        .bind(resource_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(spec_row).transpose()
    }

    /// Resources by id, after `filter.after_id`. With a tag filter a page can hold fewer than
    /// `limit` rows while more follow: page on until one comes back empty.
    pub async fn list_resources(
        &self,
        filter: &ResourceFilter,
    ) -> Result<Vec<CloudResource>, StoreError> {
        let mut q = Sql::new(&format!(
            "SELECT {RESOURCE_COLUMNS} FROM cloud_resources WHERE 1 = 1"
        ));
        if let Some(k) = &filter.kind {
            q.push(" AND kind = ").text(k);
        }
        if !filter.include_deleted {
            q.push(" AND deleted_at_ms IS NULL");
        }
        if let Some(tag) = &filter.tag {
            let escaped = tag
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            q.push(" AND tags LIKE ")
                .text(&format!("%\"{escaped}\"%"))
                .push(" ESCAPE '\\'");
        }
        if let Some(after) = &filter.after_id {
            q.push(" AND resource_id > ").text(after);
        }
        q.push(" ORDER BY resource_id LIMIT ").int(filter.limit);
        let rows = q.query().fetch_all(self.pool()).await?;
        rows.iter().map(resource_row).collect()
    }

    /// Every desired spec, for drift detection.
    pub async fn list_desired_specs(&self) -> Result<Vec<DesiredSpec>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SPEC_COLUMNS} FROM cloud_provisioned ORDER BY resource_id"
        )))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(spec_row).collect()
    }

    /// A resource's history after `after_seq`, oldest first.
    pub async fn resource_events(
        &self,
        resource_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<ResourceEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, resource_id, kind, detail, saga_id, at_ms FROM cloud_resource_events \
             WHERE resource_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(resource_id)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let detail: String = r.try_get("detail")?;
                Ok(ResourceEvent {
                    seq: r.try_get("seq")?,
                    resource_id: r.try_get("resource_id")?,
                    kind: r.try_get("kind")?,
                    detail: serde_json::from_str(&detail).unwrap_or(Value::Null),
                    saga_id: r.try_get("saga_id")?,
                    at_ms: r.try_get("at_ms")?,
                })
            })
            .collect()
    }
}
