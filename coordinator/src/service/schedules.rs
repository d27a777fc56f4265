//! `ScheduleService`: schedules made, listed, paused, resumed, deleted and run at once. A
//! schedule's action is checked as the saga it starts (the same inputs the API's
//! `CreateArchive` or `WarmSnapshot` would start) when it is made, not when it first fires.

use std::time::SystemTime;

use berth_proto::v1 as pb;
use berth_shared::time::unix_ms;
use tonic::{Request, Response, Status};

use crate::archive::RetentionInputs;
use crate::error::ApiError;
use crate::saga::Engine;
use crate::schedule::{ScheduleConfig, Scheduler, Timing, VERIFY_KIND, timing_of};
use crate::store::{RunRow, ScheduleRow, Store, StoreError, Trigger};

/// Runs shown in a get (a list shows the newest only).
const RUNS_SHOWN: i64 = 10;
/// Fire times shown.
const NEXT_SHOWN: usize = 5;

#[derive(Debug, Clone)]
pub struct SchedulesService {
    pub engine: Engine,
    pub scheduler: Scheduler,
    pub config: ScheduleConfig,
}

fn store_err(e: StoreError) -> Status {
    ApiError::from(e).into()
}

/// A schedule name: 1 to 64 of letters, digits, `-`, `_`, `.`, starting with a letter or digit.
fn check_name(name: &str) -> Result<(), Status> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "schedule name {name:?} is not valid: use 1 to 64 letters, digits, '-', '_' or '.', \
             starting with a letter or digit (e.g. nightly-keycloak)"
        )))
    }
}

impl SchedulesService {
    fn store(&self) -> &Store {
        self.engine.store()
    }

    /// The saga kind and inputs a request's action starts.
    fn action(r: &pb::CreateScheduleRequest) -> Result<(&'static str, serde_json::Value), Status> {
        use pb::create_schedule_request::Action;
        match &r.action {
            Some(Action::ArchiveCreate(a)) => {
                Ok(("archive.create", super::archives::create_inputs(a)?))
            }
            Some(Action::WarmSnapshot(w)) => Ok((
                "warm.snapshot",
                serde_json::Value::Object(super::warm::snapshot_inputs(w)?),
            )),
            Some(Action::ArchiveVerify(v)) => {
                berth_shared::AppName::new(v.app.as_str())
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                berth_shared::HostId::new(v.host_id.as_str())
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                Ok((
                    VERIFY_KIND,
                    serde_json::json!({ "host_id": v.host_id, "app": v.app }),
                ))
            }
            None => Err(Status::invalid_argument(
                "action is missing: a schedule runs archive_create, warm_snapshot or archive_verify",
            )),
        }
    }

    async fn view(&self, s: &ScheduleRow, runs: i64) -> Result<pb::Schedule, Status> {
        let now = unix_ms(SystemTime::now());
        let next_runs_ms = match (s.paused, timing_of(s)) {
            (false, Ok(t)) => t.upcoming(now.max(s.cursor_ms), NEXT_SHOWN),
            _ => Vec::new(),
        };
        let runs = self
            .store()
            .schedule_runs(&s.name, runs)
            .await
            .map_err(store_err)?;
        Ok(pb::Schedule {
            name: s.name.clone(),
            cron: s.cron.clone(),
            timezone: s.timezone.clone(),
            jitter_secs: s.jitter_secs as u32,
            catch_up: s.catch_up,
            alert_after_secs: s.alert_after_secs as u64,
            paused: s.paused,
            kind: s.kind.clone(),
            inputs_json: s.inputs.clone(),
            created_at_ms: s.created_at_ms,
            last_success_ms: s.last_success_ms.unwrap_or(0),
            next_runs_ms,
            runs: runs.iter().map(run_view).collect(),
            skip_unchanged: s.skip_unchanged,
        })
    }
}

/// A schedule's retention rules as its creates' inputs carry them, counted in its zone.
fn retention_inputs(r: &pb::Retention, zone: &str) -> serde_json::Value {
    let set = |n: u32| (n != 0).then_some(n);
    serde_json::to_value(RetentionInputs {
        keep_last: set(r.keep_last),
        keep_hourly: set(r.keep_hourly),
        keep_daily: set(r.keep_daily),
        keep_weekly: set(r.keep_weekly),
        keep_monthly: set(r.keep_monthly),
        keep_yearly: set(r.keep_yearly),
        keep_within_secs: (r.keep_within_secs != 0).then_some(r.keep_within_secs),
        timezone: Some(zone.to_owned()),
    })
    .expect("retention serializes")
}

fn run_view(r: &RunRow) -> pb::ScheduleRun {
    pb::ScheduleRun {
        schedule: r.schedule.clone(),
        slot_ms: r.slot_ms,
        trigger: r.trigger.clone(),
        saga_id: r.saga_id.clone().unwrap_or_default(),
        started_at_ms: r.started_at_ms,
        outcome: r.outcome.clone().unwrap_or_default(),
        finished_at_ms: r.finished_at_ms.unwrap_or(0),
        detail: r.detail.clone().unwrap_or_default(),
        fired_by: r.fired_by.clone(),
    }
}

