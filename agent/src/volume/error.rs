//! `VolumeError`: how taking a lock, cleaning staging or swapping a dir fails. Warm and
//! archive each wrap it in their own error.

use std::io;
use std::path::PathBuf;

use super::lock::Resource;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{resource} is busy: {holder} is running on it; retry when it has finished")]
    Busy { resource: Resource, holder: String },
    #[error("cancelled")]
    Cancelled,
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the swap of {target} was cut after its first rename (test fault injection)")]
    CutForTest { target: PathBuf },
}

impl VolumeError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        VolumeError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
