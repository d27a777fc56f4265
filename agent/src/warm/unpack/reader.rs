//! `BufFile`: a buffered, seekable reader over a tar file. Unlike `BufReader`, a short seek
//! forward (the padding after an entry) stays inside the buffer, so walking the headers of
//! 200,000 small entries costs a few large reads instead of a syscall per header. Skipping
//! (a `tarsafe::Source`) stops at the end of the file, so a size that lies is caught.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use crate::tarsafe::Source;

const CAPACITY: usize = 1 << 20;

pub(crate) struct BufFile<'a> {
    file: &'a File,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    start: u64,
    /// Valid bytes in `buf`.
    len: usize,
    /// Read position inside `buf`.
    at: usize,
    /// The file's length, read at the first skip.
    end: Option<u64>,
}

impl<'a> BufFile<'a> {
    pub fn new(file: &'a File) -> Self {
        Self {
            file,
            buf: vec![0; CAPACITY],
            start: 0,
            len: 0,
            at: 0,
            end: None,
        }
    }

    fn position(&self) -> u64 {
        self.start + self.at as u64
    }
}

impl Read for BufFile<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.len {
            let pos = self.position();
            // Large reads bypass the buffer.
            if out.len() >= CAPACITY {
                let n = self.file.read_at(out, pos)?;
                self.start = pos + n as u64;
                self.len = 0;
                self.at = 0;
                return Ok(n);
            }
            self.start = pos;
            self.at = 0;
            self.len = self.file.read_at(&mut self.buf, pos)?;
        }
        let n = out.len().min(self.len - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Seek for BufFile<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.position().checked_add_signed(d),
            SeekFrom::End(d) => self.file.metadata()?.len().checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        if target >= self.start && target <= self.start + self.len as u64 {
            self.at = (target - self.start) as usize;
        } else {
            self.start = target;
            self.len = 0;
            self.at = 0;
        }
        Ok(target)
    }
}

impl Source for BufFile<'_> {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let end = match self.end {
            Some(end) => end,
            None => *self.end.insert(self.file.metadata()?.len()),
        };
        let n = n.min(end.saturating_sub(self.position()));
        self.seek(SeekFrom::Current(n as i64))?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_seeks_like_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
        std::fs::write(dir.path().join("f"), &data).unwrap();
        let file = File::open(dir.path().join("f")).unwrap();
        let mut r = BufFile::new(&file);
        let mut b = [0u8; 700];
        r.read_exact(&mut b).unwrap();
        assert_eq!(&b[..], &data[..700]);
        assert_eq!(r.seek(SeekFrom::Current(300)).unwrap(), 1000);
        r.read_exact(&mut b).unwrap();
        assert_eq!(&b[..], &data[1000..1700]);
        r.seek(SeekFrom::Start(2_500_000)).unwrap();
        r.read_exact(&mut b).unwrap();
        assert_eq!(&b[..], &data[2_500_000..2_500_700]);
        let mut big = vec![0u8; 2 << 20];
        r.seek(SeekFrom::Start(10)).unwrap();
        r.read_exact(&mut big).unwrap();
        assert_eq!(&big[..], &data[10..10 + (2 << 20)]);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest.len(), data.len() - 10 - (2 << 20));
        r.seek(SeekFrom::Start(2_999_000)).unwrap();
        assert_eq!(r.skip(600).unwrap(), 600);
        assert_eq!(r.skip(600).unwrap(), 400, "a skip stops at the end");
    }
}
