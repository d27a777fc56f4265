//! The archive store as the agent uses it (opened by `berth_objstore`): one app's keys listed
//! by string prefix, metadata objects read and written, unfinished uploads aborted.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_objstore::{LocalWrites, S3Settings, Store};
use berth_shared::AppName;
use berth_shared::archive::{ArchiveId, ArchiveKey, ArchiveMeta, METADATA_PREFIX, StoreUrl};
use futures::TryStreamExt;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::{ArchiveConfig, ArchiveError};

/// An opened archive store, rooted at the URL's prefix.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    /// Keys are relative to the store URL's prefix.
    pub store: Arc<dyn ObjectStore>,
    opened: Store,
    /// For `file://`: the directory, created before the first write.
    local_root: Option<PathBuf>,
}

impl Bucket {
    /// Opens the store `config` names; reads the S3 credential files.
    pub fn open(config: &ArchiveConfig) -> Result<Self, ArchiveError> {
        let url = config.url()?;
        let local_root = match &url {
            StoreUrl::File { root } => {
                fs::create_dir_all(root).map_err(|source| ArchiveError::Write {
                    path: root.clone(),
                    source,
                })?;
                Some(root.clone())
            }
            _ => None,
        };
        let settings = S3Settings {
            endpoint: config.endpoint.as_deref(),
            region: &config.region,
            access_key_id_file: config.access_key_id_file.as_deref(),
            secret_access_key_file: config.secret_access_key_file.as_deref(),
            session_token_file: config.session_token_file.as_deref(),
            virtual_hosted_style: config.virtual_hosted_style,
            max_retries: config.max_retries,
            request_timeout: Duration::from_secs(config.request_timeout_secs),
        };
        let opened = Store::open(url, &settings, LocalWrites::Synced)?;
        Ok(Self {
            store: opened.objects.clone(),
            opened,
            local_root,
        })
    }

    /// A bucket over any object store (tests share one `InMemory` this way).
    pub fn from_store(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            opened: Store::from_store(StoreUrl::Memory, store.clone()),
            store,
            local_root: None,
        }
    }

    /// Makes sure a `file://` root still exists (it may have been removed since start).
    pub fn prepare(&self) -> Result<(), ArchiveError> {
        if let Some(root) = &self.local_root {
            fs::create_dir_all(root).map_err(|source| ArchiveError::Write {
                path: root.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// The metadata of archive `id`, `None` when there is none.
    pub async fn read_meta(&self, id: &ArchiveId) -> Result<Option<ArchiveMeta>, ArchiveError> {
        let key = id.metadata_key();
        let bytes = match self.store.get(&Path::from(key.as_str())).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| ArchiveError::store("read", &key, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(ArchiveError::store("read", key, e)),
        };
        ArchiveMeta::from_json(&bytes)
            .map(Some)
            .map_err(|e| ArchiveError::Format {
                key,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })
    }

    /// Writes `_metadata/<uuid>`.
    pub async fn write_meta(&self, meta: &ArchiveMeta) -> Result<(), ArchiveError> {
        let key = format!("{METADATA_PREFIX}/{}", meta.uuid);
        self.store
            .put(&Path::from(key.as_str()), PutPayload::from(meta.to_json()))
            .await
            .map_err(|e| ArchiveError::store("write", key, e))?;
        Ok(())
    }

    /// Every archive key of `app` with its object size, read from key names only.
    pub async fn list_app(&self, app: &AppName) -> Result<Vec<(ArchiveKey, u64)>, ArchiveError> {
        let prefix = ArchiveKey::app_prefix(app);
        let mut found = Vec::new();
        let mut push = |name: &str, size: u64| {
            if let Some(rest) = name.strip_prefix(&prefix) {
                match ArchiveKey::parse(name) {
                    Ok(key) => found.push((key, size)),
                    Err(e) => {
                        tracing::warn!(key = name, error = %e, rest, "skipping a key that is not an archive")
                    }
                }
            }
        };
        let listed = self
            .opened
            .list_top(&prefix)
            .await
            .map_err(|e| ArchiveError::store("list", &prefix, e))?;
        for (name, size) in &listed {
            push(name, *size);
        }
        Ok(found)
    }

    /// The data key of archive `id` of `app`, if its object exists.
    pub async fn find_key(
        &self,
        app: &AppName,
        id: &ArchiveId,
    ) -> Result<Option<(ArchiveKey, u64)>, ArchiveError> {
        Ok(self
            .list_app(app)
            .await?
            .into_iter()
            .find(|(k, _)| k.id() == id))
    }

    /// The first `len` bytes of the object `key` (all of it when shorter).
    pub async fn head_bytes(
        &self,
        key: &ArchiveKey,
        len: u64,
    ) -> Result<bytes::Bytes, ArchiveError> {
        let path = Path::from(key.as_str());
        self.store
            .get_range(&path, 0..len)
            .await
            .map_err(|e| ArchiveError::store("download the start of", key.as_str(), e))
    }

    /// Deletes `key`; a missing object is not an error.
    pub async fn delete_quietly(&self, key: &str) {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(key, error = %e, "cannot delete object"),
        }
    }

    /// Multipart uploads by id (S3 only): what a journaled upload goes through.
    pub fn multipart(&self) -> Option<Arc<dyn MultipartStore>> {
        self.opened.multipart()
    }

    /// Aborts the upload `upload_id` of `key`; without an id (a `file://` store), removes
    /// every staging file of `key`. An upload already gone counts as aborted.
    pub async fn abort_upload(
        &self,
        key: &str,
        upload_id: Option<&str>,
    ) -> Result<(), ArchiveError> {
        let abort = |id: String| async move {
            self.opened
                .abort_upload(key, &id)
                .await
                .map_err(|e| ArchiveError::store("abort upload of", key, e))
        };
        match upload_id {
            Some(id) => abort(id.to_owned()).await,
            None => {
                let staged = self
                    .opened
                    .list_uploads(key)
                    .await
                    .map_err(|e| ArchiveError::store("list uploads of", key, e))?;
                for upload in staged.into_iter().filter(|u| u.key == key) {
                    abort(upload.upload_id).await?;
                }
                Ok(())
            }
        }
    }

    /// Every object name (test support: proves nothing was left behind).
    pub async fn all_keys(&self) -> Result<Vec<String>, ArchiveError> {
        let list: Vec<_> = self
            .store
            .list(None)
            .try_collect()
            .await
            .map_err(|e| ArchiveError::store("list", "", e))?;
        let mut keys: Vec<String> = list.into_iter().map(|o| o.location.to_string()).collect();
        keys.sort();
        Ok(keys)
    }
}
