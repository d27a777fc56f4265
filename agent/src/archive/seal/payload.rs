//! age's payload on aws-lc: the STREAM construction of the age v1 format (ChaCha20-Poly1305
//! over 64 KiB chunks; each chunk's nonce is an 11-byte big-endian counter and a byte that
//! is 1 on the last chunk; the key is HKDF-SHA-256 of the file key, salted with the 16-byte
//! nonce that follows the header, info `payload`).
//!
//! The age crate still makes and reads every header (recipients, stanzas, the header's
//! MAC); only the payload runs here, because aws-lc's ChaCha20-Poly1305 is about 2.4× the
//! age crate's on the benchmark host (1.8 GB/s against 0.75 GB/s), and on a host whose cores
//! are busy with zstd and the upload, an archive's encryption cost is its CPU time.

use std::io::{self, Read, Write};

use age::secrecy::ExposeSecret;
use age_core::format::FileKey;
use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf;

/// Plaintext bytes in every chunk but the last.
const CHUNK: usize = 64 << 10;
/// Poly1305's tag, after each chunk's ciphertext.
const TAG: usize = 16;
/// Bytes of the nonce that follows the header and salts the payload key.
pub(super) const NONCE: usize = 16;

/// The payload's key: HKDF-SHA-256(salt = the header's `nonce`, ikm = the file key,
/// info = `payload`), as age's spec derives it.
pub(super) fn key(file_key: &FileKey, nonce: &[u8]) -> io::Result<LessSafeKey> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, nonce).extract(file_key.expose_secret());
    let okm = prk
        .expand(&[b"payload"], &CHACHA20_POLY1305)
        .map_err(|_| io::Error::other("age: deriving the payload key failed"))?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

/// The nonce of chunk `counter`.
fn nonce(counter: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

/// Encrypts what is written to it into `out`, a chunk at a time; [`Writer::finish`] seals
/// the last chunk, without which the stream does not decrypt.
pub(super) struct Writer<W: Write> {
    key: LessSafeKey,
    out: W,
    /// The chunk being filled, then sealed in place (room for its tag).
    buf: Vec<u8>,
    counter: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(key: LessSafeKey, out: W) -> Self {
        Writer {
            key,
            out,
            buf: Vec::with_capacity(CHUNK + TAG),
            counter: 0,
        }
    }

    fn seal(&mut self, last: bool) -> io::Result<()> {
        self.key
            .seal_in_place_append_tag(nonce(self.counter, last), Aad::empty(), &mut self.buf)
            .map_err(|_| io::Error::other("age: sealing a chunk failed"))?;
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.counter += 1;
        Ok(())
    }

    /// Seals the last chunk (which may be full, or empty only when nothing was written)
    /// and gives the inner writer back.
    pub fn finish(mut self) -> io::Result<W> {
        self.seal(true)?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Writer<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // A full chunk is sealed only once more data comes: the last chunk may be full.
        if self.buf.len() == CHUNK {
            self.seal(false)?;
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Decrypts the payload read from `input`, authenticating each chunk before any of its
/// bytes are given; a stream cut short at a chunk's end, or a last chunk that is empty
/// after others, is an error, as age has them.
pub(super) struct Reader<R: Read> {
    key: LessSafeKey,
    input: R,
    /// A chunk's ciphertext, then its plaintext (`pos` is how much was given).
    buf: Vec<u8>,
    pos: usize,
    /// The first byte of the next chunk, read to tell that the one before is not the last.
    carry: Option<u8>,
    counter: u64,
    done: bool,
}

impl<R: Read> Reader<R> {
    pub fn new(key: LessSafeKey, input: R) -> Self {
        Reader {
            key,
            input,
            buf: Vec::with_capacity(CHUNK + TAG + 1),
            pos: 0,
            carry: None,
            counter: 0,
            done: false,
        }
    }

    /// Reads and opens the next chunk into `buf`.
    fn next_chunk(&mut self) -> io::Result<()> {
        let want = CHUNK + TAG + 1;
        self.buf.clear();
        self.buf.extend(self.carry.take());
        self.pos = 0;
        loop {
            let have = self.buf.len();
            if have == want {
                break;
            }
            self.buf.resize(want, 0);
            let read = self.input.read(&mut self.buf[have..]);
            self.buf.truncate(have + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => break, // the end of the input
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let last = self.buf.len() < want;
        if !last {
            self.carry = self.buf.pop();
        }
        if self.buf.len() < TAG || (last && self.buf.len() == TAG && self.counter > 0) {
            return Err(corrupt(self.counter, "the stream ends inside it"));
        }
        let plain = self
            .key
            .open_in_place(nonce(self.counter, last), Aad::empty(), &mut self.buf)
            .map_err(|_| {
                corrupt(
                    self.counter,
                    "it fails authentication: the archive was altered or cut short",
                )
            })?
            .len();
        self.buf.truncate(plain);
        self.counter += 1;
        self.done = last;
        Ok(())
    }
}

impl<R: Read> Read for Reader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn corrupt(chunk: u64, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("age: payload chunk {chunk}: {why}"),
    )
}
