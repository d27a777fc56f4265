//! s3s-fs with `ListMultipartUploads`, which s3s-fs 0.14 answers `NotImplemented`: every
//! other call goes to s3s-fs unchanged, and the listing is read from s3s-fs's own on-disk
//! state (`.upload-<id>.json` while an upload is pending, its key in the name of
//! `.bucket-<b64>.object-<b64>.upload-<id>.metadata.json`). s3s checks the request's SigV4
//! signature and writes the XML, so a client's real call is what gets tested.
//!
//! Shared by `berth-tests` (`tests/src/s3.rs`) and the agent's tests (through `#[path]`).

use std::path::PathBuf;

use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result};
use s3s_fs::FileSystem;

/// s3s-fs over `root`, plus `ListMultipartUploads`.
#[derive(Debug)]
pub struct WithUploadListing {
    fs: FileSystem,
    root: PathBuf,
}

impl WithUploadListing {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            fs: FileSystem::new(&root).expect("s3s-fs"),
            root,
        }
    }

    /// Pending uploads of `bucket`: (key, upload id, initiated), sorted by key then id.
    fn pending(&self, bucket: &str) -> Vec<(String, String, std::time::SystemTime)> {
        let bucket_part = format!(".bucket-{}.object-", encode(bucket.as_bytes()));
        let names: Vec<String> = std::fs::read_dir(&self.root)
            .expect("s3s-fs root")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        let mut found = Vec::new();
        for name in &names {
            let Some(id) = name
                .strip_prefix(".upload-")
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let suffix = format!(".upload-{id}.metadata.json");
            let key = names.iter().find_map(|n| {
                let encoded = n.strip_prefix(&bucket_part)?.strip_suffix(&suffix)?;
                String::from_utf8(decode(encoded)?).ok()
            });
            let Some(key) = key else { continue };
            let initiated = std::fs::metadata(self.root.join(name))
                .and_then(|m| m.modified())
                .expect("upload info file");
            found.push((key, id.to_owned(), initiated));
        }
        found.sort();
        found
    }
}

#[async_trait::async_trait]
impl S3 for WithUploadListing {
    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = usize::try_from(input.max_uploads.unwrap_or(1000).clamp(1, 1000)).unwrap_or(1000);
        let after = input
            .key_marker
            .clone()
            .filter(|k| !k.is_empty())
            .map(|k| (k, input.upload_id_marker.clone().unwrap_or_default()));
        let mut all: Vec<_> = self
            .pending(&input.bucket)
            .into_iter()
            .filter(|(key, _, _)| key.starts_with(&prefix))
            .filter(|(key, id, _)| after.as_ref().is_none_or(|(k, i)| (key, id) > (k, i)))
            .collect();
        let truncated = all.len() > max;
        all.truncate(max);
        let last = all.last().map(|(k, i, _)| (k.clone(), i.clone()));
        let uploads = all
            .into_iter()
            .map(|(key, upload_id, initiated)| MultipartUpload {
                key: Some(key),
                upload_id: Some(upload_id),
                initiated: Some(Timestamp::from(initiated)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: last.as_ref().filter(|_| truncated).map(|l| l.0.clone()),
            next_upload_id_marker: last.filter(|_| truncated).map(|l| l.1),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.fs.create_bucket(req).await
    }
    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.fs.copy_object(req).await
    }
    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.fs.delete_bucket(req).await
    }
    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }
    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }
    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.fs.get_bucket_location(req).await
    }
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.fs.get_object(req).await
    }
    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }
    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.fs.head_object(req).await
    }
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.fs.list_buckets(req).await
    }
    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.fs.list_objects(req).await
    }
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.fs.list_objects_v2(req).await
    }
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.fs.put_object(req).await
    }
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.fs.create_multipart_upload(req).await
    }
    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.fs.upload_part(req).await
    }
    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.fs.upload_part_copy(req).await
    }
    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.fs.list_parts(req).await
    }
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.fs.complete_multipart_upload(req).await
    }
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.fs.abort_multipart_upload(req).await
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64, URL-safe alphabet, no padding (s3s-fs's file-name encoding).
fn encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            let v = ALPHABET.iter().position(|a| a == c)? as u32;
            n |= v << (18 - 6 * i);
        }
        for i in 0..chunk.len().checked_sub(1)? {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_round_trips() {
        for s in ["", "a", "ab", "abc", "berth/test/web:0190:-:17"] {
            let e = super::encode(s.as_bytes());
            assert!(!e.contains('='));
            assert_eq!(super::decode(&e).unwrap(), s.as_bytes(), "{s} {e}");
        }
    }
}
