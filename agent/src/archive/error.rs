//! `ArchiveError`: every way an archive create or restore fails, with the kind that the task
//! runner's retry decision reads.

use std::io;
use std::path::PathBuf;

use berth_shared::NameError;
use berth_shared::archive::{KeyError, LabelError, StoreUrlError};

use crate::error_kind::ErrorKind;

/// Errors of app archives on the agent.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("invalid app name")]
    App(#[source] NameError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Labels(#[from] LabelError),
    #[error("zstd level {0} is out of range; use 1 to 19")]
    Level(i32),
    #[error("invalid inputs for task {kind}")]
    Inputs {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("task kind {0:?} is not an archive task")]
    UnknownKind(String),
    #[error(
        "archive {id} holds {source_kind:?}, which this agent does not know how to restore; \
         upgrade the agent"
    )]
    UnknownSource { id: String, source_kind: String },
    #[error("invalid input: {0}")]
    Input(String),
    #[error(
        "archive {id} is encrypted to {recipients}, and this agent has no \
         archive.identity_file: restore it on a host given the identity of one of them, or \
         pass one for this restore (berth archive restore --identity-file FILE)"
    )]
    NoIdentity { id: String, recipients: String },
    #[error(
        "archive {id} is encrypted to {recipients}, and none of them is this agent's identity \
         ({identity}): restore it on a host that holds one of their identities, or set \
         archive.identity_file to one; nothing was written"
    )]
    NotForThisHost {
        id: String,
        recipients: String,
        /// Where the identity came from (a file, or the restore's one-off identity).
        identity: String,
    },
    #[error("archive {id} cannot be decrypted: {why}; nothing was written")]
    Encryption { id: String, why: String },
    #[error(
        "archive {id} cannot be decrypted: it is encrypted with {scheme:?}, which this agent \
         does not know; upgrade the agent; nothing was written"
    )]
    UnknownEncryption { id: String, scheme: String },
    /// A recipient or identity that is not a usable key (named by where it came from; a
    /// value that may be secret is never shown).
    #[error("{0}")]
    AgeKey(String),
    /// A stack's volumes: not found, unsupported, still in use, or not swappable.
    #[error(transparent)]
    Stack(#[from] crate::volume::StackError),
    #[error("invalid archive store url")]
    StoreUrl(#[from] StoreUrlError),
    #[error("invalid archive store configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Open(#[from] berth_objstore::OpenError),
    #[error("app directory {path} does not exist or is not a directory")]
    SourceMissing { path: PathBuf },
    #[error("archive {id} not found: there is no _metadata/{id}")]
    NotFound { id: String },
    #[error("archive {id} has metadata but no data object under {app}:{id}:…; it never completed")]
    DataMissing { id: String, app: String },
    #[error("archive id {id} already belongs to app {app}; use a fresh uuid")]
    IdInUse { id: String, app: String },
    /// A lock, staging or swap of the shared volume module (`Busy` names the holder).
    #[error(transparent)]
    Volume(crate::volume::VolumeError),
    #[error("object store: {op} {key}")]
    Store {
        op: &'static str,
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error(
        "{path} is {what}, which an app-directory restore refuses, so the app is not \
         archived: {fix}"
    )]
    Unrestorable {
        path: PathBuf,
        what: &'static str,
        fix: &'static str,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the upload journal {path}")]
    Journal {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("compressing the archive failed")]
    Compress(#[source] io::Error),
    #[error(
        "uploaded object {key} has {found} bytes but {expected} were sent; it was deleted, \
         retry the archive"
    )]
    Verify {
        key: String,
        expected: u64,
        found: u64,
    },
    #[error(
        "archive {key} has {found} bytes but {by} records {expected}; it is incomplete or was \
         changed, so it is not restored"
    )]
    SizeMismatch {
        key: String,
        expected: u64,
        found: u64,
        by: Witness,
    },
    #[error(
        "archive {key} failed its checksum (sha256 {found}, {by} records {expected}): it is \
         corrupted or was changed; the target was left as it was"
    )]
    Checksum {
        key: String,
        expected: String,
        found: String,
        by: Witness,
    },
    #[error(
        "archive {key} has no checksum recorded by an archive.create saga of this fleet, and \
         {why}; it is not restored (an archive the Go tool made carries a size:<bytes> label \
         that matches its object)"
    )]
    Unverifiable { key: String, why: String },
    #[error("archive {key} is not a valid tar+zstd stream")]
    Format {
        key: String,
        #[source]
        source: io::Error,
    },
    /// `reason` reads after the entry's name: "is an absolute path".
    #[error(
        "archive entry {path:?} {reason}: refused; nothing was written outside the target and \
         the target was left as it was"
    )]
    UnsafeEntry { path: String, reason: String },
    #[error("archive {key} unpacks to more than {limit} bytes: refused, {why}")]
    TooLarge {
        key: String,
        limit: u64,
        why: BytesCap,
    },
    #[error(
        "archive {key} has more than {limit} entries: refused (raise \
         archive.max_restore_entries if the archive is genuine)"
    )]
    TooManyEntries { key: String, limit: u64 },
    #[error(
        "{path} has {free} bytes free but the archive unpacks to {needed} bytes and \
         archive.keep_free_bytes keeps {floor} free; free some space or lower the floor"
    )]
    NoSpace {
        path: PathBuf,
        needed: u64,
        free: u64,
        floor: u64,
    },
    #[error("cancelled")]
    Cancelled,
    #[error("archive worker failed")]
    Join(#[source] tokio::task::JoinError),
}

