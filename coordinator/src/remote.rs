//! Steps that an agent carries out on its host (warm snapshots, archives). The step opens its
//! task in the store under the saga's claim and waits for the result; whichever replica holds
//! the host's stream delivers the task, and writes back progress and the result
//! (`hub::tasks`). The owner relays progress into the saga's history.
//!
//! - Losing the lease is not cancelling: a stale owner stops waiting and writes nothing; the
//!   next owner opens the same task again and the agent attaches it to the running work or
//!   answers from its stored result.
//! - Only an operator's cancel asks the agent to cancel.
//! - A host that is offline makes the step wait (saying so in the history) for
//!   `agent_offline_wait`, long enough for a reboot, then fail.

pub mod kinds;

use std::sync::Arc;
use std::time::Duration;

use berth_shared::task::Task;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::archive::Catalog;
use crate::saga::step::now_ms;
use crate::saga::{OnFailure, RetryPolicy, Step, StepCtx, StepError};
use crate::store::{AgentTaskRow, NewAgentTask, Opened, Signal};

/// The settings the coordinator gave agent steps, or the defaults.
fn settings(ctx: &StepCtx) -> AgentTaskSettings {
    ctx.deps
        .get::<AgentTaskSettings>()
        .copied()
        .unwrap_or_default()
}

/// How agent steps wait; a part of the engine's `Deps` (the defaults where none is given).
#[derive(Debug, Clone, Copy)]
pub struct AgentTaskSettings {
    /// How long a step waits for an offline host to come back before it fails.
    pub offline_wait: Duration,
    /// A host whose last heartbeat is older than this is offline.
    pub heartbeat_timeout: Duration,
    /// How often a waiting step reads its task when no signal wakes it (the safety net).
    pub poll: Duration,
}

impl Default for AgentTaskSettings {
    fn default() -> Self {
        AgentTaskSettings {
            offline_wait: Duration::from_secs(15 * 60),
            heartbeat_timeout: Duration::from_secs(45),
            poll: Duration::from_secs(2),
        }
    }
}

/// A step run by the agent of the saga's `host_id`, as the agent task `task_kind`. The task's
/// inputs are the saga's inputs without `host_id`.
#[derive(Debug, Clone, Copy)]
pub struct AgentStep {
    pub name: &'static str,
    pub task_kind: &'static str,
}

/// How long a cancelled task may take to stop before the step stops waiting for it.
const CANCEL_GRACE: Duration = Duration::from_secs(30);
/// Least time between two progress events a step writes into the history.
const RELAY_EVERY: Duration = Duration::from_millis(250);
/// How often a waiting step checks that its host is online.
const HOST_CHECK_EVERY: Duration = Duration::from_secs(3);

/// The host and the typed task of a saga's inputs. An archive create takes the saga id as its
/// archive's uuid unless the inputs name one, so every attempt makes (or finds) one archive.
pub fn task_of(kind: &str, saga_id: &str, inputs: &Value) -> Result<(String, Task), String> {
    let host = inputs["host_id"]
        .as_str()
        .ok_or("the saga's inputs name no host_id")?;
    berth_shared::HostId::new(host).map_err(|e| e.to_string())?;
    let mut task_inputs = inputs.clone();
    if let Some(o) = task_inputs.as_object_mut() {
        o.remove("host_id");
        // A create's retention rules are the coordinator's retention step's, not the agent's.
        if kind == "archive_create" {
            o.remove("retention");
        }
        crate::saga::secrets::strip_markers(o);
        if kind == "archive_create" && o.get("uuid").is_none_or(Value::is_null) {
            o.insert("uuid".into(), json!(saga_id));
        }
    }
    let task = Task::parse(kind, &task_inputs).map_err(|e| e.to_string())?;
    let caller_recorded = match &task {
        Task::ArchiveRestore(r) => r.recorded.is_some(),
        Task::ArchiveVerify(v) => v.recorded.is_some(),
        _ => false,
    };
    if caller_recorded {
        return Err(
            "`recorded` is filled in by the coordinator from the archive's create \
                    saga; leave it out"
                .into(),
        );
    }
    Ok((host.to_owned(), task))
}

/// What the waiting step keeps between wake-ups.
struct Wait {
    relayed_seq: i64,
    relayed_at: Option<Instant>,
    cancelled_at: Option<Instant>,
    offline_since: Option<Instant>,
    host_checked: Option<Instant>,
}

