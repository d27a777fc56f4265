//! The archive bucket as both the coordinator (its catalog) and the agents (create and
//! restore) open it: an object_store backend chosen by the store URL, S3 credentials read from
//! files, and the one listing both need — the top-level objects whose names start with a
//! string (`<app>:`), which S3 answers server-side without descending into `_metadata/`.
//!
//! It also lists and aborts uploads that were started and never finished (`uploads.rs`).
//!
//! **Invariant:** a credential's content is never logged or put in an error; errors name the
//! file it came from.

mod uploads;

use std::fs;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_shared::archive::StoreUrl;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{HttpClient, HttpConnector, ReqwestConnector};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

/// How to reach an `s3://` store, borrowed from a config's `[archive]` table.
#[derive(Debug, Clone, Copy)]
pub struct S3Settings<'a> {
    /// e.g. `https://fra1.digitaloceanspaces.com`; `None`: AWS. `http://` is allowed only
    /// because it is written here.
    pub endpoint: Option<&'a str>,
    pub region: &'a str,
    pub access_key_id_file: Option<&'a FsPath>,
    pub secret_access_key_file: Option<&'a FsPath>,
    pub session_token_file: Option<&'a FsPath>,
    pub virtual_hosted_style: bool,
    /// Retries of one request on transient failures.
    pub max_retries: usize,
    /// Longest time one request may take.
    pub request_timeout: Duration,
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid archive store configuration: {0}")]
    Config(String),
    #[error("cannot read {what} {path}")]
    CredentialFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the archive store")]
    Client(#[source] object_store::Error),
}

pub use uploads::PendingUpload;

/// An object at the store's top level: its name (relative to the URL's prefix) and size.
pub type Listed = (String, u64);

/// An opened store; keys are relative to the URL's prefix.
#[derive(Debug, Clone)]
pub struct Store {
    pub url: StoreUrl,
    pub objects: Arc<dyn ObjectStore>,
    /// The raw S3 client and what it was built from: listing by string prefix, signing,
    /// multipart uploads by id.
    s3: Option<S3Handle>,
}

/// The raw S3 client of an `s3://` store.
#[derive(Debug, Clone)]
struct S3Handle {
    client: Arc<AmazonS3>,
    /// The URL's prefix, without slashes at either end.
    prefix: Option<String>,
    /// `https://endpoint/bucket` or, virtual-hosted, the endpoint as configured.
    bucket_endpoint: String,
    region: String,
    /// For the requests object_store has no call for (`ListMultipartUploads`).
    http: HttpClient,
}

/// Whether a `file://` store syncs what it writes before the write counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalWrites {
    /// Synced (an agent writing archives it must not lose).
    Synced,
    /// Left to the page cache (the coordinator only writes small metadata it can rewrite).
    Buffered,
}

