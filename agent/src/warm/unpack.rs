//! Extracting one volume tar into a directory, safely and faithfully: every path is checked
//! (`check`) and every directory is reached component by component without following
//! symlinks (`dirs`), so nothing is written outside the target; symlinks are restored as they
//! were but never followed. Numeric owners (as root), modes, mtimes, xattrs, hard links, and
//! sparse files with their holes (never written as zeros). Directory attributes are set last,
//! deepest first. Blocking: run it on a blocking thread.

pub(crate) mod check;
mod data;
mod dirs;
mod reader;

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;
use tar::{Archive, EntryType};
use tokio_util::sync::CancellationToken;

use super::error::WarmError;
use super::pack::{Totals, Xattrs};
use super::progress::Progress;
use check::{clean_path, restorable};
use dirs::{DirError, Dirs, remove_existing};
use reader::BufFile;

/// Attributes applied to an entry after its content.
struct Attrs {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timespec,
    xattrs: Xattrs,
}

/// Extracts `tar` into the existing directory `target`. `limit` is the data the check
/// counted: an archive that holds more (it changed since) is refused.
pub(crate) fn unpack(
    tar: &Path,
    target: &Path,
    limit: u64,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Totals, WarmError> {
    let file = File::open(tar).map_err(|e| WarmError::io("open", tar, e))?;
    let root = rustix::fs::open(
        target,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| WarmError::io("open", target, e.into()))?;
    let mut dirs = Dirs::new(root);
    let mut u = Unpacker {
        tar,
        target,
        file: &file,
        fixups: Vec::new(),
        as_root: rustix::process::geteuid().is_root(),
        totals: Totals::default(),
        limit,
        progress,
        cancel,
        small: Vec::with_capacity(SMALL as usize),
    };
    let mut archive = Archive::new(BufFile::new(&file));
    let entries = archive.entries_with_seek().map_err(|e| u.bad(e))?;
    for entry in entries {
        if cancel.is_cancelled() {
            return Err(WarmError::Cancelled);
        }
        let mut entry = entry.map_err(|e| u.bad(e))?;
        u.entry(&mut dirs, &mut entry)?;
    }
    u.apply_dir_attrs(&mut dirs)?;
    Ok(u.totals)
}

/// File data up to this size is read through the archive's buffer, larger data is copied
/// in the kernel.
const SMALL: u64 = 64 << 10;

struct Unpacker<'a> {
    tar: &'a Path,
    target: &'a Path,
    file: &'a File,
    /// Directories whose attributes are applied at the end: `(path, attrs)`.
    fixups: Vec<(Vec<u8>, Attrs)>,
    as_root: bool,
    totals: Totals,
    limit: u64,
    progress: &'a Progress,
    cancel: &'a CancellationToken,
    /// Buffer for small file data.
    small: Vec<u8>,
}

