//! The upload sweep: multipart uploads left in the bucket by archive creates that will never
//! finish them, aborted so they stop costing storage.
//!
//! An upload belongs to an archive when its key is an archive key (`<app>:<uuid>:<index>:<ts>`
//! at the top of the store's prefix); the uuid is its `archive.create` saga's id. The sweep
//! aborts an upload only when it is older than the grace period (clock skew, uploads being
//! started right now) and no live saga (`pending`, `running`, `compensating`) owns it: the
//! saga ended or never existed here. Uploads under other keys are not Berth's and are left.
//! Agents abort their own uploads on failure, cancel, retry and restart; the sweep is for the
//! agent that never comes back.
//!
//! [`UploadSweeper`] runs the sweep periodically on one coordinator at a time (the
//! `archive.upload_sweep` row of `jobs`); `berth archive prune` runs it too.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_shared::archive::{ArchiveId, ArchiveKey};
use berth_shared::saga::SagaStatus;
use berth_shared::time::unix_ms;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Catalog, CatalogError};
use crate::store::{Due, Store, StoreError};

/// The `jobs` row that takes turns between coordinators.
pub const SWEEP_JOB: &str = "archive.upload_sweep";
/// Saga statuses in which a saga may still complete its upload.
/// A sweep holds its job this long; it renews nothing, so it must finish well within it.
const LEASE: Duration = Duration::from_secs(600);

/// What a sweep did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepOutcome {
    /// `key upload_id` of each upload aborted.
    pub aborted: Vec<String>,
    /// Uploads kept because their saga is live.
    pub owned: usize,
    /// Uploads kept because they are younger than the grace period.
    pub young: usize,
    /// Uploads under keys that are not archive keys.
    pub foreign: usize,
    /// Uploads whose abort failed (tried again next sweep).
    pub failed: usize,
}

impl Catalog {
    /// Aborts the uploads under archive keys older than `grace` at `now` that no live saga
    /// owns.
    pub async fn sweep_uploads(
        &self,
        store: &Store,
        now: SystemTime,
        grace: Duration,
    ) -> Result<SweepOutcome, CatalogError> {
        let mut outcome = SweepOutcome::default();
        for upload in self.bucket.uploads().await? {
            let Ok(key) = ArchiveKey::parse(&upload.key) else {
                outcome.foreign += 1;
                continue;
            };
            let age = now.duration_since(upload.initiated).unwrap_or_default();
            if age < grace {
                outcome.young += 1;
                continue;
            }
            let saga = key.id().to_string();
            let status = match store.get_saga(&saga).await {
                Ok(row) => Some(row.status),
                Err(StoreError::NotFound { .. }) => None,
                Err(e) => return Err(CatalogError::Sagas(e)),
            };
            if status.is_some_and(SagaStatus::is_active) {
                outcome.owned += 1;
                continue;
            }
            match self.bucket.abort_upload(&upload).await {
                Ok(()) => {
                    tracing::info!(
                        key = %upload.key,
                        upload_id = %upload.upload_id,
                        saga_status = status.map_or("unknown", SagaStatus::as_str),
                        age_secs = age.as_secs(),
                        "orphaned multipart upload aborted"
                    );
                    outcome
                        .aborted
                        .push(format!("{} {}", upload.key, upload.upload_id));
                }
                Err(e) => {
                    tracing::warn!(
                        key = %upload.key,
                        upload_id = %upload.upload_id,
                        error = %e,
                        "cannot abort an orphaned multipart upload"
                    );
                    outcome.failed += 1;
                }
            }
        }
        Ok(outcome)
    }
}

impl Catalog {
    /// Aborts every pending upload of archive `id` (its saga was cancelled: nothing of it may
    /// stay billable). Returns how many were aborted.
    pub async fn abort_uploads_of(&self, id: &ArchiveId) -> Result<usize, CatalogError> {
        let mut aborted = 0;
        for upload in self.bucket.uploads().await? {
            if !ArchiveKey::parse(&upload.key).is_ok_and(|k| k.id() == id) {
                continue;
            }
            self.bucket.abort_upload(&upload).await?;
            tracing::info!(key = %upload.key, upload_id = %upload.upload_id, "aborted the upload of a cancelled archive");
            aborted += 1;
        }
        Ok(aborted)
    }
}

/// The periodic sweep of one coordinator; cheap to clone.
#[derive(Debug, Clone)]
pub struct UploadSweeper {
    catalog: Arc<Catalog>,
    store: Store,
    owner_id: String,
}

impl UploadSweeper {
    pub fn new(catalog: Arc<Catalog>, store: Store, owner_id: impl Into<String>) -> Self {
        Self {
            catalog,
            store,
            owner_id: owner_id.into(),
        }
    }

    /// Sweeps every `archive.upload_sweep_interval_secs` (shared by all coordinators on the
    /// database) until `shutdown`; does nothing when the interval is 0.
    pub async fn run(self, shutdown: CancellationToken) {
        let config = self.catalog.config();
        let Some(interval) = config.upload_sweep_interval() else {
            tracing::info!("upload sweep is off (archive.upload_sweep_interval_secs = 0)");
            return;
        };
        let tick = interval.min(Duration::from_secs(60));
        loop {
            if let Err(e) = self.tick(interval).await {
                tracing::warn!(error = %e, "upload sweep failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Runs the sweep if it is due and no other coordinator holds it.
    async fn tick(&self, interval: Duration) -> Result<(), CatalogError> {
        let now = unix_ms(SystemTime::now());
        let lease = LEASE.as_millis() as i64;
        let claim = self
            .store
            .claim_job(SWEEP_JOB, &self.owner_id, now, lease, now, Due::WhenDue)
            .await
            .map_err(CatalogError::Sagas)?;
        let Some(claim) = claim else { return Ok(()) };
        let grace = self.catalog.config().upload_grace();
        let swept = self
            .catalog
            .sweep_uploads(&self.store, SystemTime::now(), grace)
            .await;
        let (outcome, result) = match swept {
            Ok(o) => {
                tracing::info!(
                    aborted = o.aborted.len(),
                    owned = o.owned,
                    young = o.young,
                    failed = o.failed,
                    "upload sweep done"
                );
                (json!(o), Ok(()))
            }
            Err(e) => (json!({ "error": e.to_string() }), Err(e)),
        };
        let done = unix_ms(SystemTime::now());
        let next = done + interval.as_millis() as i64;
        match self.store.finish_job(&claim, done, next, &outcome).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(job = SWEEP_JOB, "job lease lost before it finished"),
            Err(e) => tracing::warn!(job = SWEEP_JOB, error = %e, "cannot record the job's end"),
        }
        result
    }
}
