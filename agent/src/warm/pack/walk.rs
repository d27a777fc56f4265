//! The walk of a volume for `pack` and `scan`: directories opened one at a time without
//! following symlinks, every entry looked at relative to its open directory (one lookup,
//! not the whole path), children sorted by name, depth first.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use tokio_util::sync::CancellationToken;

use crate::warm::error::WarmError;

/// One entry of the walk.
pub(crate) struct Entry<'a> {
    /// Its name in the tar: `./`, `./dir/`, `./dir/file`.
    pub name: &'a [u8],
    /// The directory holding it, and its name there (`.` for the root).
    pub parent: BorrowedFd<'a>,
    pub leaf: &'a std::ffi::CStr,
    /// Its own open fd, for a directory.
    pub dir: Option<BorrowedFd<'a>>,
    pub stat: &'a Stat,
    /// Its full path, for messages.
    pub path: &'a Path,
}

impl Entry<'_> {
    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.stat.st_mode)
    }
}

struct Level {
    fd: OwnedFd,
    name: Vec<u8>,
    path: PathBuf,
    kids: Vec<CString>,
    next: usize,
}

fn io_err(op: &'static str, path: &Path, e: Errno) -> WarmError {
    WarmError::io(op, path, e.into())
}

fn open_dir(parent: BorrowedFd<'_>, name: &std::ffi::CStr) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn children(fd: &OwnedFd, path: &Path) -> Result<Vec<CString>, WarmError> {
    let mut names = Vec::new();
    let dir = Dir::read_from(fd).map_err(|e| io_err("list", path, e))?;
    for entry in dir {
        let entry = entry.map_err(|e| io_err("list", path, e))?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// Visits `root` (as `./`) and everything below it.
pub(crate) fn walk(
    root: &Path,
    cancel: &CancellationToken,
    mut visit: impl FnMut(&Entry<'_>) -> Result<(), WarmError>,
) -> Result<(), WarmError> {
    let root_fd = open_dir(
        rustix::fs::CWD,
        &CString::new(root.as_os_str().as_encoded_bytes()).map_err(|_| {
            WarmError::Input(format!("mountpoint {} contains a NUL byte", root.display()))
        })?,
    )
    .map_err(|e| match e {
        Errno::NOTDIR | Errno::LOOP => WarmError::io(
            "tar",
            root,
            std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "the mountpoint is not a directory",
            ),
        ),
        e => io_err("open", root, e),
    })?;
    let stat = rustix::fs::fstat(&root_fd).map_err(|e| io_err("inspect", root, e))?;
    visit(&Entry {
        name: b"./",
        parent: root_fd.as_fd(),
        leaf: c".",
        dir: Some(root_fd.as_fd()),
        stat: &stat,
        path: root,
    })?;
    let kids = children(&root_fd, root)?;
    let mut stack = vec![Level {
        fd: root_fd,
        name: b"./".to_vec(),
        path: root.to_owned(),
        kids,
        next: 0,
    }];
    while let Some(top) = stack.last_mut() {
        if cancel.is_cancelled() {
            return Err(WarmError::Cancelled);
        }
        let Some(kid) = top.kids.get(top.next).cloned() else {
            stack.pop();
            continue;
        };
        top.next += 1;
        let path = top.path.join(std::ffi::OsStr::from_bytes(kid.to_bytes()));
        let mut name = top.name.clone();
        name.extend_from_slice(kid.to_bytes());
        let stat = match rustix::fs::statat(&top.fd, kid.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(s) => s,
            // Gone since the listing: nothing to keep.
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(io_err("inspect", &path, e)),
        };
        if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
            name.push(b'/');
            let fd = match open_dir(top.fd.as_fd(), &kid) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(io_err("open", &path, e)),
            };
            visit(&Entry {
                name: &name,
                parent: top.fd.as_fd(),
                leaf: &kid,
                dir: Some(fd.as_fd()),
                stat: &stat,
                path: &path,
            })?;
            let kids = children(&fd, &path)?;
            stack.push(Level {
                fd,
                name,
                path,
                kids,
                next: 0,
            });
        } else {
            visit(&Entry {
                name: &name,
                parent: top.fd.as_fd(),
                leaf: &kid,
                dir: None,
                stat: &stat,
                path: &path,
            })?;
        }
    }
    Ok(())
}
