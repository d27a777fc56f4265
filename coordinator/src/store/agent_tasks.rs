//! `agent_tasks`: the saga steps that run on an agent, as the durable meeting point of the
//! replica that owns the saga and the replica that holds the host's stream.
//!
//! The owner opens a task under its claim (fenced) and waits for its result; whichever
//! replica holds the host's stream delivers it, writes its progress and its result, and
//! signals the owner. A task is wanted at `(epoch, attempt)`: a later attempt of the step
//! (a retry, a new owner) reopens a failed task, and a success is kept whatever the attempt.
//!
//! States: `open` (wanted, no result yet), `done` (a result is stored), `closed` (the owner
//! gave up waiting: the stream holder tells the agent to cancel, and the agent's answer moves
//! it to `done`).

use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use super::signal::{CHANNEL, Signal};
use super::{Backend, Fence, Store, StoreError};

pub(super) const MIGRATION: &[&str] = &[
    "CREATE TABLE agent_tasks (
    saga_id TEXT NOT NULL,
    step_idx BIGINT NOT NULL,
    host_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    inputs TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    state TEXT NOT NULL,
    cancel_requested BIGINT NOT NULL,
    progress TEXT,
    progress_seq BIGINT NOT NULL,
    ok BIGINT,
    output TEXT,
    error TEXT,
    retryable BIGINT,
    result_epoch BIGINT,
    result_attempt BIGINT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (saga_id, step_idx)
)",
    "CREATE INDEX agent_tasks_host ON agent_tasks (host_id, state)",
];

/// A task to open for a step attempt.
#[derive(Debug, Clone)]
pub struct NewAgentTask<'a> {
    pub step_idx: i64,
    pub host_id: &'a str,
    pub kind: &'a str,
    pub inputs: &'a str,
    pub attempt: i64,
    pub now_ms: i64,
}

/// A task's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTaskRow {
    pub saga_id: String,
    pub step_idx: i64,
    pub host_id: String,
    pub kind: String,
    pub inputs: String,
    pub epoch: i64,
    pub attempt: i64,
    pub state: String,
    pub cancel_requested: bool,
    pub progress: Option<String>,
    pub progress_seq: i64,
    pub ok: Option<bool>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub retryable: bool,
    pub updated_at_ms: i64,
}

impl AgentTaskRow {
    pub fn is_done(&self) -> bool {
        self.state == "done"
    }
}

/// What opening a task found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// The task is wanted at this attempt; wait for its result.
    Waiting(AgentTaskRow),
    /// A result this attempt takes as it is: a success (whenever it ran), or a failure of
    /// this very attempt.
    Finished(AgentTaskRow),
}

/// A result as the stream holder writes it.
#[derive(Debug, Clone)]
pub struct TaskResultWrite<'a> {
    /// The host whose agent reports it: an agent writes only its own host's tasks.
    pub host_id: &'a str,
    pub saga_id: &'a str,
    pub step_idx: i64,
    pub epoch: i64,
    pub attempt: i64,
    pub ok: bool,
    pub output: &'a str,
    pub error: &'a str,
    pub retryable: bool,
    pub now_ms: i64,
}

const COLUMNS: &str = "saga_id, step_idx, host_id, kind, inputs, epoch, attempt, state, \
    cancel_requested, progress, progress_seq, ok, output, error, retryable, updated_at_ms";

fn task_row(r: &AnyRow) -> Result<AgentTaskRow, StoreError> {
    Ok(AgentTaskRow {
        saga_id: r.try_get("saga_id")?,
        step_idx: r.try_get("step_idx")?,
        host_id: r.try_get("host_id")?,
        kind: r.try_get("kind")?,
        inputs: r.try_get("inputs")?,
        epoch: r.try_get("epoch")?,
        attempt: r.try_get("attempt")?,
        state: r.try_get("state")?,
        cancel_requested: r.try_get::<i64, _>("cancel_requested")? != 0,
        progress: r.try_get("progress")?,
        progress_seq: r.try_get("progress_seq")?,
        ok: r.try_get::<Option<i64>, _>("ok")?.map(|v| v != 0),
        output: r.try_get("output")?,
        error: r.try_get("error")?,
        retryable: r.try_get::<Option<i64>, _>("retryable")?.unwrap_or(0) != 0,
        updated_at_ms: r.try_get("updated_at_ms")?,
    })
}

