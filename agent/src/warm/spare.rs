//! Ready spares: a copy of a volume's last-known-good contents, built beside the volume before
//! anyone asks for it, so a restore is one `RENAME_EXCHANGE` instead of an extraction.
//!
//! ```text
//! <volume dir>/_data                   the volume (Docker's mountpoint)
//! <volume dir>/_data.berth-spare       the spare: the snapshot's tar, extracted (or reflinked)
//! <volume dir>/_data.berth-spare.json  its stamp: which snapshot, entries, bytes, when, how
//! <volume dir>/_data.berth-base        reflink filesystems only: an extracted copy spares
//! <volume dir>/_data.berth-base.json     are cloned from (and its stamp)
//! ```
//!
//! A spare is built in an owner-named staging dir (`crate::volume::staging`), synced, renamed
//! to `_data.berth-spare`, and only then stamped: the stamp is written last and names the
//! snapshot by [`digest`] (of `meta.json` and each tar's size and mtime). A spare without a
//! stamp, or whose stamp names another snapshot or volume, is never used and is removed by the
//! next build; a half-built one is a dead owner's staging dir, removed at agent start. Taking
//! a spare renames it to a staging dir of the restore first and removes the stamp, then swaps
//! it in with the journaled swap of `crate::volume::swap`, so a crash at any point leaves
//! either the old contents or the new, and never a spare that lies.
//!
//! Everything here blocks; [`worker`] runs it on blocking threads, one build at a time.

mod clone;
pub(crate) mod worker;

pub(crate) use clone::supported as reflink_supported;

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_shared::name::VolumeName;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::error::WarmError;
use super::layout::{self, AppDir};
use super::pack::Totals;
use super::progress::Progress;
use super::restore::volume;
use crate::volume::staging;

pub use worker::{SpareState, Spares, SparesBuilt, WarmConfig};

/// Suffix of a volume's spare, beside its mountpoint.
const SPARE: &str = ".berth-spare";
/// Suffix of the extracted copy spares are reflinked from.
const BASE: &str = ".berth-base";
/// Suffix of a spare's or base's stamp (after [`SPARE`] or [`BASE`]).
const STAMP: &str = ".json";

/// How a spare was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildMethod {
    /// Extracted from the snapshot's tar: costs the volume's data again.
    Extract,
    /// Cloned with FICLONE from the extracted base: costs metadata only.
    Reflink,
}

/// What a spare (or base) holds, written beside it once it is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// [`digest`] of the snapshot it was built from.
    pub snapshot: String,
    /// The volume it is for.
    pub volume: String,
    pub entries: u64,
    pub bytes: u64,
    pub built_at_ms: i64,
    pub build_ms: u64,
    pub method: BuildMethod,
}

/// The paths of one volume's spare and base.
#[derive(Debug, Clone)]
pub(crate) struct SparePaths {
    pub mountpoint: PathBuf,
    pub spare: PathBuf,
    pub base: PathBuf,
}

impl SparePaths {
    pub fn new(mountpoint: &Path) -> Self {
        Self {
            mountpoint: mountpoint.to_owned(),
            spare: staging::with_suffix(mountpoint, SPARE),
            base: staging::with_suffix(mountpoint, BASE),
        }
    }

    fn stamp_of(dir: &Path) -> PathBuf {
        staging::with_suffix(dir, STAMP)
    }
}

