//! Multipart uploads that were started and never completed: listed and aborted.
//!
//! object_store has no `ListMultipartUploads`, so S3 is asked directly: a `GET
//! /<bucket>?uploads&prefix=…` signed with object_store's own SigV4 [`AwsAuthorizer`] and the
//! credentials of the store's client, answered in XML. A `file://` store's unfinished uploads
//! are object_store's staging files, `<key>#<n>` beside where the object would go; a
//! `memory://` store has none that outlive its process.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use berth_shared::archive::StoreUrl;
use object_store::MultipartId;
use object_store::aws::AwsAuthorizer;
use object_store::client::{HttpClient, HttpRequestBody};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use serde::Deserialize;

use super::{S3Handle, Store};

/// An upload started and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// The object's key, relative to the store URL's prefix.
    pub key: String,
    /// S3's upload id; for a `file://` store, the staging file's `#<n>` suffix.
    pub upload_id: String,
    /// When the upload was started (a staging file's modification time).
    pub initiated: SystemTime,
}

const STORE: &str = "S3";

impl Store {
    /// Unfinished uploads at the store's top level whose keys start with `prefix`.
    pub async fn list_uploads(&self, prefix: &str) -> object_store::Result<Vec<PendingUpload>> {
        match (&self.s3, &self.url) {
            (Some(s3), _) => s3.list_uploads(prefix).await,
            (None, StoreUrl::File { root }) => local_uploads(root.clone(), prefix.to_owned()).await,
            (None, _) => Ok(Vec::new()),
        }
    }

    /// Aborts `upload`; one that is already gone counts as aborted.
    pub async fn abort_upload(&self, key: &str, upload_id: &str) -> object_store::Result<()> {
        match (&self.s3, &self.url) {
            (Some(s3), _) => {
                let id: MultipartId = upload_id.to_owned();
                match s3.client.abort_multipart(&s3.full_path(key), &id).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            (None, StoreUrl::File { root }) => {
                let staged = staging_path(root, key, upload_id)?;
                match tokio_remove(staged).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(generic(e)),
                }
            }
            (None, _) => Ok(()),
        }
    }
}

impl S3Handle {
    pub(crate) fn full_path(&self, key: &str) -> Path {
        match &self.prefix {
            Some(p) => Path::from(format!("{p}/{key}").as_str()),
            None => Path::from(key),
        }
    }

    async fn list_uploads(&self, prefix: &str) -> object_store::Result<Vec<PendingUpload>> {
        let root = self.prefix.as_ref().map(|p| format!("{p}/"));
        let full = format!("{}{prefix}", root.as_deref().unwrap_or(""));
        let mut found = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut query = format!("uploads=&prefix={}", encode(&full));
            if let Some((key, id)) = &markers {
                query.push_str(&format!(
                    "&key-marker={}&upload-id-marker={}",
                    encode(key),
                    encode(id)
                ));
            }
            let page = self.list_page(&query).await?;
            for u in page.uploads {
                let Some(key) = u.key.strip_prefix(root.as_deref().unwrap_or("")) else {
                    continue;
                };
                // Top level only: `_metadata/…` and deeper keys are not archives.
                if key.contains('/') {
                    continue;
                }
                let initiated = chrono::DateTime::parse_from_rfc3339(&u.initiated)
                    .map(|t| SystemTime::from(t.to_utc()))
                    .map_err(generic)?;
                found.push(PendingUpload {
                    key: key.to_owned(),
                    upload_id: u.upload_id,
                    initiated,
                });
            }
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (true, Some(k), Some(i)) if !k.is_empty() => markers = Some((k, i)),
                _ => return Ok(found),
            }
        }
    }

    async fn list_page(&self, query: &str) -> object_store::Result<ListPage> {
        let url = format!("{}?{query}", self.bucket_endpoint);
        let credential = self.client.credentials().get_credential().await?;
        let mut request = http::Request::builder()
            .method(http::Method::GET)
            .uri(url.as_str())
            .body(HttpRequestBody::empty())
            .map_err(generic)?;
        AwsAuthorizer::new(&credential, "s3", &self.region).try_authorize(&mut request, None)?;
        let response = execute(&self.http, request).await?;
        let status = response.status();
        let body = response.into_body().bytes().await.map_err(generic)?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let code = xml_code(&text).unwrap_or_default();
            let source = format!("ListMultipartUploads answered {status} {code}").into();
            return Err(match status.as_u16() {
                401 => object_store::Error::Unauthenticated {
                    path: self.bucket_endpoint.clone(),
                    source,
                },
                403 => object_store::Error::PermissionDenied {
                    path: self.bucket_endpoint.clone(),
                    source,
                },
                501 => object_store::Error::NotImplemented {
                    operation: "ListMultipartUploads".into(),
                    implementer: self.bucket_endpoint.clone(),
                },
                _ => object_store::Error::Generic {
                    store: STORE,
                    source,
                },
            });
        }
        quick_xml::de::from_reader(body.as_ref()).map_err(generic)
    }
}

