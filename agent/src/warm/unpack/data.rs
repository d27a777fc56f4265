//! File data of extracted entries: small files through the archive's buffer, large ones
//! copied in the kernel, GNU sparse files region by region with their holes kept; all
//! within the data limit the check counted.

use std::fs::File;
use std::io::Write;

use super::Unpacker;
use super::reader::BufFile;
use crate::tarsafe::{Name, Sparse, TarReader, UntarError};
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
        name: &Name,
    ) -> Result<(), WarmError> {
        self.within_limit(len, &name.raw)?;
        let progress = self.progress;
        let copied = copy_range(self.file, pos, out, at, len, self.cancel, |n| {
            progress.add_bytes(n)
        })
        .map_err(|e| match e {
            CopyError::Read(e) => self.err(UntarError::Read(e)),
            CopyError::Write(e) => self.err(UntarError::write("write", &name.rel, e)),
            CopyError::Cancelled => WarmError::Cancelled,
        })?;
        if copied < len {
            return Err(self.err(UntarError::refused(
                &name.raw,
                "is cut short: the archive ends inside it (it changed since it was checked)",
            )));
        }
        self.totals.bytes += len;
        Ok(())
    }

    /// Small file data, read through the archive's buffer and written at once.
    pub(super) fn small_data(
        &mut self,
        reader: &mut TarReader<BufFile<'_>>,
        size: u64,
        mut out: &File,
        name: &Name,
    ) -> Result<(), WarmError> {
        self.within_limit(size, &name.raw)?;
        let mut buf = std::mem::take(&mut self.small);
        buf.resize(size as usize, 0);
        let result = reader
            .read_data(&mut buf)
            .and_then(|()| {
                out.write_all(&buf)
                    .map_err(|e| UntarError::write("write", &name.rel, e))
            })
            .map_err(|e| self.err(e));
        self.small = buf;
        result?;
        self.progress.add_bytes(size);
        self.totals.bytes += size;
        Ok(())
    }

    /// A GNU sparse entry: each region of its map (checked by the reader) is copied to its
    /// offset and holes stay holes.
    pub(super) fn sparse_data(
        &mut self,
        data_pos: u64,
        map: &Sparse,
        out: &File,
        name: &Name,
    ) -> Result<(), WarmError> {
        let mut stored = 0;
        for &(off, len) in &map.regions {
            self.data(data_pos + stored, off, len, out, name)?;
            stored += len;
        }
        out.set_len(map.real_size)
            .map_err(|e| self.err(UntarError::write("size", &name.rel, e)))
    }

    fn within_limit(&self, len: u64, raw: &[u8]) -> Result<(), WarmError> {
        if self.totals.bytes + len > self.limit {
            return Err(self.err(UntarError::refused(
                raw,
                "holds more data than the archive held when it was checked",
            )));
        }
        Ok(())
    }
}
