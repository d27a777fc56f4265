//! Restoring an archive: stream the download through a bounded pipe into a blocking
//! decode + verify + untar into a staging directory beside the target, then swap it into
//! place. A failure, a checksum mismatch or a cancellation leaves the target as it was.
//! A volume archive unpacks beside the stack's volumes and swaps each one in whole.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth_shared::AppName;
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
use super::unpack::{self, DeviceNodes, Expect, Specials, UnpackCounters, Unpacked};
use super::volumes::Restore;
use crate::tarsafe::Links;
use crate::volume::swap::Swapped;

/// A restore that passed its checks, ready to run.
pub(crate) struct Job<'a> {
    pub bucket: &'a Bucket,
    pub apps_root: &'a Path,
    pub key: ArchiveKey,
    pub size: u64,
    pub meta: ArchiveMeta,
    /// What the archive's `archive.create` saga recorded, from the task; absent for an
    /// archive no saga of this fleet made (the Go tool's).
    pub recorded: Option<Recorded>,
    pub target: AppName,
    pub max_bytes: Option<u64>,
    pub keep_free: u64,
    pub max_entries: u64,
    /// For a volume archive: where its volumes go (the target app then only names the
    /// restore).
    pub volumes: Option<Restore>,
    /// The operation (holding the target's lock) that owns the staging dirs.
    pub op: u64,
    /// Whether a volume restore recreates device nodes.
    pub device_nodes: DeviceNodes,
    /// What happens to symlinks that lead outside the target.
    pub links: Links,
    /// For an age-encrypted archive: the identities that open it (checked against its
    /// header already).
    pub identities: Option<Arc<Identities>>,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub(crate) struct Restored {
    pub unpacked: Unpacked,
    pub archive_bytes: u64,
    pub verified: bool,
    pub owners: bool,
}

pub(crate) async fn run(
    job: Job<'_>,
    progress: &watch::Sender<ArchiveProgress>,
    cancel: &CancellationToken,
) -> Result<Restored, ArchiveError> {
    let trusted = expected(&job)?;
    if let Some(volumes) = &job.volumes {
        return into_volumes(&job, &trusted, volumes, progress, cancel).await;
    }
    let root = job.apps_root;
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ArchiveError::Write { path, source }
    };
    fs::create_dir_all(root).map_err(write_err(root))?;
    let expect = checks(&job, trusted, root)?;
    let target = root.join(job.target.as_str());
    // A swap of this app cut by a crash is rolled back, dead restores' staging removed.
    let t = target.clone();
    tokio::task::spawn_blocking(move || crate::volume::swap::repair(&t))
        .await
        .map_err(ArchiveError::Join)??;
    let staging = crate::volume::staging::path_for(&target, job.op);
    fs::create_dir(&staging).map_err(write_err(&staging))?;

    let result = unpack_into(&job, expect, &staging, progress, cancel).await;
    let restored = match result {
        Ok(r) => r,
        Err(e) => {
            remove_dir(staging).await;
            return Err(e);
        }
    };
    progress.send_modify(|p| p.phase = Phase::Swapping);
    let swapped = {
        let (staging, target) = (staging.clone(), target.clone());
        tokio::task::spawn_blocking(move || swap(&staging, &target))
            .await
            .map_err(ArchiveError::Join)?
    };
    if let Err(e) = swapped {
        remove_dir(staging).await;
        return Err(e);
    }
    progress.send_modify(|p| p.phase = Phase::Done);
    Ok(restored)
}

/// Restores a volume archive: unpack into the scratch dir beside the volumes, then swap.
async fn into_volumes(
    job: &Job<'_>,
    trusted: &Expected,
    volumes: &Restore,
    progress: &watch::Sender<ArchiveProgress>,
    cancel: &CancellationToken,
) -> Result<Restored, ArchiveError> {
    let scratch = volumes.scratch.clone();
    let parent = scratch.parent().unwrap_or(Path::new("/"));
    let expect = checks(job, trusted.clone(), parent)?;
    fs::create_dir(&scratch).map_err(|source| ArchiveError::Write {
        path: scratch.clone(),
        source,
    })?;
    let restored = match unpack_into(job, expect, &scratch, progress, cancel).await {
        Ok(r) => r,
        Err(e) => {
            remove_dir(scratch).await;
            return Err(e);
        }
    };
    progress.send_modify(|p| p.phase = Phase::Swapping);
    if let Err(e) =
        super::volumes::still_undeployed(&volumes.app, &volumes.stack, "restore the volumes of")
            .await
    {
        remove_dir(scratch).await;
        return Err(e);
    }
    let swap = {
        let volumes = volumes.clone();
        tokio::task::spawn_blocking(move || volumes.swap_in())
            .await
            .map_err(ArchiveError::Join)?
    };
    if let Err(e) = swap {
        remove_dir(scratch).await;
        return Err(e);
    }
    progress.send_modify(|p| p.phase = Phase::Done);
    Ok(restored)
}

/// What an archive must match, and who vouches for each value.
#[derive(Debug, Clone)]
struct Expected {
    sha256: Option<(String, Witness)>,
    tar_bytes: Option<(u64, Witness)>,
    entries: Option<u64>,
}

