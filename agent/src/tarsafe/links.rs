//! Where a symlink leads, resolved against the tree extracted so far and following the
//! symlinks it holds, as the kernel would, but looking only inside the root: what
//! `refuse_escaping_links` and hard links to symlinks need, and what no lexical check can
//! tell (after `p -> .`, `esc -> p/p/p/p/../../../..` reads as inside and leads out). It reads
//! the tree through a `View`: the extracted one on disk, or the one a verify only models.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType};
use rustix::io::Errno;

use super::dirs::{DirError, open_dir};

/// Most symlinks followed in one resolution (the kernel's limit).
const MAX_HOPS: u32 = 40;

/// Where a symlink leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Leads {
    Inside,
    Outside,
    /// Through more than [`MAX_HOPS`] symlinks (the kernel would give up: a loop).
    TooManyLinks,
}

/// What [`resolve`] needs to know of a tree: the extracted one on disk ([`FdView`]) or one
/// only modelled (`super::shadow`), so both are resolved by the same code.
pub(super) trait View {
    /// A directory resolution stands in.
    type Dir;
    /// Directory `name` in `parent` (`None`: the root), never through a symlink; `None` if
    /// it is not one.
    fn enter(&self, parent: Option<&Self::Dir>, name: &[u8]) -> Result<Option<Self::Dir>, Errno>;
    /// What `name` in `parent` is.
    fn what(&self, parent: Option<&Self::Dir>, name: &[u8]) -> Result<What, Errno>;
}

/// What a name in a tree is, as resolution needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum What {
    Dir,
    Symlink(Vec<u8>),
    /// Anything else, or nothing.
    Other,
}

/// The tree on disk under a root directory.
pub(super) struct FdView<'a>(pub BorrowedFd<'a>);

impl View for FdView<'_> {
    type Dir = OwnedFd;

    fn enter(&self, parent: Option<&OwnedFd>, name: &[u8]) -> Result<Option<OwnedFd>, Errno> {
        let parent = parent.map_or(self.0, AsFd::as_fd);
        match open_dir(parent, name, false) {
            Ok(fd) => Ok(Some(fd)),
            Err(DirError::NotADir(_)) | Err(DirError::Io(Errno::NOENT)) => Ok(None),
            Err(DirError::Io(e)) => Err(e),
        }
    }

    fn what(&self, parent: Option<&OwnedFd>, name: &[u8]) -> Result<What, Errno> {
        let parent = parent.map_or(self.0, AsFd::as_fd);
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => Ok(
                What::Symlink(rustix::fs::readlinkat(parent, name, Vec::new())?.into_bytes()),
            ),
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => Ok(What::Dir),
            Ok(_) | Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(What::Other),
            Err(e) => Err(e),
        }
    }
}

/// Where a symlink in directory `dir` (a cleaned path under the root of `view`) pointing at
/// `target` leads. `floor` components of `dir` name the directory it must stay in (0: the
/// root). A component that is not there yet, or not a directory, is taken as it reads; the
/// caller resolves again once the tree is complete.
pub(super) fn resolve<V: View>(
    view: &V,
    dir: &[u8],
    target: &[u8],
    floor: usize,
) -> Result<Leads, Errno> {
    if target.first() == Some(&b'/') {
        return Ok(Leads::Outside);
    }
    // The directories from the root down to where resolution stands: one the view opened
    // while they exist, `None` from the first that does not.
    let mut at: Vec<Option<V::Dir>> = Vec::new();
    let mut todo: VecDeque<Vec<u8>> = VecDeque::new();
    let mut hops = 0;
    for part in parts(dir) {
        let next = match top(&at) {
            Some(parent) => view.enter(parent, part)?,
            None => None,
        };
        at.push(next);
    }
    let floor = floor.min(at.len());
    todo.extend(parts(target).map(<[u8]>::to_vec));
    while let Some(part) = todo.pop_front() {
        let part = part.as_slice();
        if part == b".." {
            if at.len() <= floor {
                return Ok(Leads::Outside);
            }
            at.pop();
            continue;
        }
        let Some(parent) = top(&at) else {
            at.push(None);
            continue;
        };
        match view.what(parent, part)? {
            What::Symlink(next) => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Ok(Leads::TooManyLinks);
                }
                if next.first() == Some(&b'/') {
                    return Ok(Leads::Outside);
                }
                for p in parts(&next).rev() {
                    todo.push_front(p.to_vec());
                }
            }
            What::Dir => {
                let next = view.enter(parent, part)?;
                at.push(next);
            }
            What::Other => at.push(None),
        }
    }
    Ok(Leads::Inside)
}

/// The components of a path that move: empty ones and `.` say nothing.
fn parts(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|b| *b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
}

/// Where resolution stands: `Some(None)` at the root, `None` past a missing directory.
fn top<D>(at: &[Option<D>]) -> Option<Option<&D>> {
    match at.last() {
        None => Some(None),
        Some(d) => d.as_ref().map(Some),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use rustix::fs::{Mode, OFlags};

    use super::*;

    fn root(dir: &std::path::Path) -> OwnedFd {
        rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }

    #[test]
    fn chains_of_links_are_followed_inside_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        symlink(".", d.join("p")).unwrap();
        symlink("../..", d.join("a/b/up")).unwrap();
        symlink("loop2", d.join("loop1")).unwrap();
        symlink("loop1", d.join("loop2")).unwrap();
        let fd = root(d);
        let view = FdView(fd.as_fd());
        let leads = |dir: &[u8], target: &[u8]| resolve(&view, dir, target, 0).unwrap();
        assert_eq!(leads(b"", b"a/b"), Leads::Inside);
        assert_eq!(leads(b"a/b", b"../../x"), Leads::Inside);
        assert_eq!(leads(b"a/b", b"../../../x"), Leads::Outside);
        assert_eq!(leads(b"", b"/etc"), Leads::Outside);
        // Lexically inside; through `p -> .` it leaves.
        assert_eq!(leads(b"", b"p/p/p/p/../../../.."), Leads::Outside);
        assert_eq!(leads(b"", b"p/p/x"), Leads::Inside);
        assert_eq!(leads(b"", b"a/b/up/x"), Leads::Inside);
        assert_eq!(leads(b"", b"a/b/up/.."), Leads::Outside);
        assert_eq!(leads(b"a", b"b/up/../x"), Leads::Outside);
        // Not there yet: read as written.
        assert_eq!(leads(b"", b"later/../x"), Leads::Inside);
        assert_eq!(leads(b"", b"loop1"), Leads::TooManyLinks);
        // Confined to the first component (a volume archive's volumes).
        assert_eq!(resolve(&view, b"a", b"../a/x", 1).unwrap(), Leads::Outside);
        assert_eq!(resolve(&view, b"a/b", b"../x", 1).unwrap(), Leads::Inside);
    }
}
