//! Untrusted tar archives, read and extracted without ever leaving the target: the one
//! path-safety mechanism warm and archive restores share. `read` parses headers itself (long
//! names and PAX records capped before they are read, GNU sparse maps checked, sizes that lie
//! named); `entry` turns a header into a typed entry with a clean name; `tree` creates every
//! entry relative to directory descriptors opened without following symlinks, so nothing is
//! created or written through a link; `links` resolves symlinks against the extracted tree.
//! `target` is what a walk does with each entry: `Tree` writes it, `Shadow` only models it
//! (a verify, which writes nothing and refuses what a restore would). Each restore wraps [`UntarError`] in its own error.

mod dirs;
mod entry;
mod links;
mod read;
mod shadow;
mod target;
mod tree;

use std::io;

pub(crate) use entry::{Entry, Kind, Name};
pub(crate) use read::{Head, Source, Sparse, Stream, TarReader};
pub(crate) use shadow::Shadow;
pub(crate) use target::{Contents, Target};
pub(crate) use tree::{Links, Options, Tree};

/// Why reading or extracting an archive stopped.
#[derive(Debug)]
pub(crate) enum UntarError {
    /// The entry is unsafe, or its header impossible: the archive is refused, naming the
    /// entry. `why` reads after its name: `"./x" climbs out with '..'`.
    Refused { entry: Vec<u8>, why: String },
    /// Reading the archive failed, or what it holds is not tar.
    Read(io::Error),
    /// Changing the target failed: `op` on the entry at `rel` (a path under the target).
    Write {
        op: &'static str,
        rel: Vec<u8>,
        source: io::Error,
    },
}

impl UntarError {
    pub(crate) fn refused(entry: &[u8], why: impl Into<String>) -> Self {
        UntarError::Refused {
            entry: entry.to_vec(),
            why: why.into(),
        }
    }

    pub(crate) fn write(op: &'static str, rel: &[u8], source: impl Into<io::Error>) -> Self {
        UntarError::Write {
            op,
            rel: rel.to_vec(),
            source: source.into(),
        }
    }

    /// The same error, a refusal naming `entry` instead (the raw name of the entry whose
    /// extraction failed, rather than its cleaned path).
    pub(crate) fn naming(self, entry: &[u8]) -> Self {
        match self {
            UntarError::Refused { why, .. } => UntarError::refused(entry, why),
            other => other,
        }
    }
}

/// A name from an archive as messages show it: its bytes, each byte of invalid UTF-8 as
/// `\xNN` (Linux names are bytes; they are restored as they are).
pub(crate) fn shown(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_shown_with_invalid_bytes_escaped() {
        assert_eq!(super::shown(b"./caf\xc3\xa9"), "./café");
        assert_eq!(super::shown(b"./caf\xe9/x"), "./caf\\xe9/x");
    }
}
