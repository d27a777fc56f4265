//! `schedules` (what to run and when, and the cursor: the last occurrence handled) and
//! `schedule_runs` (one row per occurrence handled: the saga it started, or why none).
//!
//! Firing happens under the `schedule.fire` row of `jobs`: [`Store::record_fire`] renews that
//! lease in the transaction that records the run and moves the cursor, so a firer that stalled
//! past its lease writes nothing. The saga itself is started before that transaction with an
//! idempotency key derived from (schedule, occurrence), so a firer killed in between leaves a
//! saga that the next firer finds again instead of starting a second one.

use sqlx::Row;

use super::alerts::{NewAlert, insert_alert};
use super::jobs::renew_in;
use super::{JobClaim, Store, StoreError};

pub(super) const MIGRATION: &[&str] = &[
    "CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    inputs TEXT NOT NULL,
    cron TEXT NOT NULL,
    timezone TEXT NOT NULL,
    jitter_secs BIGINT NOT NULL,
    catch_up BIGINT NOT NULL,
    skip_unchanged BIGINT NOT NULL,
    alert_after_secs BIGINT NOT NULL,
    paused BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    since_ms BIGINT NOT NULL,
    cursor_ms BIGINT NOT NULL,
    last_success_ms BIGINT,
    overdue_alerted_ms BIGINT
)",
    "CREATE TABLE schedule_runs (
    schedule TEXT NOT NULL,
    slot_ms BIGINT NOT NULL,
    trigger_kind TEXT NOT NULL,
    saga_id TEXT,
    fired_by TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    outcome TEXT,
    finished_at_ms BIGINT,
    detail TEXT,
    PRIMARY KEY (schedule, slot_ms)
)",
    "CREATE INDEX schedule_runs_open ON schedule_runs (outcome, schedule)",
];

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRow {
    pub name: String,
    /// What each occurrence runs (`archive.create`, `warm.snapshot`, `archive.verify`).
    pub kind: String,
    /// The saga inputs (JSON), checked by the kind when the schedule was created.
    pub inputs: String,
    pub cron: String,
    /// IANA zone the cron expression is read in.
    pub timezone: String,
    pub jitter_secs: i64,
    /// Run once on return for occurrences missed while no coordinator was up.
    pub catch_up: bool,
    pub skip_unchanged: bool,
    /// Alert when no run succeeded for this long.
    pub alert_after_secs: i64,
    pub paused: bool,
    pub created_at_ms: i64,
    /// When it was created or last resumed: its overdue window counts from here when no run
    /// succeeded since.
    pub since_ms: i64,
    /// The last occurrence handled (fired, skipped), or when counting started (create,
    /// resume): occurrences at or before it never fire.
    pub cursor_ms: i64,
    pub last_success_ms: Option<i64>,
    /// The baseline (last success, or the cursor at creation) an overdue alert was raised for.
    pub overdue_alerted_ms: Option<i64>,
}

/// How an occurrence was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// On time.
    Scheduled,
    /// Late, after every coordinator was down across it: run once for all missed.
    CatchUp,
    /// Late and the schedule does not catch up: recorded, nothing started.
    Missed,
    /// An operator asked (`run-now`).
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Scheduled => "scheduled",
            Trigger::CatchUp => "catch_up",
            Trigger::Missed => "missed",
            Trigger::Manual => "manual",
        }
    }
}

/// One handled occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    pub schedule: String,
    pub slot_ms: i64,
    /// `scheduled`, `catch_up`, `missed` or `manual` ([`Trigger::as_str`]).
    pub trigger: String,
    pub saga_id: Option<String>,
    /// The coordinator that handled it (or `api` for an operator's run).
    pub fired_by: String,
    pub started_at_ms: i64,
    /// `None` while its saga runs; then `succeeded`, `failed`, `skipped` or `unchanged`.
    pub outcome: Option<String>,
    pub finished_at_ms: Option<i64>,
    pub detail: Option<String>,
}

/// A run to record.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub schedule: &'a str,
    pub slot_ms: i64,
    pub trigger: Trigger,
    pub saga_id: Option<&'a str>,
    pub fired_by: &'a str,
    /// Set for a run that ends as it is recorded (missed, unchanged).
    pub outcome: Option<&'a str>,
    pub detail: Option<&'a str>,
    pub now_ms: i64,
}

/// What [`Store::record_fire`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    Recorded,
    /// This occurrence was recorded before (a firer that died after it): nothing changed.
    AlreadyRecorded,
    /// The fire job's lease is no longer ours: nothing was written.
    LeaseLost,
}

