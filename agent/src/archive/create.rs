//! Creating an archive: tar + zstd on blocking threads streaming through a bounded pipe into
//! a multipart upload (a pre-scan alongside gives progress totals), then check the object,
//! then write its metadata.
//! Any failure or cancellation aborts the upload: no object and no metadata remain. The
//! upload is journaled before its first part (`upload.rs`), so one this process cannot abort
//! (it is killed, or the store refuses) is aborted later.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use berth_shared::archive::{
    ArchiveId, ArchiveKey, ArchiveMeta, ArchiveProgress, FORMAT_TAR_ZSTD, Phase, SOURCE_APP_DIR,
    SOURCE_VOLUMES,
};
use berth_shared::{AppName, StackName};
use bytes::Bytes;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::journal::{Journal, JournaledUpload};
use super::pack::{self, Compression, PackCounters, Packed, Totals, Tree};
use super::parts::PartWriter;
use super::pipe::{CAPACITY, ChunkSender};
use super::seal::{ENCRYPTION_AGE, Recipients};
use super::store::Bucket;
use super::{ArchiveError, Plan, upload};

/// S3 allows at most 10,000 parts; Berth plans for fewer to leave room for estimates.
const MAX_PARTS: u64 = 9_000;
const MIB: u64 = 1 << 20;

/// A create that passed its checks, ready to run.
pub(crate) struct Job<'a> {
    pub bucket: &'a Bucket,
    /// Where the upload is journaled (`None`: a `memory://` store).
    pub journal: Option<&'a Journal>,
    pub tree: &'a Tree,
    pub app: AppName,
    pub id: ArchiveId,
    pub key: ArchiveKey,
    pub labels: Vec<String>,
    pub plan: Plan,
    /// The stack a volume archive was made of, recorded in its metadata.
    pub stack: Option<StackName>,
    /// Who the archive is encrypted to (`None`: not encrypted).
    pub recipients: Option<Arc<Recipients>>,
    /// Write nothing when the source's listing digest equals this one (the newest good
    /// archive's, for a schedule's `skip_unchanged`).
    pub unless_digest: Option<&'a str>,
}

/// What a create produced.
#[derive(Debug, Clone)]
pub(crate) struct Created {
    pub size: u64,
    pub sha256: String,
    pub tar_bytes: u64,
    pub entries: u64,
    /// The source's listing digest, taken before packing began.
    pub source_digest: String,
}

/// How a create ended.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Created(Created),
    /// The source's listing matched `unless_digest`: nothing was written.
    Unchanged {
        source_digest: String,
    },
}

