//! `Tree`: the directory an archive is extracted into. Every entry is created relative to a
//! directory descriptor reached without following symlinks (`Dirs`), files with `O_EXCL |
//! O_NOFOLLOW`, replacing (never writing through) whatever is in the way; so no entry is
//! created or written through a link, whatever the archive holds, and nothing outside the
//! root changes. Symlinks are data, made as written and never followed; under
//! [`Links::RefuseEscaping`] those that lead outside (resolved against the tree, chains of
//! links included, once more when the tree is complete) are refused. Directory attributes
//! are set last, deepest first.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::dirs::{DirError, Dirs, remove_existing};
use super::entry::{Kind, Name};
use super::links::{FdView, Leads, resolve};
use super::target::Target;
use super::{UntarError, shown};

/// Attributes applied to an entry after its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attrs {
    /// Permission bits, set-id and sticky bits included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timespec,
    /// `(name, value)`; set on files and directories.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What extraction does with symlinks that lead outside the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Links {
    /// Restored as archived, like GNU tar and restic: a link is data, never followed.
    AsArchived,
    /// Refused, naming the link (`[archive] refuse_escaping_links`).
    RefuseEscaping,
}

/// How a tree is extracted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// Restore owners (only root can).
    pub owners: bool,
    pub links: Links,
    /// How many leading components name the directory links must stay inside: 0 for the
    /// root, 1 when each top-level directory is a target of its own (a volume archive).
    pub link_root_depth: usize,
}

/// The directory an archive is extracted into.
pub(crate) struct Tree {
    dirs: Dirs,
    options: Options,
    /// Directories whose attributes are applied at the end, in archive order.
    fixups: Vec<(Vec<u8>, Attrs)>,
    /// Symlinks made under `RefuseEscaping`, resolved again at the end: a later entry can
    /// change where an earlier link leads.
    symlinks: Vec<Vec<u8>>,
}

impl Tree {
    /// Opens the existing directory `root` (not following a symlink).
    pub fn open(root: &Path, options: Options) -> io::Result<Tree> {
        let fd = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Tree {
            dirs: Dirs::new(fd),
            options,
            fixups: Vec::new(),
            symlinks: Vec::new(),
        })
    }

    fn leads(&self, dir: &[u8], target: &[u8]) -> Result<Leads, UntarError> {
        resolve(
            &FdView(self.dirs.root()),
            dir,
            target,
            self.options.link_root_depth,
        )
        .map_err(|e| UntarError::write("resolve a symlink in", dir, e))
    }

    fn refuse_escaping(&self, name: &Name, dir: &[u8], target: &[u8]) -> Result<(), UntarError> {
        escaping(name, target, self.leads(dir, target)?)
    }
}

impl Target for Tree {
    type File = File;

