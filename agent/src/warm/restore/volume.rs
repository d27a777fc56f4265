//! Restoring one volume. The atomic way: extract into a staging dir beside the mountpoint
//! (same filesystem, named after its owner by `crate::volume::staging`), sync, then swap it
//! in (`crate::volume::swap`). The fallback where that is impossible (the mountpoint is a
//! mount of its own, or the parent is another filesystem): clear the mountpoint and extract
//! into it. Blocking: run on blocking threads.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, StatxAttributes, StatxFlags};
use tokio_util::sync::CancellationToken;

use crate::volume::staging;
pub(crate) use crate::volume::swap::Swapped;
use crate::warm::error::WarmError;
use crate::warm::layout::remove_tree;
use crate::warm::pack::Totals;
use crate::warm::progress::Progress;
use crate::warm::unpack::unpack;

/// How one volume will be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    Swap { staging: PathBuf },
    Clear { reason: String },
}

/// Decides how operation `op` restores the volume at `mountpoint`, after finishing or
/// rolling back a swap a crash cut and removing what dead restores left beside it.
pub(crate) fn plan(mountpoint: &Path, op: u64) -> Result<Plan, WarmError> {
    let Some(parent) = mountpoint
        .parent()
        .filter(|_| mountpoint.file_name().is_some())
    else {
        return Ok(Plan::Clear {
            reason: "the mountpoint has no parent directory to stage in".into(),
        });
    };
    crate::volume::swap::repair(mountpoint)?;
    let stx = rustix::fs::statx(
        rustix::fs::CWD,
        mountpoint,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS,
    )
    .map_err(|e| WarmError::io("inspect", mountpoint, e.into()))?;
    if stx
        .stx_attributes_mask
        .contains(StatxAttributes::MOUNT_ROOT)
        && stx.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
    {
        return Ok(Plan::Clear {
            reason: "the mountpoint is a mount of its own".into(),
        });
    }
    let here =
        fs::symlink_metadata(mountpoint).map_err(|e| WarmError::io("inspect", mountpoint, e))?;
    let above = fs::symlink_metadata(parent).map_err(|e| WarmError::io("inspect", parent, e))?;
    if !here.is_dir() {
        return Err(WarmError::io(
            "restore into",
            mountpoint,
            std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "the mountpoint is not a directory",
            ),
        ));
    }
    if here.dev() != above.dev() {
        return Ok(Plan::Clear {
            reason: "the mountpoint is on another filesystem than its parent".into(),
        });
    }
    Ok(Plan::Swap {
        staging: staging::path_for(mountpoint, op),
    })
}

/// Extracts `tar` into the new dir `staging` (given the mountpoint's owner and mode until
/// the archive's root entry sets its own) and syncs that filesystem.
pub(crate) fn stage(
    tar: &Path,
    mountpoint: &Path,
    staging: &Path,
    limit: u64,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Totals, WarmError> {
    let here =
        fs::symlink_metadata(mountpoint).map_err(|e| WarmError::io("inspect", mountpoint, e))?;
    fs::create_dir(staging).map_err(|e| WarmError::io("create", staging, e))?;
    std::os::unix::fs::lchown(staging, Some(here.uid()), Some(here.gid()))
        .map_err(|e| WarmError::io("set owner of", staging, e))?;
    fs::set_permissions(staging, here.permissions())
        .map_err(|e| WarmError::io("set mode of", staging, e))?;
    let totals = unpack(tar, staging, limit, progress, cancel)?;
    tracing::debug!(staging = %staging.display(), "extracted; syncing");
    sync_fs(staging)?;
    Ok(totals)
}

/// Swaps the synced `staging` in place of `mountpoint` (see `crate::volume::swap`).
pub(crate) fn swap(mountpoint: &Path, staging: &Path) -> Result<Swapped, WarmError> {
    Ok(crate::volume::swap::swap(mountpoint, staging)?)
}

/// The fallback: empties the mountpoint (dotfiles included) and extracts into it.
pub(crate) fn clear_and_extract(
    tar: &Path,
    mountpoint: &Path,
    limit: u64,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Totals, WarmError> {
    for entry in fs::read_dir(mountpoint).map_err(|e| WarmError::io("list", mountpoint, e))? {
        let entry = entry.map_err(|e| WarmError::io("list", mountpoint, e))?;
        let path = entry.path();
        let is_dir = entry
            .file_type()
            .map_err(|e| WarmError::io("inspect", &path, e))?
            .is_dir();
        if is_dir {
            remove_tree(&path)?;
        } else {
            fs::remove_file(&path).map_err(|e| WarmError::io("remove", &path, e))?;
        }
    }
    let totals = unpack(tar, mountpoint, limit, progress, cancel)?;
    sync_fs(mountpoint)?;
    Ok(totals)
}

/// Flushes the filesystem holding `path` (one call instead of an fsync per file).
fn sync_fs(path: &Path) -> Result<(), WarmError> {
    let dir = File::open(path).map_err(|e| WarmError::io("open", path, e))?;
    rustix::fs::syncfs(&dir).map_err(|e| WarmError::io("sync", path, e.into()))
}

/// The device of the filesystem a staging dir for `mountpoint` would use.
pub(crate) fn staging_device(mountpoint: &Path) -> Result<u64, WarmError> {
    let parent = mountpoint.parent().unwrap_or(mountpoint);
    fs::metadata(parent)
        .map(|m| m.dev())
        .map_err(|e| WarmError::io("inspect", parent, e))
}
