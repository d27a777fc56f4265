//! `TarReader`: the tar header reader both restores use. It reads GNU long names and links
//! and PAX records itself, refusing any larger than [`MAX_RECORD`] from its header's size
//! field before reading a byte of it (the tar crate reads them whole into memory); it reads
//! GNU sparse maps, extension blocks included, and checks them; and it names the entry whose
//! data the archive does not hold (a size that lies, a truncated stream). Fields are parsed
//! by the tar crate's `Header`.

use std::io::{self, Read};

use tar::{GnuExtSparseHeader, GnuSparseHeader, Header, PaxExtensions};

use super::UntarError;

/// Largest long name, long link or PAX record read into memory (GNU tar writes a few hundred
/// bytes).
pub(crate) const MAX_RECORD: u64 = 1 << 20;
const BLOCK: u64 = 512;
/// Largest sparse map held in memory, in extension blocks of 21 regions each.
const MAX_SPARSE_BLOCKS: u64 = MAX_RECORD / BLOCK;

/// Where an archive is read from.
pub(crate) trait Source: Read {
    /// Skips up to `n` bytes; returns how many the source had.
    fn skip(&mut self, n: u64) -> io::Result<u64>;
}

/// A [`Source`] over a plain stream: skipping reads and drops.
pub(crate) struct Stream<R>(pub R);

impl<R: Read> Read for Stream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> Source for Stream<R> {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        io::copy(&mut (&mut self.0).take(n), &mut io::sink())
    }
}

/// A GNU sparse file's map: where its stored data goes, and its real size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sparse {
    /// `(offset, length)` in the file: in order, not overlapping, within `real_size`, and
    /// adding up to the data stored in the archive (stored end to end).
    pub regions: Vec<(u64, u64)>,
    pub real_size: u64,
}

/// One entry's header with its long name, long link and PAX records applied.
pub(crate) struct Head {
    pub header: Header,
    /// The name as written: the GNU long name, else the PAX `path`, else the header's.
    pub path: Vec<u8>,
    /// The link target as written, the same way.
    pub link: Option<Vec<u8>>,
    /// The other PAX records for this entry, in order.
    pub pax: Vec<(Vec<u8>, Vec<u8>)>,
    /// Bytes of data stored after the header (a sparse file's regions, end to end).
    pub size: u64,
    pub sparse: Option<Sparse>,
    /// Offset of the data in the archive.
    pub data_pos: u64,
}

/// Reads an archive entry by entry; between two entries the caller reads the data of the
/// current one ([`TarReader::read_data`]) or not (it is skipped).
pub(crate) struct TarReader<R> {
    src: R,
    /// Bytes consumed.
    pos: u64,
    /// The current entry: its name (for messages), size, where its data starts, the data
    /// not read yet and the padding after it.
    name: Vec<u8>,
    size: u64,
    data_pos: u64,
    left: u64,
    pad: u64,
    done: bool,
}

impl<R: Source> TarReader<R> {
    pub fn new(src: R) -> Self {
        Self {
            src,
            pos: 0,
            name: Vec::new(),
            size: 0,
            data_pos: 0,
            left: 0,
            pad: 0,
            done: false,
        }
    }

    pub fn into_inner(self) -> R {
        self.src
    }

