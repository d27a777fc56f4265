//! The one place where errors become gRPC statuses.

use tonic::{Code, Status};

use crate::archive::{CatalogError, CatalogErrorKind};
use crate::auth::AuthError;
use crate::hub::HubError;
use crate::limits::LimitError;
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
    #[error("{0}")]
    NotFound(String),
    /// A dependency is down or busy: asking again later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The caller holds all it may of a shared resource; it can ask again once it holds less.
    #[error("{0}")]
    ResourceExhausted(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Archive(#[from] CatalogError),
    /// A value or a caller over one of the coordinator's limits.
    #[error(transparent)]
    Limit(#[from] LimitError),
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

fn status_of_archive(e: &CatalogError) -> Status {
    let message = chain(e);
    match e.kind() {
        CatalogErrorKind::Invalid => Status::invalid_argument(message),
        CatalogErrorKind::NotFound => Status::not_found(message),
        CatalogErrorKind::Precondition => {
            tracing::warn!(error = %message, "archive store misconfigured");
            Status::failed_precondition(message)
        }
        CatalogErrorKind::Unavailable => {
            tracing::warn!(error = %message, "archive store unavailable");
            Status::unavailable(format!("{message}; retry later"))
        }
    }
}

/// Maps an authentication or authorization failure to its status.
pub fn status_of_auth(e: AuthError) -> Status {
    match e {
        AuthError::Missing
        | AuthError::Invalid
        | AuthError::EnrollmentUsed { .. }
        | AuthError::EnrollmentExpired { .. } => Status::unauthenticated(e.to_string()),
        AuthError::Forbidden { .. }
        | AuthError::UnknownMethod { .. }
        | AuthError::EnrollmentOnly { .. }
        | AuthError::EnrollmentRequired { .. }
        | AuthError::EnrollmentHostMismatch { .. }
        | AuthError::OutOfScope { .. } => Status::permission_denied(e.to_string()),
        AuthError::HostRequired(_)
        | AuthError::HostNotAllowed(_)
        | AuthError::ScopeNotAllowed(_)
        | AuthError::EnrollmentTtlRequired => Status::invalid_argument(e.to_string()),
        AuthError::Store(ref s) => status_of_store(s),
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::InvalidArgument(m) => Status::invalid_argument(m),
            ApiError::PermissionDenied(m) => Status::permission_denied(m),
            ApiError::FailedPrecondition(m) => Status::failed_precondition(m),
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::Unavailable(m) => Status::unavailable(m),
            ApiError::ResourceExhausted(m) => Status::resource_exhausted(m),
            ApiError::Store(s) => status_of_store(&s),
            ApiError::Auth(a) => status_of_auth(a),
            ApiError::Archive(e) => status_of_archive(&e),
            ApiError::Limit(e) => match e {
                LimitError::TooLong { .. } | LimitError::TooMany { .. } => {
                    Status::invalid_argument(e.to_string())
                }
                LimitError::Watches { .. } => Status::resource_exhausted(e.to_string()),
            },
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

/// `error` and its sources joined by ": ", so a status says what failed underneath.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

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
