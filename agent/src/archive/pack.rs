//! Making an archive on a blocking thread: walk a directory (or a stack's volumes) in name
//! order and write tar entries that keep numeric owners, modes, mtimes, symlinks, hard links,
//! fifos and device nodes, compressed by multithreaded zstd into a [`ChunkSender`], through
//! age encryption when the archive has recipients (`super::seal`).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use rustix::fs::FileType;
use sha2::{Digest, Sha256};
use tar::{EntryType, Header, HeaderMode};

use super::ArchiveError;
use super::pipe::ChunkSender;
use super::seal::Recipients;
use super::walk::{Entry, walk};

/// Bytes read from a source file at a time.
const READ_BUFFER: usize = 256 << 10;

/// Buffers the tar thread may have ahead of the compressor.
const PIPE_DEPTH: usize = 4;

/// Bytes of tar output gathered before they go to zstd.
const WRITE_BUFFER: usize = 256 << 10;

/// Size of one zstd multithreaded job.
const JOB_SIZE: u32 = 2 << 20;

/// What an archive holds.
#[derive(Debug, Clone)]
pub(crate) enum Tree {
    /// An app directory: the archive's root is the directory itself.
    AppDir(PathBuf),
    /// A stack's volumes, `(name, mountpoint)`: the archive's root holds one directory per
    /// volume, named as the volume, holding what its mountpoint holds.
    Volumes(Vec<(String, PathBuf)>),
}

impl Tree {
    /// The directories to walk, each with the name it has in the archive (none: the root).
    fn roots(&self) -> Vec<(Option<&str>, &Path)> {
        match self {
            Tree::AppDir(dir) => vec![(None, dir.as_path())],
            Tree::Volumes(volumes) => volumes
                .iter()
                .map(|(name, path)| (Some(name.as_str()), path.as_path()))
                .collect(),
        }
    }
}

/// Live counters of a create, read by the async side for progress.
#[derive(Debug, Default)]
pub(crate) struct PackCounters {
    /// Source file bytes read.
    pub bytes_read: AtomicU64,
    /// Tar entries written.
    pub entries: AtomicU64,
    /// Uncompressed tar bytes produced.
    pub tar_bytes: AtomicU64,
    /// Compressed bytes produced (handed to the upload).
    pub compressed: Arc<AtomicU64>,
}

/// What a pre-scan found: the totals progress is measured against, and the source's listing
/// digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub entries: u64,
    pub bytes: u64,
    /// Hex SHA-256 of the listing: every entry's path, type, size, mode, owner, mtime, ctime
    /// and link target, in walk order (the same as the pack's walk computes). Equal digests mean no entry was added, removed,
    /// written, renamed, chmod-ed or chown-ed (a write that keeps size, mtime and ctime is
    /// not seen; the kernel moves ctime on every write). A stat walk: no file is read.
    pub digest: String,
}

/// What a finished pack produced.
#[derive(Debug, Clone)]
pub(crate) struct Packed {
    /// SHA-256 and length of the stored object.
    pub sha256: String,
    pub size: u64,
    pub tar_bytes: u64,
    pub entries: u64,
    /// For an encrypted archive: SHA-256 of the tar+zstd inside the age stream.
    pub plaintext_sha256: Option<String>,
    /// The source's listing digest, from the stats the tar walk took (see [`Totals::digest`]).
    pub source_digest: String,
}

/// Counts entries and file bytes of `tree`, the way [`pack`] will walk it, and digests its
/// listing.
pub(crate) fn scan(tree: &Tree, cancel: &AtomicBool) -> Result<Totals, ArchiveError> {
    let mut totals = Totals::default();
    if matches!(tree, Tree::Volumes(_)) {
        totals.entries += 1; // the archive's root
    }
    let mut linked = HashSet::new();
    let mut listing = Sha256::new();
    let app_dir = matches!(tree, Tree::AppDir(_));
    for (name, root) in tree.roots() {
        walk(root, cancel, &mut |e| {
            if app_dir {
                restorable_in_app_dir(e)?;
            }
            list(&mut listing, name, e)?;
            totals.entries += 1;
            let st = e.stat;
            // A hard link's bytes are archived once, with its first name.
            if e.kind() == FileType::RegularFile && (st.st_nlink == 1 || linked.insert(file_id(st)))
            {
                totals.bytes += st.st_size as u64;
            }
            Ok(())
        })?;
    }
    totals.digest = hex::encode(listing.finalize());
    Ok(totals)
}