pub(crate) async fn run(
    job: Job<'_>,
    progress: &watch::Sender<ArchiveProgress>,
    cancel: &CancellationToken,
) -> Result<Outcome, ArchiveError> {
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(stop.clone());
    progress.send_replace(ArchiveProgress::default());
    let counters = Arc::new(PackCounters::default());
    let uploaded = Arc::new(AtomicU64::new(0));
    let totals = Arc::new(ScanTotals::default());
    // The pre-scan (a stat walk) gives progress totals and, for a huge source, the part size.
    // It runs alongside the archive, unless a schedule asked to compare with the newest
    // archive first: then it runs first, and a match writes nothing.
    let mut part = job.plan.part_size;
    let mut scan = match job.unless_digest {
        None => {
            let (tree, stop) = (job.tree.clone(), stop.clone());
            Some(tokio::task::spawn_blocking(move || {
                pack::scan(&tree, &stop)
            }))
        }
        Some(digest) => {
            let (tree, stop) = (job.tree.clone(), stop.clone());
            let scan = tokio::task::spawn_blocking(move || pack::scan(&tree, &stop));
            let found = tokio::select! {
                r = scan => r.map_err(ArchiveError::Join)??,
                () = cancel.cancelled() => return Err(ArchiveError::Cancelled),
            };
            if found.digest == digest {
                tracing::info!(app = %job.app, digest, "source unchanged; nothing archived");
                return Ok(Outcome::Unchanged {
                    source_digest: found.digest,
                });
            }
            totals.set(&found);
            part = part_size(&job.plan, &found);
            None
        }
    };
    let path = ObjectPath::from(job.key.as_str());
    let started = upload::start(job.bucket, job.journal, &job.id, &job.key).await?;
    let entry = started.entry;
    let mut writer = PartWriter::new(started.upload, part, uploaded.clone());
    tracing::info!(key = %job.key, level = job.plan.level, "archiving");

    let (tx, mut rx) = mpsc::channel::<Bytes>(CAPACITY);
    let producer = {
        let (tree, counters, stop) = (job.tree.clone(), counters.clone(), stop.clone());
        let recipients = job.recipients.clone();
        let compression = Compression {
            level: job.plan.level,
            workers: job.plan.workers,
        };
        tokio::task::spawn_blocking(move || {
            let out = ChunkSender::new(tx, counters.compressed.clone());
            let seal = recipients.as_deref();
            pack::pack(&tree, out, compression, seal, &counters, &stop)
        })
    };
    let report = |phase| {
        progress.send_replace(ArchiveProgress {
            phase,
            bytes_done: counters.bytes_read.load(Ordering::Relaxed),
            bytes_total: totals.bytes.load(Ordering::Relaxed),
            entries_done: counters.entries.load(Ordering::Relaxed),
            entries_total: totals.entries.load(Ordering::Relaxed),
            bytes_transformed: counters.compressed.load(Ordering::Relaxed),
            bytes_stored: uploaded.load(Ordering::Relaxed),
        });
    };
    let pumped = tokio::select! {
        r = pump(&mut rx, &mut writer, scan.as_mut(), &totals, job.plan, job.key.as_str(), &report) => r,
        () = cancel.cancelled() => Err(ArchiveError::Cancelled),
    };
    // Stop the producer (if it is still running) and learn how it ended.
    stop.store(pumped.is_err(), Ordering::Relaxed);
    drop(rx);
    let produced = producer.await.map_err(ArchiveError::Join);
    let packed: Packed = match (pumped, produced) {
        (Ok(()), Ok(Ok(packed))) => packed,
        (Err(e), _) | (Ok(()), Err(e)) | (Ok(()), Ok(Err(e))) => {
            give_up(&mut writer, &job, entry.as_ref()).await;
            return Err(e);
        }
    };
    report(Phase::Verifying);
    // Not cancellable: dropping a completing upload could leave an object nobody tracks.
    // It takes at most one part upload and the completion call; cancellation is honoured
    // right after, by deleting the object.
    if let Err(e) = writer.finish().await {
        give_up(&mut writer, &job, entry.as_ref()).await;
        return Err(ArchiveError::store(
            "complete upload of",
            job.key.as_str(),
            e,
        ));
    }
    upload::completed(job.journal, entry.as_ref());
    report(Phase::Verifying);
    let head = job.bucket.store.head(&path).await;
    match head {
        Ok(meta) if meta.size == packed.size => {}
        Ok(meta) => {
            job.bucket.delete_quietly(job.key.as_str()).await;
            return Err(ArchiveError::Verify {
                key: job.key.to_string(),
                expected: packed.size,
                found: meta.size,
            });
        }
        Err(e) => {
            job.bucket.delete_quietly(job.key.as_str()).await;
            return Err(ArchiveError::store("check", job.key.as_str(), e));
        }
    }
    if cancel.is_cancelled() {
        job.bucket.delete_quietly(job.key.as_str()).await;
        return Err(ArchiveError::Cancelled);
    }
    // Volumes read while something of the stack ran may not be consistent: such an
    // archive is not kept.
    if let (Tree::Volumes(_), Some(stack)) = (job.tree, &job.stack) {
        let checked =
            super::volumes::still_undeployed(job.app.as_str(), stack, "archive the volumes of")
                .await;
        if let Err(e) = checked {
            job.bucket.delete_quietly(job.key.as_str()).await;
            return Err(e);
        }
    }
    let mut meta = ArchiveMeta::new(job.id.as_str(), job.app.as_str(), job.key.ts());
    meta.labels = job.labels;
    meta.push_size(packed.size);
    meta.sha256 = Some(packed.sha256.clone());
    meta.format = Some(FORMAT_TAR_ZSTD.to_owned());
    meta.berth_version = Some(env!("CARGO_PKG_VERSION").to_owned());
    meta.index = Some(job.key.index().unwrap_or("-").to_owned());
    meta.tar_bytes = Some(packed.tar_bytes);
    meta.entries = Some(packed.entries);
    meta.source_digest = Some(packed.source_digest.clone());
    if let Some(recipients) = &job.recipients {
        meta.encryption = Some(ENCRYPTION_AGE.to_owned());
        meta.recipients = Some(recipients.names.clone());
        meta.plaintext_sha256 = packed.plaintext_sha256.clone();
    }
    match job.tree {
        Tree::AppDir(_) => meta.source = Some(SOURCE_APP_DIR.to_owned()),
        Tree::Volumes(volumes) => {
            meta.source = Some(SOURCE_VOLUMES.to_owned());
            meta.stack = job.stack.as_ref().map(StackName::to_string);
            meta.volumes = Some(volumes.iter().map(|(name, _)| name.clone()).collect());
        }
    }
    if let Err(e) = job.bucket.write_meta(&meta).await {
        job.bucket.delete_quietly(job.key.as_str()).await;
        return Err(e);
    }
    report(Phase::Done);
    Ok(Outcome::Created(Created {
        size: packed.size,
        sha256: packed.sha256,
        tar_bytes: packed.tar_bytes,
        entries: packed.entries,
        source_digest: packed.source_digest,
    }))
}

