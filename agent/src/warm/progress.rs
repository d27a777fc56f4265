//! `Progress`: the observable state of a running snapshot or restore. Workers bump atomic
//! counters; whoever reports (the task runner) samples them as often as it likes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use berth_proto::v1 as pb;

/// Counters of one long job; cheap to update from many threads.
#[derive(Debug, Default)]
pub struct Progress {
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
    entries_done: AtomicU64,
    entries_total: AtomicU64,
    bytes_written: AtomicU64,
    phase: Mutex<String>,
    /// When set, `add_bytes` holds its (blocking) caller back to this many bytes a second,
    /// counted from the first call: background work at a bounded I/O rate.
    pace: Option<Pace>,
}

#[derive(Debug)]
struct Pace {
    bytes_per_sec: u64,
    started: std::sync::OnceLock<std::time::Instant>,
    /// A wait ends early when this is cancelled (the work then sees it and stops).
    cancel: tokio_util::sync::CancellationToken,
}

/// A consistent-enough copy of [`Progress`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressSnapshot {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub entries_done: u64,
    pub entries_total: u64,
    pub bytes_written: u64,
    pub phase: String,
}

impl Progress {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters whose `add_bytes` sleeps to keep the work under `bytes_per_sec` (0: no limit).
    /// Only for work on blocking threads.
    pub fn paced(bytes_per_sec: u64, cancel: tokio_util::sync::CancellationToken) -> Self {
        Self {
            pace: (bytes_per_sec > 0).then(|| Pace {
                bytes_per_sec,
                started: std::sync::OnceLock::new(),
                cancel,
            }),
            ..Self::default()
        }
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            entries_done: self.entries_done.load(Ordering::Relaxed),
            entries_total: self.entries_total.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            phase: self.phase.lock().map(|p| p.clone()).unwrap_or_default(),
        }
    }

    pub(crate) fn set_phase(&self, phase: impl Into<String>) {
        let phase = phase.into();
        tracing::debug!(phase = %phase, "warm phase");
        if let Ok(mut p) = self.phase.lock() {
            *p = phase;
        }
    }

    pub(crate) fn set_totals(&self, bytes: u64, entries: u64) {
        self.bytes_total.store(bytes, Ordering::Relaxed);
        self.entries_total.store(entries, Ordering::Relaxed);
    }

    /// `bytes` of file data handled (read for a snapshot, written for a restore).
    pub(crate) fn add_bytes(&self, bytes: u64) {
        let done = self.bytes_done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if let Some(pace) = &self.pace {
            let started = *pace.started.get_or_init(std::time::Instant::now);
            let due = started
                + std::time::Duration::from_secs_f64(done as f64 / pace.bytes_per_sec as f64);
            loop {
                let now = std::time::Instant::now();
                if due <= now || pace.cancel.is_cancelled() {
                    break;
                }
                std::thread::sleep((due - now).min(std::time::Duration::from_millis(20)));
            }
        }
    }

    /// Counts everything as done (work that finished without going through each entry).
    pub(crate) fn complete(&self) {
        let (bytes, entries) = (
            self.bytes_total.load(Ordering::Relaxed),
            self.entries_total.load(Ordering::Relaxed),
        );
        self.bytes_done.store(bytes, Ordering::Relaxed);
        self.entries_done.store(entries, Ordering::Relaxed);
    }

    pub(crate) fn add_entry(&self) {
        self.entries_done.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_written(&self, bytes: u64) {
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Takes every counter and the phase from `p` (for tasks that keep their own counters).
    pub(crate) fn replace(&self, p: &pb::Progress) {
        self.bytes_done.store(p.bytes_done, Ordering::Relaxed);
        self.bytes_total.store(p.bytes_total, Ordering::Relaxed);
        self.entries_done.store(p.entries_done, Ordering::Relaxed);
        self.entries_total.store(p.entries_total, Ordering::Relaxed);
        self.bytes_written.store(p.bytes_written, Ordering::Relaxed);
        if let Ok(mut phase) = self.phase.lock()
            && *phase != p.phase
        {
            phase.clone_from(&p.phase);
        }
    }
}

impl From<ProgressSnapshot> for pb::Progress {
    fn from(p: ProgressSnapshot) -> Self {
        pb::Progress {
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
            entries_done: p.entries_done,
            entries_total: p.entries_total,
            bytes_written: p.bytes_written,
            phase: p.phase,
        }
    }
}
