//! The restore's first stages, each on its own thread: hash the arriving archive bytes and,
//! when the archive is sealed (`super::seal`), decrypt them; zstd-decode them, hold the tar
//! stream to its size limit, and pass it on through a bounded pipe to the thread that untars
//! (as `age -d | zstd -d | tar -x` splits the work).

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

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
    let decoded = match opener {
        None => decode(&mut receiver, &tx, limit, count),
        // Decryption gets a thread of its own: beside zstd it would lengthen the one path
        // every byte takes.
        Some(identities) => std::thread::scope(|scope| {
            let (ptx, prx) = sync_channel(PIPE_DEPTH);
            let receiver = &mut receiver;
            let decrypting = scope.spawn(move || decrypt(receiver, identities, ptx));
            let decoded = decode(PipeReader::new(prx), &tx, limit, count);
            // The decrypter stops once its pipe is gone (the reader above is dropped).
            let _ = decrypting.join();
            decoded
        }),
    };
    if let Err(e) = decoded {
        let _ = tx.send(Err(e));
    }
    receiver
}

/// zstd over `source` into `tx`, then the rest of `source` read to its end (for a sealed
/// archive, age authenticates its last chunk only when that chunk is read).
fn decode(
    source: impl Read,
    tx: &SyncSender<io::Result<Vec<u8>>>,
    limit: u64,
    count: Arc<AtomicU64>,
) -> io::Result<()> {
    let mut limited = Limited::new(zstd::stream::read::Decoder::new(source)?, limit, count);
    if forward(&mut limited, tx)? == Forwarded::HungUp {
        return Ok(()); // the untar stopped; its error says why
    }
    seal::drain(limited.into_inner().finish())
}

/// age over `receiver` into `tx`, to the end (or an error, sent on as the last item, or the
/// decoder hanging up).
fn decrypt(
    receiver: &mut ChunkReceiver,
    identities: &Identities,
    tx: SyncSender<io::Result<Vec<u8>>>,
) {
    let forwarded = identities
        .open(receiver)
        .and_then(|mut plain| forward(&mut plain, &tx));
    if let Err(e) = forwarded {
        let _ = tx.send(Err(e));
    }
}

/// How [`forward`] ended without an error.
#[derive(Debug, PartialEq, Eq)]
enum Forwarded {
    End,
    /// The next stage stopped reading.
    HungUp,
}

/// Sends what `r` reads to `tx` in [`BUFFER`]s until its end or `tx` hanging up.
fn forward(r: &mut impl Read, tx: &SyncSender<io::Result<Vec<u8>>>) -> io::Result<Forwarded> {
    loop {
        let mut buf = vec![0u8; BUFFER];
        match fill(r, &mut buf)? {
            0 => return Ok(Forwarded::End),
            n => {
                buf.truncate(n);
                if tx.send(Ok(buf)).is_err() {
                    return Ok(Forwarded::HungUp);
                }
            }
        }
    }
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
