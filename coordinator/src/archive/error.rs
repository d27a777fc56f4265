//! `CatalogError`: how reading and changing the archive store fails. `crate::error` maps it to
//! gRPC codes by [`CatalogError::kind`].

use berth_shared::NameError;
use berth_shared::archive::{KeyError, RetentionError, StoreUrlError};

/// What a catalog failure means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogErrorKind {
    /// The request was wrong.
    Invalid,
    NotFound,
    /// The coordinator's archive store is misconfigured or refuses its credentials.
    Precondition,
    /// The store is unreachable or failing; retry later.
    Unavailable,
}

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
    #[error("metadata {key} is not valid JSON")]
    Metadata {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

impl CatalogError {
    pub fn kind(&self) -> CatalogErrorKind {
        use CatalogError::*;
        use object_store::Error as E;
        match self {
            NotFound { .. } => CatalogErrorKind::NotFound,
            Key(_) | App(_) | Retention(_) | Invalid(_) => CatalogErrorKind::Invalid,
            NoLinks { .. } | StoreUrl(_) | Open(_) | Metadata { .. } => {
                CatalogErrorKind::Precondition
            }
            Store { source, .. } => match source {
                E::NotFound { .. } => CatalogErrorKind::NotFound,
                E::Unauthenticated { .. } | E::PermissionDenied { .. } => {
                    CatalogErrorKind::Precondition
                }
                _ => CatalogErrorKind::Unavailable,
            },
            Sagas(_) => CatalogErrorKind::Unavailable,
        }
    }

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
