//! Restoring on a blocking thread: zstd-decode and untar a downloading archive into a staging
//! directory, hashing every archive byte, refusing entries that would land outside it, and
//! stopping archives that expand past their limit.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};
use tar::{EntryType, Header};

use super::ArchiveError;
use super::decode;
use super::error::{BytesCap, Witness};
use super::pipe::ChunkReceiver;

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

/// Metadata of a directory, applied once everything inside it is written.
struct DirMeta {
    rel: PathBuf,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

/// Unpacks the archive arriving on `receiver` into `staging` (an empty directory).
pub(crate) fn unpack(
    receiver: ChunkReceiver,
    staging: &Path,
    expect: &Expect,
    counters: &UnpackCounters,
    cancel: &AtomicBool,
    owners: bool,
) -> Result<Unpacked, ArchiveError> {
    let format = |source| ArchiveError::Format {
        key: expect.key.clone(),
        source,
    };
    let limit = expect.max_bytes.0;
    let (tx, rx) = mpsc::sync_channel(decode::PIPE_DEPTH);
    let (outcome, mut receiver) = std::thread::scope(|scope| {
        let count = counters.tar_bytes.clone();
        let decoder = scope.spawn(move || decode::run(receiver, tx, limit, count));
        let mut archive = tar::Archive::new(decode::PipeReader::new(rx));
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_preserve_ownerships(owners);
        archive.set_overwrite(true);
        archive.set_unpack_xattrs(false);
        let extracted = extract(&mut archive, staging, expect, counters, cancel, owners);
        let mut rest = archive.into_inner();
        // The rest of the tar stream (GNU tar pads to whole records) still counts and is
        // hashed; a decoding error at the very end shows up here.
        let outcome = extracted.and_then(|dirs| {
            io::copy(&mut rest, &mut io::sink())?;
            Ok(dirs)
        });
        drop(rest); // hangs up on the decoder if the untar stopped early
        let receiver = decoder.join().expect("the decoding thread panicked");
        (outcome, receiver)
    });
    let dirs = match outcome {
        Ok(dirs) => dirs,
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
    match fs::remove_file(staging.join(".chowned")) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(ArchiveError::Write {
                path: staging.join(".chowned"),
                source: e,
            });
        }
        _ => {}
    }
    for dir in dirs.iter().rev() {
        apply_meta(&staging.join(&dir.rel), dir, owners)?;
    }
    Ok(Unpacked {
        entries: counters.entries.load(Ordering::Relaxed),
        file_bytes: counters.file_bytes.load(Ordering::Relaxed),
        sha256,
    })
}

fn extract<R: Read>(
    archive: &mut tar::Archive<R>,
    staging: &Path,
    expect: &Expect,
    counters: &UnpackCounters,
    cancel: &AtomicBool,
    owners: bool,
) -> Result<Vec<DirMeta>, Stop> {
    let root = staging.canonicalize()?;
    let mut dirs = Vec::new();
    let mut checked_parent: Option<PathBuf> = None;
    for entry in archive.entries()? {
        if cancel.load(Ordering::Relaxed) {
            return Err(Stop::Refused(ArchiveError::Cancelled));
        }
        let mut entry = entry?;
        if counters.entries.fetch_add(1, Ordering::Relaxed) >= expect.max_entries {
            return Err(Stop::Refused(ArchiveError::TooManyEntries {
                key: expect.key.clone(),
                limit: expect.max_entries,
            }));
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |reason: &str| {
            Stop::Refused(ArchiveError::UnsafeEntry {
                path: raw.clone(),
                reason: reason.to_owned(),
            })
        };
        let rel = relative(&raw).map_err(&refuse)?;
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            continue;
        }
        if rel.as_os_str().is_empty() {
            if kind != EntryType::Directory {
                return Err(refuse("only a directory may stand for the archive's root"));
            }
            dirs.push(dir_meta(PathBuf::new(), entry.header())?);
            continue;
        }
        if expect.specials == Specials::AppDir
            && kind != EntryType::Directory
            && entry.header().mode()? & 0o6000 != 0
        {
            return Err(refuse(
                "a set-user-ID or set-group-ID file, which an app directory never gets back \
                 from an archive",
            ));
        }
        let parent = rel.parent().unwrap_or(Path::new("")).to_owned();
        if checked_parent.as_ref() != Some(&parent) {
            make_parents(&root, &parent).map_err(&refuse)?;
            checked_parent = Some(parent.clone());
        }
        match kind {
            EntryType::Directory => {
                let path = root.join(&rel);
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(refuse("a directory would replace another entry")),
                    Err(_) => fs::create_dir(&path)?,
                }
                dirs.push(dir_meta(rel, entry.header())?);
                continue;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| refuse("a symlink without a target"))?;
                if !stays_inside(&parent, &target) {
                    return Err(refuse("a symlink that points outside the target"));
                }
            }
            EntryType::Link => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| refuse("a hard link without a target"))?;
                let target = relative(&target.to_string_lossy()).map_err(&refuse)?;
                let resolved = root.join(&target).canonicalize();
                if target.as_os_str().is_empty()
                    || !resolved.is_ok_and(|p| p.starts_with(&root) && !p.is_dir())
                {
                    return Err(refuse(
                        "a hard link to something outside the target or not yet unpacked",
                    ));
                }
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                counters
                    .file_bytes
                    .fetch_add(entry.size(), Ordering::Relaxed);
            }
            EntryType::Fifo | EntryType::Char | EntryType::Block => {
                if kind != EntryType::Fifo {
                    match expect.specials {
                        Specials::AppDir => {
                            return Err(refuse(
                                "a device node, which an app directory never gets back from \
                                 an archive",
                            ));
                        }
                        Specials::Volumes {
                            devices: DeviceNodes::Refuse,
                        } => {
                            return Err(refuse(
                                "a device node; set [archive] allow_device_nodes = true on this \
                                 agent to restore device nodes into volumes",
                            ));
                        }
                        Specials::Volumes { .. } if !owners => {
                            return Err(refuse(
                                "a device node, which only an agent running as root restores",
                            ));
                        }
                        Specials::Volumes { .. } => {}
                    }
                }
                make_node(&root.join(&rel), kind, entry.header(), owners)?;
                continue;
            }
            _ => return Err(refuse("an unsupported entry type")),
        }
        if !entry.unpack_in(&root)? {
            return Err(refuse("a path outside the target"));
        }
    }
    Ok(dirs)
}