impl Store {
    /// Sends `signal` to every replica when `tx` commits (PostgreSQL); the caller also sends
    /// it in process after the commit.
    pub(super) async fn notify_in(
        &self,
        tx: &mut Transaction<'_, Any>,
        s: &Signal,
    ) -> Result<(), StoreError> {
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)::text AS sent")
                .bind(CHANNEL)
                .bind(s.payload())
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    async fn task_in(
        tx: &mut Transaction<'_, Any>,
        saga_id: &str,
        step_idx: i64,
    ) -> Result<Option<AgentTaskRow>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM agent_tasks WHERE saga_id = $1 AND step_idx = $2"
        )))
        .bind(saga_id)
        .bind(step_idx)
        .fetch_optional(&mut **tx)
        .await?;
        row.as_ref().map(task_row).transpose()
    }

    /// Opens the task of a step attempt under the claim `f`, or finds the result it takes.
    pub async fn open_agent_task(
        &self,
        f: &Fence,
        t: &NewAgentTask<'_>,
    ) -> Result<Opened, StoreError> {
        let (mut tx, _) = self.fenced(f, t.now_ms).await?;
        let existing = Self::task_in(&mut tx, &f.saga_id, t.step_idx).await?;
        if let Some(row) = &existing
            && row.is_done()
        {
            let this_attempt = row.epoch == f.epoch && row.attempt == t.attempt;
            if row.ok == Some(true) || this_attempt {
                tx.commit().await?;
                return Ok(Opened::Finished(row.clone()));
            }
        }
        if existing.is_some() {
            sqlx::query(
                "UPDATE agent_tasks SET host_id = $1, kind = $2, inputs = $3, epoch = $4, \
                    attempt = $5, state = 'open', cancel_requested = 0, ok = NULL, output = NULL, \
                    error = NULL, retryable = NULL, result_epoch = NULL, result_attempt = NULL, \
                    updated_at_ms = $6 \
                 WHERE saga_id = $7 AND step_idx = $8",
            )
            .bind(t.host_id)
            .bind(t.kind)
            .bind(t.inputs)
            .bind(f.epoch)
            .bind(t.attempt)
            .bind(t.now_ms)
            .bind(&f.saga_id)
            .bind(t.step_idx)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "INSERT INTO agent_tasks (saga_id, step_idx, host_id, kind, inputs, epoch, \
                    attempt, state, cancel_requested, progress_seq, created_at_ms, updated_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', 0, 0, $8, $8)",
            )
            .bind(&f.saga_id)
            .bind(t.step_idx)
            .bind(t.host_id)
            .bind(t.kind)
            .bind(t.inputs)
            .bind(f.epoch)
            .bind(t.attempt)
            .bind(t.now_ms)
            .execute(&mut *tx)
            .await?;
        }
        let signal = Signal::Host(t.host_id.to_owned());
        self.notify_in(&mut tx, &signal).await?;
        let row = Self::task_in(&mut tx, &f.saga_id, t.step_idx)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: format!("agent task {} step {}", f.saga_id, t.step_idx),
            })?;
        tx.commit().await?;
        self.signals.send(signal);
        Ok(Opened::Waiting(row))
    }

    /// Asks the agent to cancel the step's task (an operator's cancel), under the claim.
    pub async fn cancel_agent_task(
        &self,
        f: &Fence,
        step_idx: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.set_task_state(f, step_idx, "cancel_requested = 1", now_ms)
            .await
    }

    /// Stops waiting for the step's task (the owner gave up): the stream holder tells the
    /// agent to cancel it, and no later attempt is owed its result.
    pub async fn close_agent_task(
        &self,
        f: &Fence,
        step_idx: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.set_task_state(
            f,
            step_idx,
            "state = 'closed', cancel_requested = 1",
            now_ms,
        )
        .await
    }

    async fn set_task_state(
        &self,
        f: &Fence,
        step_idx: i64,
        set: &'static str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (mut tx, _) = self.fenced(f, now_ms).await?;
        let host: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "UPDATE agent_tasks SET {set}, updated_at_ms = $1 \
             WHERE saga_id = $2 AND step_idx = $3 AND state = 'open' RETURNING host_id"
        )))
        .bind(now_ms)
        .bind(&f.saga_id)
        .bind(step_idx)
        .fetch_optional(&mut *tx)
        .await?;
        let signal = host.map(Signal::Host);
        if let Some(s) = &signal {
            self.notify_in(&mut tx, s).await?;
        }
        tx.commit().await?;
        if let Some(s) = signal {
            self.signals.send(s);
        }
        Ok(())
    }

    /// The task of a saga step, if one was ever opened.
    pub async fn agent_task(
        &self,
        saga_id: &str,
        step_idx: i64,
    ) -> Result<Option<AgentTaskRow>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM agent_tasks WHERE saga_id = $1 AND step_idx = $2"
        )))
        .bind(saga_id)
        .bind(step_idx)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(task_row).transpose()
    }

    /// The tasks a host's stream holder must deliver (`open`) or call off (`closed`).
    pub async fn agent_tasks_for_host(
        &self,
        host_id: &str,
    ) -> Result<Vec<AgentTaskRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM agent_tasks WHERE host_id = $1 AND state IN ('open', 'closed') \
             ORDER BY saga_id, step_idx"
        )))
        .bind(host_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(task_row).collect()
    }

    /// Records a task's latest progress (JSON) for its owner to relay; not fenced by a claim
    /// (the stream holder has none), so only an `open` task takes it.
    pub async fn agent_task_progress(
        &self,
        host_id: &str,
        saga_id: &str,
        step_idx: i64,
        progress: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let changed = sqlx::query(
            "UPDATE agent_tasks SET progress = $1, progress_seq = progress_seq + 1, \
                updated_at_ms = $2 WHERE saga_id = $3 AND step_idx = $4 AND host_id = $5 \
                AND state = 'open'",
        )
        .bind(progress)
        .bind(now_ms)
        .bind(saga_id)
        .bind(step_idx)
        .bind(host_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let signal = Signal::Saga(saga_id.to_owned());
        if changed > 0 {
            self.notify_in(&mut tx, &signal).await?;
        }
        tx.commit().await?;
        if changed > 0 {
            self.signals.send(signal);
        }
        Ok(())
    }

    /// Stores an agent's result. A success is taken for any attempt of an unfinished task
    /// (the work is done, whichever attempt asked); a failure only for the attempt the task
    /// is wanted at, so a late failure of an earlier attempt cannot fail a newer one.
    /// Returns whether the result was stored.
    pub async fn agent_task_result(&self, r: &TaskResultWrite<'_>) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let changed = sqlx::query(
            "UPDATE agent_tasks SET state = 'done', ok = $1, output = $2, error = $3, \
                retryable = $4, result_epoch = $5, result_attempt = $6, updated_at_ms = $7 \
             WHERE saga_id = $8 AND step_idx = $9 AND host_id = $10 \
               AND state IN ('open', 'closed') \
               AND ($1 = 1 OR state = 'closed' OR (epoch = $5 AND attempt = $6))",
        )
        .bind(i64::from(r.ok))
        .bind(r.output)
        .bind(r.error)
        .bind(i64::from(r.retryable))
        .bind(r.epoch)
        .bind(r.attempt)
        .bind(r.now_ms)
        .bind(r.saga_id)
        .bind(r.step_idx)
        .bind(r.host_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let signal = Signal::Saga(r.saga_id.to_owned());
        if changed > 0 {
            self.notify_in(&mut tx, &signal).await?;
        }
        tx.commit().await?;
        if changed > 0 {
            self.signals.send(signal);
        }
        Ok(changed > 0)
    }
}
