//! Schedules: sagas started by the clock. A schedule is a cron expression in a time zone and
//! what each occurrence runs (a saga kind and its inputs, checked when the schedule is made).
//!
//! Every coordinator runs a [`Scheduler`]; each tick, the one holding the `schedule.fire` job
//! (the `jobs` lease) fires what is due. An occurrence's saga is started with the idempotency
//! key `schedule:<name>:<slot>`, then the run is recorded and the cursor moved under the lease
//! ([`Store::record_fire`]): a firer killed in between leaves a saga the next firer finds by
//! its key, so an occurrence runs once. Occurrences missed while no coordinator ran are folded
//! into one run of the newest (`catch_up`) or recorded as missed; never one run per slot.
//!
//! The same tick settles runs whose saga ended (outcome, `berth_schedule_runs_total`, an alert
//! for a failure) and raises an alert for a schedule with no success within its window.

mod config;
mod timing;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_shared::AppName;
use berth_shared::saga::SagaStatus;
use berth_shared::time::unix_ms;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use config::ScheduleConfig;
pub use timing::{Decision, Timing, TimingError};

use crate::alert::alert;
use crate::archive::{Catalog, Source, recorded_digest};
use crate::saga::{Engine, StartError};
use crate::store::{Due, Fired, JobClaim, NewRun, RunRow, ScheduleRow, Store, StoreError, Trigger};

/// The `jobs` row whose holder fires schedules.
pub const FIRE_JOB: &str = "schedule.fire";
/// The `jobs` row of the hourly clean-up: old runs and delivered alerts.
pub const PRUNE_JOB: &str = "schedule.history_prune";
const PRUNE_EVERY_MS: i64 = 3_600_000;

/// How a run ended, as `schedule_runs.outcome` and the metric's label.
pub mod outcome {
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const MISSED: &str = "missed";
    /// The source matched the newest good archive: nothing was written.
    pub const UNCHANGED: &str = "unchanged";
}

/// The saga kind of a verify schedule; its stored inputs are `{host_id, app}` and each run
/// verifies the app's newest good archive.
pub const VERIFY_KIND: &str = "archive.verify";

/// The idempotency key of an occurrence's saga.
pub fn start_key(name: &str, slot_ms: i64) -> String {
    format!("schedule:{name}:{slot_ms}")
}

/// A schedule's timing, from its row.
pub fn timing_of(s: &ScheduleRow) -> Result<Timing, TimingError> {
    Timing::new(&s.name, &s.cron, &s.timezone, s.jitter_secs)
}

/// Fires schedules on one coordinator (taking turns with the others); cheap to clone.
#[derive(Debug, Clone)]
pub struct Scheduler {
    store: Store,
    engine: Engine,
    owner_id: String,
    config: ScheduleConfig,
    /// The archive store, to find the archive an unchanged source would match.
    catalog: Option<Arc<Catalog>>,
    /// How long delivered alerts are kept.
    keep_delivered_alerts: Duration,
}

impl Scheduler {
    pub fn new(engine: Engine, owner_id: impl Into<String>, config: ScheduleConfig) -> Self {
        Scheduler {
            store: engine.store().clone(),
            engine,
            owner_id: owner_id.into(),
            config,
            catalog: None,
            keep_delivered_alerts: Duration::from_secs(30 * 86_400),
        }
    }

    /// Keeps delivered alerts this long (`[alerts] keep_delivered_days`).
    pub fn keeping_alerts(mut self, keep: Duration) -> Self {
        self.keep_delivered_alerts = keep;
        self
    }