    /// A directory (mode 0700 until the end); one already there is kept, anything else
    /// replaced.
    fn dir(&mut self, name: &Name, attrs: Attrs) -> Result<(), UntarError> {
        if !name.is_root() {
            let (parent_rel, base) = name.split();
            let parent = self.dirs.get(parent_rel).map_err(|e| dir_err(name, e))?;
            let mode = Mode::from_raw_mode(0o700);
            let mkdir = || rustix::fs::mkdirat(parent, base, mode);
            match mkdir() {
                Ok(()) => {}
                Err(Errno::EXIST) => {
                    let st = rustix::fs::statat(parent, base, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| UntarError::write("inspect", &name.rel, e))?;
                    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                        remove_existing(parent, base)
                            .and_then(|()| mkdir())
                            .map_err(|e| UntarError::write("replace", &name.rel, e))?;
                    }
                }
                Err(e) => return Err(UntarError::write("create directory", &name.rel, e)),
            }
        }
        self.fixups.push((name.rel.clone(), attrs));
        Ok(())
    }

    /// A new, empty regular file (mode 0600 until [`Tree::set_file_attrs`]), replacing what
    /// is there.
    fn file(&mut self, name: &Name) -> Result<File, UntarError> {
        let (parent_rel, base) = name.split();
        let parent = self.dirs.get(parent_rel).map_err(|e| dir_err(name, e))?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let create = || rustix::fs::openat(parent, base, flags, Mode::from_raw_mode(0o600));
        let fd = match create() {
            Err(Errno::EXIST) => remove_existing(parent, base).and_then(|()| create()),
            other => other,
        }
        .map_err(|e| UntarError::write("create", &name.rel, e))?;
        Ok(File::from(fd))
    }

    /// Owner, mode, xattrs and mtime of a file written through `file`.
    fn set_file_attrs(&self, file: &File, rel: &[u8], a: &Attrs) -> Result<(), UntarError> {
        set_fd_attrs(file.as_fd(), rel, a, self.options.owners)
    }

    /// A symlink to `target`, as written.
    fn symlink(&mut self, name: &Name, target: &[u8], a: &Attrs) -> Result<(), UntarError> {
        let (parent_rel, base) = name.split();
        if self.options.links == Links::RefuseEscaping {
            self.refuse_escaping(name, parent_rel, target)?;
        }
        let owners = self.options.owners;
        let parent = self.dirs.get(parent_rel).map_err(|e| dir_err(name, e))?;
        replace_with(parent, base, |p, n| rustix::fs::symlinkat(target, p, n))
            .map_err(|e| UntarError::write("create symlink", &name.rel, e))?;
        set_node_attrs(parent, base, &name.rel, a, owners, NodeMode::Keep)?;
        if self.options.links == Links::RefuseEscaping {
            self.symlinks.push(name.rel.clone());
        }
        Ok(())
    }

    /// A hard link to `to`, an entry extracted before it. Refused when `to` is reached
    /// through a symlink, is a directory, or is a symlink that leads outside (from where it
    /// is, or from the new name's directory).
    fn hard_link(&mut self, name: &Name, to: &Name) -> Result<(), UntarError> {
        let refuse = |why: String| UntarError::refused(&name.raw, why);
        let (to_parent, to_base) = to.split();
        let to_dir = self.dirs.open_existing(to_parent).map_err(|e| match e {
            DirError::NotADir(through) => link_through(name, &through),
            DirError::Io(Errno::NOENT) => not_extracted(name, to),
            DirError::Io(e) => UntarError::write("open the directory of", &to.rel, e),
        })?;
        let st = match rustix::fs::statat(&to_dir, to_base, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Err(not_extracted(name, to)),
            Err(e) => return Err(UntarError::write("inspect", &to.rel, e)),
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => return Err(refuse("is a hard link to a directory".into())),
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(&to_dir, to_base, Vec::new())
                    .map_err(|e| UntarError::write("read symlink", &to.rel, e))?
                    .into_bytes();
                for dir in [to_parent, name.split().0] {
                    if self.leads(dir, &target)? != Leads::Inside {
                        return Err(link_to_escaping(name, to));
                    }
                }
                if self.options.links == Links::RefuseEscaping {
                    self.symlinks.push(name.rel.clone());
                }
            }
            _ => {}
        }
        let (parent_rel, base) = name.split();
        let parent = self.dirs.get(parent_rel).map_err(|e| dir_err(name, e))?;
        replace_with(parent, base, |p, n| {
            rustix::fs::linkat(&to_dir, to_base, p, n, AtFlags::empty())
        })
        .map_err(|e| UntarError::write("create hard link", &name.rel, e))
    }

    /// A fifo or device node (`kind` says which), replacing what is there.
    fn node(&mut self, name: &Name, kind: &Kind, a: &Attrs) -> Result<(), UntarError> {
        let (ft, dev) = match *kind {
            Kind::Fifo => (FileType::Fifo, 0),
            Kind::Char { major, minor } => {
                (FileType::CharacterDevice, rustix::fs::makedev(major, minor))
            }
            Kind::Block { major, minor } => {
                (FileType::BlockDevice, rustix::fs::makedev(major, minor))
            }
            _ => unreachable!("not a node: {kind:?}"),
        };
        let owners = self.options.owners;
        let (parent_rel, base) = name.split();
        let parent = self.dirs.get(parent_rel).map_err(|e| dir_err(name, e))?;
        replace_with(parent, base, |p, n| {
            rustix::fs::mknodat(p, n, ft, Mode::from_raw_mode(0o600), dev)
        })
        .map_err(|e| UntarError::write("create node", &name.rel, e))?;
        set_node_attrs(parent, base, &name.rel, a, owners, NodeMode::Set)
    }

    /// Removes the file at `rel` if there is one.
    fn remove_file(&mut self, rel: &[u8]) -> Result<(), UntarError> {
        let name = Name::parse(rel).expect("a clean name");
        let (parent_rel, base) = name.split();
        let parent = match self.dirs.open_existing(parent_rel) {
            Ok(fd) => fd,
            Err(DirError::Io(Errno::NOENT)) => return Ok(()),
            Err(e) => return Err(dir_err(&name, e)),
        };
        match rustix::fs::unlinkat(&parent, base, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(UntarError::write("remove", rel, e)),
        }
    }

    /// Resolves the symlinks again against the complete tree (under `RefuseEscaping`), then
    /// sets directory attributes, deepest last-listed first, so setting them disturbs
    /// nothing.
    fn finish(mut self) -> Result<(), UntarError> {
        for rel in std::mem::take(&mut self.symlinks) {
            let name = Name::parse(&rel).expect("a clean name");
            let (parent_rel, base) = name.split();
            let Ok(parent) = self.dirs.open_existing(parent_rel) else {
                continue; // replaced by something else since
            };
            match rustix::fs::readlinkat(&parent, base, Vec::new()) {
                Ok(target) => self.refuse_escaping(&name, parent_rel, target.as_bytes())?,
                Err(Errno::INVAL | Errno::NOENT) => {} // no longer a symlink
                Err(e) => return Err(UntarError::write("read symlink", &rel, e)),
            }
        }
        self.dirs.forget();
        for (rel, attrs) in self.fixups.iter().rev() {
            let fd = self
                .dirs
                .open_existing(rel)
                .map_err(|e| dir_err(&Name::parse(rel).expect("a clean name"), e))?;
            set_fd_attrs(fd.as_fd(), rel, attrs, self.options.owners)?;
        }
        Ok(())
    }
}

