//! Extracting an archive's tar stream into a staging directory through `crate::tarsafe`,
//! with what only an archive restore decides: what an app directory or a stack's volumes
//! take from an untrusted archive (no device nodes or set-id files in an app directory, no
//! xattrs at all, device nodes in volumes only when allowed), the entry limit, and file sizes
//! (a sparse file's real size) counted against the restore's byte limit. A verify walks the
//! same code into a `tarsafe::Shadow`, so it refuses what a restore would.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{DeviceNodes, Expect, Specials, Stop, UnpackCounters};
use crate::archive::ArchiveError;
use crate::tarsafe::{
    Contents, Entry, Kind, Options, Stream, TarReader, Target, UntarError, shown,
};

/// File data is copied through a buffer of this size.
const BUFFER: usize = 256 << 10;

/// How symlinks are restored, and which directory they must stay inside.
pub(super) fn tree_options(expect: &Expect, owners: bool) -> Options {
    Options {
        owners,
        links: expect.links,
        link_root_depth: match expect.specials {
            Specials::AppDir => 0,
            Specials::Volumes { .. } => 1,
        },
    }
}

/// Extracts every entry `reader` holds into `tree` (written, or only modelled by a verify);
/// the caller finishes the tree.
pub(super) fn extract<R: Read, T: Target>(
    reader: &mut TarReader<Stream<R>>,
    tree: &mut T,
    staging: &Path,
    expect: &Expect,
    counters: &UnpackCounters,
    cancel: &AtomicBool,
    owners: bool,
) -> Result<(), Stop> {
    let stop = |e| stop(e, staging);
    let (limit, cap) = &expect.max_bytes;
    let limit = *limit;
    // What the extracted files hold, sparse files at their real size.
    let mut file_bytes: u64 = 0;
    let mut buf = vec![0u8; BUFFER];
    while let Some(head) = reader.next().map_err(stop)? {
        if cancel.load(Ordering::Relaxed) {
            return Err(Stop::Refused(ArchiveError::Cancelled));
        }
        if counters.entries.fetch_add(1, Ordering::Relaxed) >= expect.max_entries {
            return Err(Stop::Refused(ArchiveError::TooManyEntries {
                key: expect.key.clone(),
                limit: expect.max_entries,
            }));
        }
        let Some(Entry {
            name,
            kind,
            mut attrs,
        }) = Entry::parse(&head).map_err(stop)?
        else {
            continue;
        };
        // An xattr such as security.capability grants what a set-id bit does: the bucket
        // gives none (Berth's and the Go tool's archives carry none).
        attrs.xattrs.clear();
        let refuse = |why: &str| refused(&name.raw, why.to_owned());
        if expect.specials == Specials::AppDir && kind != Kind::Dir && attrs.mode & 0o6000 != 0 {
            return Err(refuse(
                "is a set-user-ID or set-group-ID file, which an app directory never gets \
                 back from an archive",
            ));
        }
        let done = match &kind {
            Kind::Dir => tree.dir(&name, attrs),
            Kind::File | Kind::Sparse(_) => {
                let size = match &kind {
                    Kind::Sparse(map) => map.real_size,
                    _ => head.size,
                };
                file_bytes = file_bytes.saturating_add(size);
                if file_bytes > limit {
                    // A regular file's bytes are in the stream: it is a decompression bomb
                    // like any other. A sparse file's are mostly not: name it.
                    if let Kind::File = kind {
                        return Err(Stop::Refused(ArchiveError::TooLarge {
                            key: expect.key.clone(),
                            limit,
                            why: cap.clone(),
                        }));
                    }
                    return Err(refused(
                        &name.raw,
                        format!(
                            "is a sparse file of {size} bytes, which takes the restore past \
                             its limit of {limit} bytes, {cap}"
                        ),
                    ));
                }
                counters.file_bytes.fetch_add(size, Ordering::Relaxed);
                let out = tree.file(&name).map_err(stop)?;
                let regions = match &kind {
                    Kind::Sparse(map) => map.regions.clone(),
                    _ => vec![(0, head.size)],
                };
                for (off, len) in regions {
                    copy(reader, &out, off, len, &mut buf, &name.rel).map_err(stop)?;
                }
                if let Kind::Sparse(map) = &kind {
                    out.set_len(map.real_size)
                        .map_err(|e| stop(UntarError::write("size", &name.rel, e)))?;
                }
                tree.set_file_attrs(&out, &name.rel, &attrs)
            }
            Kind::Symlink(target) => tree.symlink(&name, target, &attrs),
            Kind::HardLink(to) => tree.hard_link(&name, to),
            Kind::Fifo => tree.node(&name, &kind, &attrs),
            Kind::Char { .. } | Kind::Block { .. } => {
                match expect.specials {
                    Specials::AppDir => {
                        return Err(refuse(
                            "is a device node, which an app directory never gets back from an \
                             archive",
                        ));
                    }
                    Specials::Volumes {
                        devices: DeviceNodes::Refuse,
                    } => {
                        return Err(refuse(
                            "is a device node; set [archive] allow_device_nodes = true on this \
                             agent to restore device nodes into volumes",
                        ));
                    }
                    Specials::Volumes { .. } if !owners => {
                        return Err(refuse(
                            "is a device node, which only an agent running as root restores",
                        ));
                    }
                    Specials::Volumes { .. } => {}
                }
                tree.node(&name, &kind, &attrs)
            }
        };
        done.map_err(|e| stop(e.naming(&name.raw)))?;
    }
    Ok(())
}

/// Why extraction into `staging` stopped, as an archive restore tells it.
pub(super) fn stop(e: UntarError, staging: &Path) -> Stop {
    match e {
        UntarError::Refused { entry, why } => refused(&entry, why),
        UntarError::Read(e) => Stop::Io(e),
        UntarError::Write { rel, source, .. } => Stop::Refused(ArchiveError::Write {
            path: staging.join(OsStr::from_bytes(&rel)),
            source,
        }),
    }
}

fn refused(entry: &[u8], reason: String) -> Stop {
    Stop::Refused(ArchiveError::UnsafeEntry {
        path: shown(entry),
        reason,
    })
}

/// Copies the next `len` bytes of the entry's data to `out` at `at`.
fn copy<R: Read>(
    reader: &mut TarReader<Stream<R>>,
    out: &impl Contents,
    mut at: u64,
    len: u64,
    buf: &mut [u8],
    rel: &[u8],
) -> Result<(), UntarError> {
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        reader.read_data(&mut buf[..n])?;
        out.write_all_at(&buf[..n], at)
            .map_err(|e| UntarError::write("write", rel, e))?;
        at += n as u64;
        left -= n as u64;
    }
    Ok(())
}
