//! Tarring one volume from its mountpoint: a walk that never follows symlinks, entries named
//! like GNU tar's (`./`, `./dir/`, `./dir/file`), numeric owners (no user names, so any tar
//! restores the ids), modes, mtimes, symlinks, hard links, devices, fifos, empty dirs, xattrs
//! and sparse files as GNU sparse entries. Blocking: run it on a blocking thread.

mod out;
mod walk;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags, SeekFrom};
use rustix::io::Errno;
use tar::{EntryType, Header};
use tokio_util::sync::CancellationToken;

use super::error::WarmError;
use super::progress::Progress;
pub(crate) use out::Xattrs;
use out::{Region, TarOut, set_link, set_name, set_sparse};
use walk::{Entry, walk};

/// What a volume holds: file data bytes and entries (the root included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub bytes: u64,
    pub entries: u64,
}

/// Counts what `pack` will do, for progress totals and the free-space check.
pub(crate) fn scan(root: &Path, cancel: &CancellationToken) -> Result<Totals, WarmError> {
    let mut totals = Totals::default();
    let mut seen = HashSet::new();
    walk(root, cancel, |e| {
        totals.entries += 1;
        let st = e.stat;
        if e.file_type() == FileType::RegularFile
            && (st.st_nlink < 2 || seen.insert((st.st_dev, st.st_ino)))
        {
            let size = u64::try_from(st.st_size).unwrap_or(0);
            let allocated = u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512);
            totals.bytes += allocated.min(size);
        }
        Ok(())
    })?;
    Ok(totals)
}

/// Writes the tar of the tree at `root` to the new file `tar` and syncs it.
pub(crate) fn pack(
    root: &Path,
    tar: &Path,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Totals, WarmError> {
    let mut out = TarOut::create(tar)?;
    let mut packer = Packer {
        links: HashMap::new(),
        xattr_names: vec![0; 64 << 10],
        xattr_value: vec![0; 64 << 10],
        totals: Totals::default(),
    };
    walk(root, cancel, |e| {
        packer.entry(&mut out, e, progress, cancel)?;
        progress.add_entry();
        packer.totals.entries += 1;
        Ok(())
    })?;
    let size = out.finish()?;
    progress.add_written(size);
    Ok(packer.totals)
}

struct Packer {
    /// First tar name of every multiply-linked inode seen: `(dev, ino)` → name.
    links: HashMap<(u64, u64), Vec<u8>>,
    xattr_names: Vec<u8>,
    xattr_value: Vec<u8>,
    totals: Totals,
}

impl Packer {
    fn entry(
        &mut self,
        out: &mut TarOut,
        e: &Entry<'_>,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<(), WarmError> {
        let (name, path, st) = (e.name, e.path, e.stat);
        let ft = e.file_type();
        if ft == FileType::Socket {
            tracing::warn!(path = %path.display(), "skipping a socket; sockets cannot be archived");
            return Ok(());
        }
        let mut h = Header::new_gnu();
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(u64::from(st.st_uid));
        h.set_gid(u64::from(st.st_gid));
        h.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
        h.set_size(0);
        set_name(&mut h, name);

        if ft == FileType::RegularFile && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                h.set_entry_type(EntryType::Link);
                set_link(&mut h, &first);
                out.long_names(name, Some(&first))?;
                return out.header(h);
            }
            self.links.insert(key, name.to_vec());
        }

        if ft == FileType::RegularFile {
            let file = open_source(e)?;
            let xattrs = self.xattrs(Source::Fd(file.as_fd()), path)?;
            let size = u64::try_from(st.st_size).unwrap_or(0);
            let allocated = u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512);
            let regions = if allocated < size {
                data_regions(&file, size).map_err(|err| WarmError::io("map holes of", path, err))?
            } else {
                vec![(0, size)]
            };
            out.xattrs(&xattrs)?;
            out.long_names(name, None)?;
            if regions.len() == 1 && regions[0] == (0, size) {
                h.set_entry_type(EntryType::Regular);
                h.set_size(size);
                out.header(h)?;
                out.data(&file, path, 0, size, progress, cancel)?;
                self.totals.bytes += size;
            } else {
                let stored: u64 = regions.iter().map(|r| r.1).sum();
                h.set_entry_type(EntryType::GNUSparse);
                h.set_size(stored);
                let rest = set_sparse(&mut h, &regions, size).to_vec();
                out.header(h)?;
                out.sparse_extensions(&rest)?;
                for (off, len) in regions {
                    out.data(&file, path, off, len, progress, cancel)?;
                }
                self.totals.bytes += stored;
            }
            return out.end_entry();
        }

        let source = match e.dir {
            Some(fd) => Source::Fd(fd),
            None => Source::Path,
        };
        let xattrs = self.xattrs(source, path)?;
        let link = match ft {
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(e.parent, e.leaf, Vec::new())
                    .map_err(|err| WarmError::io("read link", path, err.into()))?
                    .into_bytes();
                h.set_entry_type(EntryType::Symlink);
                set_link(&mut h, &target);
                Some(target)
            }
            FileType::Directory => {
                h.set_entry_type(EntryType::Directory);
                None
            }
            FileType::Fifo => {
                h.set_entry_type(EntryType::Fifo);
                None
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                h.set_entry_type(if ft == FileType::CharacterDevice {
                    EntryType::Char
                } else {
                    EntryType::Block
                });
                let dev = st.st_rdev;
                h.set_device_major(rustix::fs::major(dev))
                    .and_then(|()| h.set_device_minor(rustix::fs::minor(dev)))
                    .map_err(|err| WarmError::io("archive device", path, err))?;
                None
            }
            other => {
                tracing::warn!(path = %path.display(), kind = ?other, "skipping an entry of a kind tar cannot hold");
                return Ok(());
            }
        };
        out.xattrs(&xattrs)?;
        out.long_names(name, link.as_deref())?;
        out.header(h)
    }

    /// Every extended attribute of an entry (never following a symlink), as GNU tar
    /// `--xattrs` would keep them: read through its fd when it has one, else by path.
    fn xattrs(&mut self, source: Source<'_>, path: &Path) -> Result<Xattrs, WarmError> {
        let listed = match source {
            Source::Fd(fd) => rustix::fs::flistxattr(fd, &mut self.xattr_names[..]),
            Source::Path => rustix::fs::llistxattr(path, &mut self.xattr_names[..]),
        };
        let listed = match listed {
            Ok(n) => n,
            Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(WarmError::io("list xattrs of", path, e.into())),
        };
        let mut out = Vec::new();
        for name in self.xattr_names[..listed].split(|b| *b == 0) {
            if name.is_empty() {
                continue;
            }
            let value = match source {
                Source::Fd(fd) => rustix::fs::fgetxattr(fd, name, &mut self.xattr_value[..]),
                Source::Path => rustix::fs::lgetxattr(path, name, &mut self.xattr_value[..]),
            };
            match value {
                Ok(n) => out.push((name.to_vec(), self.xattr_value[..n].to_vec())),
                Err(Errno::NODATA) => {}
                Err(e) => return Err(WarmError::io("read xattrs of", path, e.into())),
            }
        }
        Ok(out)
    }
}

