//! `TarOut`: the tar file being written. GNU-format headers (what GNU tar writes by default),
//! GNU long-name records, PAX records for xattrs (`SCHILY.xattr.*`, as GNU tar writes them),
//! GNU sparse headers; small file data is gathered in a buffer, large data is copied in the
//! kernel at the file's offset.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, GnuExtSparseHeader, Header};
use tokio_util::sync::CancellationToken;

use crate::warm::copy::{CopyError, copy_range, start_writeback};
use crate::warm::error::WarmError;
use crate::warm::progress::Progress;

const BLOCK: u64 = 512;
/// Bytes gathered before they are written.
const BUF_CAP: usize = 1 << 20;
/// File data up to this size is read into the buffer instead of copied in the kernel.
const SMALL: u64 = 128 << 10;
/// Longest name that fits a header without a long-name record.
const NAME_FIELD: usize = 100;

/// A tar file being written at `path`.
pub(crate) struct TarOut {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    /// Bytes already written to the file.
    pos: u64,
}

/// Extended attributes of one entry: `(name, value)`.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// One hole-free region of a sparse file: `(offset, length)`.
pub(crate) type Region = (u64, u64);

impl TarOut {
    pub fn create(path: &Path) -> Result<Self, WarmError> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| WarmError::io("create", path, e))?;
        Ok(Self {
            file,
            path: path.to_owned(),
            buf: Vec::with_capacity(BUF_CAP),
            pos: 0,
        })
    }

    fn flush(&mut self) -> Result<(), WarmError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all_at(&self.buf, self.pos)
            .map_err(|e| WarmError::io("write", &self.path, e))?;
        start_writeback(&self.file, self.pos, self.buf.len() as u64);
        self.pos += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), WarmError> {
        if self.buf.len() + bytes.len() > BUF_CAP {
            self.flush()?;
        }
        if bytes.len() > BUF_CAP {
            self.file
                .write_all_at(bytes, self.pos)
                .map_err(|e| WarmError::io("write", &self.path, e))?;
            self.pos += bytes.len() as u64;
            return Ok(());
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn zeros(&mut self, mut n: u64) -> Result<(), WarmError> {
        const Z: [u8; 4096] = [0; 4096];
        while n > 0 {
            let k = n.min(Z.len() as u64);
            self.put(&Z[..k as usize])?;
            n -= k;
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.pos + self.buf.len() as u64
    }

    fn pad(&mut self) -> Result<(), WarmError> {
        let rem = self.len() % BLOCK;
        if rem != 0 {
            self.zeros(BLOCK - rem)?;
        }
        Ok(())
    }

    /// A header block, its checksum computed here.
    pub fn header(&mut self, mut h: Header) -> Result<(), WarmError> {
        h.set_cksum();
        self.put(h.as_bytes())
    }

    /// A record of `kind` ('L' long name, 'K' long link, 'x' PAX) holding `data`.
    fn record(&mut self, kind: EntryType, name: &[u8], data: &[u8]) -> Result<(), WarmError> {
        let mut h = Header::new_gnu();
        set_name(&mut h, name);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_entry_type(kind);
        self.header(h)?;
        self.put(data)?;
        self.pad()
    }

    /// GNU long-name records for `name` and `link` when they do not fit the header.
    pub fn long_names(&mut self, name: &[u8], link: Option<&[u8]>) -> Result<(), WarmError> {
        if name.len() > NAME_FIELD {
            let mut data = name.to_vec();
            data.push(0);
            self.record(EntryType::GNULongName, b"././@LongLink", &data)?;
        }
        if let Some(link) = link.filter(|l| l.len() > NAME_FIELD) {
            let mut data = link.to_vec();
            data.push(0);
            self.record(EntryType::GNULongLink, b"././@LongLink", &data)?;
        }
        Ok(())
    }

    /// A PAX header carrying `xattrs` for the next entry.
    pub fn xattrs(&mut self, xattrs: &Xattrs) -> Result<(), WarmError> {
        if xattrs.is_empty() {
            return Ok(());
        }
        let mut data = Vec::new();
        for (name, value) in xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(name);
            pax_record(&mut data, &key, value);
        }
        self.record(EntryType::XHeader, b"././@PaxHeader", &data)
    }

    /// `len` bytes of `src` from `off`, as entry data; a source that ends early is padded
    /// with zeros (and said so) so the archive stays well-formed.
    pub fn data(
        &mut self,
        src: &File,
        src_path: &Path,
        off: u64,
        len: u64,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<(), WarmError> {
        let got = if len <= SMALL {
            let start = self.buf.len();
            if start + len as usize > BUF_CAP {
                self.flush()?;
            }
            let start = self.buf.len();
            self.buf.resize(start + len as usize, 0);
            let mut got = 0usize;
            while got < len as usize {
                match src.read_at(&mut self.buf[start + got..], off + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(WarmError::io("read", src_path, e)),
                }
            }
            self.buf.truncate(start + got);
            progress.add_bytes(got as u64);
            got as u64
        } else {
            self.flush()?;
            let at = self.pos;
            let copied = copy_range(src, off, &self.file, at, len, cancel, |n| {
                progress.add_bytes(n);
            })
            .map_err(|e| match e {
                CopyError::Read(e) => WarmError::io("read", src_path, e),
                CopyError::Write(e) => WarmError::io("write", &self.path, e),
                CopyError::Cancelled => WarmError::Cancelled,
            })?;
            self.pos += copied;
            copied
        };
        if got < len {
            tracing::warn!(path = %src_path.display(), missing = len - got, "file shrank while being read; padding with zeros");
            self.zeros(len - got)?;
        }
        Ok(())
    }

    /// Pads the last entry's data to a block.
    pub fn end_entry(&mut self) -> Result<(), WarmError> {
        self.pad()
    }

    /// GNU sparse extension blocks for the regions that did not fit the header.
    pub fn sparse_extensions(&mut self, rest: &[Region]) -> Result<(), WarmError> {
        let chunks: Vec<_> = rest.chunks(21).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut ext = GnuExtSparseHeader::new();
            for (slot, (off, len)) in ext.sparse.iter_mut().zip(chunk.iter()) {
                slot.set_offset(*off);
                slot.set_length(*len);
            }
            ext.isextended[0] = u8::from(i + 1 < chunks.len());
            self.put(ext.as_bytes())?;
        }
        Ok(())
    }

    /// Ends the archive, writes it out and syncs it; returns its size.
    pub fn finish(mut self) -> Result<u64, WarmError> {
        self.zeros(2 * BLOCK)?;
        self.flush()?;
        self.file
            .sync_all()
            .map_err(|e| WarmError::io("sync", &self.path, e))?;
        Ok(self.pos)
    }
}

/// Copies `name` into the header's name field (truncated: a long-name record says the rest).
pub(crate) fn set_name(h: &mut Header, name: &[u8]) {
    let gnu = h.as_gnu_mut().expect("a gnu header");
    let n = name.len().min(NAME_FIELD);
    gnu.name = [0; NAME_FIELD];
    gnu.name[..n].copy_from_slice(&name[..n]);
}

pub(crate) fn set_link(h: &mut Header, link: &[u8]) {
    let gnu = h.as_gnu_mut().expect("a gnu header");
    let n = link.len().min(NAME_FIELD);
    gnu.linkname = [0; NAME_FIELD];
    gnu.linkname[..n].copy_from_slice(&link[..n]);
}

/// Fills a sparse header: up to four regions in the header itself; returns the rest.
pub(crate) fn set_sparse<'a>(
    h: &mut Header,
    regions: &'a [Region],
    real_size: u64,
) -> &'a [Region] {
    let gnu = h.as_gnu_mut().expect("a gnu header");
    let n = regions.len().min(4);
    for (slot, (off, len)) in gnu.sparse.iter_mut().zip(&regions[..n]) {
        slot.set_offset(*off);
        slot.set_length(*len);
    }
    gnu.set_real_size(real_size);
    gnu.set_is_extended(regions.len() > 4);
    &regions[n..]
}

/// Appends one PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
pub(crate) fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        for value_len in [0usize, 1, 5, 6, 7, 90, 94, 95, 96, 990, 995, 996, 10_000] {
            let mut out = Vec::new();
            let value = vec![b'v'; value_len];
            pax_record(&mut out, b"SCHILY.xattr.user.x", &value);
            let text = String::from_utf8(out.clone()).unwrap();
            let declared: usize = text.split(' ').next().unwrap().parse().unwrap();
            assert_eq!(declared, out.len(), "{value_len}");
        }
    }
}
