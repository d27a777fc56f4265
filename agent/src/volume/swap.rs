//! Putting a staged dir in place of a target dir (a volume's mountpoint, an app directory).
//! One `RENAME_EXCHANGE` where the filesystem has it. Where it has not: a journal naming
//! target, staging and aside is written and synced (with its directory) BEFORE the first
//! rename (`target -> aside`), and removed after the second (`staging -> target`). [`repair`]
//! (run before every restore of a target, and by [`recover_dir`] at agent start) rolls back a
//! swap cut between the two renames by putting the aside back, finishes it where only the
//! synced staging is left, and then removes what dead owners left. It never deletes the only
//! copy of a target's contents.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::fs::{RenameFlags, renameat_with};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use super::VolumeError;
use super::staging::{self, ASIDE, Entry, JOURNAL};

/// A fault to inject into swaps, for tests of crash recovery (set once at start by the
/// binaries from `BERTH_AGENT_TEST_CUT_SWAP`, or by a test through [`set_test_cut`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TestCut {
    /// No fault: the normal behaviour.
    Off = 0,
    /// Swap with two renames even where the filesystem can exchange (`two_renames`).
    TwoRenames = 1,
    /// Two renames, and return an error right after the first, leaving things as a crash
    /// would (`stop_after_first_rename`).
    StopAfterFirstRename = 2,
    /// Two renames, and abort the process right after the first (`after_first_rename`).
    AbortAfterFirstRename = 3,
}

impl TestCut {
    /// The environment variable the binaries read once at start.
    pub const ENV: &'static str = "BERTH_AGENT_TEST_CUT_SWAP";

    /// Sets the cut `value` (of [`TestCut::ENV`]) names, if any.
    pub fn apply_env(value: Option<String>) -> Result<(), String> {
        let Some(value) = value else { return Ok(()) };
        let cut = Self::parse(&value).ok_or_else(|| {
            format!(
                "{}={value:?}: expected two_renames, stop_after_first_rename or \
                 after_first_rename",
                Self::ENV
            )
        })?;
        set_test_cut(cut);
        Ok(())
    }

    /// The value of `BERTH_AGENT_TEST_CUT_SWAP`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "" | "off" => Some(TestCut::Off),
            "two_renames" => Some(TestCut::TwoRenames),
            "stop_after_first_rename" => Some(TestCut::StopAfterFirstRename),
            "after_first_rename" => Some(TestCut::AbortAfterFirstRename),
            _ => None,
        }
    }

    fn now() -> Self {
        match CUT.load(Ordering::Relaxed) {
            1 => TestCut::TwoRenames,
            2 => TestCut::StopAfterFirstRename,
            3 => TestCut::AbortAfterFirstRename,
            _ => TestCut::Off,
        }
    }
}

static CUT: AtomicU8 = AtomicU8::new(0);

/// Sets the fault injected into every later swap of this process.
pub fn set_test_cut(cut: TestCut) {
    if cut != TestCut::Off {
        tracing::warn!(?cut, "swap fault injection is on (tests only)");
    }
    CUT.store(cut as u8, Ordering::Relaxed);
}

/// The journal of a two-rename swap.
#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    target: PathBuf,
    staging: PathBuf,
    aside: PathBuf,
    /// The staged contents were synced before the journal was written.
    staging_synced: bool,
}

/// Outcome of a swap.
#[derive(Debug)]
pub enum Swapped {
    /// Swapped in; `old` holds the previous contents, for the caller to remove.
    Done { old: PathBuf },
    /// The filesystem refused; the staging dir is gone, the target untouched.
    Impossible(String),
}

/// Puts the synced dir `staging` (beside `target`) in place of the dir `target`.
pub fn swap(target: &Path, staging: &Path) -> Result<Swapped, VolumeError> {
    swap_with(target, staging, TestCut::now())
}