/// The entry's path relative to the target: leading `./` and `/`-repeats removed; absolute
/// paths and `..` refused. The archive's root comes out empty.
fn relative(raw: &str) -> Result<PathBuf, &'static str> {
    if raw.starts_with('/') {
        return Err("an absolute path");
    }
    let mut out = PathBuf::new();
    for c in Path::new(raw).components() {
        match c {
            Component::CurDir => {}
            Component::Normal(part) => out.push(part),
            Component::ParentDir => return Err("a path with '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("an absolute path"),
        }
    }
    Ok(out)
}

/// Whether a symlink in `dir` (relative to the target) pointing at `target` stays inside,
/// read lexically. Restore refuses other symlinks, so create refuses to archive them.
pub(crate) fn stays_inside(dir: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth = dir.components().count();
    for c in target.components() {
        match c {
            Component::ParentDir if depth == 0 => return false,
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Creates `rel`'s directories under `root` one at a time, checking before each step that
/// it is still inside `root` (an earlier symlink may lead elsewhere).
fn make_parents(root: &Path, rel: &Path) -> Result<(), &'static str> {
    const OUTSIDE: &str = "a parent directory that leads outside the target";
    let mut current = root.to_owned();
    for part in rel.components() {
        current.push(part);
        match fs::symlink_metadata(&current) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => match current.canonicalize() {
                Ok(p) if p.starts_with(root) && p.is_dir() => current = p,
                _ => return Err(OUTSIDE),
            },
            Ok(_) => return Err("a path under something that is not a directory"),
            Err(_) => {
                fs::create_dir(&current).map_err(|_| "a parent directory that cannot be created")?
            }
        }
    }
    Ok(())
}

fn dir_meta(rel: PathBuf, h: &Header) -> io::Result<DirMeta> {
    Ok(DirMeta {
        rel,
        mode: h.mode()?,
        uid: h.uid()?,
        gid: h.gid()?,
        mtime: h.mtime()?,
    })
}

fn apply_meta(path: &Path, m: &DirMeta, owners: bool) -> Result<(), ArchiveError> {
    let write = |source: io::Error| ArchiveError::Write {
        path: path.to_owned(),
        source,
    };
    if owners {
        chown(path, m.uid, m.gid).map_err(write)?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(m.mode & 0o7777)).map_err(write)?;
    set_mtime(path, m.mtime).map_err(write)
}

fn make_node(path: &Path, kind: EntryType, h: &Header, owners: bool) -> io::Result<()> {
    let file_type = match kind {
        EntryType::Fifo => FileType::Fifo,
        EntryType::Char => FileType::CharacterDevice,
        _ => FileType::BlockDevice,
    };
    // GNU tar leaves the device fields of a fifo empty.
    let dev = if kind == EntryType::Fifo {
        0
    } else {
        rustix::fs::makedev(
            h.device_major()?.unwrap_or(0),
            h.device_minor()?.unwrap_or(0),
        )
    };
    let _ = fs::remove_file(path);
    let mode = h.mode()? & 0o7777;
    rustix::fs::mknodat(CWD, path, file_type, Mode::from_raw_mode(mode), dev)?;
    if owners {
        chown(path, h.uid()?, h.gid()?)?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    set_mtime(path, h.mtime()?)
}

fn chown(path: &Path, uid: u64, gid: u64) -> io::Result<()> {
    let id = |v: u64| u32::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidData));
    rustix::fs::chownat(
        CWD,
        path,
        Some(rustix::fs::Uid::from_raw(id(uid)?)),
        Some(rustix::fs::Gid::from_raw(id(gid)?)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

fn set_mtime(path: &Path, mtime: u64) -> io::Result<()> {
    let t = Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_made_relative_or_refused() {
        assert_eq!(relative("./").unwrap(), PathBuf::new());
        assert_eq!(relative("./a//b/./c").unwrap(), PathBuf::from("a/b/c"));
        assert_eq!(relative("a/b/").unwrap(), PathBuf::from("a/b"));
        assert_eq!(relative("/etc/passwd"), Err("an absolute path"));
        assert_eq!(relative("a/../../b"), Err("a path with '..'"));
        assert_eq!(relative(".."), Err("a path with '..'"));
    }

    #[test]
    fn symlinks_must_stay_inside_read_lexically() {
        let inside = [
            ("", "a"),
            ("a", "../b"),
            ("a/b", "../../c"),
            ("a", "./x/../y"),
        ];
        for (dir, target) in inside {
            assert!(
                stays_inside(Path::new(dir), Path::new(target)),
                "{dir} -> {target}"
            );
        }
        let outside = [
            ("", ".."),
            ("a", "../.."),
            ("", "/etc"),
            ("a/b", "../../../c"),
        ];
        for (dir, target) in outside {
            assert!(
                !stays_inside(Path::new(dir), Path::new(target)),
                "{dir} -> {target}"
            );
        }
    }
}
