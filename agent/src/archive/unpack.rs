//! Restoring on a blocking thread: zstd-decode and untar a downloading archive into a staging
//! directory (or, for a verify, through the same checks into nothing), hashing every archive byte, refusing entries that would land outside it or
//! write through a link (`crate::tarsafe`, shared with warm restores; `extract` decides what
//! an archive may hold), and stopping archives that expand past their limit.

mod extract;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use super::ArchiveError;
use super::decode;
use super::error::{BytesCap, Witness};
use super::pipe::ChunkReceiver;
use super::seal::Identities;
use crate::tarsafe::{Links, Shadow, Stream, TarReader, Target, Tree};

/// What the archive must look like, and the limits that stop bombs.
#[derive(Debug, Clone)]
pub(crate) struct Expect {
    pub key: String,
    /// The archive object's SHA-256, and who recorded it.
    pub sha256: Option<(String, Witness)>,
    /// The exact length of the tar stream and its entry count, where recorded.
    pub tar_bytes: Option<u64>,
    pub entries: Option<u64>,
    /// The decoded stream stops past this many bytes, for the reason given.
    pub max_bytes: (u64, BytesCap),
    pub max_entries: u64,
    pub specials: Specials,
    /// What happens to symlinks that lead outside the target.
    pub links: Links,
}

/// Which special entries a restore takes from an archive (the bucket is untrusted: any agent
/// can write it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Specials {
    /// An app directory: no device nodes, and no set-user-ID or set-group-ID files.
    AppDir,
    /// A stack's volumes: set-id bits as archived; device nodes only where the agent's
    /// `[archive] allow_device_nodes` says so.
    Volumes { devices: DeviceNodes },
}

/// Whether a volume restore recreates device nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceNodes {
    Refuse,
    Restore,
}

/// Live counters of a restore.
#[derive(Debug, Default)]
pub(crate) struct UnpackCounters {
    /// Archive bytes received.
    pub downloaded: Arc<AtomicU64>,
    /// Tar bytes decoded.
    pub tar_bytes: Arc<AtomicU64>,
    pub entries: AtomicU64,
    /// File content bytes written.
    pub file_bytes: AtomicU64,
}

/// What a finished unpack found.
#[derive(Debug, Clone)]
pub(crate) struct Unpacked {
    pub entries: u64,
    pub file_bytes: u64,
    pub sha256: String,
}

/// Why extraction stopped (classified into an [`ArchiveError`] once the stream is drained).
enum Stop {
    Io(io::Error),
    Refused(ArchiveError),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        Stop::Io(e)
    }
}

/// Where an unpack puts the archive's entries.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Destination<'a> {
    /// Into this empty staging directory (a restore).
    Dir(&'a Path),
    /// Nowhere: every entry goes through a restore's checks into a `tarsafe::Shadow`, and
    /// nothing is written (a verify).
    Nowhere,
}

/// What one unpack is held to and reports into.
pub(crate) struct Walk<'a> {
    pub expect: &'a Expect,
    pub counters: &'a UnpackCounters,
    pub cancel: &'a AtomicBool,
    /// Restore owners (only root can).
    pub owners: bool,
    /// Opens an age-encrypted archive.
    pub opener: Option<&'a Identities>,
}

/// Unpacks the archive arriving on `receiver` into `dest`.
pub(crate) fn unpack(
    receiver: ChunkReceiver,
    dest: Destination<'_>,
    walk: &Walk<'_>,
) -> Result<Unpacked, ArchiveError> {
    let options = extract::tree_options(walk.expect, walk.owners);
    match dest {
        Destination::Dir(staging) => {
            let tree = Tree::open(staging, options).map_err(|source| {
                Stop::Refused(ArchiveError::Write {
                    path: staging.to_owned(),
                    source,
                })
            });
            unpack_into(receiver, tree, staging, walk)
        }
        Destination::Nowhere => {
            unpack_into(receiver, Ok(Shadow::new(options)), Path::new(""), walk)
        }
    }
}

