//! The one place where errors become gRPC statuses.

use tonic::{Code, Status};

use crate::auth::AuthError;
use crate::hub::HubError;
use crate::store::StoreError;

/// What an API call can fail with, by kind.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl From<berth_shared::NameError> for ApiError {
    fn from(e: berth_shared::NameError) -> Self {
        ApiError::InvalidArgument(e.to_string())
    }
}

fn status_of_store(e: &StoreError) -> Status {
    match e {
        StoreError::NotFound { what } => Status::not_found(format!("{what} not found")),
        StoreError::Conflict(m) => Status::already_exists(m.clone()),
        StoreError::Unavailable(_) | StoreError::Connect { .. } => {
            tracing::warn!(error = %e, "store unavailable");
            Status::unavailable("the coordinator's database is unavailable; retry later")
        }
        _ => {
            tracing::error!(error = %e, "store error");
            Status::internal("internal store error; see the coordinator's log")
        }
    }
}

/// Maps an authentication or authorization failure to its status.
pub fn status_of_auth(e: AuthError) -> Status {
    match e {
        AuthError::Missing | AuthError::Invalid => Status::unauthenticated(e.to_string()),
        AuthError::Forbidden { .. } | AuthError::UnknownMethod { .. } => {
            Status::permission_denied(e.to_string())
        }
        AuthError::HostRequired(_) | AuthError::HostNotAllowed(_) => {
            Status::invalid_argument(e.to_string())
        }
        AuthError::Store(ref s) => status_of_store(s),
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::InvalidArgument(m) => Status::invalid_argument(m),
            ApiError::PermissionDenied(m) => Status::permission_denied(m),
            ApiError::FailedPrecondition(m) => Status::failed_precondition(m),
            ApiError::Store(s) => status_of_store(&s),
            ApiError::Auth(a) => status_of_auth(a),
            ApiError::Hub(h) => {
                let code = match h {
                    HubError::NotConnected { .. } => Code::FailedPrecondition,
                    HubError::Timeout { .. } | HubError::Gone { .. } => Code::Unavailable,
                    HubError::Agent { .. } => Code::Internal,
                };
                Status::new(code, h.to_string())
            }
        }
    }
}

/// The answer of an RPC whose capability is not built yet.
pub fn not_built(what: &str, arrives_with: &str) -> Status {
    Status::unimplemented(format!(
        "{what} is not built yet: it arrives with {arrives_with}"
    ))
}
