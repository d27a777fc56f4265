//! Driving one claimed saga: read its ledger once, ask `core::next` what to do, and carry
//! it out, writing every change through the fenced store. A step's execute and its
//! compensation run through one attempt loop ([`Engine::attempts`]); each ledger write is a
//! typed helper here ([`Engine::set_saga`], [`Engine::put_step`]) that also applies the
//! change to the executor's copy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use berth_shared::saga::EventKind;

use super::claim::{Claim, Stop};
use super::core::{self, Next, SagaStatus, SagaView, StepStatus, StepView};
use super::engine::Engine;
use super::step::{Step, StepCtx, StepError, StepErrorKind, now_ms};
use crate::store::{Fence, NewEvent, SagaRow, SagaWrite, StepRow, StepWrite, StoreError};

/// A step's result, as the engine acts on it.
pub(super) enum Outcome {
    Done,
    /// The claim is gone: write nothing more.
    LeaseLost,
    /// Shutting down: hand the saga back.
    Shutdown,
    /// The saga reached a final status inside a step handler: stop driving it.
    Final,
}

impl From<Stop> for Outcome {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::LeaseLost => Outcome::LeaseLost,
            Stop::Shutdown => Outcome::Shutdown,
        }
    }
}

/// Which of a step's two actions an attempt loop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Attempts count on from those the ledger records; each is recorded as it starts; the
    /// step's deadline and an operator's cancel (between attempts) stop it.
    Execute,
    /// Attempts count from the start of this compensation; only shutdown stops it.
    Compensate,
}

impl Phase {
    fn retry_event(self) -> EventKind {
        match self {
            Phase::Execute => EventKind::StepRetrying,
            Phase::Compensate => EventKind::CompensationRetrying,
        }
    }
}

/// How an attempt loop ended.
enum Attempted {
    /// The action succeeded, with an execute's output.
    Succeeded(Value),
    /// The action failed for good: permanently, cancelled, or out of retries.
    Failed(StepError),
    /// The claim ended before the action did.
    Stopped(Outcome),
}

impl Engine {
    /// Drives one claimed saga until it is final, the claim is lost, or shutdown.
    pub(super) async fn drive(&self, row: &SagaRow, claim: &Claim) -> Result<Outcome, StoreError> {
        let fence = &claim.fence;
        let steps = match self.registry().build(&row.kind, &row.inputs) {
            Ok((_, steps)) => steps,
            Err(e) => {
                let message = format!("cannot run this saga: {e}");
                let write = SagaWrite::with_error(SagaStatus::Failed, &message);
                self.set_saga(fence, write, EventKind::SagaFailed, &message)
                    .await?;
                return Ok(Outcome::Done);
            }
        };
        let inputs: Arc<Value> = Arc::new(serde_json::from_str(&row.inputs).unwrap_or(Value::Null));
        // The ledger is read once: while the claim holds, this executor is its only writer,
        // and it applies each of its own writes to this copy. A cancel request arrives through
        // the lease keeper; an operator's change bumps the epoch and fails the next write.
        let mut saga = self.store().get_saga(&row.id).await?;
        if saga.epoch != fence.epoch || saga.owner_id.as_deref() != Some(fence.owner_id.as_str()) {
            return Ok(Outcome::LeaseLost);
        }
        let mut ledger = self.store().get_steps(&row.id).await?;
        loop {
            if let Some(stop) = claim.should_stop() {
                return Ok(stop.into());
            }
            let view = SagaView {
                status: saga.status,
                cancel_requested: saga.cancel_requested_at_ms.is_some() || claim.cancel_requested(),
                steps: ledger
                    .iter()
                    .zip(&steps)
                    .map(|(s, def)| StepView {
                        status: s.status,
                        pivot: s.pivot,
                        on_failure: def.on_failure(),
                    })
                    .collect(),
            };
            if view.cancel_requested && !view.past_pivot() {
                claim.cancel.cancel();
            }
            if saga.status == SagaStatus::Pending {
                let write = SagaWrite::to(SagaStatus::Running);
                self.set_saga(fence, write, EventKind::SagaRunning, &fence.owner_id)
                    .await?;
                saga.status = SagaStatus::Running;
                continue;
            }
            let outcome = match core::next(&view) {
                Next::Execute(i) => {
                    let step = steps[i].clone();
                    let token = if step.pivot() {
                        claim.lease_lost.clone()
                    } else {
                        claim.cancel.clone()
                    };
                    let ctx = self.ctx(claim, &ledger, i, inputs.clone(), token);
                    self.execute(step, ctx, &mut ledger[i], claim).await?
                }
                Next::Compensate(i) => {
                    let token = claim.lease_lost.clone();
                    let ctx = self.ctx(claim, &ledger, i, inputs.clone(), token);
                    self.compensate(steps[i].clone(), ctx, &mut ledger[i], claim)
                        .await?
                }
                Next::BeginCompensation => {
                    let why = if view.cancel_requested {
                        "cancel requested"
                    } else {
                        "a step failed"
                    };
                    let write = SagaWrite::to(SagaStatus::Compensating);
                    self.set_saga(fence, write, EventKind::CompensationStarted, why)
                        .await?;
                    saga.status = SagaStatus::Compensating;
                    Outcome::Done
                }
                Next::Finish(final_status) => {
                    self.finish(claim, final_status, &ledger).await?;
                    return Ok(Outcome::Done);
                }
            };
            match outcome {
                Outcome::Done => {}
                other => return Ok(other),
            }
        }
    }

