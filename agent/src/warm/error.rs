//! `WarmError`: every way a warm snapshot, restore or listing fails, with the kind that retry
//! decisions read.

use std::io;
use std::path::PathBuf;

use berth_shared::NameError;

use crate::volume::{StackError, VolumeError};

/// What a failure means for whoever decides what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmErrorKind {
    /// Bad input or a bad snapshot: sending the same request again fails the same way.
    Invalid,
    /// No snapshot, or a volume the snapshot needs is not there.
    NotFound,
    /// The app is deployed: undeploy it first.
    Conflict,
    /// A disk is full: free space first.
    NoSpace,
    /// Docker or the filesystem may do better later.
    Transient,
    /// Someone cancelled the work.
    Cancelled,
}

/// Errors of warm snapshots and restores. Messages say what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error("invalid {what}")]
    Name {
        what: &'static str,
        #[source]
        source: NameError,
    },
    #[error("invalid input: {0}")]
    Input(String),
    #[error(transparent)]
    Engine(#[from] crate::docker::DockerError),
    /// Finding the stack's volumes, or checking that nothing of it runs.
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error("no complete warm snapshot of {app} under {root}: {why}")]
    NoSnapshot {
        app: String,
        root: PathBuf,
        why: String,
    },
    #[error("cannot read snapshot metadata {path}: {why}")]
    BadMeta { path: PathBuf, why: String },
    #[error("refusing to restore {tar}: entry {entry:?} {why}; the snapshot is damaged or hostile")]
    UnsafeTar {
        tar: PathBuf,
        entry: String,
        why: String,
    },
    #[error("cannot read {tar}; the snapshot is damaged, take a new one")]
    BadTar {
        tar: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "no space left on the filesystem of {path}{needed}; free space there and retry \
         (the previous snapshot and the volumes are as they were)",
        needed = space_note(*needed, *free)
    )]
    DiskFull {
        path: PathBuf,
        needed: Option<u64>,
        free: Option<u64>,
    },
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "volume {volume} is only partly restored: it could not be swapped, and clearing and \
         extracting it failed part way; fix the cause and restore again"
    )]
    PartlyRestored {
        volume: String,
        #[source]
        source: Box<WarmError>,
    },
    #[error(transparent)]
    Volume(VolumeError),
    #[error("cancelled")]
    Cancelled,
    #[error("internal task failed")]
    Join(#[from] tokio::task::JoinError),
}

fn space_note(needed: Option<u64>, free: Option<u64>) -> String {
    match (needed, free) {
        (Some(n), Some(f)) => format!(" (needs about {n} bytes, {f} free)"),
        _ => String::new(),
    }
}

impl WarmError {
    pub fn kind(&self) -> WarmErrorKind {
        use WarmError::*;
        match self {
            Name { .. } | Input(_) | BadMeta { .. } | UnsafeTar { .. } | BadTar { .. } => {
                WarmErrorKind::Invalid
            }
            Stack(e) => match e {
                StackError::Name { .. } | StackError::Unsupported(_) => WarmErrorKind::Invalid,
                StackError::NoVolumes { .. } | StackError::VolumeMissing { .. } => {
                    WarmErrorKind::NotFound
                }
                StackError::Deployed { .. } => WarmErrorKind::Conflict,
                StackError::Engine(_) => WarmErrorKind::Transient,
            },
            NoSnapshot { .. } => WarmErrorKind::NotFound,
            Volume(VolumeError::Busy { .. } | VolumeError::CutForTest { .. }) => {
                WarmErrorKind::Transient
            }
            Volume(VolumeError::Cancelled) => WarmErrorKind::Cancelled,
            Volume(VolumeError::Io { .. }) => WarmErrorKind::Transient,
            DiskFull { .. } => WarmErrorKind::NoSpace,
            Engine(_) | Io { .. } | Join(_) => WarmErrorKind::Transient,
            PartlyRestored { source, .. } => source.kind(),
            Cancelled => WarmErrorKind::Cancelled,
        }
    }

    /// An I/O failure on `path`; a full disk becomes [`WarmError::DiskFull`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if is_no_space(&source) {
            return WarmError::DiskFull {
                path,
                needed: None,
                free: None,
            };
        }
        WarmError::Io { op, path, source }
    }
}

impl From<VolumeError> for WarmError {
    fn from(e: VolumeError) -> Self {
        match e {
            VolumeError::Cancelled => WarmError::Cancelled,
            VolumeError::Io { op, path, source } => WarmError::io(op, path, source),
            e => WarmError::Volume(e),
        }
    }
}

/// ENOSPC or EDQUOT.
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}
