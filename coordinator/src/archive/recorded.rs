//! What an archive's own `archive.create` saga recorded about it (SHA-256, sizes, entries),
//! for the restore to check the archive against. The bucket's metadata is not trusted for
//! this: every agent can write the bucket.

use berth_shared::archive::ArchiveId;
use berth_shared::saga::SagaStatus;
use berth_shared::task::Recorded;
use serde_json::Value;

use crate::store::{Store, StoreError};

/// The record of archive `id`'s creation, if a completed `archive.create` saga of this fleet
/// made it (its archive uuid is the saga id); `None` for an archive made elsewhere.
pub async fn recorded(store: &Store, id: &ArchiveId) -> Result<Option<Recorded>, StoreError> {
    let Some(created) = created(store, id).await? else {
        return Ok(None);
    };
    let field = |name: &str| created[name].as_u64();
    let recorded = match (created["sha256"].as_str(), created["uuid"].as_str()) {
        (Some(sha256), Some(uuid)) if uuid == id.as_str() && !sha256.is_empty() => {
            match (field("size"), field("tar_bytes"), field("entries")) {
                (Some(size), Some(tar_bytes), Some(entries)) => Some(Recorded {
                    sha256: sha256.to_owned(),
                    size,
                    tar_bytes,
                    entries,
                }),
                _ => None,
            }
        }
        _ => None,
    };
    Ok(recorded)
}

/// The source listing digest archive `id`'s create saga recorded (`None` for an archive made
/// elsewhere or before Berth recorded it).
pub async fn recorded_digest(store: &Store, id: &ArchiveId) -> Result<Option<String>, StoreError> {
    let Some(created) = created(store, id).await? else {
        return Ok(None);
    };
    Ok(created["source_digest"]
        .as_str()
        .filter(|d| !d.is_empty() && created["uuid"].as_str() == Some(id.as_str()))
        .map(str::to_owned))
}

/// The agent step's output of archive `id`'s own completed `archive.create` saga.
async fn created(store: &Store, id: &ArchiveId) -> Result<Option<Value>, StoreError> {
    let saga = match store.get_saga(id.as_str()).await {
        Ok(s) => s,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    if saga.kind != "archive.create" || saga.status != SagaStatus::Completed {
        return Ok(None);
    }
    let output: Value = saga
        .output
        .as_deref()
        .and_then(|o| serde_json::from_str(o).ok())
        .unwrap_or(Value::Null);
    Ok(Some(output["0:archive_create"].clone()))
}