impl AgentStep {
    /// Relays the task's latest progress into the history, at most every `RELAY_EVERY`
    /// unless `force` (the last one before the result).
    async fn relay(
        &self,
        ctx: &StepCtx,
        row: &AgentTaskRow,
        w: &mut Wait,
        force: bool,
    ) -> Result<(), StepError> {
        if row.progress_seq <= w.relayed_seq {
            return Ok(());
        }
        if !force && w.relayed_at.is_some_and(|t| t.elapsed() < RELAY_EVERY) {
            return Ok(());
        }
        let Some(p) = row.progress.as_deref() else {
            return Ok(());
        };
        let detail: Value = serde_json::from_str(p).unwrap_or(Value::Null);
        let phase = detail["phase"].as_str().unwrap_or_default().to_owned();
        ctx.progress(&phase, &detail).await?;
        w.relayed_seq = row.progress_seq;
        w.relayed_at = Some(Instant::now());
        Ok(())
    }

    /// Checks the host's liveness now and then; fails once it has been offline too long.
    async fn check_host(&self, ctx: &StepCtx, host: &str, w: &mut Wait) -> Result<(), StepError> {
        if w.host_checked
            .is_some_and(|t| t.elapsed() < HOST_CHECK_EVERY)
        {
            return Ok(());
        }
        w.host_checked = Some(Instant::now());
        let settings = settings(ctx);
        let record = ctx.deps.store.get_host(host).await?;
        let online = record.is_online(now_ms(), settings.heartbeat_timeout.as_millis() as i64);
        match (online, w.offline_since) {
            (true, Some(_)) => {
                w.offline_since = None;
                ctx.progress(&format!("host {host} is back"), &json!({}))
                    .await?;
            }
            (false, None) => {
                w.offline_since = Some(Instant::now());
                let phase = format!(
                    "waiting for host {host} to come back online (up to {} s)",
                    settings.offline_wait.as_secs()
                );
                ctx.progress(&phase, &json!({})).await?;
            }
            (false, Some(since)) if since.elapsed() >= settings.offline_wait => {
                ctx.deps
                    .store
                    .close_agent_task(ctx.fence(), ctx.step_index as i64, now_ms())
                    .await?;
                return Err(StepError::permanent(format!(
                    "host {host} stayed offline for {} s; gave up waiting (raise \
                     [sagas] agent_offline_wait_secs to wait longer, then `berth sagas retry`)",
                    since.elapsed().as_secs()
                )));
            }
            _ => {}
        }
        Ok(())
    }

    /// Waits until a signal for this saga, the poll interval, a cancel or a lost lease.
    async fn sleep(
        &self,
        ctx: &StepCtx,
        signals: &mut tokio::sync::broadcast::Receiver<Signal>,
        w: &mut Wait,
    ) -> Result<(), StepError> {
        let poll = tokio::time::sleep(settings(ctx).poll);
        tokio::pin!(poll);
        loop {
            tokio::select! {
                biased;
                () = ctx.lease_lost.cancelled() => return Err(StepError::lease_lost()),
                () = ctx.cancel.cancelled(), if w.cancelled_at.is_none() => {
                    // An operator's cancel (a lost lease fired `lease_lost` first).
                    ctx.deps
                        .store
                        .cancel_agent_task(ctx.fence(), ctx.step_index as i64, now_ms())
                        .await?;
                    w.cancelled_at = Some(Instant::now());
                    return Ok(());
                }
                s = signals.recv() => match s {
                    Ok(Signal::Saga(id)) if id == ctx.saga_id => return Ok(()),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_) | RecvError::Closed) => return Ok(()),
                },
                () = &mut poll => return Ok(()),
            }
        }
    }
}

impl AgentStep {
    /// After a cancel: an archive create leaves nothing billable, even when its agent is
    /// away. Best effort: the agent aborts what it journaled when it is back, and the upload
    /// sweep catches what both missed.
    async fn abort_uploads(&self, ctx: &StepCtx, task: &Task) {
        let (Task::ArchiveCreate(t), Some(catalog)) = (task, ctx.deps.get::<Arc<Catalog>>()) else {
            return;
        };
        let Some(id) = &t.uuid else { return };
        match catalog.abort_uploads_of(id).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                saga_id = ctx.saga_id,
                aborted = n,
                "aborted the uploads of a cancelled archive"
            ),
            Err(e) => {
                tracing::warn!(saga_id = ctx.saga_id, error = %e, "cannot abort the cancelled archive's uploads; the sweep will")
            }
        }
    }
}