/// Aborts the upload after a failure or a cancel. Its journal entry goes only once the store
/// confirmed the abort; otherwise a restart, a retry of this archive or the coordinator's
/// sweep aborts it.
async fn give_up(writer: &mut PartWriter, job: &Job<'_>, entry: Option<&JournaledUpload>) {
    match writer.abort().await {
        Ok(()) => upload::completed(job.journal, entry),
        Err(e) => tracing::warn!(
            key = %job.key,
            upload_id = entry.and_then(|e| e.upload_id.as_deref()).unwrap_or("-"),
            error = %e,
            "cannot abort the multipart upload; it stays journaled and is aborted when the \
             agent starts again, by a retry of this archive, or by the coordinator's sweep"
        ),
    }
}

/// The pre-scan's totals, once known (zero before).
#[derive(Debug, Default)]
struct ScanTotals {
    entries: AtomicU64,
    bytes: AtomicU64,
}

impl ScanTotals {
    fn set(&self, found: &Totals) {
        self.entries.store(found.entries, Ordering::Relaxed);
        self.bytes.store(found.bytes, Ordering::Relaxed);
    }
}

/// Moves chunks from the pipe into the upload, waiting while `plan.concurrency` parts are in
/// flight; takes the pre-scan's totals when it ends (if it runs alongside); reports progress
/// at least twice a second.
async fn pump(
    rx: &mut mpsc::Receiver<Bytes>,
    writer: &mut PartWriter,
    mut scan: Option<&mut JoinHandle<Result<Totals, ArchiveError>>>,
    totals: &ScanTotals,
    plan: Plan,
    key: &str,
    report: &impl Fn(Phase),
) -> Result<(), ArchiveError> {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            chunk = rx.recv() => {
                let Some(chunk) = chunk else { break };
                writer
                    .wait_for_capacity(plan.concurrency)
                    .await
                    .map_err(|e| ArchiveError::store("upload part of", key, e))?;
                writer.put(chunk);
                report(Phase::Archiving);
            }
            found = async { scan.as_deref_mut().expect("guarded").await }, if scan.is_some() => {
                scan = None;
                let found = found.map_err(ArchiveError::Join)??;
                totals.set(&found);
                writer.grow_parts(part_size(&plan, &found));
            }
            _ = tick.tick() => report(Phase::Archiving),
        }
    }
    if let Some(scan) = scan {
        totals.set(&scan.await.map_err(ArchiveError::Join)??);
    }
    Ok(())
}

/// The part size: the configured one, larger when the source would need too many parts.
fn part_size(plan: &Plan, totals: &Totals) -> usize {
    let tar_estimate = totals.bytes + totals.entries * 1024 + 10_240;
    let needed = tar_estimate.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    usize::try_from(needed.max(plan.part_size as u64)).unwrap_or(usize::MAX)
}

/// Tells the blocking producer to stop when the create is dropped (its task cancelled).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::pipe::CHUNK;

    fn plan(part_mib: usize, concurrency: usize) -> Plan {
        Plan {
            level: 3,
            workers: 2,
            part_size: part_mib << 20,
            concurrency,
        }
    }

    #[test]
    fn parts_grow_only_for_sources_that_would_need_too_many() {
        let small = Totals {
            entries: 10,
            bytes: 1 << 30,
            ..Totals::default()
        };
        assert_eq!(part_size(&plan(8, 4), &small), 8 << 20);
        let huge = Totals {
            entries: 1000,
            bytes: 200 << 30,
            ..Totals::default()
        };
        let size = part_size(&plan(8, 4), &huge) as u64;
        assert!(size > 8 << 20 && size.is_multiple_of(MIB));
        assert!(huge.bytes / size < MAX_PARTS, "{size}");
    }

    #[test]
    fn the_default_pipeline_holds_well_under_128_mib_in_flight() {
        // The pipe's chunks, the part being filled and the parts being uploaded; zstd's own
        // buffers (about 10 MiB per worker with 2 MiB jobs) come on top.
        let c = crate::archive::ArchiveConfig::default();
        let parts = (c.part_size_mib as usize) << 20;
        let in_flight = (CAPACITY + 1) * CHUNK + parts * (c.upload_concurrency as usize + 1);
        assert!(in_flight <= 48 << 20, "{in_flight}");
    }
}
