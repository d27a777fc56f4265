//! How a volume's new contents go in: staged beside the mountpoint and swapped whole, or,
//! where a swap is impossible (the mountpoint is a mount of its own, or its parent another
//! filesystem), by clearing the mountpoint and extracting into it. Warm restores and volume
//! archive restores both decide with [`plan`]. Blocking.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, StatxAttributes, StatxFlags};

use super::VolumeError;
use super::staging;

/// How one volume will be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    Swap { staging: PathBuf },
    Clear { reason: String },
}

/// Decides how operation `op` restores the volume at `mountpoint`, after finishing or
/// rolling back a swap a crash cut and removing what dead restores left beside it.
pub(crate) fn plan(mountpoint: &Path, op: u64) -> Result<Plan, VolumeError> {
    let Some(parent) = mountpoint
        .parent()
        .filter(|_| mountpoint.file_name().is_some())
    else {
        return Ok(Plan::Clear {
            reason: "the mountpoint has no parent directory to stage in".into(),
        });
    };
    super::swap::repair(mountpoint)?;
    let stx = rustix::fs::statx(
        rustix::fs::CWD,
        mountpoint,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS,
    )
    .map_err(|e| VolumeError::io("inspect", mountpoint, e.into()))?;
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
        fs::symlink_metadata(mountpoint).map_err(|e| VolumeError::io("inspect", mountpoint, e))?;
    let above = fs::symlink_metadata(parent).map_err(|e| VolumeError::io("inspect", parent, e))?;
    if !here.is_dir() {
        return Err(VolumeError::io(
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

/// The device of the filesystem a staging dir for `mountpoint` would use.
pub(crate) fn staging_device(mountpoint: &Path) -> Result<u64, VolumeError> {
    let parent = mountpoint.parent().unwrap_or(mountpoint);
    fs::metadata(parent)
        .map(|m| m.dev())
        .map_err(|e| VolumeError::io("inspect", parent, e))
}
