//! Walking an app directory for an archive: depth first, names in byte order, never following
//! symlinks, every stat, open and readlink relative to its directory's descriptor (a path walk
//! per file costs twice as much on trees of small files).

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, Stat};

use super::ArchiveError;

/// One entry met by the walk.
pub(crate) struct Entry<'a> {
    /// Path relative to the root; empty for the root itself.
    pub rel: &'a Path,
    /// The directory holding the entry, and its name there.
    dir: BorrowedFd<'a>,
    name: &'a CStr,
    pub stat: &'a Stat,
    root: &'a Path,
}

impl Entry<'_> {
    pub fn kind(&self) -> FileType {
        FileType::from_raw_mode(self.stat.st_mode as _)
    }

    /// Where the entry is, for messages.
    pub fn full(&self) -> PathBuf {
        self.root.join(self.rel)
    }

    /// Opens a regular file for reading, refusing to follow a symlink swapped in meanwhile.
    pub fn open(&self) -> io::Result<File> {
        let fd = rustix::fs::openat(
            self.dir,
            self.name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
    }

    /// A symlink's target.
    pub fn read_link(&self) -> io::Result<PathBuf> {
        let target = rustix::fs::readlinkat(self.dir, self.name, Vec::new())?;
        Ok(PathBuf::from(OsStr::from_bytes(target.as_bytes())))
    }
}

type Visit<'a> = dyn FnMut(&Entry<'_>) -> Result<(), ArchiveError> + 'a;

/// A directory being walked: its descriptor and the names still to visit (last first).
struct Level {
    dir: Dir,
    rel: PathBuf,
    names: Vec<CString>,
}

/// Visits `root` (as the empty relative path) and everything under it. Entries that vanish
/// while walking are skipped with a warning.
pub(crate) fn walk(
    root: &Path,
    cancel: &AtomicBool,
    visit: &mut Visit<'_>,
) -> Result<(), ArchiveError> {
    let read_err = |path: PathBuf| {
        move |e: rustix::io::Errno| ArchiveError::Read {
            path,
            source: e.into(),
        }
    };
    let root_name = CString::new(root.as_os_str().as_bytes())
        .map_err(|_| read_err(root.to_owned())(rustix::io::Errno::INVAL))?;
    let stat = rustix::fs::statat(CWD, &root_name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(read_err(root.to_owned()))?;
    visit(&Entry {
        rel: Path::new(""),
        dir: CWD,
        name: &root_name,
        stat: &stat,
        root,
    })?;
    let mut stack = vec![open_level(CWD, &root_name, PathBuf::new(), root)?];
    while let Some(level) = stack.last_mut() {
        if cancel.load(Ordering::Relaxed) {
            return Err(ArchiveError::Cancelled);
        }
        let Some(name) = level.names.pop() else {
            stack.pop();
            continue;
        };
        let fd = level.dir.fd().map_err(read_err(root.join(&level.rel)))?;
        let rel = level.rel.join(OsStr::from_bytes(name.as_bytes()));
        let stat = match rustix::fs::statat(fd, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(s) => s,
            Err(rustix::io::Errno::NOENT) => {
                tracing::warn!(path = %root.join(&rel).display(), "entry vanished while archiving; skipped");
                continue;
            }
            Err(e) => return Err(read_err(root.join(&rel))(e)),
        };
        let entry = Entry {
            rel: &rel,
            dir: fd,
            name: &name,
            stat: &stat,
            root,
        };
        visit(&entry)?;
        if entry.kind() == FileType::Directory {
            let next = open_level(fd, &name, rel.clone(), root)?;
            stack.push(next);
        }
    }
    Ok(())
}

/// Opens directory `name` in `parent` and reads its entry names, sorted.
fn open_level(
    parent: BorrowedFd<'_>,
    name: &CStr,
    rel: PathBuf,
    root: &Path,
) -> Result<Level, ArchiveError> {
    let err = |e: rustix::io::Errno| ArchiveError::Read {
        path: root.join(&rel),
        source: e.into(),
    };
    let fd = rustix::fs::openat(
        parent.as_fd(),
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(err)?;
    let mut dir = Dir::new(fd).map_err(err)?;
    let mut names = Vec::new();
    for entry in dir.by_ref() {
        let entry = entry.map_err(err)?;
        let n = entry.file_name();
        if n != c"." && n != c".." {
            names.push(n.to_owned());
        }
    }
    names.sort_unstable_by(|a, b| b.cmp(a));
    Ok(Level { dir, rel, names })
}