/// The checksum, length and entry count a restore holds the archive to: those its
/// `archive.create` saga recorded, which the bucket cannot rewrite; for an archive no saga
/// recorded (the Go tool's), only one whose object matches its `size:` label, checked against
/// whatever its metadata says, with a warning.
fn expected(job: &Job<'_>) -> Result<Expected, ArchiveError> {
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

/// The checks and caps of a restore into `dir`'s filesystem: refused up front when the
/// recorded length would take it below `keep_free`; otherwise the decoded stream is capped
/// by the smallest of that length, `max_bytes` and the room above `keep_free`.
fn checks(job: &Job<'_>, trusted: Expected, dir: &Path) -> Result<Expect, ArchiveError> {
    let st = rustix::fs::statvfs(dir).map_err(|e| ArchiveError::Write {
        path: dir.to_owned(),
        source: e.into(),
    })?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let room = free.saturating_sub(job.keep_free);
    if let Some((needed, _)) = trusted.tar_bytes
        && needed > room
    {
        return Err(ArchiveError::NoSpace {
            path: dir.to_owned(),
            needed,
            free,
            floor: job.keep_free,
        });
    }
    let mut cap = (
        room,
        BytesCap::FreeSpace {
            path: dir.to_owned(),
            floor: job.keep_free,
        },
    );
    if let Some(max) = job.max_bytes
        && max < cap.0
    {
        cap = (max, BytesCap::Configured);
    }
    if let Some((recorded, by)) = trusted.tar_bytes
        && recorded <= cap.0
    {
        cap = (recorded, BytesCap::Recorded(by));
    }
    Ok(Expect {
        key: job.key.to_string(),
        sha256: trusted.sha256,
        tar_bytes: trusted.tar_bytes.map(|(t, _)| t),
        entries: trusted.entries,
        max_bytes: cap,
        max_entries: job.max_entries,
        specials: match &job.volumes {
            None => Specials::AppDir,
            Some(_) => Specials::Volumes {
                devices: job.device_nodes,
            },
        },
        links: job.links,
    })
}

async fn unpack_into(
    job: &Job<'_>,
    expect: Expect,
    staging: &Path,
    progress: &watch::Sender<ArchiveProgress>,
    cancel: &CancellationToken,
) -> Result<Restored, ArchiveError> {
    let key = job.key.to_string();
    let path = ObjectPath::from(job.key.as_str());
    let get = job
        .bucket
        .store
        .get(&path)
        .await
        .map_err(|e| ArchiveError::store("download", &key, e))?;
    let archive_bytes = get.meta.size;
    let owners = running_as_root();
    if !owners {
        tracing::warn!(key, "the agent is not root: owners are not restored");
    }
    let counters = Arc::new(UnpackCounters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Incoming>(CAPACITY);
    let unpacker = {
        let (staging, counters, stop) = (staging.to_owned(), counters.clone(), stop.clone());
        let receiver = ChunkReceiver::new(rx, counters.downloaded.clone());
        let identities = job.identities.clone();
        tokio::task::spawn_blocking(move || {
            let opener = identities.as_deref();
            unpack::unpack(
                receiver, &staging, &expect, &counters, &stop, owners, opener,
            )
        })
    };
    let entries_total = job.meta.entries.unwrap_or(0);
    let report = || {
        progress.send_replace(ArchiveProgress {
            phase: Phase::Restoring,
            bytes_done: counters.downloaded.load(Ordering::Relaxed),
            bytes_total: archive_bytes,
            entries_done: counters.entries.load(Ordering::Relaxed),
            entries_total,
            bytes_transformed: counters.tar_bytes.load(Ordering::Relaxed),
            bytes_stored: counters.file_bytes.load(Ordering::Relaxed),
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
    let unpacked = unpacked?;
    Ok(Restored {
        unpacked,
        archive_bytes,
        verified: job.recorded.is_some(),
        owners,
    })
}

/// Puts `staging` in `target`'s place: a swap (`crate::volume::swap`) when the target
/// exists (then the old contents are removed), a rename when it does not.
fn swap(staging: &Path, target: &Path) -> Result<(), ArchiveError> {
    let write = |path: &Path| {
        let path = path.to_owned();
        move |source| ArchiveError::Write { path, source }
    };
    // Everything unpacked reaches the disk before it becomes the app (one syncfs, not an
    // fsync per file).
    fs::File::open(staging)
        .and_then(|d| rustix::fs::syncfs(d).map_err(io::Error::from))
        .map_err(write(staging))?;
    match fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::rename(staging, target).map_err(write(target))?;
        }
        Ok(m) if m.is_dir() => match crate::volume::swap::swap(target, staging)? {
            Swapped::Done { old } => {
                // The target is restored; the old contents are only garbage.
                if let Err(e) = crate::volume::swap::remove_tree(&old) {
                    tracing::warn!(
                        path = %old.display(),
                        error = %crate::chain(&e),
                        "cannot remove the replaced app directory; remove it by hand"
                    );
                }
            }
            Swapped::Impossible(why) => {
                return Err(write(target)(io::Error::other(why)));
            }
        },
        Ok(_) => {
            return Err(write(target)(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the target exists and is not a directory; move it away first",
            )));
        }
        Err(e) => return Err(write(target)(e)),
    }
    if let Some(parent) = target.parent()
        && let Err(e) = fs::File::open(parent).and_then(|d| d.sync_all())
    {
        tracing::warn!(path = %parent.display(), error = %e, "cannot sync the apps root");
    }
    Ok(())
}

async fn remove_dir(path: PathBuf) {
    let shown = path.display().to_string();
    match tokio::task::spawn_blocking(move || fs::remove_dir_all(&path)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {}
        Ok(Err(e)) => tracing::warn!(path = shown, error = %e, "cannot remove staging directory"),
        Err(e) => tracing::warn!(path = shown, error = %e, "cannot remove staging directory"),
    }
}

/// Owners can be restored only as root; `/proc/self` belongs to the effective user.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