const COLUMNS: &str = "name, kind, inputs, cron, timezone, jitter_secs, catch_up, \
    skip_unchanged, alert_after_secs, paused, created_at_ms, since_ms, cursor_ms, last_success_ms, \
    overdue_alerted_ms";

fn schedule_row(r: &sqlx::any::AnyRow) -> Result<ScheduleRow, StoreError> {
    Ok(ScheduleRow {
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        inputs: r.try_get("inputs")?,
        cron: r.try_get("cron")?,
        timezone: r.try_get("timezone")?,
        jitter_secs: r.try_get("jitter_secs")?,
        catch_up: r.try_get::<i64, _>("catch_up")? != 0,
        skip_unchanged: r.try_get::<i64, _>("skip_unchanged")? != 0,
        alert_after_secs: r.try_get("alert_after_secs")?,
        paused: r.try_get::<i64, _>("paused")? != 0,
        created_at_ms: r.try_get("created_at_ms")?,
        since_ms: r.try_get("since_ms")?,
        cursor_ms: r.try_get("cursor_ms")?,
        last_success_ms: r.try_get("last_success_ms")?,
        overdue_alerted_ms: r.try_get("overdue_alerted_ms")?,
    })
}

const RUN_COLUMNS: &str = "schedule, slot_ms, trigger_kind, saga_id, fired_by, started_at_ms, \
    outcome, finished_at_ms, detail";

fn run_row(r: &sqlx::any::AnyRow) -> Result<RunRow, StoreError> {
    Ok(RunRow {
        schedule: r.try_get("schedule")?,
        slot_ms: r.try_get("slot_ms")?,
        trigger: r.try_get("trigger_kind")?,
        saga_id: r.try_get("saga_id")?,
        fired_by: r.try_get("fired_by")?,
        started_at_ms: r.try_get("started_at_ms")?,
        outcome: r.try_get("outcome")?,
        finished_at_ms: r.try_get("finished_at_ms")?,
        detail: r.try_get("detail")?,
    })
}