    /// What step `i` of `ledger` is called with; `cancel` is the token that stops it.
    fn ctx(
        &self,
        claim: &Claim,
        ledger: &[StepRow],
        i: usize,
        inputs: Arc<Value>,
        cancel: CancellationToken,
    ) -> StepCtx {
        let fence = &claim.fence;
        let row = &ledger[i];
        StepCtx {
            saga_id: fence.saga_id.clone(),
            step_index: row.step_idx as usize,
            epoch: fence.epoch,
            inputs,
            outputs: Arc::new(ledger.iter().map(output_of).collect()),
            checkpoint: row
                .checkpoint
                .as_deref()
                .and_then(|c| serde_json::from_str(c).ok()),
            attempt: row.attempts as u32,
            cancel,
            lease_lost: claim.lease_lost.clone(),
            deps: self.deps().clone(),
            fence: fence.clone(),
        }
    }

    /// Ends the saga in `status` (a resting one `core::next` chose), with every step's output
    /// when it completed and the last step error otherwise.
    async fn finish(
        &self,
        claim: &Claim,
        status: SagaStatus,
        ledger: &[StepRow],
    ) -> Result<(), StoreError> {
        let output = (status == SagaStatus::Completed).then(|| {
            let by_step: serde_json::Map<String, Value> = ledger
                .iter()
                .map(|s| (format!("{}:{}", s.step_idx, s.name), output_of(s)))
                .collect();
            Value::Object(by_step).to_string()
        });
        let error = match status {
            SagaStatus::Completed => None,
            _ => ledger.iter().rev().find_map(|s| s.error.clone()),
        };
        let kind = EventKind::saga_ended(status).expect("a saga finishes in a resting status");
        let write = SagaWrite {
            status,
            error: error.as_deref(),
            output: output.as_deref(),
        };
        self.set_saga(&claim.fence, write, kind, status.as_str())
            .await?;
        count_finished(claim, status);
        Ok(())
    }

    /// Runs a step forward: success records its output, a failure fails the step (the
    /// compensation, if any, is `core::next`'s next decision).
    async fn execute(
        &self,
        step: Arc<dyn Step>,
        ctx: StepCtx,
        row: &mut StepRow,
        claim: &Claim,
    ) -> Result<Outcome, StoreError> {
        let idx = row.step_idx;
        match self
            .attempts(Phase::Execute, &step, ctx, row, claim)
            .await?
        {
            Attempted::Succeeded(output) => {
                let output = output.to_string();
                let event = NewEvent::step(EventKind::StepSucceeded, idx, step.name());
                let write = StepWrite {
                    output: Some(&output),
                    finished: true,
                    ..StepWrite::to(StepStatus::Completed)
                };
                self.put_step(claim, row, &write, event).await?;
                Ok(Outcome::Done)
            }
            Attempted::Failed(err) => {
                let (kind, status) = match err.kind {
                    StepErrorKind::Cancelled => (EventKind::StepCancelled, StepStatus::Cancelled),
                    _ => (EventKind::StepFailed, StepStatus::Failed),
                };
                let event = NewEvent::step(kind, idx, &err.message);
                let write = StepWrite {
                    error: Some(&err.message),
                    finished: true,
                    ..StepWrite::to(status)
                };
                self.put_step(claim, row, &write, event).await?;
                Ok(Outcome::Done)
            }
            Attempted::Stopped(outcome) => Ok(outcome),
        }
    }

