//! Restoring one volume. The atomic way: extract into a staging dir beside the mountpoint
//! (same filesystem, named after its owner by `crate::volume::staging`), sync, then swap it
//! in (`crate::volume::swap`). The fallback where that is impossible (the mountpoint is a
//! mount of its own, or the parent is another filesystem): clear the mountpoint and extract
//! into it. Blocking: run on blocking threads.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use tokio_util::sync::CancellationToken;

pub(crate) use crate::volume::swap::Swapped;
pub(crate) use crate::volume::{Plan, plan, staging_device};
use crate::warm::error::WarmError;
use crate::warm::layout::remove_tree;
use crate::warm::pack::Totals;
use crate::warm::progress::Progress;
use crate::warm::unpack::unpack;

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
pub(crate) fn sync_fs(path: &Path) -> Result<(), WarmError> {
    let dir = File::open(path).map_err(|e| WarmError::io("open", path, e))?;
    rustix::fs::syncfs(&dir).map_err(|e| WarmError::io("sync", path, e.into()))
}
