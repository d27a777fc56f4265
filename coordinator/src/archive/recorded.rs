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
    let created = &output["0:archive_create"];
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
