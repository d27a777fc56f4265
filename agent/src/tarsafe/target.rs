//! `Target`: what an extraction walk does with each entry, so one walk serves the tree on
//! disk (`Tree`, a restore) and the tree only modelled (`Shadow`, a verify, which writes
//! nothing and refuses what a restore would).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::UntarError;
use super::entry::{Kind, Name};
use super::tree::Attrs;

/// Where an archive's entries go.
pub(crate) trait Target {
    /// A regular file's contents as they are written.
    type File: Contents;
    /// A directory; one already there is kept, anything else replaced.
    fn dir(&mut self, name: &Name, attrs: Attrs) -> Result<(), UntarError>;
    /// A new, empty regular file, replacing what is there.
    fn file(&mut self, name: &Name) -> Result<Self::File, UntarError>;
    /// Owner, mode, xattrs and mtime of a file made by [`Target::file`].
    fn set_file_attrs(&self, file: &Self::File, rel: &[u8], a: &Attrs) -> Result<(), UntarError>;
    /// A symlink to `target`, as written.
    fn symlink(&mut self, name: &Name, target: &[u8], a: &Attrs) -> Result<(), UntarError>;
    /// A hard link to `to`, an entry extracted before it.
    fn hard_link(&mut self, name: &Name, to: &Name) -> Result<(), UntarError>;
    /// A fifo or device node (`kind` says which), replacing what is there.
    fn node(&mut self, name: &Name, kind: &Kind, a: &Attrs) -> Result<(), UntarError>;
    /// Removes the file at `rel` if there is one.
    fn remove_file(&mut self, rel: &[u8]) -> Result<(), UntarError>;
    /// Checks what only the complete tree tells, and sets directory attributes.
    fn finish(self) -> Result<(), UntarError>;
}

/// A file's contents being written.
pub(crate) trait Contents {
    fn write_all_at(&self, buf: &[u8], at: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
}

impl Contents for File {
    fn write_all_at(&self, buf: &[u8], at: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, at)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

/// Contents that are read and dropped (a verify's).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Discard;

impl Contents for Discard {
    fn write_all_at(&self, _: &[u8], _: u64) -> io::Result<()> {
        Ok(())
    }

    fn set_len(&self, _: u64) -> io::Result<()> {
        Ok(())
    }
}
