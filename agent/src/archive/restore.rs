//! Restoring an archive: stream the download through a bounded pipe into a blocking
//! decode + verify + untar into a staging directory beside the target, then swap it into
//! place. A failure, a checksum mismatch or a cancellation leaves the target as it was.
//! A volume archive unpacks beside the stack's volumes and swaps each one in whole.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_shared::AppName;
use berth_shared::archive::{ArchiveProgress, Phase};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ArchiveError;
use super::error::BytesCap;
use super::fetch::{Expected, Found, Run, expected};
use super::unpack::{Expect, UnpackCounters, Unpacked};
use super::volumes::Restore;
use crate::volume::swap::Swapped;

/// A restore that passed its checks, ready to run.
pub(crate) struct Job<'a> {
    /// The archive, what it is held to and the limits of its walk.
    pub archive: Found<'a>,
    pub apps_root: &'a Path,
    pub target: AppName,
    pub keep_free: u64,
    /// For a volume archive: where its volumes go (the target app then only names the
    /// restore).
    pub volumes: Option<Restore>,
    /// The operation (holding the target's lock) that owns the staging dirs.
    pub op: u64,
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
    let trusted = expected(&job.archive)?;
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
    let room = (
        room,
        BytesCap::FreeSpace {
            path: dir.to_owned(),
            floor: job.keep_free,
        },
    );
    Ok(job.archive.expect(trusted, room))
}

/// Downloads and unpacks into `staging`.
async fn unpack_into(
    job: &Job<'_>,
    expect: Expect,
    staging: &Path,
    progress: &watch::Sender<ArchiveProgress>,
    cancel: &CancellationToken,
) -> Result<Restored, ArchiveError> {
    let counters = Arc::new(UnpackCounters::default());
    let owners = running_as_root();
    if !owners {
        tracing::warn!(key = %job.archive.key, "the agent is not root: owners are not restored");
    }
    let into = Some(staging.to_owned());
    let fetched = job
        .archive
        .fetch(
            expect,
            Run {
                into,
                owners,
                counters: &counters,
                phase: Phase::Restoring,
                progress,
                cancel,
            },
        )
        .await?;
    Ok(Restored {
        unpacked: fetched.unpacked,
        archive_bytes: fetched.archive_bytes,
        verified: job.archive.recorded.is_some(),
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
pub(super) fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
