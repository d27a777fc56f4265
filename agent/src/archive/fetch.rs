//! What a restore and a verify share: an archive found in the bucket ([`Found`]), what it is
//! held to (the checksum and lengths its `archive.create` saga recorded, or for an archive no
//! saga recorded, its metadata), and the download streamed through a bounded pipe into the
//! blocking decode + hash + walk of `unpack` (into a staging directory, or nowhere).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth_shared::archive::{ArchiveKey, ArchiveMeta, ArchiveProgress, Phase};
use berth_shared::task::Recorded;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::ArchiveError;
use super::error::{BytesCap, Witness};
use super::pipe::{CAPACITY, ChunkReceiver, Incoming};
use super::seal::Identities;
use super::store::Bucket;
use super::unpack::{self, Destination, Expect, Specials, UnpackCounters, Unpacked, Walk};
use crate::tarsafe::Links;

/// An archive found in the bucket, what it is held to and the limits of its walk.
pub(crate) struct Found<'a> {
    pub bucket: &'a Bucket,
    pub key: ArchiveKey,
    /// Bytes of the object, as listed.
    pub size: u64,
    pub meta: ArchiveMeta,
    /// What the archive's `archive.create` saga recorded, from the task; absent for an
    /// archive no saga of this fleet made (the Go tool's).
    pub recorded: Option<Recorded>,
    /// For an age-encrypted archive: the identities that open it (checked against its
    /// header already).
    pub identities: Option<Arc<Identities>>,
    pub max_bytes: Option<u64>,
    pub max_entries: u64,
    /// What special entries it may hold (an app directory's or volumes').
    pub specials: Specials,
    /// What happens to symlinks that lead outside the target.
    pub links: Links,
}

/// How one fetch runs: where its entries go and what it reports into.
pub(crate) struct Run<'a> {
    /// The staging directory; `None`: nowhere (a verify).
    pub into: Option<PathBuf>,
    /// Restore owners (only root can; a verify refuses what a restore here would).
    pub owners: bool,
    pub counters: &'a Arc<UnpackCounters>,
    pub phase: Phase,
    pub progress: &'a watch::Sender<ArchiveProgress>,
    pub cancel: &'a CancellationToken,
}

/// What a fetch found.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    pub unpacked: Unpacked,
    /// Bytes of the object downloaded.
    pub archive_bytes: u64,
}

/// What an archive must match, and who vouches for each value.
#[derive(Debug, Clone)]
pub(super) struct Expected {
    pub sha256: Option<(String, Witness)>,
    pub tar_bytes: Option<(u64, Witness)>,
    entries: Option<u64>,
}

/// The checksum, length and entry count a restore holds the archive to: those its
/// `archive.create` saga recorded, which the bucket cannot rewrite; for an archive no saga
/// recorded (the Go tool's), only one whose object matches its `size:` label, checked against
/// whatever its metadata says, with a warning.
pub(super) fn expected(job: &Found<'_>) -> Result<Expected, ArchiveError> {
    let key = job.key.to_string();
    let meta = &job.meta;
    if let Some(rec) = &job.recorded {
        if rec.size != job.size {
            return Err(ArchiveError::SizeMismatch {
                key,
                expected: rec.size,
                found: job.size,
                by: Witness::Saga,
            });
        }
        if meta.sha256.as_ref().is_some_and(|s| *s != rec.sha256)
            || meta.size().is_some_and(|s| s != rec.size)
            || meta.tar_bytes.is_some_and(|t| t != rec.tar_bytes)
        {
            tracing::warn!(
                key,
                "the archive's metadata in the bucket disagrees with what its archive.create \
                 saga recorded; it was rewritten, and the saga's record is what the archive is \
                 held to"
            );
        }
        return Ok(Expected {
            sha256: Some((rec.sha256.clone(), Witness::Saga)),
            tar_bytes: Some((rec.tar_bytes, Witness::Saga)),
            entries: Some(rec.entries),
        });
    }
    match meta.size() {
        None => {
            return Err(ArchiveError::Unverifiable {
                key,
                why: "its metadata has no size:<bytes> label".to_owned(),
            });
        }
        Some(expected) if expected != job.size => {
            return Err(ArchiveError::SizeMismatch {
                key,
                expected,
                found: job.size,
                by: Witness::Bucket,
            });
        }
        Some(_) => {}
    }
    tracing::warn!(
        key,
        "restoring an archive that no archive.create saga of this fleet recorded (the Go \
         tool's, or another fleet's): its size matches its label, but it has no checksum the \
         bucket cannot rewrite"
    );
    Ok(Expected {
        sha256: meta.sha256.clone().map(|s| (s, Witness::Bucket)),
        tar_bytes: meta.tar_bytes.map(|t| (t, Witness::Bucket)),
        entries: None,
    })
}

