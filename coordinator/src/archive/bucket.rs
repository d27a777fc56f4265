//! The archive store as the coordinator reads it: object_store backends opened from the store
//! URL, top-level keys listed by string prefix (never descending into `_metadata/`), metadata
//! objects read one at a time, presigned links.

use std::fs;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_shared::archive::{ArchiveId, ArchiveMeta, StoreUrl};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::signer::{Method, Signer};
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};

use super::{ArchiveConfig, CatalogError};

/// An object at the store's top level: its name (relative to the URL's prefix) and size.
pub(crate) type Listed = (String, u64);

/// An opened archive store.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    pub url: StoreUrl,
    /// Keys are relative to the store URL's prefix.
    store: Arc<dyn ObjectStore>,
    /// The raw S3 client and prefix: string-prefix listing and signing.
    s3: Option<(Arc<AmazonS3>, Option<String>)>,
}

impl Bucket {
    /// Opens the store `config` names; reads the S3 credential files. A `file://` directory
    /// that does not exist yet is an empty store.
    pub fn open(config: &ArchiveConfig) -> Result<Self, CatalogError> {
        let url = config.url()?;
        match &url {
            StoreUrl::Memory => Ok(Self::from_store(url, Arc::new(InMemory::new()))),
            StoreUrl::File { root } => {
                let root = Path::from(root.to_string_lossy().as_ref());
                let store = PrefixStore::new(LocalFileSystem::new(), root);
                Ok(Self::from_store(url, Arc::new(store)))
            }
            StoreUrl::S3 { bucket, prefix } => {
                let s3 = Arc::new(s3_client(config, bucket)?);
                let store: Arc<dyn ObjectStore> = match prefix {
                    Some(p) => Arc::new(PrefixStore::new(Arc::clone(&s3), p.as_str())),
                    None => s3.clone(),
                };
                let prefix = prefix.clone();
                Ok(Self {
                    url,
                    store,
                    s3: Some((s3, prefix)),
                })
            }
        }
    }

    /// A bucket over a store the caller made (tests share one `InMemory` this way).
    pub fn from_store(url: StoreUrl, store: Arc<dyn ObjectStore>) -> Self {
        Self {
            url,
            store,
            s3: None,
        }
    }

    /// Top-level objects whose names start with `prefix` (`""`: all), from key names only.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, CatalogError> {
        let mut found = Vec::new();
        if let Some((s3, root)) = &self.s3 {
            let full = match root {
                Some(r) => format!("{r}/{prefix}"),
                None => prefix.to_owned(),
            };
            let strip = root.as_ref().map_or(0, |r| r.len() + 1);
            let mut token = None;
            loop {
                let page = s3
                    .list_paginated(
                        (!full.is_empty()).then_some(full.as_str()),
                        PaginatedListOptions {
                            delimiter: Some("/".into()),
                            page_token: token.take(),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| CatalogError::store("list", &full, e))?;
                found.extend(
                    page.result
                        .objects
                        .into_iter()
                        .map(|o| (o.location.as_ref()[strip..].to_owned(), o.size)),
                );
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
                .map_err(|e| CatalogError::store("list", prefix, e))?;
            found.extend(
                listing
                    .objects
                    .into_iter()
                    .map(|o| (o.location.to_string(), o.size))
                    .filter(|(name, _)| name.starts_with(prefix)),
            );
        }
        Ok(found)
    }

    /// The metadata of archive `id`, `None` when there is none.
    pub async fn read_meta(&self, id: &ArchiveId) -> Result<Option<ArchiveMeta>, CatalogError> {
        let key = id.metadata_key();
        let bytes = match self.store.get(&Path::from(key.as_str())).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| CatalogError::store("read", &key, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(CatalogError::store("read", key, e)),
        };
        ArchiveMeta::from_json(&bytes)
            .map(Some)
            .map_err(|source| CatalogError::Metadata { key, source })
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
        match (&self.url, &self.s3) {
            (StoreUrl::S3 { .. }, Some((s3, prefix))) => {
                let full = match prefix {
                    Some(p) => format!("{p}/{key}"),
                    None => key.to_owned(),
                };
                let url = s3
                    .signed_url(Method::GET, &Path::from(full.as_str()), expires)
                    .await
                    .map_err(|e| CatalogError::store("sign", key, e))?;
                Ok(Some(url.to_string()))
            }
            (StoreUrl::File { root }, _) => {
                Ok(Some(format!("file://{}", local_path(root, key).display())))
            }
            _ => Ok(None),
        }
    }
}

fn local_path(root: &FsPath, key: &str) -> PathBuf {
    root.join(key)
}

fn s3_client(config: &ArchiveConfig, bucket: &str) -> Result<AmazonS3, CatalogError> {
    let (Some(id_file), Some(secret_file)) =
        (&config.access_key_id_file, &config.secret_access_key_file)
    else {
        return Err(CatalogError::Config(
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
    builder.build().map_err(CatalogError::Open)
}

/// Reads a secret from a file, trimmed. Its content is never logged or put in an error.
fn read_secret(what: &'static str, path: &FsPath) -> Result<String, CatalogError> {
    let text = fs::read_to_string(path).map_err(|source| CatalogError::CredentialFile {
        what,
        path: path.to_owned(),
        source,
    })?;
    let value = text.trim();
    if value.is_empty() {
        return Err(CatalogError::Config(format!(
            "{what} {} is empty",
            path.display()
        )));
    }
    Ok(value.to_owned())
}
