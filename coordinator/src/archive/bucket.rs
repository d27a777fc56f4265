//! The archive store as the coordinator reads it (opened by `berth_objstore`): top-level keys
//! listed by string prefix (never descending into `_metadata/`), metadata objects read one at
//! a time, presigned links, unfinished uploads listed and aborted.

use std::sync::Arc;
use std::time::Duration;

use berth_objstore::{LocalWrites, PendingUpload, S3Settings, Store};
use berth_shared::archive::{ArchiveId, ArchiveMeta, StoreUrl};
use object_store::path::Path;
use object_store::signer::{Method, Signer};
use object_store::{ObjectStore, ObjectStoreExt};

use super::{ArchiveConfig, CatalogError};

pub(crate) use berth_objstore::Listed;

/// An opened archive store.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    pub url: StoreUrl,
    /// Keys are relative to the store URL's prefix.
    store: Arc<dyn ObjectStore>,
    opened: Store,
}

impl Bucket {
    /// Opens the store `config` names; reads the S3 credential files. A `file://` directory
    /// that does not exist yet is an empty store.
    pub fn open(config: &ArchiveConfig) -> Result<Self, CatalogError> {
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
        Ok(Self::from_opened(Store::open(
            config.url()?,
            &settings,
            LocalWrites::Buffered,
        )?))
    }

    /// A bucket over a store the caller made (tests share one `InMemory` this way).
    pub fn from_store(url: StoreUrl, store: Arc<dyn ObjectStore>) -> Self {
        Self::from_opened(Store::from_store(url, store))
    }

    fn from_opened(opened: Store) -> Self {
        Self {
            url: opened.url.clone(),
            store: opened.objects.clone(),
            opened,
        }
    }

    /// Top-level objects whose names start with `prefix` (`""`: all), from key names only.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, CatalogError> {
        self.opened
            .list_top(prefix)
            .await
            .map_err(|e| CatalogError::store("list", prefix, e))
    }

    /// The metadata of archive `id`, `None` when there is none.
    pub async fn read_meta(&self, id: &ArchiveId) -> Result<Option<ArchiveMeta>, CatalogError> {
        let Some((key, bytes)) = self.meta_bytes(id).await? else {
            return Ok(None);
        };
        ArchiveMeta::from_json(&bytes)
            .map(Some)
            .map_err(|source| CatalogError::Metadata { key, source })
    }

    /// The key and bytes of archive `id`'s metadata object, `None` when there is none.
    async fn meta_bytes(
        &self,
        id: &ArchiveId,
    ) -> Result<Option<(String, bytes::Bytes)>, CatalogError> {
        let key = id.metadata_key();
        match self.store.get(&Path::from(key.as_str())).await {
            Ok(r) => match r.bytes().await {
                Ok(bytes) => Ok(Some((key, bytes))),
                Err(e) => Err(CatalogError::store("read", key, e)),
            },
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(CatalogError::store("read", key, e)),
        }
    }

    /// Adds `label` to archive `id`'s metadata unless it carries it: the JSON is rewritten
    /// keeping every key this build does not know. `false` when there is no metadata.
    pub async fn add_label(&self, id: &ArchiveId, label: &str) -> Result<bool, CatalogError> {
        let Some((key, bytes)) = self.meta_bytes(id).await? else {
            return Ok(false);
        };
        let path = Path::from(key.as_str());
        let invalid = |source| CatalogError::Metadata {
            key: key.clone(),
            source,
        };
        // Checked as metadata first; then changed as plain JSON, so nothing else moves.
        ArchiveMeta::from_json(&bytes).map_err(invalid)?;
        let mut doc: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&bytes).map_err(invalid)?;
        let labels = doc
            .entry("labels")
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if labels.is_null() {
            *labels = serde_json::Value::Array(Vec::new());
        }
        let Some(list) = labels.as_array_mut() else {
            return Err(CatalogError::Invalid(format!(
                "metadata {key} has labels that are not a list; fix or delete the archive"
            )));
        };
        if list.iter().any(|l| l.as_str() == Some(label)) {
            return Ok(true);
        }
        list.push(serde_json::Value::String(label.to_owned()));
        let body = serde_json::to_vec(&doc).expect("JSON serializes");
        self.store
            .put(&path, body.into())
            .await
            .map_err(|e| CatalogError::store("write", &key, e))?;
        Ok(true)
    }

    /// Deletes `key`; `false` when it did not exist.
    pub async fn delete(&self, key: &str) -> Result<bool, CatalogError> {
        let path = Path::from(key);
        match self.store.head(&path).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(CatalogError::store("check", key, e)),
        }
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(CatalogError::store("delete", key, e)),
        }
    }

    /// A presigned GET URL of `key` (S3), the object's path (`file://`), or `None` (memory).
    pub async fn link(&self, key: &str, expires: Duration) -> Result<Option<String>, CatalogError> {
        if let Some((s3, full)) = self.opened.s3_key(key) {
            let url = s3
                .signed_url(Method::GET, &full, expires)
                .await
                .map_err(|e| CatalogError::store("sign", key, e))?;
            return Ok(Some(url.to_string()));
        }
        match &self.url {
            StoreUrl::File { root } => Ok(Some(format!("file://{}", root.join(key).display()))),
            _ => Ok(None),
        }
    }

    /// Unfinished uploads at the top of the store's prefix.
    pub async fn uploads(&self) -> Result<Vec<PendingUpload>, CatalogError> {
        self.opened
            .list_uploads("")
            .await
            .map_err(|e| CatalogError::store("list uploads under", "", e))
    }

    /// Aborts `upload` (one already gone counts as aborted).
    pub async fn abort_upload(&self, upload: &PendingUpload) -> Result<(), CatalogError> {
        self.opened
            .abort_upload(&upload.key, &upload.upload_id)
            .await
            .map_err(|e| CatalogError::store("abort upload of", upload.key.as_str(), e))
    }
}
