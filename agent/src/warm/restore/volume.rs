//! Restoring one volume. The atomic way: extract into a staging dir beside the mountpoint
//! (same filesystem), sync, then exchange the two directories in one rename. The fallback
//! where that is impossible (the mountpoint is a mount of its own, or the parent is another
//! filesystem): clear the mountpoint and extract into it. Blocking: run on blocking threads.

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, RenameFlags, StatxAttributes, StatxFlags, renameat_with};
use rustix::io::Errno;
use tokio_util::sync::CancellationToken;

use crate::warm::error::WarmError;
use crate::warm::layout::{self, remove_tree};
use crate::warm::pack::Totals;
use crate::warm::progress::Progress;
use crate::warm::unpack::unpack;

/// Suffix of staging dirs beside a mountpoint: `_data.berth-restore-<id>`.
const STAGING_MARK: &str = ".berth-restore-";

/// How one volume will be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    Swap { staging: PathBuf },
    Clear { reason: String },
}

fn split(mountpoint: &Path) -> Option<(&Path, String)> {
    let parent = mountpoint.parent()?;
    let name = mountpoint.file_name()?.to_str()?.to_owned();
    Some((parent, name))
}

/// Decides how to restore the volume at `mountpoint`, after putting back what an
/// interrupted earlier restore left (a mountpoint renamed aside is renamed back; staging
/// dirs are removed).
pub(crate) fn plan(mountpoint: &Path) -> Result<Plan, WarmError> {
    let Some((parent, name)) = split(mountpoint) else {
        return Ok(Plan::Clear {
            reason: "the mountpoint has no parent directory to stage in".into(),
        });
    };
    repair(parent, &name)?;
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
    let id = uuid::Uuid::new_v4().simple().to_string();
    Ok(Plan::Swap {
        staging: parent.join(format!("{name}{STAGING_MARK}{}", &id[..12])),
    })
}

/// Puts a mountpoint renamed aside by a cut two-rename swap back, and removes staging dirs.
fn repair(parent: &Path, name: &str) -> Result<(), WarmError> {
    let prefix = format!("{name}{STAGING_MARK}");
    let mountpoint = parent.join(name);
    let mut leftovers = Vec::new();
    for entry in fs::read_dir(parent).map_err(|e| WarmError::io("list", parent, e))? {
        let entry = entry.map_err(|e| WarmError::io("list", parent, e))?;
        if let Some(n) = entry.file_name().to_str()
            && n.starts_with(&prefix)
        {
            leftovers.push(entry.path());
        }
    }
    if !layout::exists(&mountpoint)?
        && let Some(i) = leftovers
            .iter()
            .position(|p| p.extension().is_some_and(|e| e == "old"))
    {
        let aside = leftovers.remove(i);
        tracing::warn!(mountpoint = %mountpoint.display(), "an earlier restore was cut between two renames; putting the volume back");
        fs::rename(&aside, &mountpoint).map_err(|e| WarmError::io("rename", &aside, e))?;
        layout::sync_dir(parent)?;
    }
    for leftover in leftovers {
        if layout::being_removed(&leftover) {
            continue;
        }
        tracing::info!(path = %leftover.display(), "removing the leftovers of an interrupted restore");
        remove_tree(&leftover)?;
    }
    Ok(())
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

/// Outcome of trying to swap a staged volume in.
#[derive(Debug)]
pub(crate) enum Swapped {
    /// Swapped in; `old` holds the previous contents, to be removed.
    Done { old: PathBuf },
    /// The filesystem refused; the staging dir is gone, the volume untouched.
    Impossible(String),
}

/// Exchanges `staging` and `mountpoint` atomically (two renames where the filesystem has no
/// exchange); the old contents are left beside the mountpoint for the caller to remove.
pub(crate) fn swap(mountpoint: &Path, staging: &Path) -> Result<Swapped, WarmError> {
    let (parent, name) = split(mountpoint).expect("planned with a parent");
    let staging_name = staging.file_name().expect("a staging name");
    let dir = File::open(parent).map_err(|e| WarmError::io("open", parent, e))?;
    match renameat_with(
        dir.as_fd(),
        staging_name,
        dir.as_fd(),
        name.as_str(),
        RenameFlags::EXCHANGE,
    ) {
        Ok(()) => {
            layout::sync_dir(parent)?;
            // `staging` now holds the old contents.
            return Ok(Swapped::Done {
                old: staging.to_owned(),
            });
        }
        Err(Errno::INVAL | Errno::NOSYS) => {}
        Err(e @ (Errno::XDEV | Errno::BUSY | Errno::PERM | Errno::ACCESS)) => {
            remove_tree(staging)?;
            return Ok(Swapped::Impossible(format!(
                "the filesystem refused the swap ({e})"
            )));
        }
        Err(e) => return Err(WarmError::io("swap in", staging, e.into())),
    }
    // No exchange here: two renames, the first undone by `repair` if we are cut between.
    let mut aside = staging.as_os_str().to_owned();
    aside.push(".old");
    let aside = PathBuf::from(aside);
    match fs::rename(mountpoint, &aside) {
        Ok(()) => {}
        Err(e) if matches!(e.raw_os_error(), Some(c) if c == Errno::XDEV.raw_os_error() || c == Errno::BUSY.raw_os_error()) =>
        {
            remove_tree(staging)?;
            return Ok(Swapped::Impossible(format!(
                "the filesystem refused the swap ({e})"
            )));
        }
        Err(e) => return Err(WarmError::io("rename", mountpoint, e)),
    }
    if let Err(e) = fs::rename(staging, mountpoint) {
        let _ = fs::rename(&aside, mountpoint);
        return Err(WarmError::io("rename", staging, e));
    }
    layout::sync_dir(parent)?;
    Ok(Swapped::Done { old: aside })
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
