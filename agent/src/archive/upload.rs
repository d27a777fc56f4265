//! Starting, and getting rid of, the multipart upload of one archive.
//!
//! An upload is journaled ([`Journal`]) before its first part: on S3 it is started by id
//! (object_store's `MultipartStore`) so the id can be written down, and aborted by id later;
//! on `file://` the journal names the key, whose `<key>#<n>` staging files are removed. A
//! `memory://` store needs no journal. Whatever ends an upload — completion, a failure, a
//! cancel — removes its entry only once the store confirmed it; an entry left behind is
//! aborted by the next attempt of the same archive uuid or when the agent starts again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use berth_shared::archive::{ArchiveId, ArchiveKey};
use berth_shared::time::unix_ms;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{
    MultipartId, MultipartUpload, ObjectStoreExt, PutPayload, PutResult, UploadPart,
};
use tokio::sync::watch;

use super::ArchiveError;
use super::journal::{Journal, JournaledUpload};
use super::store::Bucket;
use crate::error_kind::chain;

/// An upload just started, and its journal entry (none for `memory://`).
pub(crate) struct Started {
    pub upload: Box<dyn MultipartUpload>,
    pub entry: Option<JournaledUpload>,
}

/// Starts the upload of `key` for archive `id`. Any upload an earlier attempt of the same
/// archive journaled is aborted first; the new one is journaled before it is returned.
pub(crate) async fn start(
    bucket: &Bucket,
    journal: Option<&Journal>,
    id: &ArchiveId,
    key: &ArchiveKey,
) -> Result<Started, ArchiveError> {
    let Some(journal) = journal else {
        return Ok(Started {
            upload: put_multipart(bucket, key).await?,
            entry: None,
        });
    };
    if let Some(earlier) = journal.get(id.as_str()) {
        tracing::info!(
            key = %earlier.key,
            upload_id = earlier.upload_id.as_deref().unwrap_or("-"),
            "aborting the upload of an earlier attempt of this archive"
        );
        if let Err(e) = abort(bucket, journal, &earlier).await {
            // The coordinator's sweep aborts it once this archive's saga has ended.
            tracing::warn!(
                key = %earlier.key,
                upload_id = earlier.upload_id.as_deref().unwrap_or("-"),
                error = %chain(&e),
                "cannot abort the upload of an earlier attempt; leaving it to the sweep"
            );
            journal.remove(&earlier)?;
        }
    }
    let mut entry = JournaledUpload {
        uuid: id.to_string(),
        key: key.to_string(),
        upload_id: None,
        created_ms: unix_ms(std::time::SystemTime::now()),
    };
    let Some(multipart) = bucket.multipart() else {
        // `file://`: the key is enough to find the staging files.
        journal.record(&entry)?;
        return Ok(Started {
            upload: put_multipart(bucket, key).await?,
            entry: Some(entry),
        });
    };
    let path = ObjectPath::from(key.as_str());
    let upload_id = multipart
        .create_multipart(&path)
        .await
        .map_err(|e| ArchiveError::store("start upload of", key.as_str(), e))?;
    entry.upload_id = Some(upload_id.clone());
    if let Err(e) = journal.record(&entry) {
        // Not journaled: abort now rather than risk an upload nobody knows of.
        if let Err(abort) = multipart.abort_multipart(&path, &upload_id).await {
            tracing::warn!(key = %key, upload_id, error = %abort, "cannot abort an upload that could not be journaled");
        }
        return Err(e);
    }
    tracing::debug!(key = %key, upload_id, "upload journaled");
    Ok(Started {
        upload: Box::new(ById {
            store: multipart,
            path,
            id: upload_id,
            parts: Arc::default(),
            next: 0,
        }),
        entry: Some(entry),
    })
}

async fn put_multipart(
    bucket: &Bucket,
    key: &ArchiveKey,
) -> Result<Box<dyn MultipartUpload>, ArchiveError> {
    bucket
        .store
        .put_multipart(&ObjectPath::from(key.as_str()))
        .await
        .map_err(|e| ArchiveError::store("start upload of", key.as_str(), e))
}

/// Aborts the journaled upload `entry` (one already gone counts) and removes its entry.
pub(crate) async fn abort(
    bucket: &Bucket,
    journal: &Journal,
    entry: &JournaledUpload,
) -> Result<(), ArchiveError> {
    bucket
        .abort_upload(&entry.key, entry.upload_id.as_deref())
        .await?;
    journal.remove(entry)?;
    tracing::info!(
        key = %entry.key,
        upload_id = entry.upload_id.as_deref().unwrap_or("-"),
        "multipart upload aborted"
    );
    Ok(())
}

/// Removes the entry of an upload that completed.
pub(crate) fn completed(journal: Option<&Journal>, entry: Option<&JournaledUpload>) {
    if let (Some(journal), Some(entry)) = (journal, entry)
        && let Err(e) = journal.remove(entry)
    {
        // Harmless: aborting a completed upload later finds it gone.
        tracing::warn!(key = %entry.key, error = %e, "cannot remove the journal entry of a completed upload");
    }
}

/// Aborts every upload in `entries` (what the journal held when the agent started), retrying
/// each with backoff until the store confirms it; `remaining` counts those left.
pub(crate) async fn recover(
    bucket: Bucket,
    journal: Journal,
    entries: Vec<JournaledUpload>,
    remaining: watch::Sender<usize>,
) {
    remaining.send_replace(entries.len());
    for entry in entries {
        let mut delay = Duration::from_secs(1);
        loop {
            // A newer attempt of the same archive may have replaced (and will handle) it.
            if journal.get(&entry.uuid).as_ref() != Some(&entry) {
                break;
            }
            match abort(&bucket, &journal, &entry).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(
                        key = %entry.key,
                        upload_id = entry.upload_id.as_deref().unwrap_or("-"),
                        error = %chain(&e),
                        retry_in_secs = delay.as_secs(),
                        "cannot abort an upload left by an earlier run"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(300));
                }
            }
        }
        remaining.send_modify(|n| *n -= 1);
    }
}

/// A multipart upload addressed by its id, as object_store's `MultipartStore` gives it.
struct ById {
    store: Arc<dyn MultipartStore>,
    path: ObjectPath,
    id: MultipartId,
    /// Each part's id once the store acknowledged it, by part index.
    parts: Arc<Mutex<Vec<Option<PartId>>>>,
    next: usize,
}

impl std::fmt::Debug for ById {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ById")
            .field("path", &self.path)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl MultipartUpload for ById {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let idx = self.next;
        self.next += 1;
        self.parts
            .lock()
            .expect("parts lock")
            .resize(self.next, None);
        let (store, path, id, parts) = (
            self.store.clone(),
            self.path.clone(),
            self.id.clone(),
            self.parts.clone(),
        );
        Box::pin(async move {
            let part = store.put_part(&path, &id, idx, data).await?;
            parts.lock().expect("parts lock")[idx] = Some(part);
            Ok(())
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let parts: Option<Vec<PartId>> = self
            .parts
            .lock()
            .expect("parts lock")
            .iter()
            .cloned()
            .collect();
        let Some(parts) = parts else {
            return Err(object_store::Error::Generic {
                store: "S3",
                source: "a part of the upload was never acknowledged".into(),
            });
        };
        self.store
            .complete_multipart(&self.path, &self.id, parts)
            .await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.store.abort_multipart(&self.path, &self.id).await
    }
}