impl Store {
    /// Opens the store `url` names (reading S3 credential files; no network). A `file://`
    /// directory that does not exist yet is an empty store.
    pub fn open(
        url: StoreUrl,
        s3: &S3Settings<'_>,
        writes: LocalWrites,
    ) -> Result<Self, OpenError> {
        let fsync = writes == LocalWrites::Synced;
        match &url {
            StoreUrl::Memory => Ok(Self::from_store(url, Arc::new(InMemory::new()))),
            // An existing root is the store's root as is; one not made yet is reached through
            // a prefix, so a coordinator can open the store before any agent wrote to it.
            StoreUrl::File { root } if root.is_dir() => {
                let local = LocalFileSystem::new_with_prefix(root)
                    .map_err(OpenError::Client)?
                    .with_fsync(fsync);
                Ok(Self::from_store(url, Arc::new(local)))
            }
            StoreUrl::File { root } => {
                let root = Path::from(root.to_string_lossy().as_ref());
                let local = LocalFileSystem::new().with_fsync(fsync);
                Ok(Self::from_store(
                    url,
                    Arc::new(PrefixStore::new(local, root)),
                ))
            }
            StoreUrl::S3 { bucket, prefix } => {
                let client = Arc::new(s3_client(s3, bucket)?);
                let objects: Arc<dyn ObjectStore> = match prefix {
                    Some(p) => Arc::new(PrefixStore::new(Arc::clone(&client), p.as_str())),
                    None => client.clone(),
                };
                let options = ClientOptions::new()
                    .with_timeout(s3.request_timeout)
                    .with_allow_http(s3.endpoint.is_some_and(|e| e.starts_with("http://")));
                let http = ReqwestConnector::default()
                    .connect(&options)
                    .map_err(OpenError::Client)?;
                let bucket_endpoint = match (s3.endpoint, s3.virtual_hosted_style) {
                    (Some(e), true) => e.trim_end_matches('/').to_owned(),
                    (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
                    (None, true) => format!("https://{bucket}.s3.{}.amazonaws.com", s3.region),
                    (None, false) => format!("https://s3.{}.amazonaws.com/{bucket}", s3.region),
                };
                let handle = S3Handle {
                    client,
                    prefix: prefix.clone(),
                    bucket_endpoint,
                    region: s3.region.to_owned(),
                    http,
                };
                Ok(Self {
                    url,
                    objects,
                    s3: Some(handle),
                })
            }
        }
    }

    /// A store over an object store the caller made (tests share one `InMemory` this way).
    pub fn from_store(url: StoreUrl, objects: Arc<dyn ObjectStore>) -> Self {
        Self {
            url,
            objects,
            s3: None,
        }
    }

    /// The S3 client and the full key of `key`, when the store is S3.
    pub fn s3_key(&self, key: &str) -> Option<(&AmazonS3, Path)> {
        let s3 = self.s3.as_ref()?;
        Some((&s3.client, s3.full_path(key)))
    }

    /// Multipart uploads by id, keys relative to the URL's prefix, when the store is S3:
    /// what an upload that must be journaled (and aborted later by id) goes through.
    pub fn multipart(&self) -> Option<Arc<dyn MultipartStore>> {
        let s3 = self.s3.as_ref()?;
        Some(match &s3.prefix {
            Some(p) => Arc::new(PrefixStore::new(AmazonS3::clone(&s3.client), p.as_str())),
            None => Arc::new(AmazonS3::clone(&s3.client)),
        })
    }

    /// Top-level objects whose names start with `prefix` (`""`: all), from key names only.
    pub async fn list_top(&self, prefix: &str) -> object_store::Result<Vec<Listed>> {
        let mut found = Vec::new();
        let Some(S3Handle {
            client,
            prefix: root,
            ..
        }) = &self.s3
        else {
            let listing = self.objects.list_with_delimiter(None).await?;
            found.extend(
                listing
                    .objects
                    .into_iter()
                    .map(|o| (o.location.to_string(), o.size))
                    .filter(|(name, _)| name.starts_with(prefix)),
            );
            return Ok(found);
        };
        let full = match root {
            Some(r) => format!("{r}/{prefix}"),
            None => prefix.to_owned(),
        };
        let strip = root.as_ref().map_or(0, |r| r.len() + 1);
        let mut token = None;
        loop {
            let page = client
                .list_paginated(
                    (!full.is_empty()).then_some(full.as_str()),
                    PaginatedListOptions {
                        delimiter: Some("/".into()),
                        page_token: token.take(),
                        ..Default::default()
                    },
                )
                .await?;
            found.extend(
                page.result
                    .objects
                    .into_iter()
                    .map(|o| (o.location.as_ref()[strip..].to_owned(), o.size)),
            );
            match page.page_token {
                Some(t) => token = Some(t),
                None => return Ok(found),
            }
        }
    }
}

fn s3_client(s3: &S3Settings<'_>, bucket: &str) -> Result<AmazonS3, OpenError> {
    let (Some(id_file), Some(secret_file)) = (s3.access_key_id_file, s3.secret_access_key_file)
    else {
        return Err(OpenError::Config(
            "s3:// needs archive.access_key_id_file and archive.secret_access_key_file".into(),
        ));
    };
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(s3.region)
        .with_access_key_id(read_secret("archive.access_key_id_file", id_file)?)
        .with_secret_access_key(read_secret("archive.secret_access_key_file", secret_file)?)
        .with_virtual_hosted_style_request(s3.virtual_hosted_style)
        .with_retry(RetryConfig {
            max_retries: s3.max_retries,
            ..RetryConfig::default()
        })
        .with_client_options(ClientOptions::new().with_timeout(s3.request_timeout));
    if let Some(token_file) = s3.session_token_file {
        builder = builder.with_token(read_secret("archive.session_token_file", token_file)?);
    }
    if let Some(endpoint) = s3.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    builder.build().map_err(OpenError::Client)
}

/// Reads a secret from a file, trimmed. Its content is never logged or put in an error.
fn read_secret(what: &'static str, path: &FsPath) -> Result<String, OpenError> {
    let text = fs::read_to_string(path).map_err(|source| OpenError::CredentialFile {
        what,
        path: path.to_owned(),
        source,
    })?;
    let value = text.trim();
    if value.is_empty() {
        return Err(OpenError::Config(format!(
            "{what} {} is empty",
            path.display()
        )));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings<'a>(id: Option<&'a FsPath>, secret: Option<&'a FsPath>) -> S3Settings<'a> {
        S3Settings {
            endpoint: Some("http://127.0.0.1:9"),
            region: "us-east-1",
            access_key_id_file: id,
            secret_access_key_file: secret,
            session_token_file: None,
            virtual_hosted_style: false,
            max_retries: 0,
            request_timeout: Duration::from_secs(1),
        }
    }

    fn s3_url() -> StoreUrl {
        StoreUrl::S3 {
            bucket: "b".into(),
            prefix: Some("p".into()),
        }
    }

    #[test]
    fn credentials_come_from_files_and_never_appear_in_errors() {
        let dir = std::env::temp_dir().join(format!("berth-objstore-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (id, secret, empty) = (dir.join("id"), dir.join("secret"), dir.join("empty"));
        fs::write(&id, "AKIDEXAMPLE\n").unwrap();
        fs::write(&secret, "very-secret-value\n").unwrap();
        fs::write(&empty, "\n").unwrap();

        let e = Store::open(s3_url(), &settings(None, None), LocalWrites::Buffered).unwrap_err();
        assert!(e.to_string().contains("access_key_id_file"), "{e}");
        let e = Store::open(
            s3_url(),
            &settings(Some(&id), Some(&empty)),
            LocalWrites::Buffered,
        )
        .unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
        let missing = dir.join("missing");
        let e = Store::open(
            s3_url(),
            &settings(Some(&id), Some(&missing)),
            LocalWrites::Buffered,
        )
        .unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");

        let store = Store::open(
            s3_url(),
            &settings(Some(&id), Some(&secret)),
            LocalWrites::Buffered,
        )
        .unwrap();
        let (_, key) = store.s3_key("app:x").unwrap();
        assert_eq!(key.as_ref(), "p/app:x");
        assert!(!format!("{store:?}").contains("very-secret-value"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn listing_keeps_the_top_level_and_the_prefix() {
        use object_store::{ObjectStoreExt, PutPayload};
        let store = Store::from_store(StoreUrl::Memory, Arc::new(InMemory::new()));
        for key in ["web:1", "web:2", "webx:1", "_metadata/1"] {
            store
                .objects
                .put(&Path::from(key), PutPayload::from_static(b"abc"))
                .await
                .unwrap();
        }
        let mut names: Vec<String> = store
            .list_top("web:")
            .await
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        names.sort();
        assert_eq!(names, ["web:1", "web:2"]);
        assert_eq!(store.list_top("").await.unwrap().len(), 3);
    }
}
