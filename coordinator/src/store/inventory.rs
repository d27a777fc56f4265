//! The cloud inventory: `cloud_resources` (each resource as last seen in the cloud),
//! `cloud_provisioned` (the flat spec Berth asked for, per resource, versioned) and
//! `cloud_resource_events` (an append-only history per resource).
//!
//! A write made by a saga step passes the step's [`Fence`], so it lands only while the step's
//! claim holds; the inventory sync and admin calls pass `None`. Every write is idempotent: an
//! upsert that changes nothing writes no event, a spec recorded twice keeps its version.

mod write;

use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

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

/// Appends to `cloud_resource_events` inside the caller's transaction: the one place the
/// inventory's history is written (syncs, drift, operators, sagas).
pub(super) async fn resource_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    resource_id: &str,
    kind: &str,
    detail: &Value,
    saga_id: Option<&str>,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO cloud_resource_events (resource_id, kind, detail, saga_id, at_ms) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(resource_id)
    .bind(kind)
    .bind(json_text(detail))
    .bind(saga_id)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
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
            out.insert(
                field.to_owned(),
                serde_json::json!({ "from": from, "to": to }),
            );
        }
    };
    diff("name", old.name.clone().into(), new.name.clone().into());
    diff(
        "region",
        old.region.clone().into(),
        new.region.clone().into(),
    );
    diff(
        "size_slug",
        old.size_slug.clone().into(),
        new.size_slug.clone().into(),
    );
    diff("image", old.image.clone().into(), new.image.clone().into());
    diff(
        "status",
        old.status.clone().into(),
        new.status.clone().into(),
    );
    diff("tags", old.tags.clone().into(), new.tags.clone().into());
    diff(
        "public_ipv4",
        old.public_ipv4.clone().into(),
        new.public_ipv4.clone().into(),
    );
    if old.deleted_at_ms.is_some() {
        diff("deleted", true.into(), false.into());
    }
    out
}
impl Store {
    pub async fn get_resource(
        &self,
        resource_id: &str,
    ) -> Result<Option<CloudResource>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RESOURCE_COLUMNS} FROM cloud_resources WHERE resource_id = $1"
        )))
        .bind(resource_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(resource_row).transpose()
    }

    pub async fn get_desired_spec(
        &self,
        resource_id: &str,
    ) -> Result<Option<DesiredSpec>, StoreError> {
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
