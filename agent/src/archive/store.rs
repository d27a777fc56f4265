//! The archive store as the agent uses it: object_store backends opened from the store URL,
//! one app's keys listed by string prefix, metadata objects read and written.

use std::fs;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_shared::AppName;
use berth_shared::archive::{ArchiveId, ArchiveKey, ArchiveMeta, METADATA_PREFIX, StoreUrl};
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use super::{ArchiveConfig, ArchiveError};

/// An opened archive store, rooted at the URL's prefix.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    /// Keys are relative to the store URL's prefix.
    pub store: Arc<dyn ObjectStore>,
    /// The raw S3 client and prefix, for listing by string prefix (`<app>:`).
    s3: Option<(Arc<AmazonS3>, Option<String>)>,
    /// For `file://`: the directory, created before the first write.
    local_root: Option<PathBuf>,
}

impl Bucket {
    /// Opens the store `config` names; reads the S3 credential files.
    pub fn open(config: &ArchiveConfig) -> Result<Self, ArchiveError> {
        match config.url()? {
            StoreUrl::Memory => Ok(Self::from_store(Arc::new(InMemory::new()))),
            StoreUrl::File { root } => {
                fs::create_dir_all(&root).map_err(|source| ArchiveError::Write {
                    path: root.clone(),
                    source,
                })?;
                let local = LocalFileSystem::new_with_prefix(&root)
                    .map_err(ArchiveError::Open)?
                    .with_fsync(true);
                Ok(Self {
                    store: Arc::new(local),
                    s3: None,
                    local_root: Some(root),
                })
            }
            StoreUrl::S3 { bucket, prefix } => {
                let s3 = Arc::new(s3_client(config, &bucket)?);
                let store: Arc<dyn ObjectStore> = match &prefix {
                    Some(p) => Arc::new(PrefixStore::new(Arc::clone(&s3), p.as_str())),
                    None => s3.clone(),
                };
                Ok(Self {
                    store,
                    s3: Some((s3, prefix)),
                    local_root: None,
                })
            }
        }
    }

    /// A bucket over any object store (tests share one `InMemory` this way).
    pub fn from_store(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            s3: None,
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
        if let Some((s3, root)) = &self.s3 {
            let full = match root {
                Some(r) => format!("{r}/{prefix}"),
                None => prefix.clone(),
            };
            let strip = root.as_ref().map(|r| r.len() + 1).unwrap_or(0);
            let mut token = None;
            loop {
                let page = s3
                    .list_paginated(
                        Some(&full),
                        PaginatedListOptions {
                            delimiter: Some("/".into()),
                            page_token: token.take(),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| ArchiveError::store("list", &full, e))?;
                for o in &page.result.objects {
                    push(&o.location.as_ref()[strip..], o.size);
                }
                match page.page_token {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
        } else {
            let listing = self
                .store
                .list_with_delimiter(None)
                .await
                .map_err(|e| ArchiveError::store("list", &prefix, e))?;
            for o in &listing.objects {
                push(o.location.as_ref(), o.size);
            }
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

    /// Deletes `key`; a missing object is not an error.
    pub async fn delete_quietly(&self, key: &str) {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(key, error = %e, "cannot delete object"),
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

fn s3_client(config: &ArchiveConfig, bucket: &str) -> Result<AmazonS3, ArchiveError> {
    let (Some(id_file), Some(secret_file)) =
        (&config.access_key_id_file, &config.secret_access_key_file)
    else {
        return Err(ArchiveError::Config(
            "s3:// needs archive.access_key_id_file and archive.secret_access_key_file".into(),
        ));
    };
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&config.region)
        .with_access_key_id(read_secret("archive.access_key_id_file", id_file)?)
        .with_secret_access_key(read_secret("archive.secret_access_key_file", secret_file)?)
        .with_virtual_hosted_style_request(config.virtual_hosted_style)
        .with_retry(RetryConfig {
            max_retries: config.max_retries,
            ..RetryConfig::default()
        })
        .with_client_options(
            ClientOptions::new().with_timeout(Duration::from_secs(config.request_timeout_secs)),
        );
    if let Some(token_file) = &config.session_token_file {
        builder = builder.with_token(read_secret("archive.session_token_file", token_file)?);
    }
    if let Some(endpoint) = &config.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    builder.build().map_err(ArchiveError::Open)
}

/// Reads a secret from a file, trimmed. Its content is never logged or put in an error.
fn read_secret(what: &'static str, path: &FsPath) -> Result<String, ArchiveError> {
    let text = fs::read_to_string(path).map_err(|source| ArchiveError::CredentialFile {
        what,
        path: path.to_owned(),
        source,
    })?;
    let value = text.trim();
    if value.is_empty() {
        return Err(ArchiveError::Config(format!(
            "{what} {} is empty",
            path.display()
        )));
    }
    Ok(value.to_owned())
}