    /// Undoes a step: success marks it compensated; a failure the retries cannot mend stops
    /// the saga in `compensation_failed`, for an operator.
    async fn compensate(
        &self,
        step: Arc<dyn Step>,
        ctx: StepCtx,
        row: &mut StepRow,
        claim: &Claim,
    ) -> Result<Outcome, StoreError> {
        let idx = row.step_idx;
        let event = NewEvent::step(EventKind::CompensationStepStarted, idx, step.name());
        self.put_step(claim, row, &StepWrite::to(StepStatus::Compensating), event)
            .await?;
        match self
            .attempts(Phase::Compensate, &step, ctx, row, claim)
            .await?
        {
            Attempted::Succeeded(_) => {
                let event = NewEvent::step(EventKind::StepCompensated, idx, step.name());
                self.put_step(claim, row, &StepWrite::to(StepStatus::Compensated), event)
                    .await?;
                Ok(Outcome::Done)
            }
            Attempted::Failed(err) => {
                let message = format!(
                    "compensation of step {idx} ({}) failed: {}",
                    step.name(),
                    err.message
                );
                let write = SagaWrite::with_error(SagaStatus::CompensationFailed, &message);
                let event = NewEvent::step(EventKind::SagaCompensationFailed, idx, &message);
                self.store()
                    .write_saga_status(&claim.fence, &write, event, now_ms())
                    .await?;
                count_finished(claim, SagaStatus::CompensationFailed);
                Ok(Outcome::Final)
            }
            Attempted::Stopped(outcome) => Ok(outcome),
        }
    }