fn outcome(row: &AgentTaskRow, cancelled: bool) -> Result<Value, StepError> {
    let error = row.error.clone().unwrap_or_default();
    match row.ok {
        Some(true) => {
            let output = row.output.clone().unwrap_or_default();
            Ok(serde_json::from_str(&output).unwrap_or(Value::String(output)))
        }
        _ if cancelled => Err(StepError::cancelled()),
        _ if row.retryable => Err(StepError::retryable(error)),
        _ => Err(StepError::permanent(error)),
    }
}

#[async_trait::async_trait]
impl Step for AgentStep {
    fn name(&self) -> &'static str {
        self.name
    }

    fn runs_on_agent(&self) -> bool {
        true
    }

    /// The agent's work is atomic (swapped in whole or not at all), so there is nothing to
    /// undo; a failure's usual causes (a deployed stack, a host away, a full disk) are fixed
    /// by an operator, who then retries.
    fn on_failure(&self) -> OnFailure {
        OnFailure::WaitForOperator
    }

    fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(30),
            deadline: Duration::from_secs(6 * 3600),
        }
    }

    async fn execute(&self, ctx: &mut StepCtx) -> Result<Value, StepError> {
        let (host, mut task) =
            task_of(self.task_kind, &ctx.saga_id, &ctx.inputs).map_err(StepError::permanent)?;
        let store = ctx.deps.store.clone();
        // The checksum and sizes come from the saga that made the archive, not from the
        // bucket.
        match &mut task {
            Task::ArchiveRestore(r) => {
                r.recorded = crate::archive::recorded(&store, &r.uuid).await?
            }
            Task::ArchiveVerify(v) => {
                v.recorded = crate::archive::recorded(&store, &v.uuid).await?
            }
            _ => {}
        }
        let mut signals = store.subscribe();
        let inputs = task.to_json();
        let new = NewAgentTask {
            step_idx: ctx.step_index as i64,
            host_id: &host,
            kind: task.kind(),
            inputs: &inputs,
            attempt: i64::from(ctx.attempt),
            now_ms: now_ms(),
        };
        if let Opened::Finished(row) = store.open_agent_task(ctx.fence(), &new).await? {
            tracing::info!(
                saga_id = ctx.saga_id,
                step = ctx.step_index,
                "agent task already finished; taking its result"
            );
            return outcome(&row, false);
        }
        let mut w = Wait {
            relayed_seq: 0,
            relayed_at: None,
            cancelled_at: None,
            offline_since: None,
            host_checked: None,
        };
        loop {
            if ctx.lease_lost.is_cancelled() {
                return Err(StepError::lease_lost());
            }
            let row = store
                .agent_task(&ctx.saga_id, ctx.step_index as i64)
                .await?
                .ok_or_else(|| StepError::retryable("the step's agent task is gone"))?;
            if row.is_done() {
                self.relay(ctx, &row, &mut w, true).await?;
                let end = outcome(&row, w.cancelled_at.is_some());
                if end.is_err() && w.cancelled_at.is_some() {
                    self.abort_uploads(ctx, &task).await;
                }
                return end;
            }
            self.relay(ctx, &row, &mut w, false).await?;
            // A cancelled task stops when its agent says so; an agent that is away cannot,
            // so the step stops waiting (the agent is told when it is back).
            if let Some(at) = w.cancelled_at
                && (at.elapsed() >= CANCEL_GRACE || w.offline_since.is_some())
            {
                store
                    .close_agent_task(ctx.fence(), ctx.step_index as i64, now_ms())
                    .await?;
                self.abort_uploads(ctx, &task).await;
                return Err(StepError::cancelled());
            }
            self.check_host(ctx, &host, &mut w).await?;
            self.sleep(ctx, &mut signals, &mut w).await?;
        }
    }

    /// Warm snapshots, restores and archives replace data in place and cannot be undone
    /// (the agent swaps atomically, so there is no half-done state to clean either).
    async fn compensate(&self, _ctx: &mut StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}
