//! Steps that an agent carries out on its host (warm snapshots, archives): the step sends a
//! task fenced by `(saga, step, epoch)` down the host's stream, relays progress into the
//! saga's history, and waits for the result. A session that drops is not a failure: the task
//! is sent again when the agent is back, and the agent answers with the running or stored
//! result instead of doing the work twice.

use std::time::Duration;

use berth_proto::v1 as pb;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::core::RetryPolicy;
use super::step::{Step, StepCtx, StepError};
use crate::hub::TaskEnd;

/// A step run by the agent of the saga's `host_id`, as the agent task `task_kind`. The task's
/// inputs are the saga's inputs without `host_id`.
#[derive(Debug, Clone, Copy)]
pub struct AgentStep {
    pub name: &'static str,
    pub task_kind: &'static str,
    /// Adds `"uuid": <saga id>` to the task's inputs unless they name one, so every attempt
    /// of the saga makes (or finds) the same archive.
    pub uuid_from_saga: bool,
}

/// How long a cancelled task may take to stop before the step stops waiting for it.
const CANCEL_GRACE: Duration = Duration::from_secs(30);

fn progress_detail(p: &pb::Progress) -> Value {
    json!({
        "bytes_done": p.bytes_done,
        "bytes_total": p.bytes_total,
        "entries_done": p.entries_done,
        "entries_total": p.entries_total,
        "bytes_written": p.bytes_written,
        "phase": p.phase,
    })
}

impl AgentStep {
    fn target(&self, ctx: &StepCtx) -> Result<(String, String), StepError> {
        let host = ctx.inputs["host_id"]
            .as_str()
            .ok_or_else(|| StepError::permanent("the saga's inputs name no host_id"))?
            .to_owned();
        let mut task_inputs = (*ctx.inputs).clone();
        if let Some(o) = task_inputs.as_object_mut() {
            o.remove("host_id");
            if self.uuid_from_saga && o.get("uuid").is_none_or(Value::is_null) {
                o.insert("uuid".into(), json!(ctx.saga_id));
            }
        }
        Ok((host, task_inputs.to_string()))
    }
}

#[async_trait::async_trait]
impl Step for AgentStep {
    fn name(&self) -> &'static str {
        self.name
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
        let (host, inputs_json) = self.target(ctx)?;
        let hub = ctx.deps.hub.clone();
        let id = pb::TaskId {
            saga_id: ctx.saga_id.clone(),
            step_index: ctx.step_index as u32,
            epoch: ctx.epoch as u64,
        };
        loop {
            ctx.check_cancelled()?;
            if !hub.is_connected(&host) {
                return Err(StepError::retryable(format!(
                    "host {host} is not connected to this coordinator; waiting for its agent"
                )));
            }
            let (progress_tx, mut progress_rx) = mpsc::channel(16);
            let task = pb::TaskAssignment {
                id: Some(id.clone()),
                kind: self.task_kind.to_owned(),
                inputs_json: inputs_json.clone(),
            };
            let run = hub.run_task(&host, task, progress_tx);
            tokio::pin!(run);
            let mut cancelled_at = None;
            let end = loop {
                tokio::select! {
                    end = &mut run => break end,
                    Some(p) = progress_rx.recv() => ctx.progress(&p.phase, &progress_detail(&p)).await?,
                    _ = ctx.cancel.cancelled(), if cancelled_at.is_none() => {
                        hub.cancel_task(&host, id.clone()).await;
                        cancelled_at = Some(tokio::time::Instant::now());
                    }
                    _ = async {
                        match cancelled_at {
                            Some(at) => tokio::time::sleep_until(at + CANCEL_GRACE).await,
                            None => std::future::pending().await,
                        }
                    } => {
                        hub.forget_task(&host, &id.saga_id, id.step_index);
                        return Err(StepError::cancelled());
                    }
                }
            };
            // Reports that arrived just before the result are still queued: the history
            // gets them, so its last report is the task's final one.
            while let Ok(p) = progress_rx.try_recv() {
                ctx.progress(&p.phase, &progress_detail(&p)).await?;
            }
            match end {
                Ok(TaskEnd::Finished(r)) if r.ok => {
                    return Ok(serde_json::from_str(&r.output_json)
                        .unwrap_or(Value::String(r.output_json)));
                }
                Ok(TaskEnd::Finished(_)) if cancelled_at.is_some() => {
                    return Err(StepError::cancelled());
                }
                Ok(TaskEnd::Finished(r)) if r.retryable => {
                    return Err(StepError::retryable(r.error));
                }
                Ok(TaskEnd::Finished(r)) => return Err(StepError::permanent(r.error)),
                Ok(TaskEnd::SessionLost) | Err(_) => {
                    tracing::info!(
                        host,
                        saga_id = id.saga_id,
                        "agent session lost mid-task; sending the task again when it is back"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Warm snapshots, restores and archives replace data in place and cannot be undone
    /// (the agent swaps atomically, so there is no half-done state to clean either).
    async fn compensate(&self, _ctx: &mut StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}
