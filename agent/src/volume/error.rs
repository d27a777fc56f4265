//! `VolumeError`: how taking a lock, cleaning staging or swapping a dir fails; `StackError`:
//! how finding a stack's volumes, or checking that nothing of it runs, fails. Warm and
//! archive each wrap both in their own error.

use std::io;
use std::path::PathBuf;

use berth_shared::NameError;

use super::lock::Resource;
use crate::docker::DockerError;
use crate::docker::stack::{COMPOSE_LABEL, Deployment, SWARM_LABEL};

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

/// A stack's volumes as the Docker engine shows them: none, one Berth cannot copy, one
/// missing, or the stack still running. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("invalid {what}")]
    Name {
        what: &'static str,
        #[source]
        source: NameError,
    },
    #[error(transparent)]
    Engine(#[from] DockerError),
    #[error(
        "no volume is labelled {SWARM_LABEL}={stack} or {COMPOSE_LABEL}={stack}; nothing to \
         snapshot (is the stack name right? pass it explicitly if it is not the domain with \
         '.' → '_')"
    )]
    NoVolumes { stack: String },
    #[error("{0}")]
    Unsupported(String),
    #[error(
        "refusing to {action} {app} while stack {stack} is deployed ({running}); undeploy it first"
    )]
    Deployed {
        action: &'static str,
        app: String,
        stack: String,
        running: Deployment,
    },
    #[error(
        "snapshot volume {volume} is absent from stack {stack} (its volumes: {present}); \
         deploy the stack once so its volumes exist, or snapshot again"
    )]
    VolumeMissing {
        volume: String,
        stack: String,
        present: String,
    },
}

impl StackError {
    /// Only the engine may answer better later; the rest needs the operator.
    pub fn is_transient(&self) -> bool {
        matches!(self, StackError::Engine(_))
    }

    /// `volume` is not among `present`, the volumes stack `stack` has.
    pub(crate) fn missing<'a>(
        volume: impl Into<String>,
        stack: impl ToString,
        present: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let present: Vec<&str> = present.into_iter().collect();
        StackError::VolumeMissing {
            volume: volume.into(),
            stack: stack.to_string(),
            present: if present.is_empty() {
                "none".into()
            } else {
                present.join(", ")
            },
        }
    }
}
