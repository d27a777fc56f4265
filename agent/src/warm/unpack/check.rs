//! Reading a volume tar's headers before anything is extracted: names that escape (`..`,
//! absolute paths), hard links that point outside, entry kinds we do not restore, and
//! oversized name or PAX records (a memory bomb) are refused here, so a bad snapshot is
//! refused whole before any volume is touched. Also counts what the restore will do.

use std::fs::File;
use std::path::Path;

use tar::{Archive, EntryType};
use tokio_util::sync::CancellationToken;

use super::reader::BufFile;
use crate::warm::error::WarmError;
use crate::warm::pack::Totals;

/// Largest long-name or PAX record we read into memory.
const MAX_RECORD: u64 = 1 << 20;

/// A path inside the archive, cleaned: components without `.`, never `..`, never absolute.
/// Empty means the archive's root (`./`).
pub(crate) fn clean_path(raw: &[u8]) -> Result<Vec<u8>, String> {
    if raw.first() == Some(&b'/') {
        return Err("is an absolute path".to_owned());
    }
    let mut out = Vec::with_capacity(raw.len());
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("climbs out with '..'".to_owned()),
            part => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(part);
            }
        }
    }
    Ok(out)
}

/// What restore does with an entry of `kind`: `Some(true)` restores it, `Some(false)` skips
/// it harmlessly, `None` refuses it.
pub(crate) fn restorable(kind: EntryType) -> Option<bool> {
    match kind {
        EntryType::Regular
        | EntryType::Continuous
        | EntryType::GNUSparse
        | EntryType::Directory
        | EntryType::Symlink
        | EntryType::Link
        | EntryType::Char
        | EntryType::Block
        | EntryType::Fifo => Some(true),
        EntryType::XGlobalHeader => Some(false),
        // A GNU volume label says nothing about files.
        other if other.as_byte() == b'V' => Some(false),
        _ => None,
    }
}

/// Reads every header of `tar` and returns what extracting it involves: data bytes and
/// entries. Refuses, naming the entry, whatever `unpack` would refuse.
pub(crate) fn check(tar: &Path, cancel: &CancellationToken) -> Result<Totals, WarmError> {
    let bad = |source| WarmError::BadTar {
        tar: tar.to_owned(),
        source,
    };
    let unsafe_entry = |entry: &[u8], why: String| WarmError::UnsafeTar {
        tar: tar.to_owned(),
        entry: String::from_utf8_lossy(entry).into_owned(),
        why,
    };
    let file = File::open(tar).map_err(|e| WarmError::io("open", tar, e))?;

    // First the raw records, so no oversized name or PAX record is ever read into memory.
    let mut archive = Archive::new(BufFile::new(&file));
    for entry in archive.entries_with_seek().map_err(bad)?.raw(true) {
        let entry = entry.map_err(bad)?;
        let kind = entry.header().entry_type();
        let extension = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        if extension && entry.size() > MAX_RECORD {
            return Err(unsafe_entry(
                &entry.path_bytes(),
                format!("is a {} byte name or PAX record", entry.size()),
            ));
        }
    }

    let mut totals = Totals::default();
    let file = File::open(tar).map_err(|e| WarmError::io("open", tar, e))?;
    let mut archive = Archive::new(BufFile::new(&file));
    for entry in archive.entries_with_seek().map_err(bad)? {
        if cancel.is_cancelled() {
            return Err(WarmError::Cancelled);
        }
        let entry = entry.map_err(bad)?;
        let raw_path = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        match restorable(kind) {
            None => {
                return Err(unsafe_entry(
                    &raw_path,
                    format!("has an entry type Berth does not restore ({kind:?})"),
                ));
            }
            Some(false) => continue,
            Some(true) => {}
        }
        let path = clean_path(&raw_path).map_err(|why| unsafe_entry(&raw_path, why))?;
        if path.is_empty() && kind != EntryType::Directory {
            return Err(unsafe_entry(
                &raw_path,
                "replaces the volume root".to_owned(),
            ));
        }
        if kind == EntryType::Link {
            let target = entry.link_name_bytes().unwrap_or_default().into_owned();
            let clean = clean_path(&target).map_err(|why| {
                unsafe_entry(
                    &raw_path,
                    format!(
                        "is a hard link to {:?} that {why}",
                        String::from_utf8_lossy(&target)
                    ),
                )
            })?;
            if clean.is_empty() {
                return Err(unsafe_entry(
                    &raw_path,
                    "is a hard link to the root".to_owned(),
                ));
            }
        }
        if matches!(
            kind,
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse
        ) {
            totals.bytes += entry.header().entry_size().map_err(bad)?;
        }
        totals.entries += 1;
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths_stay_inside() {
        assert_eq!(clean_path(b"./").unwrap(), b"");
        assert_eq!(clean_path(b".").unwrap(), b"");
        assert_eq!(clean_path(b"./a//b/./c/").unwrap(), b"a/b/c");
        assert_eq!(clean_path(b"a").unwrap(), b"a");
        assert!(clean_path(b"../x").is_err());
        assert!(clean_path(b"./a/../../x").is_err());
        assert!(clean_path(b"a/..").is_err());
        assert!(clean_path(b"/etc/passwd").unwrap_err().contains("absolute"));
    }
}