    /// The next entry, or `None` at the end of the archive (an empty block, or the end of
    /// the source where a header would start).
    pub fn next(&mut self) -> Result<Option<Head>, UntarError> {
        if self.done {
            return Ok(None);
        }
        self.skip_data()?;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<Vec<u8>> = None;
        loop {
            let Some(header) = self.header()? else {
                self.done = true;
                if long_name.is_some() || long_link.is_some() || pax.is_some() {
                    return Err(UntarError::Read(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the archive ends after a long name or PAX record, before its entry",
                    )));
                }
                return Ok(None);
            };
            let kind = header.entry_type();
            let size = header.entry_size().map_err(UntarError::Read)?;
            let (slot, what) = if kind.is_gnu_longname() {
                (&mut long_name, "long name")
            } else if kind.is_gnu_longlink() {
                (&mut long_link, "long link")
            } else if kind.is_pax_local_extensions() {
                (&mut pax, "set of PAX records")
            } else if kind.is_pax_global_extensions() {
                // Read (within the limit) and dropped: no restore takes archive-wide defaults.
                self.record(&header, size)?;
                continue;
            } else {
                return self
                    .entry(header, size, long_name, long_link, pax)
                    .map(Some);
            };
            let record = self.record(&header, size)?;
            if slot.is_some() {
                return Err(UntarError::refused(
                    &header.path_bytes(),
                    format!("is a second {what} for one entry"),
                ));
            }
            *slot = Some(record);
        }
    }

    /// Reads exactly `buf.len()` bytes of the current entry's data (at most what is left).
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<(), UntarError> {
        let want = buf.len() as u64;
        assert!(want <= self.left, "read past the entry's data");
        match self.fill(buf) {
            Ok(n) if n as u64 == want => {
                self.left -= want;
                Ok(())
            }
            Ok(_) => Err(self.cut_short()),
            Err(e) => Err(self.read_failed(e)),
        }
    }

    /// Skips what is left of the current entry's data, and its padding.
    pub fn skip_data(&mut self) -> Result<(), UntarError> {
        if self.left > 0 {
            let n = self.src.skip(self.left).map_err(|e| self.read_failed(e))?;
            self.pos += n;
            self.left -= n;
            if self.left > 0 {
                return Err(self.cut_short());
            }
        }
        if self.pad > 0 {
            // Padding cut off at the very end loses nothing: the next header read ends it.
            self.pos += self.src.skip(self.pad).map_err(UntarError::Read)?;
            self.pad = 0;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        header: Header,
        mut size: u64,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        pax: Option<Vec<u8>>,
    ) -> Result<Head, UntarError> {
        let named_by_record = long_name.is_some();
        let linked_by_record = long_link.is_some();
        let mut path = long_name.map_or_else(|| header.path_bytes().into_owned(), trim_nul);
        let mut link = long_link
            .map(trim_nul)
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        let mut records = Vec::new();
        for record in pax.as_deref().map(PaxExtensions::new).into_iter().flatten() {
            let record =
                record.map_err(|_| UntarError::refused(&path, "has a malformed PAX record"))?;
            let (key, value) = (record.key_bytes(), record.value_bytes());
            match key {
                b"path" if !named_by_record => path = value.to_vec(),
                b"linkpath" if !linked_by_record => link = Some(value.to_vec()),
                b"size" => {
                    size = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| {
                            UntarError::refused(&path, "has a PAX size that is not a number")
                        })?;
                }
                _ if key.starts_with(b"GNU.sparse.") => {
                    return Err(UntarError::refused(
                        &path,
                        "is a PAX-format sparse file, which Berth does not restore; archive \
                         it in GNU format (tar --format=gnu) or without --sparse",
                    ));
                }
                _ => records.push((key.to_vec(), value.to_vec())),
            }
        }
        let sparse = if header.entry_type().is_gnu_sparse() {
            Some(self.sparse_map(&header, size, &path)?)
        } else {
            None
        };
        self.name.clone_from(&path);
        self.size = size;
        self.data_pos = self.pos;
        self.left = size;
        self.pad = padding(size);
        Ok(Head {
            header,
            path,
            link,
            pax: records,
            size,
            sparse,
            data_pos: self.pos,
        })
    }

    /// One header block; `None` at the end of the archive.
    fn header(&mut self) -> Result<Option<Header>, UntarError> {
        let at = self.pos;
        let mut header = Header::new_old();
        let n = self.fill(header.as_mut_bytes()).map_err(UntarError::Read)?;
        if n == 0 || header.as_bytes().iter().all(|b| *b == 0) {
            return Ok(None);
        }
        if n < BLOCK as usize {
            return Err(UntarError::Read(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the archive ends inside the header at byte {at}"),
            )));
        }
        let bytes = header.as_bytes();
        let sum = bytes[..148]
            .iter()
            .chain(&bytes[156..])
            .fold(8 * 32, |a, b| a + u32::from(*b));
        if header.cksum().ok() != Some(sum) {
            return Err(UntarError::Read(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the header at byte {at} has a wrong checksum: not tar, or damaged"),
            )));
        }
        Ok(Some(header))
    }

    /// A long name, long link or PAX record: refused unread when larger than the limit.
    fn record(&mut self, header: &Header, size: u64) -> Result<Vec<u8>, UntarError> {
        let name = header.path_bytes().into_owned();
        if size > MAX_RECORD {
            return Err(UntarError::refused(
                &name,
                format!(
                    "is a long name or PAX record of {size} bytes, over the limit of \
                     {MAX_RECORD}; refused before reading it"
                ),
            ));
        }
        self.name.clone_from(&name);
        self.size = size;
        self.data_pos = self.pos;
        self.left = size;
        self.pad = padding(size);
        let mut data = vec![0; size as usize];
        self.read_data(&mut data)?;
        self.skip_data()?;
        Ok(data)
    }

    fn sparse_map(
        &mut self,
        header: &Header,
        size: u64,
        name: &[u8],
    ) -> Result<Sparse, UntarError> {
        let refuse = |why: String| UntarError::refused(name, why);
        let gnu = header
            .as_gnu()
            .ok_or_else(|| refuse("is a sparse file without a GNU header".into()))?;
        let unreadable = |_| refuse("is a sparse file with an unreadable map".into());
        let real_size = gnu.real_size().map_err(unreadable)?;
        let mut regions = Vec::new();
        let mut add = |s: &GnuSparseHeader| -> Result<(), UntarError> {
            if !s.is_empty() {
                regions.push((
                    s.offset().map_err(unreadable)?,
                    s.length().map_err(unreadable)?,
                ));
            }
            Ok(())
        };
        gnu.sparse.iter().try_for_each(&mut add)?;
        let mut extended = gnu.is_extended();
        let mut blocks = 0;
        while extended {
            blocks += 1;
            if blocks > MAX_SPARSE_BLOCKS {
                return Err(refuse(format!(
                    "is a sparse file whose map has more than {MAX_SPARSE_BLOCKS} blocks"
                )));
            }
            let mut ext = GnuExtSparseHeader::new();
            match self.fill(ext.as_mut_bytes()) {
                Ok(n) if n == BLOCK as usize => {}
                Ok(_) => return Err(refuse("is cut short inside its sparse map".into())),
                Err(e) => return Err(UntarError::Read(e)),
            }
            ext.sparse.iter().try_for_each(&mut add)?;
            extended = ext.is_extended();
        }
        let mut end = 0;
        let mut stored = 0;
        for &(off, len) in &regions {
            if off < end {
                return Err(refuse(
                    "is a sparse file whose regions overlap or are out of order".into(),
                ));
            }
            end = off
                .checked_add(len)
                .filter(|e| *e <= real_size)
                .ok_or_else(|| {
                    refuse(format!(
                        "is a sparse file with a region past its real size of {real_size} bytes"
                    ))
                })?;
            stored += len;
        }
        if stored != size {
            return Err(refuse(format!(
                "is a sparse file whose map holds {stored} bytes but whose header stores {size}"
            )));
        }
        Ok(Sparse { regions, real_size })
    }

    /// Reads until `buf` is full or the source ends; returns how much it read.
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.src.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => {
                    n += k;
                    self.pos += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// The refusal of an entry whose data the archive does not hold.
    fn cut_short(&self) -> UntarError {
        UntarError::refused(
            &self.name,
            format!(
                "is cut short: its header says {} bytes but the archive ends after {}; the \
                 archive is truncated or its header lies",
                self.size,
                self.pos - self.data_pos
            ),
        )
    }

    /// A failed read of the current entry's data: a stream that ends early (a truncated
    /// compressed stream says so with `UnexpectedEof`) is the entry's fault.
    fn read_failed(&self, e: io::Error) -> UntarError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            self.cut_short()
        } else {
            UntarError::Read(e)
        }
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

fn trim_nul(mut name: Vec<u8>) -> Vec<u8> {
    while name.last() == Some(&0) {
        name.pop();
    }
    name
}

#[cfg(test)]
mod tests;
