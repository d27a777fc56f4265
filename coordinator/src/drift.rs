//! Drift: where a live cloud resource no longer matches the spec Berth recorded for it.
//!
//! `core` decides (pure: loose equality, the plan for open rows, revert paths); `sync` brings
//! the inventory up to date from DigitalOcean; `detect` compares every spec with it and keeps
//! `cloud_drift`; `settle` accepts or reverts a drift; `jobs` runs sync and detection on a
//! schedule shared by every coordinator on the database, and on demand; `config` is
//! `[inventory]`.
//!
//! Architecture Invariant: the database keeps at most one open drift row per (resource, field);
//! detection relies on it instead of on a lock, so any number of detections may run at once.

pub mod config;
pub mod core;
pub mod detect;
pub mod jobs;
pub mod settle;
pub mod sync;

pub use config::InventoryConfig;
pub use detect::{DetectReport, detect_all};
pub use jobs::{Inventory, SyncOutcome};
pub use settle::{RevertStarted, SettleError};
pub use sync::SyncReport;

use std::future::Future;
use std::time::Duration;

use crate::digitalocean::{DoApiError, DoErrorKind};
use crate::store::StoreError;

/// The job that syncs the inventory.
pub const SYNC_JOB: &str = "inventory.sync";
/// The job that detects drift after each sync.
pub const DETECT_JOB: &str = "drift.detect";

/// Why a sync or a detection did not run or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error(
        "digitalocean is not configured on this coordinator: add a [digitalocean] section with \
         a read_token_file to its config and restart it"
    )]
    NotConfigured,
    #[error("cannot read droplets from digitalocean: {0}")]
    Api(DoApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the {job} lease was lost to another coordinator; its run stopped and will be redone")]
    LeaseLost { job: &'static str },
    #[error("a {job} run is still going on {owner}; retry in a minute")]
    Busy { job: &'static str, owner: String },
}

impl crate::error::ServiceError for DriftError {
    fn error_code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode;
        match self {
            DriftError::Store(s) => s.error_code(),
            e if e.is_transient() => ErrorCode::Unavailable,
            _ => ErrorCode::FailedPrecondition,
        }
    }

    fn public_message(&self) -> String {
        match self {
            DriftError::Store(s) => s.public_message(),
            e => e.to_string(),
        }
    }
}

impl DriftError {
    /// Whether asking again later may work (as opposed to fixing the config or token).
    pub fn is_transient(&self) -> bool {
        match self {
            DriftError::NotConfigured => false,
            DriftError::Api(e) => !matches!(e.kind(), DoErrorKind::Unauthorized),
            DriftError::Store(_) | DriftError::LeaseLost { .. } | DriftError::Busy { .. } => true,
        }
    }
}

/// Runs a store call again while the database is busy (SQLite hands the write lock to one
/// connection at a time; a transaction that read first can lose it), backing off from 10 ms.
pub(crate) async fn retry_busy<T, F, Fut>(mut call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut pause = Duration::from_millis(10);
    for _ in 0..8 {
        match call().await {
            Err(StoreError::Unavailable(e)) => {
                tracing::debug!(error = %e, "database busy; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
    call().await
}
