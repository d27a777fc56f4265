//! Reading a volume tar's headers before anything is extracted: names that escape (`..`,
//! absolute paths), hard links that point outside, entry kinds we do not restore, oversized
//! name or PAX records (a memory bomb), impossible sparse maps and sizes the file does not
//! hold are refused here (by `crate::tarsafe`), so a bad snapshot is refused whole before
//! any volume is touched. Also counts what the restore will do.

use std::fs::File;
use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::reader::BufFile;
use crate::tarsafe::{Entry, Kind, TarReader, UntarError, shown};
use crate::warm::error::WarmError;
use crate::warm::pack::Totals;

/// Reads every header of `tar` and returns what extracting it involves: data bytes and
/// entries. Refuses, naming the entry, whatever `unpack` would refuse before writing.
pub(crate) fn check(tar: &Path, cancel: &CancellationToken) -> Result<Totals, WarmError> {
    let err = |e| match e {
        UntarError::Refused { entry, why } => WarmError::UnsafeTar {
            tar: tar.to_owned(),
            entry: shown(&entry),
            why,
        },
        UntarError::Read(source) => WarmError::BadTar {
            tar: tar.to_owned(),
            source,
        },
        UntarError::Write { op, source, .. } => WarmError::io(op, tar, source),
    };
    let file = File::open(tar).map_err(|e| WarmError::io("open", tar, e))?;
    let mut reader = TarReader::new(BufFile::new(&file));
    let mut totals = Totals::default();
    while let Some(head) = reader.next().map_err(err)? {
        if cancel.is_cancelled() {
            return Err(WarmError::Cancelled);
        }
        let Some(entry) = Entry::parse(&head).map_err(err)? else {
            continue;
        };
        if matches!(entry.kind, Kind::File | Kind::Sparse(_)) {
            totals.bytes += head.size;
        }
        totals.entries += 1;
    }
    Ok(totals)
}