    pub fn with_catalog(mut self, catalog: Arc<Catalog>) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// The inputs of an occurrence's saga: the schedule's; for a verify schedule, the newest
    /// good archive of its app (an error when it has none); for an archive schedule that
    /// skips unchanged sources, with the newest good archive of the same source and the
    /// listing digest its create saga recorded (when there is one).
    async fn inputs_for(&self, s: &ScheduleRow, trigger: Trigger) -> Result<String, String> {
        if s.kind == VERIFY_KIND {
            return self.verify_inputs(&s.inputs).await;
        }
        if s.kind != "archive.create" || !s.skip_unchanged || trigger == Trigger::Manual {
            return Ok(s.inputs.clone());
        }
        let Ok(mut inputs) = serde_json::from_str::<Value>(&s.inputs) else {
            return Ok(s.inputs.clone());
        };
        match self.newest_digest(&inputs).await {
            Ok(Some((uuid, digest))) => {
                inputs["unchanged_since"] = json!({ "uuid": uuid, "source_digest": digest });
                Ok(inputs.to_string())
            }
            Ok(None) => Ok(s.inputs.clone()),
            Err(e) => {
                tracing::warn!(schedule = s.name, error = %e, "cannot find the newest archive; archiving without comparing");
                Ok(s.inputs.clone())
            }
        }
    }

    /// A verify schedule's `{host_id, app}` as the `archive.verify` saga's `{host_id, uuid}`.
    async fn verify_inputs(&self, inputs: &str) -> Result<String, String> {
        let inputs: Value = serde_json::from_str(inputs).map_err(|e| e.to_string())?;
        let app =
            AppName::new(inputs["app"].as_str().unwrap_or_default()).map_err(|e| e.to_string())?;
        let Some(catalog) = &self.catalog else {
            return Err("this coordinator has no archive store".into());
        };
        let newest = catalog
            .newest_good(&app, Source::Any)
            .await
            .map_err(|e| {
                format!(
                    "cannot list the archives of {app}: {}",
                    crate::error::chain(&e)
                )
            })?
            .ok_or_else(|| format!("app {app} has no good archive to verify"))?;
        Ok(
            json!({ "host_id": inputs["host_id"], "uuid": newest.entry.key.id().to_string() })
                .to_string(),
        )
    }

    async fn newest_digest(&self, inputs: &Value) -> Result<Option<(String, String)>, String> {
        let Some(catalog) = &self.catalog else {
            return Ok(None);
        };
        let app =
            AppName::new(inputs["app"].as_str().unwrap_or_default()).map_err(|e| e.to_string())?;
        let source = match inputs["stack"].as_str() {
            Some(stack) => Source::Volumes(stack),
            None => Source::AppDir,
        };
        let newest = catalog
            .newest_good(&app, source)
            .await
            .map_err(|e| crate::error::chain(&e))?;
        let Some(newest) = newest else {
            return Ok(None);
        };
        let id = newest.entry.key.id();
        let digest = recorded_digest(&self.store, id)
            .await
            .map_err(|e| e.to_string())?;
        Ok(digest.map(|d| (id.to_string(), d)))
    }

    /// Ticks until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "schedule tick failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.tick()) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// One look at the clock: fire what is due, settle ended runs, raise overdue alerts.
    pub async fn tick(&self) -> Result<(), StoreError> {
        let now = unix_ms(SystemTime::now());
        let schedules = self.store.list_schedules().await?;
        for s in &schedules {
            if let Some(ms) = s.last_success_ms {
                metrics::gauge!("berth_schedule_last_success_timestamp_seconds", "schedule" => s.name.clone())
                    .set(ms as f64 / 1000.0);
            }
            metrics::gauge!("berth_schedule_overdue", "schedule" => s.name.clone())
                .set(if is_overdue(s, now) { 1.0 } else { 0.0 });
        }
        let lease = self.config.lease_secs as i64 * 1000;
        let Some(claim) = self
            .store
            .claim_job(FIRE_JOB, &self.owner_id, now, lease, now, Due::WhenDue)
            .await?
        else {
            return Ok(());
        };
        let result = self.fire_due(&claim, &schedules, now).await;
        let settled = self.settle_runs().await;
        let overdue = self.raise_overdue(&schedules).await;
        let pruned = self.prune_history(now).await;
        let done = unix_ms(SystemTime::now());
        let next = done + self.config.tick_ms as i64;
        if !self
            .store
            .finish_job(&claim, done, next, &json!({}))
            .await?
        {
            tracing::warn!(
                job = FIRE_JOB,
                "schedule fire lease lost before the tick ended"
            );
        }
        result.and(settled).and(overdue).and(pruned)
    }

