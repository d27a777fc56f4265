//! `CatalogError`: how reading and changing the archive store fails, and the code each
//! failure answers with.

use berth_shared::NameError;
use berth_shared::archive::{KeyError, RetentionError, StoreUrlError};

use crate::error::{ErrorCode, ServiceError, chain};

/// Errors of the archive catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("archive {id} not found")]
    NotFound { id: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("invalid app name")]
    App(#[source] NameError),
    #[error(transparent)]
    Retention(#[from] RetentionError),
    #[error("{0}")]
    Invalid(String),
    #[error("the {store} archive store has no download links")]
    NoLinks { store: String },
    #[error("invalid archive store url")]
    StoreUrl(#[from] StoreUrlError),
    #[error(transparent)]
    Open(#[from] berth_objstore::OpenError),
    #[error("archive store: {op} {key}")]
    Store {
        op: &'static str,
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("cannot read the sagas that own uploads")]
    Sagas(#[source] crate::store::StoreError),
    #[error("cannot read the archives' verifications")]
    Checks(#[source] crate::store::StoreError),
    #[error("metadata {key} is not valid JSON")]
    Metadata {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

impl ServiceError for CatalogError {
    fn error_code(&self) -> ErrorCode {
        use CatalogError::*;
        use object_store::Error as E;
        match self {
            NotFound { .. } => ErrorCode::NotFound,
            Key(_) | App(_) | Retention(_) | Invalid(_) => ErrorCode::InvalidArgument,
            // The coordinator's archive store is misconfigured or refuses its credentials.
            NoLinks { .. } | StoreUrl(_) | Open(_) | Metadata { .. } => {
                ErrorCode::FailedPrecondition
            }
            Store { source, .. } => match source {
                E::NotFound { .. } => ErrorCode::NotFound,
                E::Unauthenticated { .. } | E::PermissionDenied { .. } => {
                    ErrorCode::FailedPrecondition
                }
                _ => ErrorCode::Unavailable,
            },
            Sagas(_) | Checks(_) => ErrorCode::Unavailable,
        }
    }

    fn public_message(&self) -> String {
        match self.error_code() {
            ErrorCode::Unavailable => format!("{}; retry later", chain(self)),
            _ => chain(self),
        }
    }
}

impl CatalogError {
    pub(crate) fn store(
        op: &'static str,
        key: impl Into<String>,
        source: object_store::Error,
    ) -> Self {
        CatalogError::Store {
            op,
            key: key.into(),
            source,
        }
    }
}
