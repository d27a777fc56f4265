//! Bounded bridges between the blocking tar/zstd threads and async object storage, hashing
//! and counting the archive bytes that pass. Memory in a pipe is at most
//! `(capacity + 1) * chunk` bytes.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Size of the chunks sent through a pipe.
pub(crate) const CHUNK: usize = 1 << 20;
/// Chunks a pipe holds before its writer waits.
pub(crate) const CAPACITY: usize = 4;

/// The writing end, on a blocking thread: buffers up to [`CHUNK`] bytes and sends them on.
pub(crate) struct ChunkSender {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    hasher: Sha256,
    count: u64,
    produced: Arc<AtomicU64>,
}

impl ChunkSender {
    pub fn new(tx: mpsc::Sender<Bytes>, produced: Arc<AtomicU64>) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK),
            hasher: Sha256::new(),
            count: 0,
            produced,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.hasher.update(&chunk);
        self.count += chunk.len() as u64;
        self.produced.store(self.count, Ordering::Relaxed);
        self.tx
            .blocking_send(Bytes::from(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    /// Sends what is buffered; returns the hex SHA-256 and length of everything sent.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        self.send()?;
        Ok((hex::encode(self.hasher.finalize()), self.count))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the async side sends to a [`ChunkReceiver`]: data, or the news that the download
/// failed (the async side keeps the error itself).
pub(crate) type Incoming = Result<Bytes, ()>;

/// The reading end, on a blocking thread: reads chunks as they arrive, hashing and counting.
pub(crate) struct ChunkReceiver {
    rx: mpsc::Receiver<Incoming>,
    current: Bytes,
    hasher: Sha256,
    count: Arc<AtomicU64>,
}

impl ChunkReceiver {
    pub fn new(rx: mpsc::Receiver<Incoming>, count: Arc<AtomicU64>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
            hasher: Sha256::new(),
            count,
        }
    }

    /// Reads and hashes whatever is left, then gives the hex SHA-256 of every byte received.
    pub fn drain_and_hash(&mut self) -> io::Result<String> {
        io::copy(self, &mut io::sink())?;
        Ok(hex::encode(self.hasher.clone().finalize()))
    }
}

impl Read for ChunkReceiver {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(())) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the download failed",
                    ));
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        let chunk = self.current.split_to(n);
        self.hasher.update(&chunk);
        out[..n].copy_from_slice(&chunk);
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Counts the bytes read through it into a shared counter and fails once more than `limit`
/// have passed (the caller tells a limit failure by the counter).
pub(crate) struct Limited<R> {
    inner: R,
    limit: u64,
    count: Arc<AtomicU64>,
}

impl<R> Limited<R> {
    pub fn new(inner: R, limit: u64, count: Arc<AtomicU64>) -> Self {
        Self {
            inner,
            limit,
            count,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        let total = self.count.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if total > self.limit {
            return Err(io::Error::other("the archive unpacks past its size limit"));
        }
        Ok(n)
    }
}