    /// Once an hour (one coordinator at a time): forgets all but the newest `keep_runs` ended
    /// runs of each schedule, and alerts delivered longer ago than `[alerts] keep_delivered_days`.
    async fn prune_history(&self, now: i64) -> Result<(), StoreError> {
        let lease = self.config.lease_secs as i64 * 1000;
        let Some(claim) = self
            .store
            .claim_job(PRUNE_JOB, &self.owner_id, now, lease, now, Due::WhenDue)
            .await?
        else {
            return Ok(());
        };
        let keep = self.keep_delivered_alerts.as_millis() as i64;
        let runs = self
            .store
            .prune_schedule_runs(self.config.keep_runs as i64)
            .await;
        let alerts = self.store.prune_alerts(now - keep).await;
        let outcome = json!({
            "runs_forgotten": runs.as_ref().ok(),
            "alerts_forgotten": alerts.as_ref().ok(),
        });
        self.store
            .finish_job(&claim, now, now + PRUNE_EVERY_MS, &outcome)
            .await?;
        let (runs, alerts) = (runs?, alerts?);
        if runs + alerts > 0 {
            tracing::info!(
                runs,
                alerts,
                "forgot old schedule runs and delivered alerts"
            );
        }
        Ok(())
    }

    async fn fire_due(
        &self,
        claim: &JobClaim,
        schedules: &[ScheduleRow],
        now: i64,
    ) -> Result<(), StoreError> {
        let grace = self.config.late_grace_secs as i64 * 1000;
        for s in schedules.iter().filter(|s| !s.paused) {
            let timing = match timing_of(s) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(schedule = s.name, error = %e, "schedule cannot fire");
                    continue;
                }
            };
            let Decision::Fire { slot_ms, trigger } =
                timing.decide(s.cursor_ms, now, s.catch_up, grace)
            else {
                continue;
            };
            if self.fire(Some(claim), s, slot_ms, trigger).await? == Fired::LeaseLost {
                tracing::warn!(
                    schedule = s.name,
                    "schedule fire lease lost; another coordinator fires"
                );
                return Ok(());
            }
        }
        Ok(())
    }

    /// Handles one occurrence: starts its saga (or records it missed) and records the run.
    /// `claim` is `None` for an operator's `run-now`.
    pub async fn fire(
        &self,
        claim: Option<&JobClaim>,
        s: &ScheduleRow,
        slot_ms: i64,
        trigger: Trigger,
    ) -> Result<Fired, StoreError> {
        let now = unix_ms(SystemTime::now());
        let mut run = NewRun {
            schedule: &s.name,
            slot_ms,
            trigger,
            saga_id: None,
            fired_by: if claim.is_some() {
                &self.owner_id
            } else {
                "api"
            },
            outcome: None,
            detail: None,
            now_ms: now,
        };
        let detail;
        let saga_id;
        if trigger == Trigger::Missed {
            run.outcome = Some(outcome::MISSED);
            run.detail =
                Some("no coordinator ran when it fell due, and the schedule does not catch up");
        } else {
            let key = start_key(&s.name, slot_ms);
            let started = match self.inputs_for(s, trigger).await {
                Ok(inputs) => self.start(s, &inputs, &key).await?,
                Err(why) => Err(why),
            };
            match started {
                Ok(id) => {
                    saga_id = id;
                    run.saga_id = Some(&saga_id);
                }
                Err(e) => {
                    // The saga could not start (its host was removed, its inputs no longer
                    // pass): a failed run, alerted like any other.
                    detail = format!("cannot start the {} saga: {e}", s.kind);
                    run.outcome = Some(outcome::FAILED);
                    run.detail = Some(&detail);
                }
            }
        }
        let fired = self.store.record_fire(claim, &run).await?;
        if fired == Fired::Recorded {
            tracing::info!(
                schedule = s.name,
                slot_ms,
                trigger = trigger.as_str(),
                saga_id = run.saga_id,
                outcome = run.outcome,
                "schedule fired"
            );
            if let Some(o) = run.outcome {
                self.count(&s.name, o);
                if o == outcome::FAILED {
                    let a = run_failed_alert(&s.name, slot_ms, None, run.detail);
                    self.store.queue_alert(&a, now).await?;
                }
            }
        }
        Ok(fired)
    }

    /// Starts an occurrence's saga under its key: its id, or why it could not start. A
    /// database failure is the error (nothing is recorded; the next tick tries again under
    /// the same key).
    async fn start(
        &self,
        s: &ScheduleRow,
        inputs: &str,
        key: &str,
    ) -> Result<Result<String, String>, StoreError> {
        match self.engine.start(&s.kind, inputs, Some(key)).await {
            Ok((id, _)) => Ok(Ok(id)),
            Err(StartError::Store(e)) => Err(e),
            // Started before, by a firer that died before recording it, with inputs chosen
            // then (the newest archive has moved since): that saga is this occurrence's.
            Err(StartError::KeyReused { saga_id, .. }) => {
                let existing = self.store.get_saga(&saga_id).await?;
                if existing.kind == s.kind {
                    Ok(Ok(saga_id))
                } else {
                    Ok(Err(format!(
                        "its key {key} was taken by a {} saga ({saga_id}) started elsewhere",
                        existing.kind
                    )))
                }
            }
            Err(e) => Ok(Err(e.to_string())),
        }
    }

    fn count(&self, schedule: &str, outcome: &str) {
        metrics::counter!(
            "berth_schedule_runs_total",
            "schedule" => schedule.to_owned(),
            "outcome" => outcome.to_owned()
        )
        .increment(1);
    }

    /// Records the outcome of runs whose saga reached a resting status.
    async fn settle_runs(&self) -> Result<(), StoreError> {
        for run in self.store.open_schedule_runs().await? {
            let Some(saga_id) = run.saga_id.as_deref() else {
                continue;
            };
            let saga = match self.store.get_saga(saga_id).await {
                Ok(s) => s,
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            if saga.status.is_active() {
                continue;
            }
            let output: Value = saga
                .output
                .as_deref()
                .and_then(|o| serde_json::from_str(o).ok())
                .unwrap_or(Value::Null);
            let ended = Ended::of(saga.status, saga.error.as_deref(), &output, saga_id);
            self.settle(&run, ended).await?;
        }
        Ok(())
    }

    async fn settle(&self, run: &RunRow, ended: Ended) -> Result<(), StoreError> {
        let now = unix_ms(SystemTime::now());
        let alert = ended.alert.then(|| {
            run_failed_alert(
                &run.schedule,
                run.slot_ms,
                Some(&ended.saga_id),
                ended.detail.as_deref(),
            )
        });
        let recorded = self
            .store
            .finish_schedule_run(
                run,
                ended.outcome,
                ended.succeeded,
                ended.detail.as_deref(),
                alert.as_ref(),
                now,
            )
            .await?;
        if recorded {
            tracing::info!(
                schedule = run.schedule,
                saga_id = ended.saga_id,
                outcome = ended.outcome,
                "scheduled run ended"
            );
            self.count(&run.schedule, ended.outcome);
            if ended.succeeded {
                metrics::gauge!("berth_schedule_last_success_timestamp_seconds", "schedule" => run.schedule.clone())
                    .set(now as f64 / 1000.0);
            }
        }
        Ok(())
    }

    /// Queues one alert per schedule and baseline when no run succeeded within its window.
    async fn raise_overdue(&self, schedules: &[ScheduleRow]) -> Result<(), StoreError> {
        let now = unix_ms(SystemTime::now());
        for s in schedules.iter().filter(|s| is_overdue(s, now)) {
            let baseline = s.last_success_ms.unwrap_or(0).max(s.since_ms);
            if s.overdue_alerted_ms.is_some_and(|b| b >= baseline) {
                continue;
            }
            let message = match s.last_success_ms {
                Some(ms) => format!(
                    "schedule {} has not succeeded since {} (window {} s)",
                    s.name,
                    rfc3339(ms),
                    s.alert_after_secs
                ),
                None => format!(
                    "schedule {} has not succeeded once since {} (window {} s)",
                    s.name,
                    rfc3339(s.since_ms),
                    s.alert_after_secs
                ),
            };
            let a = alert(
                "schedule.overdue",
                format!("schedule.overdue:{}:{baseline}", s.name),
                message,
                json!({ "schedule": s.name, "last_success_ms": s.last_success_ms }),
            );
            if self
                .store
                .mark_schedule_overdue(&s.name, baseline, &a, now)
                .await?
            {
                tracing::warn!(schedule = s.name, "schedule overdue; alert queued");
            }
        }
        Ok(())
    }
}

