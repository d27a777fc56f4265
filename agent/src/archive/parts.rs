//! A multipart upload fed in chunks: parts of at least `part_size` bytes go up concurrently,
//! at most `concurrency` at a time. Unlike object_store's `WriteMultipart`, the part size may
//! grow mid-upload (once the pre-scan, running alongside, knows the source is huge): S3,
//! Spaces and MinIO accept parts of different sizes, all but the last at least 5 MiB.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use object_store::{MultipartUpload, PutPayloadMut, PutResult};
use tokio::task::JoinSet;

/// Parts in flight and the one being filled.
pub(crate) struct PartWriter {
    upload: Box<dyn MultipartUpload>,
    buf: PutPayloadMut,
    part_size: usize,
    tasks: JoinSet<object_store::Result<()>>,
    /// Parts started.
    sent: usize,
    /// Bytes of parts the store acknowledged.
    stored: Arc<AtomicU64>,
}

impl PartWriter {
    pub fn new(upload: Box<dyn MultipartUpload>, part_size: usize, stored: Arc<AtomicU64>) -> Self {
        Self {
            upload,
            buf: PutPayloadMut::new(),
            part_size,
            tasks: JoinSet::new(),
            sent: 0,
            stored,
        }
    }

    /// Raises the part size for the parts still to come.
    pub fn grow_parts(&mut self, part_size: usize) {
        self.part_size = self.part_size.max(part_size);
    }

    /// Waits until fewer than `max` parts are in flight, failing if one failed.
    pub async fn wait_for_capacity(&mut self, max: usize) -> object_store::Result<()> {
        while self.tasks.len() >= max.max(1) {
            self.join_one().await?;
        }
        Ok(())
    }

    /// Adds a chunk; a full part starts uploading at once.
    pub fn put(&mut self, chunk: Bytes) {
        self.buf.push(chunk);
        if self.buf.content_length() >= self.part_size {
            self.send_part();
        }
    }

    /// Uploads what is left, waits for every part, and completes the upload. On failure the
    /// upload is still there: the caller aborts it (and knows whether that worked).
    pub async fn finish(&mut self) -> object_store::Result<PutResult> {
        if self.buf.content_length() > 0 || self.sent == 0 {
            self.send_part();
        }
        while !self.tasks.is_empty() {
            self.join_one().await?;
        }
        self.upload.complete().await
    }

    /// Stops the parts in flight and aborts the upload, so the store keeps nothing.
    pub async fn abort(&mut self) -> object_store::Result<()> {
        self.tasks.shutdown().await;
        self.upload.abort().await
    }

    fn send_part(&mut self) {
        let part = std::mem::take(&mut self.buf).freeze();
        let n = part.content_length() as u64;
        let upload = self.upload.put_part(part);
        let stored = self.stored.clone();
        self.sent += 1;
        self.tasks.spawn(async move {
            upload.await?;
            stored.fetch_add(n, Ordering::Relaxed);
            Ok(())
        });
    }

    async fn join_one(&mut self) -> object_store::Result<()> {
        match self.tasks.join_next().await {
            Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(join)) => Err(object_store::Error::JoinError { source: join }),
            None => Ok(()),
        }
    }
}
