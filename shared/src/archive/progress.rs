//! Progress of an archive create or restore, as the agent publishes it and the wire carries it.

use serde::Serialize;

/// Where a create or restore is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Walking the source for totals (create) or checking the archive (restore).
    #[default]
    Scanning,
    /// Reading, compressing and uploading (create).
    Archiving,
    /// Upload complete; checking the object and writing its metadata (create).
    Verifying,
    /// Downloading, verifying and unpacking into the staging directory (restore).
    Restoring,
    /// Swapping the staging directory into place (restore).
    Swapping,
    /// Downloading, decoding and checking every entry, writing nothing (verify).
    Checking,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Scanning => "scanning",
            Phase::Archiving => "archiving",
            Phase::Verifying => "verifying",
            Phase::Restoring => "restoring",
            Phase::Swapping => "swapping",
            Phase::Checking => "checking",
            Phase::Done => "done",
        }
    }
}

/// Counters of one archive task. For a create, `bytes_done`/`bytes_total` count the source's
/// file bytes (totals from a pre-scan); for a restore, archive bytes downloaded out of the
/// object's size. `entries_*` count tar entries either way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ArchiveProgress {
    pub phase: Phase,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub entries_done: u64,
    pub entries_total: u64,
    /// Compressed bytes produced (create) or uncompressed tar bytes unpacked (restore).
    pub bytes_transformed: u64,
    /// Compressed bytes the store acknowledged (create) or file bytes written to disk
    /// (restore): what the wire calls `bytes_written`.
    pub bytes_stored: u64,
}

impl ArchiveProgress {
    /// Uncompressed over compressed bytes so far (1.0 before anything is compressed).
    pub fn compression_ratio(&self) -> f64 {
        let (raw, packed) = match self.phase {
            Phase::Restoring | Phase::Swapping | Phase::Checking => {
                (self.bytes_transformed, self.bytes_done)
            }
            _ => (self.bytes_done, self.bytes_transformed),
        };
        if packed == 0 {
            1.0
        } else {
            raw as f64 / packed as f64
        }
    }
}
