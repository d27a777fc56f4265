//! Settling a drift: accept (the live value becomes the desired one) or revert (a saga changes
//! the resource back; the next detection that finds the field matching closes it `reverted`).

use super::core::{self, DriftStatus, NoRevert};
use super::detect::{live_resource, now_ms, report_open_gauge};
use crate::saga::{Engine, StartError};
use crate::store::{Accepted, DriftRow, Store, StoreError};

/// Why a drift could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("drift {0} not found; `berth drift list` shows the open ones")]
    NotFound(String),
    #[error("drift {drift_id} is {status}, not open: only open drift can be settled")]
    NotOpen {
        drift_id: String,
        status: DriftStatus,
    },
    #[error(
        "drift {drift_id} is being reverted by saga {saga_id} ({status}): wait for it to end \
         (berth sagas watch {saga_id}) or cancel it, then try again"
    )]
    Reverting {
        drift_id: String,
        saga_id: String,
        status: String,
    },
    #[error("drift {0} changed while settling it; list it again and retry")]
    Changed(String),
    #[error(
        "the live {field} of drift {drift_id} already matches its spec: the next detection \
         closes it (run `berth drift sync` to detect now)"
    )]
    AlreadyMatches { drift_id: String, field: String },
    #[error("resource {0} of this drift is not in the inventory; run `berth drift sync` first")]
    UnknownResource(String),
    #[error(transparent)]
    NoRevert(#[from] NoRevert),
    #[error(
        "digitalocean is not configured on this coordinator, so nothing can be reverted: add a \
         [digitalocean] section with a provisioning_token_file and restart it"
    )]
    NotConfigured,
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::error::ServiceError for SettleError {
    fn error_code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode;
        match self {
            SettleError::NotFound(_) | SettleError::UnknownResource(_) => ErrorCode::NotFound,
            SettleError::Start(s) => s.error_code(),
            SettleError::Store(s) => s.error_code(),
            SettleError::Changed(_) => ErrorCode::Unavailable,
            SettleError::NotOpen { .. }
            | SettleError::Reverting { .. }
            | SettleError::NoRevert(_)
            | SettleError::AlreadyMatches { .. }
            | SettleError::NotConfigured => ErrorCode::FailedPrecondition,
        }
    }

    fn public_message(&self) -> String {
        match self {
            SettleError::Start(s) => s.public_message(),
            SettleError::Store(s) => s.public_message(),
            e => e.to_string(),
        }
    }
}

/// The saga a revert started (or found already running).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevertStarted {
    pub saga_id: String,
    pub kind: String,
    /// True when the drift's revert saga was already running: it is returned, none is started.
    pub existing: bool,
}

async fn open_drift(store: &Store, drift_id: &str) -> Result<DriftRow, SettleError> {
    let d = store
        .get_drift(drift_id)
        .await?
        .ok_or_else(|| SettleError::NotFound(drift_id.to_owned()))?;
    if d.status != DriftStatus::Open {
        return Err(SettleError::NotOpen {
            drift_id: drift_id.to_owned(),
            status: d.status,
        });
    }
    Ok(d)
}

/// The revert saga of `d` if it is still running, with its status.
async fn running_revert(
    store: &Store,
    d: &DriftRow,
) -> Result<Option<(String, String)>, StoreError> {
    let Some(saga_id) = &d.revert_saga_id else {
        return Ok(None);
    };
    let saga = match store.get_saga(saga_id).await {
        Ok(s) => s,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(saga
        .status
        .is_active()
        .then(|| (saga.kind, saga.status.to_string())))
}

/// Accepts an open drift on behalf of `by` (`admin:<token id>`).
pub async fn accept(
    store: &Store,
    drift_id: &str,
    by: &str,
    reason: Option<&str>,
) -> Result<Accepted, SettleError> {
    let d = open_drift(store, drift_id).await?;
    if let Some((_, status)) = running_revert(store, &d).await? {
        return Err(SettleError::Reverting {
            drift_id: drift_id.to_owned(),
            saga_id: d.revert_saga_id.clone().unwrap_or_default(),
            status,
        });
    }
    let accepted = store
        .accept_drift(drift_id, d.revert_saga_id.as_deref(), by, reason, now_ms())
        .await?
        .ok_or_else(|| SettleError::Changed(drift_id.to_owned()))?;
    tracing::info!(
        drift_id,
        resource_id = accepted.drift.resource_id,
        field = accepted.drift.field,
        spec_version = accepted.spec.spec_version,
        by,
        "drift accepted"
    );
    report_open_gauge(store).await;
    Ok(accepted)
}

/// Starts the saga that reverts an open drift, or returns the one already running for it.
pub async fn revert(
    engine: &Engine,
    digitalocean_configured: bool,
    drift_id: &str,
    by: &str,
    reason: Option<&str>,
) -> Result<RevertStarted, SettleError> {
    let store = engine.store();
    let d = open_drift(store, drift_id).await?;
    let resource = store
        .get_resource(&d.resource_id)
        .await?
        .ok_or_else(|| SettleError::UnknownResource(d.resource_id.clone()))?;
    let plan = core::revert_plan(&resource.kind, &resource.provider_id, &d.field, &d.expected)?;
    let live = live_resource(&resource);
    if !live.deleted && core::loose_eq(&d.expected, &core::live_value(&live, &d.field)) {
        return Err(SettleError::AlreadyMatches {
            drift_id: drift_id.to_owned(),
            field: d.field.clone(),
        });
    }
    if let Some((kind, _)) = running_revert(store, &d).await? {
        return Ok(RevertStarted {
            saga_id: d.revert_saga_id.clone().unwrap_or_default(),
            kind,
            existing: true,
        });
    }
    if !digitalocean_configured {
        return Err(SettleError::NotConfigured);
    }
    // The same key for callers racing on the same state: they get the same saga.
    let key = format!(
        "drift-revert:{drift_id}:{}",
        d.revert_saga_id.as_deref().unwrap_or("first")
    );
    let (saga_id, existing) = engine
        .start(plan.saga_kind, &plan.inputs.to_string(), Some(&key))
        .await?;
    let marked = store
        .mark_drift_reverting(
            drift_id,
            d.revert_saga_id.as_deref(),
            &saga_id,
            by,
            reason,
            now_ms(),
        )
        .await?;
    if !marked {
        let now = store.get_drift(drift_id).await?;
        if now.and_then(|n| n.revert_saga_id).as_deref() != Some(saga_id.as_str()) {
            return Err(SettleError::Changed(drift_id.to_owned()));
        }
    }
    tracing::info!(
        drift_id,
        resource_id = d.resource_id,
        field = d.field,
        saga_id,
        by,
        "drift revert started"
    );
    Ok(RevertStarted {
        saga_id,
        kind: plan.saga_kind.to_owned(),
        existing,
    })
}