/// Who vouches for an archive's expected checksum and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Witness {
    /// The output of the `archive.create` saga that made it, carried in the restore task.
    Saga,
    /// The archive's metadata in the bucket, which any agent can rewrite: it catches
    /// corruption, not tampering.
    Bucket,
}

impl std::fmt::Display for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Witness::Saga => "the archive.create saga that made it",
            Witness::Bucket => "its metadata in the bucket",
        })
    }
}

/// What set a restore's cap on decoded bytes, for the message that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BytesCap {
    /// The tar length recorded at create (by the saga or in the metadata): a longer stream
    /// is not that archive.
    Recorded(Witness),
    /// The agent's `archive.max_restore_bytes`.
    Configured,
    /// Unpacking more would take the target's filesystem below `archive.keep_free_bytes`.
    FreeSpace { path: PathBuf, floor: u64 },
}

impl std::fmt::Display for BytesCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BytesCap::Recorded(by) => write!(
                f,
                "the length {by} records: it is corrupted or was changed, or a \
                 decompression bomb"
            ),
            BytesCap::Configured => f.write_str(
                "as a decompression bomb (raise archive.max_restore_bytes if the archive is \
                 genuine)",
            ),
            BytesCap::FreeSpace { path, floor } => write!(
                f,
                "as more would leave less than {floor} bytes free on {} \
                 (archive.keep_free_bytes); free some space, or lower the floor if the \
                 archive is genuine",
                path.display()
            ),
        }
    }
}

impl ArchiveError {
    /// The kind of failure, for retry decisions: only `Transient` is worth retrying as is.
    pub fn kind(&self) -> ErrorKind {
        use ArchiveError::*;
        match self {
            Store { source, .. } => store_kind(source),
            Read { source, .. } | Write { source, .. } | Journal { source, .. } => io_kind(source),
            Volume(_) | Verify { .. } | Compress(_) | Join(_) | Cancelled => ErrorKind::Transient,
            Stack(e) if e.is_transient() => ErrorKind::Transient,
            Stack(_) => ErrorKind::Invalid,
            App(_)
            | Input(_)
            | NoIdentity { .. }
            | NotForThisHost { .. }
            | Encryption { .. }
            | UnknownEncryption { .. }
            | AgeKey(_)
            | Key(_)
            | Labels(_)
            | Level(_)
            | Inputs { .. }
            | UnknownKind(_)
            | UnknownSource { .. }
            | StoreUrl(_)
            | Config(_)
            | Open(_)
            | SourceMissing { .. }
            | Unrestorable { .. }
            | NotFound { .. }
            | IdInUse { .. }
            | DataMissing { .. }
            | SizeMismatch { .. }
            | Checksum { .. }
            | Unverifiable { .. }
            | Format { .. }
            | UnsafeEntry { .. }
            | TooLarge { .. }
            | TooManyEntries { .. }
            | NoSpace { .. } => ErrorKind::Invalid,
        }
    }

    /// Whether sending the same task again may succeed.
    pub fn retryable(&self) -> bool {
        self.kind() == ErrorKind::Transient && !matches!(self, ArchiveError::Cancelled)
    }

    pub(crate) fn store(
        op: &'static str,
        key: impl Into<String>,
        source: object_store::Error,
    ) -> Self {
        ArchiveError::Store {
            op,
            key: key.into(),
            source,
        }
    }
}

fn store_kind(e: &object_store::Error) -> ErrorKind {
    use object_store::Error as E;
    match e {
        E::Unauthenticated { .. } | E::PermissionDenied { .. } => ErrorKind::Unauthorized,
        E::NotFound { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. } => ErrorKind::Invalid,
        _ => ErrorKind::Transient,
    }
}

fn io_kind(e: &io::Error) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::NotFound
        | io::ErrorKind::PermissionDenied
        | io::ErrorKind::StorageFull
        | io::ErrorKind::ReadOnlyFilesystem
        | io::ErrorKind::InvalidInput => ErrorKind::Invalid,
        _ => ErrorKind::Transient,
    }
}

impl From<crate::volume::VolumeError> for ArchiveError {
    fn from(e: crate::volume::VolumeError) -> Self {
        use crate::volume::VolumeError;
        match e {
            VolumeError::Cancelled => ArchiveError::Cancelled,
            VolumeError::Io { path, source, .. } => ArchiveError::Write { path, source },
            e => ArchiveError::Volume(e),
        }
    }
}