/// Sends `request`, retrying a few times on connection errors.
async fn execute(
    http: &HttpClient,
    request: http::Request<HttpRequestBody>,
) -> object_store::Result<http::Response<object_store::client::HttpResponseBody>> {
    let mut delay = Duration::from_millis(200);
    for attempt in 0.. {
        let copy = clone_request(&request);
        match http.execute(copy).await {
            Ok(r) if r.status().is_server_error() && attempt < 3 => {}
            Ok(r) => return Ok(r),
            Err(_) if attempt < 3 => {}
            Err(e) => return Err(generic(e)),
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    unreachable!("the loop returns")
}

fn clone_request(r: &http::Request<HttpRequestBody>) -> http::Request<HttpRequestBody> {
    let mut copy = http::Request::new(HttpRequestBody::empty());
    *copy.method_mut() = r.method().clone();
    *copy.uri_mut() = r.uri().clone();
    *copy.headers_mut() = r.headers().clone();
    copy
}

/// One page of `ListMultipartUploadsResult`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListPage {
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_key_marker: Option<String>,
    #[serde(default)]
    next_upload_id_marker: Option<String>,
    #[serde(default, rename = "Upload")]
    uploads: Vec<Upload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Upload {
    key: String,
    upload_id: String,
    initiated: String,
}

/// `<Code>…</Code>` of an S3 error body.
fn xml_code(body: &str) -> Option<&str> {
    let start = body.find("<Code>")? + "<Code>".len();
    let end = body[start..].find("</Code>")?;
    Some(&body[start..start + end])
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn generic(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: Box::new(e),
    }
}

/// `<root>/<key>#<n>`: object_store's staging file of an upload to `key`.
fn staging_path(root: &std::path::Path, key: &str, n: &str) -> object_store::Result<PathBuf> {
    let ok = !key.is_empty()
        && !key.contains('/')
        && !key.contains('#')
        && key != ".."
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit());
    if !ok {
        return Err(object_store::Error::Generic {
            store: "LocalFileSystem",
            source: format!("{key}#{n} is not a staging file of a top-level key").into(),
        });
    }
    Ok(root.join(format!("{key}#{n}")))
}

async fn tokio_remove(path: PathBuf) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || std::fs::remove_file(path))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// The staging files at the top of a `file://` store, `<key>#<n>`.
async fn local_uploads(root: PathBuf, prefix: String) -> object_store::Result<Vec<PendingUpload>> {
    let scan = move || -> std::io::Result<Vec<PendingUpload>> {
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((key, n)) = name.rsplit_once('#') else {
                continue;
            };
            if !key.starts_with(&prefix) || staging_path(&root, key, n).is_err() {
                continue;
            }
            let meta = entry.metadata()?;
            if !meta.is_file() {
                continue;
            }
            found.push(PendingUpload {
                key: key.to_owned(),
                upload_id: n.to_owned(),
                initiated: meta.modified()?,
            });
        }
        Ok(found)
    };
    tokio::task::spawn_blocking(scan)
        .await
        .map_err(|source| object_store::Error::JoinError { source })?
        .map_err(generic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_of_uploads_parses() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>p/web:2</NextKeyMarker><NextUploadIdMarker>id2</NextUploadIdMarker>
  <MaxUploads>2</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>p/web:1</Key><UploadId>id1</UploadId><Initiator><ID>x</ID></Initiator>
    <StorageClass>STANDARD</StorageClass><Initiated>2026-01-02T03:04:05.000Z</Initiated></Upload>
  <Upload><Key>p/a&amp;b</Key><UploadId>id2</UploadId><Initiated>2026-01-02T03:04:06Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        let page: ListPage = quick_xml::de::from_str(xml).unwrap();
        assert!(page.is_truncated);
        assert_eq!(page.next_key_marker.as_deref(), Some("p/web:2"));
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(page.uploads[1].key, "p/a&b");
        let empty: ListPage = quick_xml::de::from_str(
            "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>",
        )
        .unwrap();
        assert!(empty.uploads.is_empty());
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("p/web:1 x"), "p%2Fweb%3A1%20x");
        assert_eq!(
            xml_code("<Error><Code>NoSuchUpload</Code></Error>"),
            Some("NoSuchUpload")
        );
    }

    #[test]
    fn only_top_level_staging_names_are_paths() {
        let root = std::path::Path::new("/r");
        assert!(staging_path(root, "web:1:-:2", "17").is_ok());
        for (key, n) in [
            ("a/b", "1"),
            ("..", "1"),
            ("web", "x"),
            ("web", ""),
            ("", "1"),
        ] {
            assert!(staging_path(root, key, n).is_err(), "{key}#{n}");
        }
    }
}