/// Adds one entry to a listing digest: fields separated by NUL, entries by a newline, so no
/// two listings hash the same input.
fn list(h: &mut Sha256, volume: Option<&str>, e: &Entry<'_>) -> Result<(), ArchiveError> {
    let st = e.stat;
    h.update(volume.unwrap_or("").as_bytes());
    h.update(b"\0");
    h.update(e.rel.as_os_str().as_encoded_bytes());
    let fields = format!(
        "\0{:o}\0{}\0{}\0{}\0{}.{}\0{}.{}",
        st.st_mode,
        st.st_size,
        st.st_uid,
        st.st_gid,
        st.st_mtime,
        st.st_mtime_nsec,
        st.st_ctime,
        st.st_ctime_nsec
    );
    h.update(fields.as_bytes());
    if e.kind() == FileType::Symlink {
        let target = e.read_link().map_err(|source| ArchiveError::Read {
            path: e.full(),
            source,
        })?;
        h.update(b"\0");
        h.update(target.as_os_str().as_encoded_bytes());
    }
    h.update(b"\n");
    Ok(())
}

/// Refuses what an app-directory restore would refuse (device nodes, set-user-ID and
/// set-group-ID files), so that no archive is made that cannot be restored.
fn restorable_in_app_dir(e: &Entry<'_>) -> Result<(), ArchiveError> {
    let refuse = |what, fix| {
        Err(ArchiveError::Unrestorable {
            path: e.full(),
            what,
            fix,
        })
    };
    match e.kind() {
        FileType::CharacterDevice | FileType::BlockDevice => refuse(
            "a device node",
            "remove it, or keep it in a Docker volume and archive the stack's volumes",
        ),
        FileType::Directory => Ok(()),
        _ if e.stat.st_mode & 0o6000 != 0 => refuse(
            "a set-user-ID or set-group-ID file",
            "clear the bit (chmod ug-s) or keep the file in a Docker volume",
        ),
        _ => Ok(()),
    }
}

/// Tars and compresses `tree` into `out`, as `tar | zstd` does: one thread walks and tars,
/// the calling thread feeds zstd (whose workers compress) and hashes what comes out, joined
/// by a pipe of a few [`WRITE_BUFFER`]s.
pub(crate) fn pack(
    tree: &Tree,
    out: ChunkSender,
    compression: Compression,
    seal: Option<&Recipients>,
    counters: &PackCounters,
    cancel: &AtomicBool,
) -> Result<Packed, ArchiveError> {
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(PIPE_DEPTH);
    let (tarred, compressed) = std::thread::scope(|scope| {
        let tar = scope.spawn(move || tar_stage(tree, tx, counters, cancel));
        let compressed = match seal {
            None => compress_stage(rx, out, compression)
                .and_then(|out| out.finish().map_err(ArchiveError::Compress))
                .map(|stored| (stored, None)),
            // Encryption and its hash get a thread of their own: on the compressor's thread
            // they would lengthen the one path every byte takes.
            Some(recipients) => {
                let (ztx, zrx) = mpsc::sync_channel::<Vec<u8>>(PIPE_DEPTH);
                let sealer = scope.spawn(move || seal_stage(zrx, recipients, out));
                let sent = AtomicU64::new(0);
                let pipe = Pipe::new(ztx, &sent);
                let zipped = compress_stage(rx, pipe, compression)
                    .and_then(|pipe| pipe.finish().map_err(ArchiveError::Compress));
                let sealed = sealer.join().unwrap_or_else(|_| {
                    Err(ArchiveError::Compress(io::Error::other(
                        "the encryption thread panicked",
                    )))
                });
                // The compressor's error explains a sealer that lost its input.
                zipped
                    .and(sealed)
                    .map(|(stored, plain)| (stored, Some(plain)))
            }
        };
        let tarred = tar.join().unwrap_or_else(|_| {
            Err(ArchiveError::Compress(io::Error::other(
                "the tar thread panicked",
            )))
        });
        (tarred, compressed)
    });
    let (source_digest, ((sha256, size), plaintext_sha256)) = match (tarred, compressed) {
        (Ok(digest), Ok(done)) => (digest, done),
        // A problem with the source explains everything after it.
        (Err(e @ (ArchiveError::Read { .. } | ArchiveError::Cancelled)), _) => return Err(e),
        (_, Err(e)) | (Err(e), Ok(_)) => return Err(e),
    };
    Ok(Packed {
        sha256,
        size,
        tar_bytes: counters.tar_bytes.load(Ordering::Relaxed),
        entries: counters.entries.load(Ordering::Relaxed),
        plaintext_sha256,
        source_digest,
    })
}