/// [`swap`] with fault `cut` injected.
pub(crate) fn swap_with(
    target: &Path,
    staging: &Path,
    cut: TestCut,
) -> Result<Swapped, VolumeError> {
    let parent = target.parent().unwrap_or(Path::new("/"));
    let (Some(target_name), Some(staging_name)) = (target.file_name(), staging.file_name()) else {
        return Ok(Swapped::Impossible("the target has no name".into()));
    };
    let dir = File::open(parent).map_err(|e| VolumeError::io("open", parent, e))?;
    if cut == TestCut::Off {
        match renameat_with(
            dir.as_fd(),
            staging_name,
            dir.as_fd(),
            target_name,
            RenameFlags::EXCHANGE,
        ) {
            Ok(()) => {
                sync_dir(parent)?;
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
            Err(e) => return Err(VolumeError::io("swap in", staging, e.into())),
        }
    }
    two_renames(target, staging, parent, cut)
}

fn two_renames(
    target: &Path,
    staging: &Path,
    parent: &Path,
    cut: TestCut,
) -> Result<Swapped, VolumeError> {
    let aside = staging::with_suffix(staging, ASIDE);
    let journal_path = staging::with_suffix(staging, JOURNAL);
    let journal = Journal {
        target: target.to_owned(),
        staging: staging.to_owned(),
        aside: aside.clone(),
        staging_synced: true,
    };
    write_journal(&journal_path, &journal)?;
    sync_dir(parent)?;
    if let Err(e) = fs::rename(target, &aside) {
        let _ = fs::remove_file(&journal_path);
        if matches!(e.raw_os_error(), Some(c) if c == Errno::XDEV.raw_os_error() || c == Errno::BUSY.raw_os_error())
        {
            remove_tree(staging)?;
            return Ok(Swapped::Impossible(format!(
                "the filesystem refused the swap ({e})"
            )));
        }
        return Err(VolumeError::io("rename", target, e));
    }
    match cut {
        TestCut::AbortAfterFirstRename => {
            eprintln!("berth: test fault: aborting between the two renames of a swap");
            std::process::abort();
        }
        TestCut::StopAfterFirstRename => {
            return Err(VolumeError::CutForTest {
                target: target.to_owned(),
            });
        }
        TestCut::Off | TestCut::TwoRenames => {}
    }
    if let Err(e) = fs::rename(staging, target) {
        if fs::rename(&aside, target).is_ok() {
            let _ = fs::remove_file(&journal_path);
        }
        return Err(VolumeError::io("rename", staging, e));
    }
    sync_dir(parent)?;
    fs::remove_file(&journal_path).map_err(|e| VolumeError::io("remove", &journal_path, e))?;
    sync_dir(parent)?;
    Ok(Swapped::Done { old: aside })
}

fn write_journal(path: &Path, journal: &Journal) -> Result<(), VolumeError> {
    let bytes = serde_json::to_vec(journal).expect("a journal serializes");
    let mut f = File::create(path).map_err(|e| VolumeError::io("create", path, e))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| VolumeError::io("write", path, e))
}

/// One repair at a time per process: the start hook and a restore may meet on one target.
static REPAIRING: Mutex<()> = Mutex::new(());

/// Before restoring `target`: finishes or rolls back a swap of it that a dead owner cut
/// between its two renames, then removes what dead owners left beside it. Entries of live
/// owners (another restore running now) are never touched.
pub fn repair(target: &Path) -> Result<(), VolumeError> {
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return Ok(());
    };
    let name = name.to_string_lossy().into_owned();
    let _one = REPAIRING.lock().unwrap_or_else(|p| p.into_inner());
    let entries = entries(parent, &name)?;
    let dead: Vec<&Entry> = entries.iter().filter(|e| e.is_dead()).collect();
    for journal in dead.iter().filter(|e| e.suffix == JOURNAL) {
        recover(journal)?;
    }
    if !exists(target)? {
        // A cut swap without a readable journal: its aside is the only copy.
        if let Some(aside) = dead
            .iter()
            .find(|e| e.suffix == ASIDE && exists_or(&e.path))
        {
            tracing::warn!(target = %target.display(), "a swap was cut between its two renames; putting the previous contents back");
            rename_synced(&aside.path, target)?;
        }
        legacy_rollback(parent, &name, target)?;
    }
    for e in &dead {
        if !exists(&e.path)? {
            continue;
        }
        tracing::info!(path = %e.path.display(), "removing what a dead restore left");
        if !fs::symlink_metadata(&e.path).is_ok_and(|m| m.is_dir()) {
            fs::remove_file(&e.path).map_err(|err| VolumeError::io("remove", &e.path, err))?;
        } else {
            remove_tree(&e.path)?;
        }
    }
    for e in entries.iter().filter(|e| e.owner.is_none()) {
        tracing::warn!(path = %e.path.display(), "leaving a staging entry whose owner cannot be told; remove it by hand if no restore runs");
    }
    Ok(())
}