    /// Calls the step's `phase` action until it succeeds, fails for good, or the claim ends,
    /// waiting between retryable failures as its retry policy says.
    async fn attempts(
        &self,
        phase: Phase,
        step: &Arc<dyn Step>,
        mut ctx: StepCtx,
        row: &mut StepRow,
        claim: &Claim,
    ) -> Result<Attempted, StoreError> {
        let idx = row.step_idx;
        let policy = step.retry();
        let (mut attempts, first_started) = match phase {
            Phase::Execute => {
                let since = now_ms() - row.started_at_ms.unwrap_or_else(now_ms);
                let since = Duration::from_millis(since.max(0) as u64);
                (row.attempts as u32, Instant::now() - since)
            }
            Phase::Compensate => (0, Instant::now()),
        };
        loop {
            attempts += 1;
            ctx.attempt = attempts;
            if phase == Phase::Execute {
                let message = format!("attempt {attempts}");
                let event = NewEvent::step(EventKind::StepStarted, idx, &message);
                let write = StepWrite {
                    attempts: Some(attempts as i64),
                    started: row.started_at_ms.is_none(),
                    attempt_started: true,
                    ..StepWrite::to(StepStatus::Running)
                };
                self.put_step(claim, row, &write, event).await?;
            }
            let started = Instant::now();
            let deadline = async {
                match phase {
                    Phase::Execute => {
                        tokio::time::sleep(policy.deadline.saturating_sub(first_started.elapsed()))
                            .await
                    }
                    Phase::Compensate => std::future::pending().await,
                }
            };
            let call = async {
                match phase {
                    Phase::Execute => step.execute(&mut ctx).await,
                    Phase::Compensate => step.compensate(&mut ctx).await.map(|()| Value::Null),
                }
            };
            let result = tokio::select! {
                r = call => r,
                () = deadline => Err(StepError::permanent(format!("step deadline of {:?} passed", policy.deadline))),
                () = claim.shutting_down() => return Ok(Attempted::Stopped(Outcome::Shutdown)),
            };
            // A checkpoint saved by the call is part of this executor's copy of the ledger,
            // so a compensation under the same claim sees it.
            row.checkpoint = ctx.checkpoint.as_ref().map(Value::to_string);
            if phase == Phase::Execute {
                metrics::histogram!(
                    "berth_saga_step_seconds",
                    "kind" => claim.kind.to_string(),
                    "step" => step.name()
                )
                .record(started.elapsed().as_secs_f64());
            }
            let err = match result {
                Ok(output) => return Ok(Attempted::Succeeded(output)),
                Err(e) => e,
            };
            match err.kind {
                StepErrorKind::LeaseLost => return Ok(Attempted::Stopped(Outcome::LeaseLost)),
                StepErrorKind::Permanent | StepErrorKind::Cancelled => {
                    return Ok(Attempted::Failed(err));
                }
                StepErrorKind::Retryable => {}
            }
            let wait = policy.backoff(attempts, rand::random::<f64>());
            if !policy.may_retry(attempts, first_started.elapsed(), wait) {
                return Ok(Attempted::Failed(match phase {
                    Phase::Execute => StepError::permanent(format!(
                        "gave up after {attempts} attempts: {}",
                        err.message
                    )),
                    Phase::Compensate => err,
                }));
            }
            let mut event = NewEvent::step(phase.retry_event(), idx, &err.message);
            if phase == Phase::Execute {
                metrics::counter!("berth_saga_step_retries_total", "step" => step.name())
                    .increment(1);
                let detail =
                    json!({ "wait_ms": wait.as_millis() as u64, "attempt": attempts }).to_string();
                event.detail = Some(&detail);
                // The attempt ended: its duration stops here, not at the next one's end.
                let write = StepWrite {
                    error: Some(&err.message),
                    finished: true,
                    ..StepWrite::to(StepStatus::Running)
                };
                self.put_step(claim, row, &write, event).await?;
            } else {
                self.store()
                    .append_event(&ctx.fence, event, now_ms())
                    .await?;
            }
            // Only an execute's wait ends early on cancel (a compensation's token is the
            // lease's, and a lost lease shows at the next write).
            let cancelled = async {
                match phase {
                    Phase::Execute => ctx.cancel.cancelled().await,
                    Phase::Compensate => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => continue,
                () = cancelled => {}
                () = claim.shutting_down() => return Ok(Attempted::Stopped(Outcome::Shutdown)),
            }
            if !step.pivot() {
                return Ok(Attempted::Failed(StepError::cancelled()));
            }
        }
    }

    /// Writes the saga's status with the event saying why, under the claim; a final status
    /// also gives the claim up.
    pub(super) async fn set_saga(
        &self,
        fence: &Fence,
        write: SagaWrite<'_>,
        kind: EventKind,
        message: &str,
    ) -> Result<(), StoreError> {
        let event = NewEvent::saga(kind, message);
        self.store()
            .write_saga_status(fence, &write, event, now_ms())
            .await
    }

    /// Writes a step's row under the claim and applies the same change to the in-memory copy;
    /// the write also reports a pending cancel request.
    async fn put_step(
        &self,
        claim: &Claim,
        row: &mut StepRow,
        w: &StepWrite<'_>,
        event: NewEvent<'_>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        if self
            .store()
            .write_step(&claim.fence, row.step_idx, w, event, now)
            .await?
        {
            claim.note_cancel_request();
        }
        row.status = w.status;
        row.written_epoch = claim.fence.epoch;
        if let Some(a) = w.attempts {
            row.attempts = a;
        }
        if let Some(o) = w.output {
            row.output = Some(o.to_owned());
        }
        row.error = w.error.map(str::to_owned);
        if w.started {
            row.started_at_ms = Some(now);
        }
        if w.attempt_started {
            row.attempt_started_at_ms = Some(now);
            row.finished_at_ms = None;
        }
        if w.finished {
            row.finished_at_ms = Some(now);
        }
        Ok(())
    }
}

/// `berth_sagas_finished_total{status}`, and how long the saga took from its start (waits
/// for hosts and operators included) in `berth_saga_seconds{kind,status}`.
fn count_finished(claim: &Claim, status: SagaStatus) {
    metrics::counter!("berth_sagas_finished_total", "status" => status.as_str()).increment(1);
    let secs = (now_ms() - claim.created_at_ms).max(0) as f64 / 1000.0;
    metrics::histogram!(
        "berth_saga_seconds",
        "kind" => claim.kind.to_string(),
        "status" => status.as_str()
    )
    .record(secs);
}

fn output_of(s: &StepRow) -> Value {
    s.output
        .as_deref()
        .and_then(|o| serde_json::from_str(o).ok())
        .unwrap_or(Value::Null)
}
