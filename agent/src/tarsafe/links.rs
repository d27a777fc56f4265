//! Where a symlink leads, resolved against the tree extracted so far and following the
//! symlinks it holds, as the kernel would, but looking only inside the root: what
//! `refuse_escaping_links` and hard links to symlinks need, and what no lexical check can
//! tell (after `p -> .`, `esc -> p/p/p/p/../../../..` reads as inside and leads out).

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

/// Where a symlink in directory `dir` (a cleaned path under `root`) pointing at `target`
/// leads. `floor` components of `dir` name the directory it must stay in (0: the root).
/// A component that is not there yet, or not a directory, is taken as it reads; the caller
/// resolves again once the tree is complete.
pub(super) fn resolve(
    root: BorrowedFd<'_>,
    dir: &[u8],
    target: &[u8],
    floor: usize,
) -> Result<Leads, Errno> {
    if target.first() == Some(&b'/') {
        return Ok(Leads::Outside);
    }
    // The directories from the root down to where resolution stands: an open descriptor
    // while they exist, `None` from the first that does not.
    let mut at: Vec<Option<OwnedFd>> = Vec::new();
    let mut todo: VecDeque<Vec<u8>> = VecDeque::new();
    let mut hops = 0;
    for part in parts(dir) {
        let next = match top(root, &at) {
            Some(parent) => enter(parent, part)?,
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
        let Some(parent) = top(root, &at) else {
            at.push(None);
            continue;
        };
        match rustix::fs::statat(parent, part, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Ok(Leads::TooManyLinks);
                }
                let next = rustix::fs::readlinkat(parent, part, Vec::new())?.into_bytes();
                if next.first() == Some(&b'/') {
                    return Ok(Leads::Outside);
                }
                for p in parts(&next).rev() {
                    todo.push_front(p.to_vec());
                }
            }
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                let next = enter(parent, part)?;
                at.push(next);
            }
            Ok(_) | Err(Errno::NOENT) | Err(Errno::NOTDIR) => at.push(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Leads::Inside)
}

/// The components of a path that move: empty ones and `.` say nothing.
fn parts(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|b| *b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
}

fn top<'a>(root: BorrowedFd<'a>, at: &'a [Option<OwnedFd>]) -> Option<BorrowedFd<'a>> {
    match at.last() {
        None => Some(root),
        Some(fd) => fd.as_ref().map(|fd| fd.as_fd()),
    }
}

/// Opens directory `name` in `parent` without following a symlink; `None` if it is not one.
fn enter(parent: BorrowedFd<'_>, name: &[u8]) -> Result<Option<OwnedFd>, Errno> {
    match open_dir(parent, name, false) {
        Ok(fd) => Ok(Some(fd)),
        Err(DirError::NotADir(_)) | Err(DirError::Io(Errno::NOENT)) => Ok(None),
        Err(DirError::Io(e)) => Err(e),
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
        let leads = |dir: &[u8], target: &[u8]| resolve(fd.as_fd(), dir, target, 0).unwrap();
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
        assert_eq!(
            resolve(fd.as_fd(), b"a", b"../a/x", 1).unwrap(),
            Leads::Outside
        );
        assert_eq!(
            resolve(fd.as_fd(), b"a/b", b"../x", 1).unwrap(),
            Leads::Inside
        );
    }
}