/// zstd's level and worker threads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Compression {
    pub level: i32,
    pub workers: u32,
}

/// Tars `tree` into `tx`; the source's listing digest.
fn tar_stage(
    tree: &Tree,
    tx: mpsc::SyncSender<Vec<u8>>,
    counters: &PackCounters,
    cancel: &AtomicBool,
) -> Result<String, ArchiveError> {
    let pipe = Pipe::new(tx, &counters.tar_bytes);
    let mut builder = tar::Builder::new(pipe);
    builder.mode(HeaderMode::Complete);
    builder.follow_symlinks(false);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut scratch = vec![0u8; READ_BUFFER];
    if matches!(tree, Tree::Volumes(_)) {
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Directory);
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        );
        header.set_size(0);
        builder
            .append_data(&mut header, "./", io::empty())
            .map_err(ArchiveError::Compress)?;
        counters.entries.fetch_add(1, Ordering::Relaxed);
    }
    // The listing digest is taken from the stats this walk takes before reading each file,
    // so a change made while packing always shows in the next create's digest.
    let mut listing = Sha256::new();
    for (prefix, root) in tree.roots() {
        walk(root, cancel, &mut |entry| {
            list(&mut listing, prefix, entry)?;
            append(
                &mut builder,
                entry,
                prefix,
                &mut links,
                counters,
                &mut scratch,
            )?;
            counters.entries.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })?;
    }
    builder.finish().map_err(ArchiveError::Compress)?;
    builder
        .into_inner()
        .and_then(Pipe::finish)
        .map_err(ArchiveError::Compress)?;
    Ok(hex::encode(listing.finalize()))
}

/// zstd over what arrives on `rx`, into `out`; gives `out` back once the frame is finished.
fn compress_stage<W: Write>(
    rx: mpsc::Receiver<Vec<u8>>,
    out: W,
    compression: Compression,
) -> Result<W, ArchiveError> {
    let compress = ArchiveError::Compress;
    let mut encoder =
        zstd::stream::write::Encoder::new(out, compression.level).map_err(compress)?;
    encoder.include_checksum(true).map_err(compress)?;
    if compression.workers > 0 {
        encoder.multithread(compression.workers).map_err(compress)?;
        // zstd's default job for level 3 is 8 MiB, and it keeps a few in and out per worker
        // (about 70 MiB with two workers); 2 MiB jobs cost about 3% of ratio on text and
        // keep the compressor near 25 MiB.
        encoder
            .set_parameter(zstd::stream::raw::CParameter::JobSize(JOB_SIZE))
            .map_err(compress)?;
    }
    for buf in rx {
        encoder.write_all(&buf).map_err(compress)?;
    }
    encoder.finish().map_err(compress)
}

/// age over the zstd stream arriving on `rx`, into `out`: the stored object's SHA-256 and
/// length, and the plaintext's SHA-256.
fn seal_stage(
    rx: mpsc::Receiver<Vec<u8>>,
    recipients: &Recipients,
    out: ChunkSender,
) -> Result<((String, u64), String), ArchiveError> {
    let compress = ArchiveError::Compress;
    let mut sealer = recipients.seal(out).map_err(compress)?;
    for buf in rx {
        sealer.write_all(&buf).map_err(compress)?;
    }
    let (plaintext, out) = sealer.finish().map_err(compress)?;
    Ok((out.finish().map_err(compress)?, plaintext))
}

