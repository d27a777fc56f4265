//! The one place where errors become gRPC statuses: every error a service can return says
//! which [`ErrorCode`] it is ([`ServiceError`], implemented beside each error enum), and
//! [`status_of`] turns any of them into a `Status`, logging what the caller is not told.

use tonic::{Code, Status};

/// What a failure is, as a caller sees it: one gRPC code each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request was wrong; sending it again will not help.
    InvalidArgument,
    NotFound,
    AlreadyExists,
    /// The request was right but the system is not in a state to do it (an operator fixes it).
    FailedPrecondition,
    Unauthenticated,
    PermissionDenied,
    /// The caller holds all it may of something shared; it can ask again once it holds less.
    ResourceExhausted,
    /// A dependency is down or busy: asking again later may work.
    Unavailable,
    /// A bug or corrupt state: the caller is told only to read the coordinator's log.
    Internal,
}

impl ErrorCode {
    pub fn grpc(self) -> Code {
        match self {
            ErrorCode::InvalidArgument => Code::InvalidArgument,
            ErrorCode::NotFound => Code::NotFound,
            ErrorCode::AlreadyExists => Code::AlreadyExists,
            ErrorCode::FailedPrecondition => Code::FailedPrecondition,
            ErrorCode::Unauthenticated => Code::Unauthenticated,
            ErrorCode::PermissionDenied => Code::PermissionDenied,
            ErrorCode::ResourceExhausted => Code::ResourceExhausted,
            ErrorCode::Unavailable => Code::Unavailable,
            ErrorCode::Internal => Code::Internal,
        }
    }
}

/// An error a service may answer with: its code, and what the caller is told.
pub trait ServiceError: std::error::Error + Send + Sync + 'static {
    fn error_code(&self) -> ErrorCode;

    /// What the caller reads: by default the error and its sources. Never asked of an
    /// `Internal` error, whose detail stays in the log.
    fn public_message(&self) -> String {
        chain(self)
    }
}

/// The one conversion of an error into a status. Internal errors are logged and answered
/// without their detail; unavailable ones are logged as warnings.
pub fn status_of(e: &dyn ServiceError) -> Status {
    let code = e.error_code();
    match code {
        ErrorCode::Internal => {
            tracing::error!(error = %chain(e), "internal error");
            Status::internal("internal error; see the coordinator's log")
        }
        ErrorCode::Unavailable => {
            let message = e.public_message();
            tracing::warn!(error = %message, "unavailable");
            Status::unavailable(message)
        }
        code => Status::new(code.grpc(), e.public_message()),
    }
}

/// What an API call can fail with: a message the handler wrote, with its code, or a domain
/// error that knows its own.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Service(Box<dyn ServiceError>),
}

impl<E: ServiceError> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError::Service(Box::new(e))
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let (code, m) = match e {
            ApiError::Service(e) => return status_of(&*e),
            ApiError::InvalidArgument(m) => (Code::InvalidArgument, m),
            ApiError::PermissionDenied(m) => (Code::PermissionDenied, m),
            ApiError::FailedPrecondition(m) => (Code::FailedPrecondition, m),
            ApiError::NotFound(m) => (Code::NotFound, m),
            ApiError::Unavailable(m) => (Code::Unavailable, m),
            ApiError::ResourceExhausted(m) => (Code::ResourceExhausted, m),
        };
        Status::new(code, m)
    }
}

impl ServiceError for berth_shared::NameError {
    fn error_code(&self) -> ErrorCode {
        ErrorCode::InvalidArgument
    }
}

pub(crate) use berth_shared::chain;

/// The answer of an RPC whose capability is not built yet.
pub fn not_built(what: &str, arrives_with: &str) -> Status {
    Status::unimplemented(format!(
        "{what} is not built yet: it arrives with {arrives_with}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_rpc_not_built_yet_names_what_is_missing() {
        let s = not_built(
            "the drift inbox (list_drift)",
            "inventory sync and drift detection (issue #5)",
        );
        assert_eq!(s.code(), Code::Unimplemented);
        assert!(
            s.message()
                .contains("the drift inbox (list_drift) is not built yet"),
            "{}",
            s.message()
        );
        assert!(s.message().contains("issue #5"));
    }
}
