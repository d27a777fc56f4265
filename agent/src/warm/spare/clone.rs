//! Cloning an extracted tree with reflinks (FICLONE), for filesystems that share blocks
//! between files (XFS with reflink, btrfs, bcachefs): file data is shared, so a clone costs
//! metadata only. Everything a restore keeps is copied: types, numeric owners, modes, mtimes,
//! xattrs, hard links, symlinks, device nodes and fifos. The source is a base this agent
//! extracted beside the volume, in a directory only root writes; nothing is followed.

use std::collections::HashMap;
use std::fs::{self, File, Metadata, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};
use tokio_util::sync::CancellationToken;

use crate::warm::error::WarmError;

/// Probed filesystems (by device): whether FICLONE works there.
static PROBED: LazyLock<Mutex<HashMap<u64, bool>>> = LazyLock::new(Mutex::default);

/// Whether the filesystem holding `dir` clones files (FICLONE): probed once per filesystem
/// by cloning a small file in `dir`, and false wherever anything fails.
pub(crate) fn supported(dir: &Path) -> bool {
    let Ok(dev) = fs::metadata(dir).map(|m| m.dev()) else {
        return false;
    };
    if let Some(known) = PROBED.lock().ok().and_then(|p| p.get(&dev).copied()) {
        return known;
    }
    let works = probe(dir);
    tracing::info!(dir = %dir.display(), reflink = works, "probed the filesystem for reflinks");
    if let Ok(mut p) = PROBED.lock() {
        p.insert(dev, works);
    }
    works
}

fn probe(dir: &Path) -> bool {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let src = dir.join(format!(".berth-reflink-probe-{tag}"));
    let dst = dir.join(format!(".berth-reflink-probe-{tag}~clone"));
    let works = (|| -> std::io::Result<()> {
        fs::write(&src, [0x5a; 4096])?;
        let from = File::open(&src)?;
        let to = File::create(&dst)?;
        rustix::fs::ioctl_ficlone(&to, &from)?;
        Ok(())
    })()
    .is_ok();
    let _ = fs::remove_file(&src);
    let _ = fs::remove_file(&dst);
    works
}

/// Clones the tree `src` to the new path `dst` (its parent exists, on the same filesystem).
pub(super) fn tree(src: &Path, dst: &Path, cancel: &CancellationToken) -> Result<(), WarmError> {
    let mut c = Cloner {
        links: HashMap::new(),
        dirs: Vec::new(),
    };
    let root = fs::symlink_metadata(src).map_err(|e| WarmError::io("inspect", src, e))?;
    c.dir(src, dst, root, cancel)?;
    // Directory attributes last, deepest first, so adding entries does not change mtimes.
    for (from, to, meta) in c.dirs.iter().rev() {
        attrs(from, to, meta)?;
    }
    Ok(())
}

struct Cloner {
    /// Hard-linked inodes already cloned: (dev, ino) to the clone's path.
    links: HashMap<(u64, u64), PathBuf>,
    /// Directories made, in the order made: source, clone, the source's metadata.
    dirs: Vec<(PathBuf, PathBuf, Metadata)>,
}

impl Cloner {
    fn dir(
        &mut self,
        src: &Path,
        dst: &Path,
        meta: Metadata,
        cancel: &CancellationToken,
    ) -> Result<(), WarmError> {
        fs::create_dir(dst).map_err(|e| WarmError::io("create", dst, e))?;
        fs::set_permissions(dst, fs::Permissions::from_mode(0o700))
            .map_err(|e| WarmError::io("set mode of", dst, e))?;
        self.dirs.push((src.to_owned(), dst.to_owned(), meta));
        let mut entries: Vec<_> = fs::read_dir(src)
            .map_err(|e| WarmError::io("list", src, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| WarmError::io("list", src, e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            if cancel.is_cancelled() {
                return Err(WarmError::Cancelled);
            }
            let from = entry.path();
            let to = dst.join(entry.file_name());
            let meta =
                fs::symlink_metadata(&from).map_err(|e| WarmError::io("inspect", &from, e))?;
            self.entry(&from, &to, meta, cancel)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        from: &Path,
        to: &Path,
        meta: Metadata,
        cancel: &CancellationToken,
    ) -> Result<(), WarmError> {
        let ft = meta.file_type();
        if ft.is_dir() {
            return self.dir(from, to, meta, cancel);
        }
        if !ft.is_symlink() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                return fs::hard_link(first, to).map_err(|e| WarmError::io("link", to, e));
            }
            self.links.insert(key, to.to_owned());
        }
        if ft.is_file() {
            let src = File::open(from).map_err(|e| WarmError::io("open", from, e))?;
            let dst = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(to)
                .map_err(|e| WarmError::io("create", to, e))?;
            if meta.len() > 0 {
                rustix::fs::ioctl_ficlone(&dst, &src)
                    .map_err(|e| WarmError::io("clone", to, e.into()))?;
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(from).map_err(|e| WarmError::io("read", from, e))?;
            std::os::unix::fs::symlink(&target, to).map_err(|e| WarmError::io("create", to, e))?;
        } else {
            let kind = if ft.is_fifo() {
                FileType::Fifo
            } else if ft.is_char_device() {
                FileType::CharacterDevice
            } else if ft.is_block_device() {
                FileType::BlockDevice
            } else {
                tracing::warn!(path = %from.display(), "skipping a socket in a spare");
                return Ok(());
            };
            rustix::fs::mknodat(CWD, to, kind, Mode::from_raw_mode(0o600), meta.rdev())
                .map_err(|e| WarmError::io("create", to, e.into()))?;
        }
        attrs(from, to, &meta)
    }
}

/// Owner, mode, xattrs (not of symlinks and nodes, as the restore) and times of `to`, from
/// `from` and its `meta`. The owner goes first: a change of owner clears setuid bits that the
/// mode then sets.
fn attrs(from: &Path, to: &Path, meta: &Metadata) -> Result<(), WarmError> {
    let ft = meta.file_type();
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| WarmError::io("set owner of", to, e))?;
    if !ft.is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| WarmError::io("set mode of", to, e))?;
    }
    if ft.is_file() || ft.is_dir() {
        copy_xattrs(from, to)?;
    }
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec() as _,
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec() as _,
        },
    };
    rustix::fs::utimensat(CWD, to, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| WarmError::io("set mtime of", to, e.into()))
}

fn copy_xattrs(from: &Path, to: &Path) -> Result<(), WarmError> {
    let read = |e: rustix::io::Errno| WarmError::io("read xattrs of", from, e.into());
    let size = match rustix::fs::llistxattr_query(from) {
        Ok(0) => return Ok(()),
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(read(e)),
    };
    let mut names = vec![0u8; size];
    let n = rustix::fs::llistxattr(from, &mut names[..]).map_err(read)?;
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = std::ffi::OsStr::from_bytes(name);
        let len = rustix::fs::lgetxattr_query(from, name).map_err(read)?;
        let mut value = vec![0u8; len];
        let got = rustix::fs::lgetxattr(from, name, &mut value[..]).map_err(read)?;
        rustix::fs::lsetxattr(to, name, &value[..got], rustix::fs::XattrFlags::empty())
            .map_err(|e| WarmError::io("set xattrs of", to, e.into()))?;
    }
    Ok(())
}