impl Unpacker<'_> {
    fn bad(&self, source: std::io::Error) -> WarmError {
        WarmError::BadTar {
            tar: self.tar.to_owned(),
            source,
        }
    }

    fn refuse(&self, entry: &[u8], why: impl Into<String>) -> WarmError {
        WarmError::UnsafeTar {
            tar: self.tar.to_owned(),
            entry: String::from_utf8_lossy(entry).into_owned(),
            why: why.into(),
        }
    }

    fn fs_err(&self, op: &'static str, rel: &[u8], e: impl Into<std::io::Error>) -> WarmError {
        WarmError::io(
            op,
            self.target.join(String::from_utf8_lossy(rel).as_ref()),
            e.into(),
        )
    }

    fn dir_err(&self, raw: &[u8], rel: &[u8], e: DirError) -> WarmError {
        match e {
            DirError::NotADir(through) => self.refuse(
                raw,
                format!(
                    "goes through {:?}, which is a symlink or not a directory",
                    String::from_utf8_lossy(&through)
                ),
            ),
            DirError::Io(e) => self.fs_err("create directory for", rel, e),
        }
    }

    fn entry(
        &mut self,
        dirs: &mut Dirs,
        entry: &mut tar::Entry<'_, BufFile<'_>>,
    ) -> Result<(), WarmError> {
        let raw = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        match restorable(kind) {
            Some(true) => {}
            Some(false) => return Ok(()),
            None => return Err(self.refuse(&raw, format!("has an unsupported type ({kind:?})"))),
        }
        let rel = clean_path(&raw).map_err(|why| self.refuse(&raw, why))?;
        let attrs = self.attrs(entry)?;
        let (parent_rel, name) = match rel.iter().rposition(|b| *b == b'/') {
            Some(i) => (rel[..i].to_vec(), rel[i + 1..].to_vec()),
            None => (Vec::new(), rel.clone()),
        };
        if rel.is_empty() {
            if kind != EntryType::Directory {
                return Err(self.refuse(&raw, "replaces the volume root"));
            }
            self.fixups.push((rel, attrs));
            self.progress.add_entry();
            self.totals.entries += 1;
            return Ok(());
        }
        let as_root = self.as_root;
        let header = entry.header().clone();
        let header_pos = entry.raw_header_position();
        let data_pos = entry.raw_file_position();
        let size = entry.header().entry_size().map_err(|e| self.bad(e))?;
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        // A hard link's target is reached before the entry's own parent is borrowed.
        let link_target = match kind {
            EntryType::Link => {
                let target_raw = link.clone().unwrap_or_default();
                let target = clean_path(&target_raw).map_err(|why| self.refuse(&raw, why))?;
                let (t_parent, t_name) = match target.iter().rposition(|b| *b == b'/') {
                    Some(i) => (target[..i].to_vec(), target[i + 1..].to_vec()),
                    None => (Vec::new(), target.clone()),
                };
                let t_dir = dirs
                    .open_existing(&t_parent)
                    .map_err(|e| self.dir_err(&raw, &t_parent, e))?;
                Some((t_dir, t_name))
            }
            _ => None,
        };
        let parent = match dirs.get(&parent_rel) {
            Ok(fd) => fd,
            Err(e) => return Err(self.dir_err(&raw, &parent_rel, e)),
        };
        let mut replaced_dir = false;
        match kind {
            EntryType::Directory => {
                match rustix::fs::mkdirat(parent, name.as_slice(), Mode::from_raw_mode(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        let st =
                            rustix::fs::statat(parent, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                                .map_err(|e| self.fs_err("inspect", &rel, e))?;
                        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                            remove_existing(parent, &name)
                                .map_err(|e| self.fs_err("replace", &rel, e))?;
                            rustix::fs::mkdirat(
                                parent,
                                name.as_slice(),
                                Mode::from_raw_mode(0o700),
                            )
                            .map_err(|e| self.fs_err("create directory", &rel, e))?;
                            replaced_dir = true;
                        }
                    }
                    Err(e) => return Err(self.fs_err("create directory", &rel, e)),
                }
                self.fixups.push((rel, attrs));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let out = create_file(parent, &name).map_err(|e| self.fs_err("create", &rel, e))?;
                let out = File::from(out);
                if kind == EntryType::GNUSparse {
                    self.sparse_data(&header, header_pos, size, &out, &rel)?;
                } else if size <= SMALL {
                    self.small_data(entry, size, &out, &rel)?;
                } else {
                    self.data(data_pos, 0, size, &out, &rel)?;
                }
                self.file_attrs(out.as_fd(), &attrs, &rel)?;
            }
            EntryType::Symlink => {
                let target = link.unwrap_or_default();
                replace_with(parent, &name, |p, n| {
                    rustix::fs::symlinkat(target.as_slice(), p, n)
                })
                .map_err(|e| self.fs_err("create symlink", &rel, e))?;
                self.node_attrs(parent, &name, &attrs, &rel, false)?;
            }
            EntryType::Link => {
                let (t_dir, t_name) = link_target.expect("resolved above");
                replace_with(parent, &name, |p, n| {
                    rustix::fs::linkat(&t_dir, t_name.as_slice(), p, n, AtFlags::empty())
                })
                .map_err(|e| match e {
                    Errno::NOENT => {
                        self.refuse(&raw, "is a hard link to an entry not extracted before it")
                    }
                    e => self.fs_err("create hard link", &rel, e),
                })?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (ft, dev) = match kind {
                    EntryType::Fifo => (FileType::Fifo, 0),
                    _ if !as_root => {
                        tracing::warn!(tar = %self.tar.display(), entry = %String::from_utf8_lossy(&raw), "skipping a device node: only root may create one");
                        self.progress.add_entry();
                        return Ok(());
                    }
                    _ => {
                        let major = header.device_major().ok().flatten().unwrap_or(0);
                        let minor = header.device_minor().ok().flatten().unwrap_or(0);
                        let ft = if kind == EntryType::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (ft, rustix::fs::makedev(major, minor))
                    }
                };
                replace_with(parent, &name, |p, n| {
                    rustix::fs::mknodat(p, n, ft, Mode::from_raw_mode(0o600), dev)
                })
                .map_err(|e| self.fs_err("create node", &rel, e))?;
                self.node_attrs(parent, &name, &attrs, &rel, true)?;
            }
            _ => return Err(self.refuse(&raw, format!("has an unsupported type ({kind:?})"))),
        }
        if replaced_dir {
            dirs.forget();
        }
        self.progress.add_entry();
        self.totals.entries += 1;
        Ok(())
    }

    /// Mode, owner, mtime (with nanoseconds from PAX `mtime` when there) and xattrs.
    fn attrs(&self, entry: &mut tar::Entry<'_, BufFile<'_>>) -> Result<Attrs, WarmError> {
        let h = entry.header();
        let num = |r: std::io::Result<u64>| r.map_err(|e| self.bad(e));
        let mut attrs = Attrs {
            mode: num(h.mode().map(u64::from))? as u32 & 0o7777,
            uid: num(h.uid())? as u32,
            gid: num(h.gid())? as u32,
            mtime: Timespec {
                tv_sec: num(h.mtime())? as i64,
                tv_nsec: 0,
            },
            xattrs: Vec::new(),
        };
        if let Some(exts) = entry.pax_extensions().map_err(|e| self.bad(e))? {
            for ext in exts {
                let ext = ext.map_err(|e| self.bad(e))?;
                let key = ext.key_bytes();
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    attrs
                        .xattrs
                        .push((name.to_vec(), ext.value_bytes().to_vec()));
                } else if key == b"mtime"
                    && let Some(t) = ext.value().ok().and_then(parse_pax_time)
                {
                    attrs.mtime = t;
                }
            }
        }
        Ok(attrs)
    }

    fn file_attrs(&self, fd: BorrowedFd<'_>, a: &Attrs, rel: &[u8]) -> Result<(), WarmError> {
        if self.as_root {
            rustix::fs::fchown(fd, Some(uid(a.uid)), Some(gid(a.gid)))
                .map_err(|e| self.fs_err("set owner of", rel, e))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(a.mode))
            .map_err(|e| self.fs_err("set mode of", rel, e))?;
        for (name, value) in &a.xattrs {
            match rustix::fs::fsetxattr(fd, name.as_slice(), value, rustix::fs::XattrFlags::empty())
            {
                Ok(()) => {}
                Err(Errno::NOTSUP) => {
                    tracing::warn!(path = %String::from_utf8_lossy(rel), xattr = %String::from_utf8_lossy(name), "the filesystem does not keep this xattr");
                }
                Err(e) => return Err(self.fs_err("set xattrs of", rel, e)),
            }
        }
        let times = Timestamps {
            last_access: a.mtime,
            last_modification: a.mtime,
        };
        rustix::fs::futimens(fd, &times).map_err(|e| self.fs_err("set mtime of", rel, e))
    }

    /// Owner, mode and mtime of a symlink or node, by name (a symlink is never followed).
    fn node_attrs(
        &self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        a: &Attrs,
        rel: &[u8],
        mode: bool,
    ) -> Result<(), WarmError> {
        if self.as_root {
            rustix::fs::chownat(
                parent,
                name,
                Some(uid(a.uid)),
                Some(gid(a.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.fs_err("set owner of", rel, e))?;
        }
        if mode {
            rustix::fs::chmodat(parent, name, Mode::from_raw_mode(a.mode), AtFlags::empty())
                .map_err(|e| self.fs_err("set mode of", rel, e))?;
        }
        if !a.xattrs.is_empty() {
            tracing::warn!(path = %String::from_utf8_lossy(rel), "xattrs of symlinks and device nodes are not restored");
        }
        let times = Timestamps {
            last_access: a.mtime,
            last_modification: a.mtime,
        };
        rustix::fs::utimensat(parent, name, &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.fs_err("set mtime of", rel, e))
    }

    /// Directory attributes, deepest last-listed first, so setting them disturbs nothing.
    fn apply_dir_attrs(&mut self, dirs: &mut Dirs) -> Result<(), WarmError> {
        let fixups = std::mem::take(&mut self.fixups);
        dirs.forget();
        for (rel, attrs) in fixups.iter().rev() {
            let fd = dirs
                .open_existing(rel)
                .map_err(|e| self.dir_err(rel, rel, e))?;
            self.file_attrs(fd.as_fd(), attrs, rel)?;
        }
        Ok(())
    }
}

fn uid(id: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(id)
}

fn gid(id: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(id)
}

/// Creates a new regular file, replacing a non-directory already there.
fn create_file(parent: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(parent, name, flags, Mode::from_raw_mode(0o600)) {
        Err(Errno::EXIST) => {
            remove_existing(parent, name)?;
            rustix::fs::openat(parent, name, flags, Mode::from_raw_mode(0o600))
        }
        other => other,
    }
}

/// Runs `create`, replacing what is in the way once.
fn replace_with(
    parent: BorrowedFd<'_>,
    name: &[u8],
    create: impl Fn(BorrowedFd<'_>, &[u8]) -> Result<(), Errno>,
) -> Result<(), Errno> {
    match create(parent, name) {
        Err(Errno::EXIST) => {
            remove_existing(parent, name)?;
            create(parent, name)
        }
        other => other,
    }
}

/// A PAX time: seconds with an optional fraction, e.g. `1714566896.123456789`.
fn parse_pax_time(v: &str) -> Option<Timespec> {
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let tv_sec: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let tv_nsec = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    if tv_sec < 0 {
        return None;
    }
    Some(Timespec { tv_sec, tv_nsec })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_keep_nanoseconds() {
        let t = parse_pax_time("1714566896.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_714_566_896, 500_000_000));
        let t = parse_pax_time("12").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (12, 0));
        assert!(parse_pax_time("x").is_none());
    }
}