/// Names the snapshot a spare is built from: `meta.json`'s bytes and, for each volume it
/// lists, the tar's name, size and mtime. A new snapshot (a new `meta.json` with a new `ts`),
/// or a tar replaced under it, has another digest.
pub(crate) fn digest(app: &AppDir) -> Result<String, WarmError> {
    let meta_path = app.meta();
    let meta = fs::read(&meta_path).map_err(|e| WarmError::io("read", &meta_path, e))?;
    let parsed = super::Meta::from_json(&meta).map_err(|why| WarmError::BadMeta {
        path: meta_path.clone(),
        why,
    })?;
    let mut h = Sha256::new();
    h.update((meta.len() as u64).to_le_bytes());
    h.update(&meta);
    for v in &parsed.volumes {
        let name = VolumeName::new(v.as_str()).map_err(|source| WarmError::Name {
            what: "volume name in meta.json",
            source,
        })?;
        let tar = app.tar(&name);
        let m = fs::metadata(&tar).map_err(|e| WarmError::io("inspect", &tar, e))?;
        h.update((v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
        h.update(m.len().to_le_bytes());
        h.update(m.mtime().to_le_bytes());
        h.update(m.mtime_nsec().to_le_bytes());
    }
    Ok(hex::encode(h.finalize()))
}

/// The stamp of the dir `dir` (a spare or a base), when both are present and the stamp
/// names snapshot `digest` and volume `volume`.
pub(crate) fn matching(dir: &Path, digest: &str, volume: &str) -> Option<Stamp> {
    let stamp = read_stamp(dir)?;
    let present = fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir());
    (present && stamp.snapshot == digest && stamp.volume == volume).then_some(stamp)
}

fn read_stamp(dir: &Path) -> Option<Stamp> {
    let bytes = fs::read(SparePaths::stamp_of(dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Removes the dir `dir` and its stamp (stamp first, so a crash between leaves a dir no one
/// trusts). The dir is renamed to a staging name of operation `op` and removed from there.
pub(crate) fn discard(dir: &Path, op: u64) -> Result<(), WarmError> {
    remove_stamp(dir)?;
    if !layout::exists(dir)? {
        return Ok(());
    }
    let trash = staging::path_for(dir, op);
    fs::rename(dir, &trash).map_err(|e| WarmError::io("rename", dir, e))?;
    layout::remove_tree(&trash)
}

/// Takes the spare of `paths` for a restore by operation `op`: renamed to a staging dir of
/// `op` and unstamped, ready for `crate::volume::swap` (a crash from here on leaves a dead
/// owner's staging dir, removed by the next repair).
pub(crate) fn take(paths: &SparePaths, op: u64) -> Result<PathBuf, WarmError> {
    let claimed = staging::path_for(&paths.mountpoint, op);
    fs::rename(&paths.spare, &claimed).map_err(|e| WarmError::io("rename", &paths.spare, e))?;
    remove_stamp(&paths.spare)?;
    Ok(claimed)
}

/// Removes `dir`'s stamp, if it has one.
fn remove_stamp(dir: &Path) -> Result<(), WarmError> {
    let stamp = SparePaths::stamp_of(dir);
    match fs::remove_file(&stamp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(WarmError::io("remove", &stamp, e)),
        _ => Ok(()),
    }
}

/// One volume's spare to build.
pub(crate) struct Build<'a> {
    pub paths: &'a SparePaths,
    pub volume: &'a str,
    pub tar: &'a Path,
    pub digest: &'a str,
    /// The data the tar holds (its check's count).
    pub limit: u64,
    /// Operation (holding the stack's lock) whose staging dirs these are.
    pub op: u64,
    /// Clone from a base instead of extracting every time.
    pub reflink: bool,
}

impl Build<'_> {
    /// Builds and stamps the spare (and, with reflink, the base first when it is stale).
    pub fn run(&self, progress: &Progress, cancel: &CancellationToken) -> Result<Stamp, WarmError> {
        let started = std::time::Instant::now();
        discard(&self.paths.spare, self.op)?;
        if !self.reflink {
            discard(&self.paths.base, self.op)?;
            let totals = self.extract_into(&self.paths.spare, progress, cancel)?;
            return self.stamp(&self.paths.spare, totals, BuildMethod::Extract, started);
        }
        let base = match matching(&self.paths.base, self.digest, self.volume) {
            Some(stamp) => Totals {
                bytes: stamp.bytes,
                entries: stamp.entries,
            },
            None => {
                discard(&self.paths.base, self.op)?;
                let totals = self.extract_into(&self.paths.base, progress, cancel)?;
                self.stamp(&self.paths.base, totals, BuildMethod::Extract, started)?;
                totals
            }
        };
        let staged = staging::path_for(&self.paths.mountpoint, self.op);
        let cloned = clone::tree(&self.paths.base, &staged, cancel).and_then(|()| {
            volume::sync_fs(&staged)?;
            fs::rename(&staged, &self.paths.spare).map_err(|e| WarmError::io("rename", &staged, e))
        });
        if let Err(e) = cloned {
            let _ = layout::remove_tree(&staged);
            return Err(e);
        }
        self.stamp(&self.paths.spare, base, BuildMethod::Reflink, started)
    }

    /// Extracts the tar into a new staging dir, syncs it and renames it to `dir`.
    fn extract_into(
        &self,
        dir: &Path,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<Totals, WarmError> {
        let staged = staging::path_for(&self.paths.mountpoint, self.op);
        let done = volume::stage(
            self.tar,
            &self.paths.mountpoint,
            &staged,
            self.limit,
            progress,
            cancel,
        )
        .and_then(|totals| {
            if cancel.is_cancelled() {
                return Err(WarmError::Cancelled);
            }
            fs::rename(&staged, dir).map_err(|e| WarmError::io("rename", &staged, e))?;
            Ok(totals)
        });
        if done.is_err() {
            let _ = layout::remove_tree(&staged);
        }
        done
    }

    /// Writes `dir`'s stamp (synced, with its directory): from now on `dir` is trusted.
    fn stamp(
        &self,
        dir: &Path,
        totals: Totals,
        method: BuildMethod,
        started: std::time::Instant,
    ) -> Result<Stamp, WarmError> {
        let stamp = Stamp {
            snapshot: self.digest.to_owned(),
            volume: self.volume.to_owned(),
            entries: totals.entries,
            bytes: totals.bytes,
            built_at_ms: berth_shared::time::unix_ms(std::time::SystemTime::now()),
            build_ms: started.elapsed().as_millis() as u64,
            method,
        };
        let parent = dir.parent().unwrap_or(Path::new("/"));
        layout::sync_dir(parent)?;
        let path = SparePaths::stamp_of(dir);
        let tmp = staging::with_suffix(&path, ".tmp");
        let bytes = serde_json::to_vec(&stamp).expect("a stamp serializes");
        layout::write_synced(&tmp, &bytes)?;
        fs::rename(&tmp, &path).map_err(|e| WarmError::io("rename", &tmp, e))?;
        layout::sync_dir(parent)?;
        Ok(stamp)
    }
}

#[cfg(test)]
mod tests;