/// Unpacks into `tree`, which is at `staging` (for messages).
fn unpack_into<T: Target>(
    receiver: ChunkReceiver,
    tree: Result<T, Stop>,
    staging: &Path,
    walk: &Walk<'_>,
) -> Result<Unpacked, ArchiveError> {
    let Walk {
        expect,
        counters,
        cancel,
        owners,
        opener,
    } = *walk;
    let format = |source| ArchiveError::Format {
        key: expect.key.clone(),
        source,
    };
    let limit = expect.max_bytes.0;
    let (tx, rx) = mpsc::sync_channel(decode::PIPE_DEPTH);
    let (outcome, mut receiver) = std::thread::scope(|scope| {
        let count = counters.tar_bytes.clone();
        let decoder = scope.spawn(move || decode::run(receiver, opener, tx, limit, count));
        let mut reader = TarReader::new(Stream(decode::PipeReader::new(rx)));
        let extracted = tree.and_then(|mut tree| {
            extract::extract(
                &mut reader,
                &mut tree,
                staging,
                expect,
                counters,
                cancel,
                owners,
            )
            .map(|()| tree)
        });
        let mut rest = reader.into_inner().0;
        // The rest of the tar stream (GNU tar pads to whole records) still counts and is
        // hashed; a decoding error at the very end shows up here.
        let outcome = extracted.and_then(|tree| {
            io::copy(&mut rest, &mut io::sink())?;
            Ok(tree)
        });
        drop(rest); // hangs up on the decoder if the untar stopped early
        let receiver = decoder.join().expect("the decoding thread panicked");
        (outcome, receiver)
    });
    let mut tree = match outcome {
        Ok(tree) => tree,
        Err(Stop::Refused(ArchiveError::Cancelled)) => return Err(ArchiveError::Cancelled),
        Err(stop) => {
            if counters.tar_bytes.load(Ordering::Relaxed) > limit {
                return Err(ArchiveError::TooLarge {
                    key: expect.key.clone(),
                    limit,
                    why: expect.max_bytes.1.clone(),
                });
            }
            // A corrupted archive breaks decoding, or reads as nonsense entries, before its
            // end: when the checksum disagrees, that is the cause to report.
            if let Some((expected, by)) = &expect.sha256
                && let Ok(found) = receiver.drain_and_hash()
                && &found != expected
            {
                return Err(ArchiveError::Checksum {
                    key: expect.key.clone(),
                    expected: expected.clone(),
                    found,
                    by: *by,
                });
            }
            return Err(match stop {
                Stop::Refused(e) => e,
                Stop::Io(e) => format(e),
            });
        }
    };
    let sha256 = receiver.drain_and_hash().map_err(format)?;
    if let Some((expected, by)) = &expect.sha256
        && &sha256 != expected
    {
        return Err(ArchiveError::Checksum {
            key: expect.key.clone(),
            expected: expected.clone(),
            found: sha256,
            by: *by,
        });
    }
    let tar_bytes = counters.tar_bytes.load(Ordering::Relaxed);
    let entries = counters.entries.load(Ordering::Relaxed);
    let recorded = match expect.tar_bytes {
        Some(expected) if tar_bytes != expected => Some(("bytes", tar_bytes, expected)),
        _ => match expect.entries {
            Some(expected) if entries != expected => Some(("entries", entries, expected)),
            _ => None,
        },
    };
    if let Some((what, found, expected)) = recorded {
        return Err(format(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the tar stream has {found} {what}, {expected} were recorded at create"),
        )));
    }
    // As the Go node API did: the app's container sets ownership up again on its next start.
    // Removed before directory times are set, so the root keeps the archive's mtime.
    let finish = |e| match extract::stop(e, staging) {
        Stop::Refused(e) => e,
        Stop::Io(e) => format(e),
    };
    tree.remove_file(b".chowned").map_err(finish)?;
    tree.finish().map_err(finish)?;
    Ok(Unpacked {
        entries: counters.entries.load(Ordering::Relaxed),
        file_bytes: counters.file_bytes.load(Ordering::Relaxed),
        sha256,
    })
}
