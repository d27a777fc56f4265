//! Directories under the extraction root, opened one component at a time with `O_NOFOLLOW`,
//! so no symlink (from the archive or elsewhere, pointing inside or out) is ever gone
//! through. The chain of the current parent stays open: archives list entries depth first,
//! so most entries reuse it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Mode, OFlags, openat};
use rustix::io::Errno;

/// Open directories from the root down to the current parent.
pub(super) struct Dirs {
    root: OwnedFd,
    /// `(component, fd)` from the root's child down.
    chain: Vec<(Vec<u8>, OwnedFd)>,
}

/// Why a directory could not be reached.
#[derive(Debug)]
pub(super) enum DirError {
    /// A component is a symlink or not a directory: the archive tries to go through it.
    NotADir(Vec<u8>),
    Io(Errno),
}

impl Dirs {
    pub fn new(root: OwnedFd) -> Self {
        Self {
            root,
            chain: Vec::new(),
        }
    }

    /// The directory at `rel` (components joined by `/`, empty for the root), creating
    /// missing directories (mode 0755 until their own entry, if any, sets theirs).
    pub fn get(&mut self, rel: &[u8]) -> Result<BorrowedFd<'_>, DirError> {
        let parts: Vec<&[u8]> = if rel.is_empty() {
            Vec::new()
        } else {
            rel.split(|b| *b == b'/').collect()
        };
        let keep = self
            .chain
            .iter()
            .zip(&parts)
            .take_while(|((have, _), want)| have.as_slice() == **want)
            .count();
        self.chain.truncate(keep);
        for (i, part) in parts.iter().enumerate().skip(keep) {
            let parent = self
                .chain
                .last()
                .map_or(self.root.as_fd(), |(_, fd)| fd.as_fd());
            let fd = open_dir(parent, part, true).map_err(|e| match e {
                DirError::NotADir(_) => DirError::NotADir(parts[..=i].join(&b'/')),
                e => e,
            })?;
            self.chain.push((part.to_vec(), fd));
        }
        Ok(self
            .chain
            .last()
            .map_or(self.root.as_fd(), |(_, fd)| fd.as_fd()))
    }

    /// The root directory.
    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Forgets the open chain (after a directory in it was replaced).
    pub fn forget(&mut self) {
        self.chain.clear();
    }

    /// Opens the directory at `rel` for reading (to set its attributes), not creating it.
    pub fn open_existing(&self, rel: &[u8]) -> Result<OwnedFd, DirError> {
        let mut fd = rustix::io::dup(&self.root).map_err(DirError::Io)?;
        if rel.is_empty() {
            return Ok(fd);
        }
        for part in rel.split(|b| *b == b'/') {
            fd = open_dir(fd.as_fd(), part, false)?;
        }
        Ok(fd)
    }
}

/// Opens (and optionally creates) one directory component, never following a symlink.
pub(super) fn open_dir(
    parent: BorrowedFd<'_>,
    name: &[u8],
    create: bool,
) -> Result<OwnedFd, DirError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match openat(parent, name, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOENT) if create => {
            match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(DirError::Io(e)),
            }
            openat(parent, name, flags, Mode::empty()).map_err(|e| classify(e, name))
        }
        Err(e) => Err(classify(e, name)),
    }
}

fn classify(e: Errno, name: &[u8]) -> DirError {
    match e {
        Errno::LOOP | Errno::NOTDIR => DirError::NotADir(name.to_vec()),
        e => DirError::Io(e),
    }
}

/// Removes whatever is at `name` in `parent` so an entry can take its place; a directory
/// is only removed when empty.
pub(super) fn remove_existing(parent: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) => rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(dir: &std::path::Path) -> OwnedFd {
        rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }

    #[test]
    fn creates_missing_parents_and_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let mut dirs = Dirs::new(root(dir.path()));
        dirs.get(b"a/b/c").unwrap();
        assert!(dir.path().join("a/b/c").is_dir());
        dirs.get(b"a/b").unwrap();
        dirs.get(b"a/x").unwrap();
        assert!(dir.path().join("a/x").is_dir());
        match dirs.get(b"link/sub") {
            Err(DirError::NotADir(p)) => assert_eq!(p, b"link"),
            other => panic!("went through a symlink: {:?}", other.map(|_| ())),
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert!(dirs.open_existing(b"link").is_err());
        dirs.open_existing(b"a/b/c").unwrap();
    }
}