/// Where an entry's xattrs are read from.
#[derive(Clone, Copy)]
enum Source<'a> {
    Fd(BorrowedFd<'a>),
    Path,
}

/// Opens a file to archive without following a symlink and without touching its atime.
fn open_source(e: &Entry<'_>) -> Result<File, WarmError> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let opened = match rustix::fs::openat(e.parent, e.leaf, flags | OFlags::NOATIME, Mode::empty())
    {
        // O_NOATIME needs ownership or CAP_FOWNER.
        Err(Errno::PERM) => rustix::fs::openat(e.parent, e.leaf, flags, Mode::empty()),
        other => other,
    };
    opened
        .map(File::from)
        .map_err(|err| WarmError::io("open", e.path, err.into()))
}

/// The data regions of a file with holes, block-aligned, ending with `(size, 0)` when the
/// file ends in a hole (as GNU tar writes it).
pub(crate) fn data_regions(file: &File, size: u64) -> io::Result<Vec<Region>> {
    let mut regions: Vec<Region> = Vec::new();
    let mut pos = 0;
    while pos < size {
        let start = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL) => return Ok(vec![(0, size)]),
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = rustix::fs::seek(file, SeekFrom::Hole(start))?.min(size);
        let start = start - start % 512;
        let end = end.div_ceil(512).saturating_mul(512).min(size);
        match regions.last_mut() {
            Some(last) if last.0 + last.1 >= start => last.1 = end - last.0,
            _ => regions.push((start, end - start)),
        }
        pos = end;
    }
    if regions.last().is_none_or(|(off, len)| off + len < size) {
        regions.push((size, 0));
    }
    Ok(regions)
}

#[cfg(test)]
mod tests;
