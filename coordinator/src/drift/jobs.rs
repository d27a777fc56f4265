//! [`Inventory`]: runs the inventory sync and drift detection, periodically (the schedule is
//! shared through the `jobs` table, so replicas take turns) and on demand.
//!
//! Why a lease row and not `pg_try_advisory_lock`: an advisory lock is tied to one pooled
//! connection (a dropped future can hand the still-locked connection back to the pool), means
//! nothing on SQLite, and carries no schedule. The row gives both backends the same claim (a
//! conditional `UPDATE`), an epoch that fences the sync's dangerous write (marking resources
//! gone), expiry when a holder dies, and the "next due" time that keeps three replicas from
//! syncing three times per interval.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::InventoryConfig;
use super::detect::{DetectReport, detect_all, now_ms, report_open_gauge};
use super::sync::{SyncReport, sync_droplets};
use super::{DETECT_JOB, DriftError, SYNC_JOB};
use crate::digitalocean::DoApi;
use crate::store::{Due, JobClaim, Store, StoreError};

/// What an on-demand sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SyncOutcome {
    pub sync: SyncReport,
    /// `None` when detection was skipped.
    pub detect: Option<DetectReport>,
}

/// The inventory jobs of one coordinator; cheap to clone.
#[derive(Clone, Debug)]
pub struct Inventory {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    api: Option<Arc<dyn DoApi>>,
    config: InventoryConfig,
    owner_id: String,
}

/// A held job: its lease is renewed in the background until it is finished or released;
/// `lost` fires if renewal fails.
struct Held {
    store: Store,
    claim: JobClaim,
    lost: CancellationToken,
    renewer: JoinHandle<()>,
    done: bool,
}

impl Held {
    async fn claim(
        store: &Store,
        name: &str,
        owner_id: &str,
        lease: Duration,
        first_due_at_ms: i64,
        due: Due,
    ) -> Result<Option<Held>, StoreError> {
        let lease_ms = lease.as_millis() as i64;
        let claimed = store
            .claim_job(name, owner_id, now_ms(), lease_ms, first_due_at_ms, due)
            .await?;
        let Some(claim) = claimed else {
            return Ok(None);
        };
        let lost = CancellationToken::new();
        let renewer = tokio::spawn(renew(store.clone(), claim.clone(), lost.clone()));
        Ok(Some(Held {
            store: store.clone(),
            claim,
            lost,
            renewer,
            done: false,
        }))
    }

    async fn finish(mut self, next_due_at_ms: i64, outcome: serde_json::Value) {
        self.done = true;
        self.renewer.abort();
        match self
            .store
            .finish_job(&self.claim, now_ms(), next_due_at_ms, &outcome)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!(job = self.claim.name, "job lease lost before it finished"),
            Err(e) => {
                tracing::warn!(job = self.claim.name, error = %e, "cannot record the job's end")
            }
        }
    }
}

impl Drop for Held {
    /// A run dropped midway (shutdown, a caller gone) hands the job back at once.
    fn drop(&mut self) {
        self.renewer.abort();
        if !self.done {
            let (store, claim) = (self.store.clone(), self.claim.clone());
            tokio::spawn(async move {
                let _ = store.release_job(&claim).await;
            });
        }
    }
}

/// Renews every third of the lease; fires `lost` when the lease is gone or has run out.
async fn renew(store: Store, claim: JobClaim, lost: CancellationToken) {
    let every = Duration::from_millis((claim.lease_ms / 3).max(100) as u64);
    let mut valid_until = now_ms() + claim.lease_ms;
    loop {
        tokio::time::sleep(every).await;
        match store.renew_job(&claim, now_ms()).await {
            Ok(true) => valid_until = now_ms() + claim.lease_ms,
            Ok(false) => break,
            Err(e) => {
                tracing::warn!(job = claim.name, error = %e, "cannot renew the job lease");
                if now_ms() >= valid_until {
                    break;
                }
            }
        }
    }
    tracing::warn!(job = claim.name, "job lease lost: stopping the run");
    lost.cancel();
}

impl Inventory {
    /// `api` is `None` without `[digitalocean]`: then nothing is synced.
    pub fn new(
        store: Store,
        api: Option<Arc<dyn DoApi>>,
        config: InventoryConfig,
        owner_id: impl Into<String>,
    ) -> Inventory {
        Inventory {
            inner: Arc::new(Inner {
                store,
                api,
                config,
                owner_id: owner_id.into(),
            }),
        }
    }

    pub fn configured(&self) -> bool {
        self.inner.api.is_some()
    }

    fn ms(d: Duration) -> i64 {
        d.as_millis() as i64
    }