impl Store {
    /// Adds a schedule; a conflict when the name is taken.
    pub async fn insert_schedule(&self, s: &ScheduleRow) -> Result<(), StoreError> {
        let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO schedules ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (name) DO NOTHING"
        )))
        .bind(&s.name)
        .bind(&s.kind)
        .bind(&s.inputs)
        .bind(&s.cron)
        .bind(&s.timezone)
        .bind(s.jitter_secs)
        .bind(i64::from(s.catch_up))
        .bind(i64::from(s.skip_unchanged))
        .bind(s.alert_after_secs)
        .bind(i64::from(s.paused))
        .bind(s.created_at_ms)
        .bind(s.since_ms)
        .bind(s.cursor_ms)
        .bind(s.last_success_ms)
        .bind(s.overdue_alerted_ms)
        .execute(self.pool())
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::Conflict(format!(
                "a schedule named {:?} already exists: pick another name, or delete it first \
                 (`berth schedule delete {}`)",
                s.name, s.name
            )));
        }
        Ok(())
    }

    pub async fn get_schedule(&self, name: &str) -> Result<ScheduleRow, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM schedules WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(r) => schedule_row(&r),
            None => Err(StoreError::NotFound {
                what: format!("schedule {name:?}"),
            }),
        }
    }

    /// Every schedule, by name.
    pub async fn list_schedules(&self) -> Result<Vec<ScheduleRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM schedules ORDER BY name"
        )))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(schedule_row).collect()
    }

    /// Pauses a schedule, or resumes it counting from `now_ms` (occurrences during the pause
    /// were paused on purpose and are not caught up). Not found when it does not exist.
    pub async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        now_ms: i64,
    ) -> Result<ScheduleRow, StoreError> {
        let query = if paused {
            sqlx::query("UPDATE schedules SET paused = 1 WHERE name = $1").bind(name)
        } else {
            sqlx::query(
                "UPDATE schedules SET cursor_ms = CASE WHEN paused = 1 THEN $2 ELSE cursor_ms END, \
                 since_ms = CASE WHEN paused = 1 THEN $2 ELSE since_ms END, paused = 0 \
                 WHERE name = $1",
            )
            .bind(name)
            .bind(now_ms)
        };
        query.execute(self.pool()).await?;
        self.get_schedule(name).await
    }

    /// Deletes a schedule and its run history; sagas it started are left as they are.
    pub async fn delete_schedule(&self, name: &str) -> Result<ScheduleRow, StoreError> {
        let row = self.get_schedule(name).await?;
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM schedule_runs WHERE schedule = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM schedules WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Records a handled occurrence and moves the schedule's cursor to it, under the fire
    /// job's claim (`None` for an operator's run, which moves no cursor).
    pub async fn record_fire(
        &self,
        claim: Option<&JobClaim>,
        run: &NewRun<'_>,
    ) -> Result<Fired, StoreError> {
        let mut tx = self.pool().begin().await?;
        if let Some(c) = claim
            && !renew_in(&mut tx, c, run.now_ms).await?
        {
            tx.rollback().await?;
            return Ok(Fired::LeaseLost);
        }
        let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO schedule_runs ({RUN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (schedule, slot_ms) DO NOTHING"
        )))
        .bind(run.schedule)
        .bind(run.slot_ms)
        .bind(run.trigger.as_str())
        .bind(run.saga_id)
        .bind(run.fired_by)
        .bind(run.now_ms)
        .bind(run.outcome)
        .bind(run.outcome.map(|_| run.now_ms))
        .bind(run.detail)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if run.trigger != Trigger::Manual {
            sqlx::query("UPDATE schedules SET cursor_ms = $1 WHERE name = $2 AND cursor_ms < $1")
                .bind(run.slot_ms)
                .bind(run.schedule)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(if inserted == 0 {
            Fired::AlreadyRecorded
        } else {
            Fired::Recorded
        })
    }

    /// Runs whose saga has not been seen to end.
    pub async fn open_schedule_runs(&self) -> Result<Vec<RunRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM schedule_runs \
             WHERE outcome IS NULL AND saga_id IS NOT NULL ORDER BY slot_ms"
        )))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(run_row).collect()
    }

    /// The newest `limit` runs of a schedule, newest first.
    pub async fn schedule_runs(&self, name: &str, limit: i64) -> Result<Vec<RunRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM schedule_runs WHERE schedule = $1 \
             ORDER BY slot_ms DESC LIMIT $2"
        )))
        .bind(name)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(run_row).collect()
    }

    /// Records how an open run ended: sets its outcome (once: false when another
    /// coordinator already did), moves the schedule's last success, and queues `alert` in
    /// the same transaction.
    pub async fn finish_schedule_run(
        &self,
        run: &RunRow,
        outcome: &str,
        succeeded: bool,
        detail: Option<&str>,
        alert: Option<&NewAlert>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let n = sqlx::query(
            "UPDATE schedule_runs SET outcome = $1, finished_at_ms = $2, detail = $3 \
             WHERE schedule = $4 AND slot_ms = $5 AND outcome IS NULL",
        )
        .bind(outcome)
        .bind(now_ms)
        .bind(detail)
        .bind(&run.schedule)
        .bind(run.slot_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        if succeeded {
            sqlx::query(
                "UPDATE schedules SET last_success_ms = $1 \
                 WHERE name = $2 AND (last_success_ms IS NULL OR last_success_ms < $1)",
            )
            .bind(now_ms)
            .bind(&run.schedule)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(alert) = alert {
            insert_alert(&mut tx, alert, now_ms).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Queues an overdue alert for `name` once per `baseline_ms` (its last success, or its
    /// start): false when one was already raised for it.
    pub async fn mark_schedule_overdue(
        &self,
        name: &str,
        baseline_ms: i64,
        alert: &NewAlert,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let n = sqlx::query(
            "UPDATE schedules SET overdue_alerted_ms = $1 WHERE name = $2 \
             AND (overdue_alerted_ms IS NULL OR overdue_alerted_ms < $1)",
        )
        .bind(baseline_ms)
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_alert(&mut tx, alert, now_ms).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Forgets all but the newest `keep` ended runs of each schedule; returns how many went.
    pub async fn prune_schedule_runs(&self, keep: i64) -> Result<u64, StoreError> {
        let names = sqlx::query("SELECT DISTINCT schedule FROM schedule_runs")
            .fetch_all(self.pool())
            .await?;
        let mut gone = 0;
        for row in names {
            let name: String = row.try_get("schedule")?;
            // With fewer than `keep` runs the subquery is empty and nothing goes.
            gone += sqlx::query(
                "DELETE FROM schedule_runs WHERE schedule = $1 AND outcome IS NOT NULL \
                 AND slot_ms < (SELECT slot_ms FROM schedule_runs WHERE schedule = $1 \
                     ORDER BY slot_ms DESC LIMIT 1 OFFSET $2)",
            )
            .bind(&name)
            .bind(keep - 1)
            .execute(self.pool())
            .await?
            .rows_affected();
        }
        Ok(gone)
    }
}
