//! The warm root on disk, byte-compatible with cc-ci's warmsnap.py:
//!
//! ```text
//! <root>/<app>/last_good                  sibling state of other tools: never touched
//! <root>/<app>/snapshot/meta.json         written last
//! <root>/<app>/snapshot/volumes/<vol>.tar
//! <root>/<app>/.snapshot.staging/         a snapshot being written (same name as warmsnap.py)
//! <root>/<app>/.snapshot.old/             the previous snapshot during a two-rename swap
//! ```
//!
//! Also the lock that serialises work on one app, the swap of `snapshot/`, and the repair of
//! what an interrupted run left behind. Everything here blocks: call it from blocking threads.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use berth_shared::AppName;
use berth_shared::name::VolumeName;
use rustix::fs::{FlockOperation, RenameFlags, flock, renameat_with};

use super::error::WarmError;

pub(crate) const SNAPSHOT: &str = "snapshot";
pub(crate) const STAGING: &str = ".snapshot.staging";
pub(crate) const OLD: &str = ".snapshot.old";
pub(crate) const META: &str = "meta.json";
pub(crate) const VOLUMES: &str = "volumes";

/// The folder of one app under the warm root.
#[derive(Debug, Clone)]
pub(crate) struct AppDir {
    pub dir: PathBuf,
}

impl AppDir {
    pub fn new(root: &Path, app: &AppName) -> Self {
        Self {
            dir: root.join(app.as_str()),
        }
    }
    pub fn snapshot(&self) -> PathBuf {
        self.dir.join(SNAPSHOT)
    }
    pub fn staging(&self) -> PathBuf {
        self.dir.join(STAGING)
    }
    pub fn old(&self) -> PathBuf {
        self.dir.join(OLD)
    }
    pub fn meta(&self) -> PathBuf {
        self.snapshot().join(META)
    }
    pub fn tar(&self, volume: &VolumeName) -> PathBuf {
        self.snapshot().join(VOLUMES).join(tar_name(volume))
    }
}

pub(crate) fn tar_name(volume: &VolumeName) -> String {
    format!("{}.tar", volume.as_str())
}

/// An exclusive lock on one app's folder (an `flock` on the directory itself, so no extra
/// file appears beside `last_good`); released when dropped.
#[derive(Debug)]
pub(crate) struct AppLock {
    _dir: File,
}

impl AppLock {
    /// Takes the lock without waiting; `Ok(None)` when someone else holds it.
    pub fn try_lock(dir: &Path) -> Result<Option<Self>, WarmError> {
        let file = File::open(dir).map_err(|e| WarmError::io("open", dir, e))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(Self { _dir: file })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(WarmError::io("lock", dir, e.into())),
        }
    }
}

/// Puts the app folder back in a clean state after an interrupted run: a swap cut between
/// its two renames gets its previous snapshot back, and staging leftovers are removed.
pub(crate) fn repair(app: &AppDir) -> Result<(), WarmError> {
    let snapshot = app.snapshot();
    let old = app.old();
    if !exists(&snapshot)? && exists(&old)? {
        tracing::warn!(dir = %app.dir.display(), "an earlier swap was interrupted; putting the previous snapshot back");
        fs::rename(&old, &snapshot).map_err(|e| WarmError::io("rename", &old, e))?;
        sync_dir(&app.dir)?;
    }
    for leftover in [app.staging(), old] {
        if exists(&leftover)? {
            tracing::info!(path = %leftover.display(), "removing the leftovers of an interrupted run");
            remove_tree(&leftover)?;
        }
    }
    Ok(())
}

