//! The restore's first stage, on its own thread: hash the arriving archive bytes, decrypt them
//! when the archive is sealed (`super::seal`), zstd-decode them, hold the tar stream to its
//! size limit, and pass it on through a bounded pipe to the thread that untars (as
//! `age -d | zstd -d | tar -x` splits the work).

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{Receiver, SyncSender};

use super::pipe::{ChunkReceiver, Limited};
use super::seal::{self, Identities};

/// Buffers of tar stream the decoder may have ahead of the untar.
pub(crate) const PIPE_DEPTH: usize = 4;
const BUFFER: usize = 256 << 10;

/// Decodes what `receiver` gets (opened with `opener` when sealed) into `tx` until the end,
/// an error (sent on as the last item) or the untar hanging up; gives the receiver back for
/// the final hash.
pub(crate) fn run(
    mut receiver: ChunkReceiver,
    opener: Option<&Identities>,
    tx: SyncSender<io::Result<Vec<u8>>>,
    limit: u64,
    count: Arc<AtomicU64>,
) -> ChunkReceiver {
    if let Err(e) = decode(&mut receiver, opener, &tx, limit, count) {
        let _ = tx.send(Err(e));
    }
    receiver
}

fn decode(
    receiver: &mut ChunkReceiver,
    opener: Option<&Identities>,
    tx: &SyncSender<io::Result<Vec<u8>>>,
    limit: u64,
    count: Arc<AtomicU64>,
) -> io::Result<()> {
    let source: Box<dyn Read + '_> = match opener {
        None => Box::new(receiver),
        Some(identities) => Box::new(identities.open(receiver)?),
    };
    let mut limited = Limited::new(zstd::stream::read::Decoder::new(source)?, limit, count);
    loop {
        let mut buf = vec![0u8; BUFFER];
        match fill(&mut limited, &mut buf)? {
            0 => break,
            n => {
                buf.truncate(n);
                if tx.send(Ok(buf)).is_err() {
                    return Ok(()); // the untar stopped; its error says why
                }
            }
        }
    }
    // What follows the zstd frame, read to its end: age authenticates its last chunk only
    // when that chunk is read (for a plain archive this only hashes the rest).
    seal::drain(limited.into_inner().finish())
}

/// Reads until `buf` is full or the stream ends.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The untar's end of the pipe.
pub(crate) struct PipeReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
}

impl PipeReader {
    pub fn new(rx: Receiver<io::Result<Vec<u8>>>) -> Self {
        Self {
            rx,
            current: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.recv() {
                Ok(Ok(buf)) => {
                    self.current = buf;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