    /// Syncs now (after any run another coordinator has going), then detects drift unless
    /// `skip_detection`.
    pub async fn sync_now(&self, skip_detection: bool) -> Result<SyncOutcome, DriftError> {
        let i = &self.inner;
        let api = i.api.as_deref().ok_or(DriftError::NotConfigured)?;
        let held = self.wait_for(SYNC_JOB).await?;
        let sync = self.run_sync(api, held).await?;
        if skip_detection {
            // Detection stays scheduled after the drift delay, as after a periodic sync.
            return Ok(SyncOutcome { sync, detect: None });
        }
        let now = now_ms();
        let detect = detect_all(&i.store).await?;
        i.store
            .schedule_job(DETECT_JOB, now + Self::ms(i.config.interval()))
            .await?;
        Ok(SyncOutcome {
            sync,
            detect: Some(detect),
        })
    }

    /// Claims `job` even if not due, waiting while another run holds it.
    async fn wait_for(&self, job: &'static str) -> Result<Held, DriftError> {
        let i = &self.inner;
        let patience = (i.config.lease() * 2).max(Duration::from_secs(120));
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Some(held) = Held::claim(
                &i.store,
                job,
                &i.owner_id,
                i.config.lease(),
                now_ms(),
                Due::Now,
            )
            .await?
            {
                return Ok(held);
            }
            if tokio::time::Instant::now() >= deadline {
                let owner = i
                    .store
                    .get_job(job)
                    .await?
                    .and_then(|j| j.owner_id)
                    .unwrap_or_else(|| "another coordinator".into());
                return Err(DriftError::Busy { job, owner });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs a sync under `held` and records its end: next due after the interval (or the
    /// retry delay after a failure), detection scheduled after the drift delay.
    async fn run_sync(&self, api: &dyn DoApi, held: Held) -> Result<SyncReport, DriftError> {
        let i = &self.inner;
        let result = sync_droplets(&i.store, api, &held.claim, &held.lost).await;
        let now = now_ms();
        match &result {
            Ok(r) => {
                tracing::info!(
                    seen = r.seen,
                    created = r.created,
                    changed = r.changed,
                    gone = r.gone,
                    lagging = r.lagging,
                    duration_ms = r.duration_ms,
                    "inventory synced"
                );
                metrics::counter!("berth_inventory_syncs_total", "outcome" => "ok").increment(1);
                held.finish(now + Self::ms(i.config.interval()), json!(r))
                    .await;
                i.store
                    .schedule_job(DETECT_JOB, now + Self::ms(i.config.drift_delay()))
                    .await?;
            }
            Err(e) => {
                tracing::warn!(error = %e, "inventory sync failed");
                metrics::counter!("berth_inventory_syncs_total", "outcome" => "failed")
                    .increment(1);
                held.finish(
                    now + Self::ms(i.config.retry()),
                    json!({ "error": e.to_string() }),
                )
                .await;
            }
        }
        result
    }

    /// The periodic jobs, until `shutdown`. Does nothing without `[digitalocean]` or with
    /// `sync_interval_secs = 0`.
    pub async fn run(self, shutdown: CancellationToken) {
        let i = &self.inner;
        // The gauge from what the database holds, before the first detection here.
        report_open_gauge(&i.store).await;
        let Some(api) = i.api.clone() else {
            return;
        };
        if !i.config.periodic() {
            tracing::info!("periodic inventory sync is off (inventory.sync_interval_secs = 0)");
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(i.config.start_delay()) => {}
            _ = shutdown.cancelled() => return,
        }
        loop {
            tokio::select! {
                r = self.tick(api.as_ref()) => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "inventory job failed");
                    }
                }
                // Dropping the run hands its job back (see `Held`).
                _ = shutdown.cancelled() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(i.config.tick()) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Runs whichever job is due and free.
    async fn tick(&self, api: &dyn DoApi) -> Result<(), DriftError> {
        let i = &self.inner;
        let lease = i.config.lease();
        let now = now_ms();
        if let Some(held) =
            Held::claim(&i.store, SYNC_JOB, &i.owner_id, lease, now, Due::WhenDue).await?
        {
            // A failure is recorded and retried later; detection still runs on schedule.
            let _ = self.run_sync(api, held).await;
        }
        let first_detect = now_ms() + Self::ms(i.config.drift_delay());
        let Some(held) = Held::claim(
            &i.store,
            DETECT_JOB,
            &i.owner_id,
            lease,
            first_detect,
            Due::WhenDue,
        )
        .await?
        else {
            return Ok(());
        };
        let next = now_ms() + Self::ms(i.config.interval());
        match detect_all(&i.store).await {
            Ok(r) => {
                tracing::info!(
                    resources = r.resources,
                    opened = r.opened,
                    closed = r.closed(),
                    "drift detection done"
                );
                held.finish(next, json!(r)).await;
                Ok(())
            }
            Err(e) => {
                held.finish(next, json!({ "error": e.to_string() })).await;
                Err(e.into())
            }
        }
    }
}
