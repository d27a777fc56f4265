//! File data of extracted entries: small files through the archive's buffer, large ones
//! copied in the kernel, GNU sparse files region by region with their holes kept; all
//! within the data limit the check counted.

use std::fs::File;
use std::os::unix::fs::FileExt;

use tar::{GnuExtSparseHeader, Header};

use super::Unpacker;
use super::reader::BufFile;
use crate::warm::copy::{CopyError, copy_range};
use crate::warm::error::WarmError;

impl Unpacker<'_> {
    /// Copies `len` bytes at `pos` of the archive to `out` at `at`, within the limit.
    pub(super) fn data(
        &mut self,
        pos: u64,
        at: u64,
        len: u64,
        out: &File,
        rel: &[u8],
    ) -> Result<(), WarmError> {
        if self.totals.bytes + len > self.limit {
            return Err(self.refuse(
                rel,
                "holds more data than the archive held when it was checked",
            ));
        }
        let progress = self.progress;
        let copied = copy_range(self.file, pos, out, at, len, self.cancel, |n| {
            progress.add_bytes(n)
        })
        .map_err(|e| match e {
            CopyError::Read(e) => self.bad(e),
            CopyError::Write(e) => self.fs_err("write", rel, e),
            CopyError::Cancelled => WarmError::Cancelled,
        })?;
        if copied < len {
            return Err(self.bad(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the archive ends inside a file",
            )));
        }
        self.totals.bytes += len;
        Ok(())
    }

    /// Small file data, read through the archive's buffer and written at once.
    pub(super) fn small_data(
        &mut self,
        entry: &mut tar::Entry<'_, BufFile<'_>>,
        size: u64,
        out: &File,
        rel: &[u8],
    ) -> Result<(), WarmError> {
        use std::io::{Read, Write};
        if self.totals.bytes + size > self.limit {
            return Err(self.refuse(
                rel,
                "holds more data than the archive held when it was checked",
            ));
        }
        let mut buf = std::mem::take(&mut self.small);
        buf.clear();
        let read = entry.take(size).read_to_end(&mut buf);
        let result = match read {
            Ok(n) if n as u64 == size => (&*out)
                .write_all(&buf)
                .map_err(|e| self.fs_err("write", rel, e)),
            Ok(_) => Err(self.bad(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the archive ends inside a file",
            ))),
            Err(e) => Err(self.bad(e)),
        };
        self.small = buf;
        result?;
        self.progress.add_bytes(size);
        self.totals.bytes += size;
        Ok(())
    }

    /// A GNU sparse entry: its map from the header and extension blocks; each region is
    /// copied to its offset and holes stay holes.
    pub(super) fn sparse_data(
        &mut self,
        header: &Header,
        header_pos: u64,
        stored: u64,
        out: &File,
        rel: &[u8],
    ) -> Result<(), WarmError> {
        let gnu = header
            .as_gnu()
            .ok_or_else(|| self.refuse(rel, "is sparse without a GNU header"))?;
        let mut regions = Vec::new();
        let mut push = |s: &tar::GnuSparseHeader| -> std::io::Result<()> {
            if !s.is_empty() {
                regions.push((s.offset()?, s.length()?));
            }
            Ok(())
        };
        for s in &gnu.sparse {
            push(s).map_err(|e| self.bad(e))?;
        }
        let mut pos = header_pos + 512;
        let mut extended = gnu.is_extended();
        while extended {
            let mut ext = GnuExtSparseHeader::new();
            self.file
                .read_exact_at(ext.as_mut_bytes(), pos)
                .map_err(|e| self.bad(e))?;
            pos += 512;
            for s in &ext.sparse {
                push(s).map_err(|e| self.bad(e))?;
            }
            extended = ext.is_extended();
        }
        let real_size = gnu.real_size().map_err(|e| self.bad(e))?;
        let mut total = 0;
        for (off, len) in regions {
            if off.checked_add(len).is_none_or(|end| end > real_size) {
                return Err(self.refuse(rel, "has a sparse region past its end"));
            }
            self.data(pos + total, off, len, out, rel)?;
            total += len;
        }
        if total != stored {
            return Err(self.refuse(rel, "has a sparse map that disagrees with its size"));
        }
        out.set_len(real_size)
            .map_err(|e| self.fs_err("size", rel, e))
    }
}
