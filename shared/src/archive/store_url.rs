//! Where archives live, as a URL: `file:///abs/dir`, `s3://bucket[/prefix]` or `memory://`.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

/// A parsed archive store URL. Endpoint, region and credentials of S3 come from config, not
/// from the URL, so the URL can be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A local directory (the embedded default).
    File { root: PathBuf },
    /// A bucket and an optional key prefix (`a/b`, without slashes at either end).
    S3 {
        bucket: String,
        prefix: Option<String>,
    },
    /// A store in this process's memory: tests only.
    Memory,
}

/// Why a store URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreUrlError {
    #[error(
        "archive store url {0:?} has an unknown scheme; use file:///dir, s3://bucket/prefix or \
         memory://"
    )]
    Scheme(String),
    #[error(
        "archive store url {0:?} must name an absolute directory without '..', e.g. file:///var/lib/berth/archives"
    )]
    FilePath(String),
    #[error(
        "bucket {bucket:?} in {url:?} is not a valid bucket name (3 to 63 lowercase letters, \
         digits, '.' or '-')"
    )]
    Bucket { url: String, bucket: String },
    #[error(
        "prefix {prefix:?} in {url:?} is not allowed: use '/'-separated parts of letters, digits, \
         '.', '_' and '-', none of them '.' or '..'"
    )]
    Prefix { url: String, prefix: String },
}

impl FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if let Some(path) = url.strip_prefix("file://") {
            let path = Path::new(path);
            let clean = path.is_absolute()
                && path
                    .components()
                    .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
            if !clean {
                return Err(StoreUrlError::FilePath(url.to_owned()));
            }
            return Ok(StoreUrl::File {
                root: path.to_path_buf(),
            });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if !valid_bucket(bucket) {
                return Err(StoreUrlError::Bucket {
                    url: url.to_owned(),
                    bucket: bucket.to_owned(),
                });
            }
            let prefix = prefix.trim_end_matches('/');
            if prefix.is_empty() {
                return Ok(StoreUrl::S3 {
                    bucket: bucket.to_owned(),
                    prefix: None,
                });
            }
            let ok = prefix.split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            });
            if !ok {
                return Err(StoreUrlError::Prefix {
                    url: url.to_owned(),
                    prefix: prefix.to_owned(),
                });
            }
            return Ok(StoreUrl::S3 {
                bucket: bucket.to_owned(),
                prefix: Some(prefix.to_owned()),
            });
        }
        if url == "memory://" || url == "memory:" {
            return Ok(StoreUrl::Memory);
        }
        Err(StoreUrlError::Scheme(url.to_owned()))
    }
}

impl StoreUrl {
    pub fn is_s3(&self) -> bool {
        matches!(self, StoreUrl::S3 { .. })
    }
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'))
        && b.starts_with(|c: char| c.is_ascii_alphanumeric())
        && b.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !b.contains("..")
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::File { root } => write!(f, "file://{}", root.display()),
            StoreUrl::S3 {
                bucket,
                prefix: None,
            } => write!(f, "s3://{bucket}"),
            StoreUrl::S3 {
                bucket,
                prefix: Some(p),
            } => write!(f, "s3://{bucket}/{p}"),
            StoreUrl::Memory => f.write_str("memory://"),
        }
    }
}