/// `Ok` for a symlink `name` to `target` that `leads` inside; else its refusal under
/// [`Links::RefuseEscaping`].
pub(super) fn escaping(name: &Name, target: &[u8], leads: Leads) -> Result<(), UntarError> {
    let why = match leads {
        Leads::Inside => return Ok(()),
        Leads::Outside => "leads outside the target",
        Leads::TooManyLinks => "goes through too many links (a loop)",
    };
    Err(UntarError::refused(
        &name.raw,
        format!(
            "is a symlink to {:?}, which {why}; this agent refuses such links \
             ([archive] refuse_escaping_links)",
            shown(target)
        ),
    ))
}

/// The refusal of hard link `name` to `to`, a symlink that leads outside.
pub(super) fn link_to_escaping(name: &Name, to: &Name) -> UntarError {
    UntarError::refused(
        &name.raw,
        format!(
            "is a hard link to the symlink {:?}, which leads outside the target",
            shown(&to.raw)
        ),
    )
}

/// The refusal of hard link `name` whose target is reached through `through`, which is a
/// symlink or not a directory.
pub(super) fn link_through(name: &Name, through: &[u8]) -> UntarError {
    UntarError::refused(
        &name.raw,
        format!(
            "is a hard link through {:?}, which is a symlink or not a directory",
            shown(through)
        ),
    )
}

pub(super) fn not_extracted(name: &Name, to: &Name) -> UntarError {
    UntarError::refused(
        &name.raw,
        format!(
            "is a hard link to {:?}, which is not extracted before it",
            shown(&to.raw)
        ),
    )
}

/// A directory that could not be reached for `name`.
pub(super) fn dir_err(name: &Name, e: DirError) -> UntarError {
    match e {
        DirError::NotADir(through) => UntarError::refused(
            &name.raw,
            format!(
                "goes through {:?}, which is a symlink or not a directory; nothing is \
                 written through a link",
                shown(&through)
            ),
        ),
        DirError::Io(e) => UntarError::write("create the directory of", &name.rel, e),
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

fn set_fd_attrs(fd: BorrowedFd<'_>, rel: &[u8], a: &Attrs, owners: bool) -> Result<(), UntarError> {
    let err = |op| move |e| UntarError::write(op, rel, e);
    if owners {
        rustix::fs::fchown(fd, Some(uid(a.uid)), Some(gid(a.gid))).map_err(err("set owner of"))?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(a.mode)).map_err(err("set mode of"))?;
    for (name, value) in &a.xattrs {
        match rustix::fs::fsetxattr(fd, name.as_slice(), value, rustix::fs::XattrFlags::empty()) {
            Ok(()) => {}
            Err(Errno::NOTSUP) => {
                tracing::warn!(path = %shown(rel), xattr = %shown(name), "the filesystem does not keep this xattr");
            }
            Err(e) => return Err(err("set xattrs of")(e)),
        }
    }
    rustix::fs::futimens(fd, &times(a.mtime)).map_err(err("set mtime of"))
}

/// Whether a node's mode is set (a symlink's cannot be).
#[derive(Clone, Copy, PartialEq, Eq)]
enum NodeMode {
    Set,
    Keep,
}

/// Owner, mode and mtime of a symlink or node, by name (a symlink is never followed).
fn set_node_attrs(
    parent: BorrowedFd<'_>,
    name: &[u8],
    rel: &[u8],
    a: &Attrs,
    owners: bool,
    mode: NodeMode,
) -> Result<(), UntarError> {
    let err = |op| move |e| UntarError::write(op, rel, e);
    if owners {
        let (u, g) = (Some(uid(a.uid)), Some(gid(a.gid)));
        rustix::fs::chownat(parent, name, u, g, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(err("set owner of"))?;
    }
    if mode == NodeMode::Set {
        rustix::fs::chmodat(parent, name, Mode::from_raw_mode(a.mode), AtFlags::empty())
            .map_err(err("set mode of"))?;
    }
    if !a.xattrs.is_empty() {
        tracing::warn!(path = %shown(rel), "xattrs of symlinks and device nodes are not restored");
    }
    rustix::fs::utimensat(parent, name, &times(a.mtime), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(err("set mtime of"))
}

fn times(t: Timespec) -> Timestamps {
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn uid(id: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(id)
}

fn gid(id: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(id)
}

#[cfg(test)]
pub(super) mod tests;
