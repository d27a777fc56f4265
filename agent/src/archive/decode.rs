//! The restore's first stage, on its own thread: hash the arriving archive bytes, zstd-decode
//! them, hold the tar stream to its size limit, and pass it on through a bounded pipe to the
//! thread that untars (as `zstd -d | tar -x` splits the work).

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{Receiver, SyncSender};

use super::pipe::{ChunkReceiver, Limited};

/// Buffers of tar stream the decoder may have ahead of the untar.
pub(crate) const PIPE_DEPTH: usize = 4;
const BUFFER: usize = 256 << 10;

/// Decodes what `receiver` gets into `tx` until the end, an error (sent on as the last
/// item) or the untar hanging up; gives the receiver back for the final hash.
pub(crate) fn run(
    receiver: ChunkReceiver,
    tx: SyncSender<io::Result<Vec<u8>>>,
    limit: u64,
    count: Arc<AtomicU64>,
) -> ChunkReceiver {
    let decoder = match zstd::stream::read::Decoder::try_new(receiver) {
        Ok(d) => d,
        Err((receiver, e)) => {
            let _ = tx.send(Err(e));
            return receiver;
        }
    };
    let mut limited = Limited::new(decoder, limit, count);
    loop {
        let mut buf = vec![0u8; BUFFER];
        match fill(&mut limited, &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                buf.truncate(n);
                if tx.send(Ok(buf)).is_err() {
                    break; // the untar stopped; its error says why
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                break;
            }
        }
    }
    limited.into_inner().finish().into_inner()
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