/// Replaces `snapshot/` by the complete `staging` dir; siblings are untouched. An atomic
/// exchange where the filesystem has one, else two renames through `.snapshot.old` (which
/// `repair` undoes if cut in between). The previous snapshot is removed afterwards.
pub(crate) fn swap_in(app: &AppDir) -> Result<(), WarmError> {
    let staging = app.staging();
    let snapshot = app.snapshot();
    let dir = File::open(&app.dir).map_err(|e| WarmError::io("open", &app.dir, e))?;
    if exists(&snapshot)? {
        match renameat_with(
            dir.as_fd(),
            STAGING,
            dir.as_fd(),
            SNAPSHOT,
            RenameFlags::EXCHANGE,
        ) {
            Ok(()) => {
                // `staging` now holds the previous snapshot.
                sync_dir(&app.dir)?;
                return remove_tree(&staging);
            }
            Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
                tracing::debug!("no atomic exchange on this filesystem; swapping with two renames");
            }
            Err(e) => return Err(WarmError::io("swap in", &staging, e.into())),
        }
        let old = app.old();
        if exists(&old)? {
            remove_tree(&old)?;
        }
        fs::rename(&snapshot, &old).map_err(|e| WarmError::io("rename", &snapshot, e))?;
        fs::rename(&staging, &snapshot).map_err(|e| WarmError::io("rename", &staging, e))?;
        sync_dir(&app.dir)?;
        return remove_tree(&old);
    }
    fs::rename(&staging, &snapshot).map_err(|e| WarmError::io("rename", &staging, e))?;
    sync_dir(&app.dir)
}

/// Writes `bytes` to `path` and syncs it.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), WarmError> {
    let mut f = File::create(path).map_err(|e| WarmError::io("create", path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| WarmError::io("write", path, e))
}

/// fsync of a directory, so renames and new entries in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WarmError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WarmError::io("sync", dir, e))
}

/// Bytes available to unprivileged users on the filesystem holding `path`.
pub(crate) fn free_space(path: &Path) -> Result<u64, WarmError> {
    let st = rustix::fs::statvfs(path).map_err(|e| WarmError::io("measure", path, e.into()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

pub(crate) fn exists(path: &Path) -> Result<bool, WarmError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(WarmError::io("inspect", path, e)),
    }
}

/// Removes `path` (blocking), its owner alive meanwhile so no other restore's cleanup races.
pub(crate) fn remove_marked(path: &Path) {
    if let Err(e) = crate::volume::swap::remove_tree(path) {
        tracing::warn!(path = %path.display(), error = %crate::chain(&e), "cannot remove old contents; the next restore retries");
    }
}

/// Removes a directory tree (never following symlinks); a missing path is fine.
pub(crate) fn remove_tree(path: &Path) -> Result<(), WarmError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(WarmError::io("remove", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(root: &Path) -> AppDir {
        let a = AppDir::new(root, &AppName::new("kc").unwrap());
        fs::create_dir_all(&a.dir).unwrap();
        fs::write(a.dir.join("last_good"), "1.0").unwrap();
        a
    }

    fn make_snapshot(dir: &Path, marker: &str) {
        fs::create_dir_all(dir.join(VOLUMES)).unwrap();
        fs::write(dir.join(META), marker).unwrap();
    }

    #[test]
    fn swap_replaces_only_the_snapshot_dir() {
        let root = tempfile::tempdir().unwrap();
        let a = app(root.path());
        make_snapshot(&a.staging(), "one");
        swap_in(&a).unwrap();
        make_snapshot(&a.staging(), "two");
        swap_in(&a).unwrap();
        assert_eq!(fs::read_to_string(a.meta()).unwrap(), "two");
        assert_eq!(fs::read_to_string(a.dir.join("last_good")).unwrap(), "1.0");
        let mut names: Vec<_> = fs::read_dir(&a.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["last_good", "snapshot"]);
    }

    #[test]
    fn repair_brings_back_a_snapshot_cut_between_two_renames() {
        let root = tempfile::tempdir().unwrap();
        let a = app(root.path());
        make_snapshot(&a.old(), "previous");
        make_snapshot(&a.staging(), "half-done");
        repair(&a).unwrap();
        assert_eq!(fs::read_to_string(a.meta()).unwrap(), "previous");
        assert!(!exists(&a.old()).unwrap() && !exists(&a.staging()).unwrap());
    }

    #[test]
    fn the_lock_is_exclusive_until_dropped() {
        let root = tempfile::tempdir().unwrap();
        let a = app(root.path());
        let held = AppLock::try_lock(&a.dir).unwrap().unwrap();
        assert!(AppLock::try_lock(&a.dir).unwrap().is_none());
        drop(held);
        assert!(AppLock::try_lock(&a.dir).unwrap().is_some());
    }
}