#[tonic::async_trait]
impl pb::schedule_service_server::ScheduleService for SchedulesService {
    async fn create_schedule(
        &self,
        req: Request<pb::CreateScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let caller = super::principal(&req)?;
        let r = req.into_inner();
        check_name(&r.name)?;
        let zone = if r.timezone.is_empty() {
            "UTC"
        } else {
            r.timezone.as_str()
        };
        let timing = Timing::new(&r.name, &r.cron, zone, i64::from(r.jitter_secs))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let now = unix_ms(SystemTime::now());
        timing
            .check(&r.cron, now, self.config.min_interval_secs as i64)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (kind, mut inputs) = Self::action(&r)?;
        if let Some(rules) = &r.retention {
            if kind != "archive.create" {
                return Err(Status::invalid_argument(
                    "retention applies to archive schedules only; drop it",
                ));
            }
            inputs["retention"] = retention_inputs(rules, zone);
        }
        let inputs = inputs.to_string();
        // The action is checked now as the saga it starts (a verify's archive is chosen when
        // it runs), and its host must be known.
        if kind != VERIFY_KIND {
            self.engine
                .registry()
                .build(kind, &inputs)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let host = serde_json::from_str::<serde_json::Value>(&inputs)
            .ok()
            .and_then(|v| v["host_id"].as_str().map(str::to_owned));
        if let Some(host) = host.as_deref() {
            self.store().get_host(host).await.map_err(|e| match e {
                StoreError::NotFound { .. } => Status::failed_precondition(format!(
                    "host {host} has never connected to this coordinator's fleet: enroll its \
                     agent and start it, or check the host id with `berth hosts list`"
                )),
                e => store_err(e),
            })?;
        }
        let alert_after_secs = match r.alert_after_secs {
            0 => timing.default_alert_after_secs(now),
            n => n as i64,
        };
        let row = ScheduleRow {
            name: r.name.clone(),
            kind: kind.to_owned(),
            inputs,
            cron: r.cron.clone(),
            timezone: zone.to_owned(),
            jitter_secs: i64::from(r.jitter_secs),
            catch_up: r.catch_up,
            skip_unchanged: kind == "archive.create" && !r.archive_unchanged,
            alert_after_secs,
            paused: r.paused,
            created_at_ms: now,
            since_ms: now,
            cursor_ms: now,
            last_success_ms: None,
            overdue_alerted_ms: None,
        };
        self.store()
            .insert_schedule(&row)
            .await
            .map_err(store_err)?;
        tracing::info!(
            schedule = row.name,
            kind,
            cron = row.cron,
            timezone = row.timezone,
            token_id = caller.token_id,
            "schedule created"
        );
        Ok(Response::new(self.view(&row, 0).await?))
    }

    async fn list_schedules(
        &self,
        _req: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let mut schedules = Vec::new();
        for s in self.store().list_schedules().await.map_err(store_err)? {
            schedules.push(self.view(&s, 1).await?);
        }
        Ok(Response::new(pb::ListSchedulesResponse { schedules }))
    }

    async fn get_schedule(
        &self,
        req: Request<pb::GetScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let s = self
            .store()
            .get_schedule(&req.into_inner().name)
            .await
            .map_err(store_err)?;
        Ok(Response::new(self.view(&s, RUNS_SHOWN).await?))
    }

    async fn pause_schedule(
        &self,
        req: Request<pb::ScheduleNameRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        self.set_paused(req, true).await
    }

    async fn resume_schedule(
        &self,
        req: Request<pb::ScheduleNameRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        self.set_paused(req, false).await
    }

    async fn delete_schedule(
        &self,
        req: Request<pb::ScheduleNameRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        let caller = super::principal(&req)?;
        let name = req.into_inner().name;
        let s = self.store().get_schedule(&name).await.map_err(store_err)?;
        let view = self.view(&s, RUNS_SHOWN).await?;
        self.store()
            .delete_schedule(&name)
            .await
            .map_err(store_err)?;
        tracing::info!(
            schedule = name,
            token_id = caller.token_id,
            "schedule deleted"
        );
        Ok(Response::new(view))
    }

    async fn run_schedule_now(
        &self,
        req: Request<pb::ScheduleNameRequest>,
    ) -> Result<Response<pb::ScheduleRun>, Status> {
        let caller = super::principal(&req)?;
        let name = req.into_inner().name;
        let s = self.store().get_schedule(&name).await.map_err(store_err)?;
        let now = unix_ms(SystemTime::now());
        self.scheduler
            .fire(None, &s, now, Trigger::Manual)
            .await
            .map_err(store_err)?;
        tracing::info!(
            schedule = name,
            token_id = caller.token_id,
            "schedule run on request"
        );
        let run = self
            .store()
            .schedule_runs(&name, 1)
            .await
            .map_err(store_err)?
            .into_iter()
            .next()
            .ok_or_else(|| Status::internal("the run just recorded is missing"))?;
        Ok(Response::new(run_view(&run)))
    }
}

impl SchedulesService {
    async fn set_paused(
        &self,
        req: Request<pb::ScheduleNameRequest>,
        paused: bool,
    ) -> Result<Response<pb::Schedule>, Status> {
        let caller = super::principal(&req)?;
        let name = req.into_inner().name;
        let now = unix_ms(SystemTime::now());
        let s = self
            .store()
            .set_schedule_paused(&name, paused, now)
            .await
            .map_err(store_err)?;
        tracing::info!(
            schedule = name,
            paused,
            token_id = caller.token_id,
            "schedule paused or resumed"
        );
        Ok(Response::new(self.view(&s, RUNS_SHOWN).await?))
    }
}