impl Found<'_> {
    /// The checks and caps of a walk: the decoded stream stops at the smallest of `room`
    /// (a restore's free space), `max_bytes` and the recorded length.
    pub fn expect(&self, trusted: Expected, room: (u64, BytesCap)) -> Expect {
        let mut cap = room;
        if let Some(max) = self.max_bytes
            && max < cap.0
        {
            cap = (max, BytesCap::Configured);
        }
        if let Some((recorded, by)) = trusted.tar_bytes
            && recorded <= cap.0
        {
            cap = (recorded, BytesCap::Recorded(by));
        }
        Expect {
            key: self.key.to_string(),
            sha256: trusted.sha256,
            tar_bytes: trusted.tar_bytes.map(|(t, _)| t),
            entries: trusted.entries,
            max_bytes: cap,
            max_entries: self.max_entries,
            specials: self.specials,
            links: self.links,
        }
    }

    /// Downloads the archive into `unpack`, held to `expect`, reporting progress.
    pub async fn fetch(&self, expect: Expect, run: Run<'_>) -> Result<Fetched, ArchiveError> {
        let Run {
            into,
            owners,
            counters,
            phase,
            progress,
            cancel,
        } = run;
        let key = self.key.to_string();
        let path = ObjectPath::from(self.key.as_str());
        let get = self
            .bucket
            .store
            .get(&path)
            .await
            .map_err(|e| ArchiveError::store("download", &key, e))?;
        let archive_bytes = get.meta.size;
        let stop = Arc::new(AtomicBool::new(false));
        // A verify writes nothing, whatever its walk counted.
        let writes = into.is_some();
        let (tx, rx) = mpsc::channel::<Incoming>(CAPACITY);
        let unpacker = {
            let (counters, stop) = (counters.clone(), stop.clone());
            let receiver = ChunkReceiver::new(rx, counters.downloaded.clone());
            let identities = self.identities.clone();
            tokio::task::spawn_blocking(move || {
                let dest = match &into {
                    Some(dir) => Destination::Dir(dir),
                    None => Destination::Nowhere,
                };
                let walk = Walk {
                    expect: &expect,
                    counters: &counters,
                    cancel: &stop,
                    owners,
                    opener: identities.as_deref(),
                };
                unpack::unpack(receiver, dest, &walk)
            })
        };
        let entries_total = self.meta.entries.unwrap_or(0);
        let report = || {
            progress.send_replace(ArchiveProgress {
                phase,
                bytes_done: counters.downloaded.load(Ordering::Relaxed),
                bytes_total: archive_bytes,
                entries_done: counters.entries.load(Ordering::Relaxed),
                entries_total,
                bytes_transformed: counters.tar_bytes.load(Ordering::Relaxed),
                bytes_stored: if writes {
                    counters.file_bytes.load(Ordering::Relaxed)
                } else {
                    0
                },
            });
        };
        let mut stream = get.into_stream();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut failure = None;
        loop {
            tokio::select! {
                () = cancel.cancelled() => {
                    failure = Some(ArchiveError::Cancelled);
                    break;
                }
                _ = tick.tick() => report(),
                next = stream.next() => match next {
                    Some(Ok(chunk)) => {
                        if tx.send(Ok(chunk)).await.is_err() {
                            break; // the unpacker stopped; its result says why
                        }
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(Err(())).await;
                        failure = Some(ArchiveError::store("download", &key, e));
                        break;
                    }
                    None => break,
                },
            }
        }
        if failure.is_some() {
            stop.store(true, Ordering::Relaxed);
        }
        drop(tx);
        drop(stream);
        let unpacked = unpacker.await.map_err(ArchiveError::Join)?;
        report();
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(Fetched {
            unpacked: unpacked?,
            archive_bytes,
        })
    }
}
