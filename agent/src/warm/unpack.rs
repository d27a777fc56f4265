//! Extracting one volume tar into a directory, safely and faithfully: headers are read and
//! entries created by `crate::tarsafe` (names checked, nothing created or written through a
//! symlink, nothing written outside the target); symlinks are restored as they were but
//! never followed. Numeric owners (as root), modes, mtimes, xattrs, hard links, and sparse
//! files with their holes (never written as zeros). Directory attributes are set last,
//! deepest first. Blocking: run it on a blocking thread.

pub(crate) mod check;
mod data;
mod reader;

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::error::WarmError;
use super::pack::Totals;
use super::progress::Progress;
use crate::tarsafe::{
    Entry, Head, Kind, Links, Options, TarReader, Target, Tree, UntarError, shown,
};
use reader::BufFile;

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
    let options = Options {
        owners: rustix::process::geteuid().is_root(),
        links: Links::AsArchived,
        link_root_depth: 0,
    };
    let mut tree = Tree::open(target, options).map_err(|e| WarmError::io("open", target, e))?;
    let mut u = Unpacker {
        tar,
        target,
        file: &file,
        as_root: options.owners,
        totals: Totals::default(),
        limit,
        progress,
        cancel,
        small: Vec::with_capacity(SMALL as usize),
    };
    let mut reader = TarReader::new(BufFile::new(&file));
    while let Some(head) = reader.next().map_err(|e| u.err(e))? {
        if cancel.is_cancelled() {
            return Err(WarmError::Cancelled);
        }
        let Some(entry) = Entry::parse(&head).map_err(|e| u.err(e))? else {
            continue;
        };
        u.entry(&mut tree, &mut reader, &head, entry)?;
    }
    tree.finish().map_err(|e| u.err(e))?;
    Ok(u.totals)
}

/// File data up to this size is read through the archive's buffer, larger data is copied
/// in the kernel.
const SMALL: u64 = 64 << 10;

struct Unpacker<'a> {
    tar: &'a Path,
    target: &'a Path,
    file: &'a File,
    as_root: bool,
    totals: Totals,
    limit: u64,
    progress: &'a Progress,
    cancel: &'a CancellationToken,
    /// Buffer for small file data.
    small: Vec<u8>,
}

impl Unpacker<'_> {
    /// The warm error for what the shared extraction refused or failed at.
    fn err(&self, e: UntarError) -> WarmError {
        match e {
            UntarError::Refused { entry, why } => WarmError::UnsafeTar {
                tar: self.tar.to_owned(),
                entry: shown(&entry),
                why,
            },
            UntarError::Read(source) => WarmError::BadTar {
                tar: self.tar.to_owned(),
                source,
            },
            UntarError::Write { op, rel, source } => {
                WarmError::io(op, self.target.join(OsStr::from_bytes(&rel)), source)
            }
        }
    }

    fn entry(
        &mut self,
        tree: &mut Tree,
        reader: &mut TarReader<BufFile<'_>>,
        head: &Head,
        entry: Entry,
    ) -> Result<(), WarmError> {
        let Entry { name, kind, attrs } = entry;
        let done = match &kind {
            Kind::Dir => tree.dir(&name, attrs),
            Kind::File | Kind::Sparse(_) => {
                let out = tree.file(&name).map_err(|e| self.err(e))?;
                match &kind {
                    Kind::Sparse(map) => self.sparse_data(head.data_pos, map, &out, &name)?,
                    _ if head.size <= SMALL => self.small_data(reader, head.size, &out, &name)?,
                    _ => self.data(head.data_pos, 0, head.size, &out, &name)?,
                }
                tree.set_file_attrs(&out, &name.rel, &attrs)
            }
            Kind::Symlink(target) => tree.symlink(&name, target, &attrs),
            Kind::HardLink(to) => tree.hard_link(&name, to),
            Kind::Char { .. } | Kind::Block { .. } if !self.as_root => {
                tracing::warn!(tar = %self.tar.display(), entry = %shown(&name.raw), "skipping a device node: only root may create one");
                self.progress.add_entry();
                return Ok(());
            }
            Kind::Fifo | Kind::Char { .. } | Kind::Block { .. } => tree.node(&name, &kind, &attrs),
        };
        done.map_err(|e| self.err(e.naming(&name.raw)))?;
        self.progress.add_entry();
        self.totals.entries += 1;
        Ok(())
    }
}