/// Appends `entry`, named `<prefix>/<its path>` in the archive when `prefix` is given.
fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    entry: &Entry<'_>,
    prefix: Option<&str>,
    links: &mut HashMap<(u64, u64), PathBuf>,
    counters: &PackCounters,
    scratch: &mut [u8],
) -> Result<(), ArchiveError> {
    let (st, rel) = (entry.stat, entry.rel);
    let name = match prefix {
        Some(p) => Path::new(p).join(rel),
        None => rel.to_owned(),
    };
    let mut header = Header::new_gnu();
    header.set_mode(st.st_mode & 0o7777);
    header.set_uid(st.st_uid as u64);
    header.set_gid(st.st_gid as u64);
    header.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
    header.set_size(0);
    let compress = ArchiveError::Compress;
    let read = |source| ArchiveError::Read {
        path: entry.full(),
        source,
    };
    match entry.kind() {
        FileType::Directory => {
            header.set_entry_type(EntryType::Directory);
            let name = if name.as_os_str().is_empty() {
                PathBuf::from("./")
            } else {
                let mut n = name.into_os_string();
                n.push("/");
                PathBuf::from(n)
            };
            builder
                .append_data(&mut header, name, io::empty())
                .map_err(compress)
        }
        FileType::Symlink => {
            // Archived as it is, wherever it points: a link is data (restores never follow
            // one).
            let target = entry.read_link().map_err(read)?;
            header.set_entry_type(EntryType::Symlink);
            builder
                .append_link(&mut header, &name, target)
                .map_err(compress)
        }
        FileType::RegularFile => {
            if st.st_nlink > 1 {
                let id = file_id(st);
                if let Some(first) = links.get(&id) {
                    header.set_entry_type(EntryType::Link);
                    return builder
                        .append_link(&mut header, &name, first)
                        .map_err(compress);
                }
                links.insert(id, name.clone());
            }
            header.set_entry_type(EntryType::Regular);
            let size = st.st_size as u64;
            header.set_size(size);
            let mut source = Source {
                file: entry.open().map_err(read)?,
                remaining: size,
                failed: None,
                shrank: false,
                counter: &counters.bytes_read,
                buf: scratch,
                pos: 0,
                filled: 0,
            };
            let result = builder.append_data(&mut header, &name, &mut source);
            if let Some(source) = source.failed.take() {
                return Err(read(source));
            }
            if source.shrank {
                tracing::warn!(path = %entry.full().display(), "file shrank while archiving; padded with zeros");
            }
            result.map_err(compress)
        }
        kind @ (FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice) => {
            header.set_entry_type(match kind {
                FileType::Fifo => EntryType::Fifo,
                FileType::CharacterDevice => EntryType::Char,
                _ => EntryType::Block,
            });
            let dev = st.st_rdev as rustix::fs::Dev;
            header
                .set_device_major(rustix::fs::major(dev))
                .and_then(|()| header.set_device_minor(rustix::fs::minor(dev)))
                .map_err(compress)?;
            builder
                .append_data(&mut header, &name, io::empty())
                .map_err(compress)
        }
        _ => {
            tracing::warn!(path = %entry.full().display(), "socket or unknown file type not archived");
            Ok(())
        }
    }
}

/// A file's identity, for finding hard links. `st_dev` and `st_ino` are `u64` here but
/// narrower on some targets.
#[allow(clippy::useless_conversion)]
fn file_id(st: &rustix::fs::Stat) -> (u64, u64) {
    (u64::from(st.st_dev), u64::from(st.st_ino))
}

/// A source file read for exactly the size its header announced: a file that grew is cut,
/// one that shrank is padded with zeros (as GNU tar does), so the tar stays well formed.
/// Reads go through a large buffer shared by all files: tar asks for 8 KiB at a time.
struct Source<'a> {
    file: File,
    remaining: u64,
    failed: Option<io::Error>,
    shrank: bool,
    counter: &'a AtomicU64,
    buf: &'a mut [u8],
    pos: usize,
    filled: usize,
}

impl Source<'_> {
    fn refill(&mut self) -> io::Result<()> {
        let want = self
            .buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = loop {
            if self.shrank {
                self.buf[..want].fill(0);
                break want;
            }
            match self.file.read(&mut self.buf[..want]) {
                Ok(0) => self.shrank = true,
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let kind = e.kind();
                    self.failed = Some(e);
                    return Err(io::Error::new(kind, "reading a source file failed"));
                }
            }
        };
        self.pos = 0;
        self.filled = n;
        Ok(())
    }
}

impl Read for Source<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        if self.pos == self.filled {
            self.refill()?;
        }
        let n = out.len().min(self.filled - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.remaining -= n as u64;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A thread's end of the pipe to the next stage: gathers small writes (tar's 512-byte headers
/// and 8 KiB pieces of data, zstd's output) into [`WRITE_BUFFER`]s, counting them.
struct Pipe<'a> {
    tx: mpsc::SyncSender<Vec<u8>>,
    buf: Vec<u8>,
    count: &'a AtomicU64,
}

impl<'a> Pipe<'a> {
    fn new(tx: mpsc::SyncSender<Vec<u8>>, count: &'a AtomicU64) -> Self {
        Pipe {
            tx,
            buf: Vec::with_capacity(WRITE_BUFFER),
            count,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(WRITE_BUFFER));
        self.count.fetch_add(full.len() as u64, Ordering::Relaxed);
        self.tx
            .send(full)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the next stage stopped"))
    }

    fn finish(mut self) -> io::Result<()> {
        self.send()
    }
}

impl Write for Pipe<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(WRITE_BUFFER - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == WRITE_BUFFER {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