/// At agent start: [`repair`]s every target in `dir` that has staging entries beside it.
pub fn recover_dir(dir: &Path) -> Result<(), VolumeError> {
    let mut targets: Vec<String> = Vec::new();
    let listed = match fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(VolumeError::io("list", dir, e)),
    };
    for entry in listed {
        let entry = entry.map_err(|e| VolumeError::io("list", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(t) = staging::target_of(&name)
            && !targets.iter().any(|x| x == t)
        {
            targets.push(t.to_owned());
        }
    }
    for t in targets {
        repair(&dir.join(t))?;
    }
    Ok(())
}

/// Rolls a cut swap back (or finishes it where the previous contents are gone too).
fn recover(journal_entry: &Entry) -> Result<(), VolumeError> {
    let path = &journal_entry.path;
    let journal: Journal = match fs::read(path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(j) => j,
            Err(e) => {
                // Written and synced before the first rename: unreadable means it was cut
                // while being written, before anything was renamed.
                tracing::warn!(path = %path.display(), error = %e, "ignoring a torn swap journal");
                return Ok(());
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(VolumeError::io("read", path, e)),
    };
    let Journal {
        target,
        staging,
        aside,
        staging_synced,
    } = journal;
    if !exists(&target)? {
        if exists(&aside)? {
            tracing::warn!(target = %target.display(), "a swap was cut between its two renames; rolling back to the previous contents");
            rename_synced(&aside, &target)?;
        } else if staging_synced && exists(&staging)? {
            tracing::warn!(target = %target.display(), "a swap was cut and only its synced staging is left; finishing it");
            rename_synced(&staging, &target)?;
        }
    }
    Ok(())
}

/// Agents before owner-named staging dirs: `<name>.berth-restore-<id>.old` (volumes) and
/// `.berth-restore~<name>~<id>.old` (app dirs) are put back when the target is missing.
fn legacy_rollback(parent: &Path, name: &str, target: &Path) -> Result<(), VolumeError> {
    let volume = format!("{name}.berth-restore-");
    let app = format!(".berth-restore~{name}~");
    for entry in fs::read_dir(parent).map_err(|e| VolumeError::io("list", parent, e))? {
        let entry = entry.map_err(|e| VolumeError::io("list", parent, e))?;
        let n = entry.file_name().to_string_lossy().into_owned();
        if (n.starts_with(&volume) || n.starts_with(&app)) && n.ends_with(".old") {
            tracing::warn!(target = %target.display(), "an earlier agent's swap was cut between two renames; putting the previous contents back");
            return rename_synced(&entry.path(), target);
        }
    }
    Ok(())
}

fn entries(parent: &Path, name: &str) -> Result<Vec<Entry>, VolumeError> {
    let mut found = Vec::new();
    let listed = match fs::read_dir(parent) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(VolumeError::io("list", parent, e)),
    };
    for entry in listed {
        let entry = entry.map_err(|e| VolumeError::io("list", parent, e))?;
        if let Some(e) = staging::parse(parent, name, &entry.file_name().to_string_lossy()) {
            found.push(e);
        }
    }
    Ok(found)
}

fn rename_synced(from: &Path, to: &Path) -> Result<(), VolumeError> {
    fs::rename(from, to).map_err(|e| VolumeError::io("rename", from, e))?;
    sync_dir(to.parent().unwrap_or(Path::new("/")))
}

fn exists(path: &Path) -> Result<bool, VolumeError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(VolumeError::io("inspect", path, e)),
    }
}

fn exists_or(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// fsync of a directory, so renames and new entries in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), VolumeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| VolumeError::io("sync", dir, e))
}

/// Removes a tree this process owns (never following symlinks); a missing path is fine.
pub(crate) fn remove_tree(path: &Path) -> Result<(), VolumeError> {
    staging::remove_owned(path).map_err(|e| VolumeError::io("remove", path, e))
}

#[cfg(test)]
mod tests;