/// How a run's saga ended, as the run records it.
struct Ended {
    saga_id: String,
    outcome: &'static str,
    /// Counts as the schedule's last success.
    succeeded: bool,
    detail: Option<String>,
    /// Raise `schedule.run_failed` (a failed verify has raised its own alert).
    alert: bool,
}

impl Ended {
    fn of(status: SagaStatus, error: Option<&str>, output: &Value, saga_id: &str) -> Ended {
        let ended = |outcome, succeeded, detail: Option<String>, alert| Ended {
            saga_id: saga_id.to_owned(),
            outcome,
            succeeded,
            detail,
            alert,
        };
        if status != SagaStatus::Completed {
            let detail = format!(
                "saga {saga_id} ended {}{}",
                status.as_str(),
                error.map(|e| format!(": {e}")).unwrap_or_default()
            );
            return ended(outcome::FAILED, false, Some(detail), true);
        }
        if let Some(uuid) = output["0:archive_create"]["unchanged_since"].as_str() {
            return ended(
                outcome::UNCHANGED,
                true,
                Some(format!("unchanged since {uuid}")),
                false,
            );
        }
        let check = &output["1:archive_check"];
        if check["ok"] == false {
            let detail = format!(
                "archive failed verification: {}",
                check["problem"].as_str().unwrap_or("no detail")
            );
            return ended(outcome::FAILED, false, Some(detail), false);
        }
        ended(outcome::SUCCEEDED, true, None, false)
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

fn run_failed_alert(
    schedule: &str,
    slot_ms: i64,
    saga_id: Option<&str>,
    detail: Option<&str>,
) -> crate::store::NewAlert {
    alert(
        "schedule.run_failed",
        format!("schedule.run_failed:{schedule}:{slot_ms}"),
        format!(
            "scheduled run of {schedule} for {} failed: {}",
            rfc3339(slot_ms),
            detail.unwrap_or("no detail")
        ),
        json!({ "schedule": schedule, "slot_ms": slot_ms, "saga_id": saga_id }),
    )
}

/// No run of `s` succeeded within its alert window (`alert_after_secs`), and it is not paused.
fn is_overdue(s: &ScheduleRow, now: i64) -> bool {
    let baseline = s.last_success_ms.unwrap_or(0).max(s.since_ms);
    !s.paused && s.alert_after_secs > 0 && now - baseline > s.alert_after_secs * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_ends_as_its_saga_did_and_alerts_once() {
        let e = Ended::of(
            SagaStatus::Compensated,
            Some("disk full"),
            &Value::Null,
            "s1",
        );
        assert_eq!(
            (e.outcome, e.succeeded, e.alert),
            (outcome::FAILED, false, true)
        );
        assert_eq!(
            e.detail.as_deref(),
            Some("saga s1 ended compensated: disk full")
        );
        let unchanged = json!({"0:archive_create": {"unchanged_since": "u1"}});
        let e = Ended::of(SagaStatus::Completed, None, &unchanged, "s2");
        assert_eq!(
            (e.outcome, e.succeeded, e.alert),
            (outcome::UNCHANGED, true, false)
        );
        assert_eq!(e.detail.as_deref(), Some("unchanged since u1"));
        // A verify that found a bad archive raised its own alert: the run fails quietly.
        let bad = json!({"1:archive_check": {"ok": false, "problem": "checksum"}});
        let e = Ended::of(SagaStatus::Completed, None, &bad, "s3");
        assert_eq!(
            (e.outcome, e.succeeded, e.alert),
            (outcome::FAILED, false, false)
        );
        assert!(e.detail.unwrap().contains("checksum"));
        let good = json!({"1:archive_check": {"ok": true}});
        let e = Ended::of(SagaStatus::Completed, None, &good, "s4");
        assert_eq!((e.outcome, e.succeeded), (outcome::SUCCEEDED, true));
    }
}
