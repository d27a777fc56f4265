//! `AgentError`: every way the agent can fail, with the kind that retry decisions read.

use std::io;
use std::path::PathBuf;

use berth_shared::NameError;

use crate::error_kind::ErrorKind;

/// Errors of the agent library.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot read token file {path}")]
    TokenRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("token file {path} is empty")]
    TokenEmpty { path: PathBuf },
    #[error("token in {path} contains characters not allowed in a header")]
    TokenInvalid { path: PathBuf },
    #[error("invalid host id from {origin}")]
    HostId {
        origin: String,
        #[source]
        source: NameError,
    },
    #[error("cannot read host id file {path}")]
    HostIdRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write host id file {path}")]
    HostIdWrite {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read tls file {path}")]
    TlsFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid coordinator endpoint {url:?}")]
    Endpoint {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("invalid tls configuration for {url:?}")]
    Tls {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot connect to coordinator")]
    Connect(#[source] tonic::transport::Error),
    #[error("coordinator answered {code:?}: {message}")]
    Rpc { code: tonic::Code, message: String },
    #[error("coordinator closed the stream")]
    StreamClosed,
    #[error("no welcome from coordinator within {secs} s")]
    WelcomeTimeout { secs: u64 },
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error(transparent)]
    Docker(#[from] crate::docker::DockerError),
    #[error("cannot measure the filesystem of {path}")]
    Statvfs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("agent task failed")]
    Join(#[source] tokio::task::JoinError),
    #[error("cannot open the archive store ([archive] in the agent's config)")]
    ArchiveStore(#[source] Box<crate::archive::ArchiveError>),
}

impl AgentError {
    /// The kind of failure, for retry decisions.
    pub fn kind(&self) -> ErrorKind {
        use AgentError::*;
        match self {
            TokenRead { .. }
            | TokenEmpty { .. }
            | TokenInvalid { .. }
            | HostId { .. }
            | HostIdRead { .. }
            | HostIdWrite { .. }
            | TlsFile { .. }
            | Endpoint { .. }
            | Tls { .. }
            | ArchiveStore(_) => ErrorKind::Invalid,
            Rpc {
                code: tonic::Code::Unauthenticated | tonic::Code::PermissionDenied,
                ..
            } => ErrorKind::Unauthorized,
            Protocol(_) => ErrorKind::Protocol,
            Connect(_)
            | Rpc { .. }
            | StreamClosed
            | WelcomeTimeout { .. }
            | Docker(_)
            | Statvfs { .. }
            | Join(_) => ErrorKind::Transient,
        }
    }
}

impl From<tonic::Status> for AgentError {
    fn from(s: tonic::Status) -> Self {
        AgentError::Rpc {
            code: s.code(),
            message: s.message().to_owned(),
        }
    }
}
