//! The saga state machine as pure functions: given a saga's state, what happens next.
//! No I/O here; the executor (`engine.rs`) persists each transition and carries it out.

use std::time::Duration;

pub use berth_shared::saga::{SagaStatus, StepStatus};

/// What a step's failure does to its saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Undo the completed steps (the default).
    #[default]
    Compensate,
    /// Stop at `failed` for an operator: the step is atomic on its own (it either did its
    /// work or left everything as it was), and the usual cause is one an operator fixes
    /// (a stack still deployed, a host away) before `berth sagas retry`.
    WaitForOperator,
}

/// What the decision function needs to know of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepView {
    pub status: StepStatus,
    pub pivot: bool,
    pub on_failure: OnFailure,
}

/// What the decision function needs to know of a saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaView {
    pub status: SagaStatus,
    pub cancel_requested: bool,
    pub steps: Vec<StepView>,
}

/// The next thing to do with a claimed saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Run (or re-run in adopt mode) the step's `execute`.
    Execute(usize),
    /// Run the step's `compensate`.
    Compensate(usize),
    /// Switch the saga to `compensating` (failure or cancellation before any pivot).
    BeginCompensation,
    /// Write a final status and release the saga.
    Finish(SagaStatus),
}

impl SagaView {
    /// Whether a pivot step has completed: from then on the saga only moves forward.
    pub fn past_pivot(&self) -> bool {
        self.steps
            .iter()
            .any(|s| s.pivot && s.status == StepStatus::Completed)
    }
}

/// The pure heart of the engine: what happens next to a saga an executor holds.
pub fn next(saga: &SagaView) -> Next {
    match saga.status {
        SagaStatus::Pending | SagaStatus::Running => forward(saga),
        SagaStatus::Compensating => backward(saga),
        done => Next::Finish(done),
    }
}

fn forward(saga: &SagaView) -> Next {
    if saga.cancel_requested && !saga.past_pivot() {
        return Next::BeginCompensation;
    }
    let Some((i, step)) = saga
        .steps
        .iter()
        .enumerate()
        .find(|(_, s)| !matches!(s.status, StepStatus::Completed | StepStatus::Skipped))
    else {
        return Next::Finish(SagaStatus::Completed);
    };
    match step.status {
        StepStatus::Pending | StepStatus::Running => Next::Execute(i),
        // A failure after a pivot fails forward: the saga waits for an operator.
        StepStatus::Failed | StepStatus::Cancelled if saga.past_pivot() => {
            Next::Finish(SagaStatus::Failed)
        }
        // So does one of a step that waits for an operator (a cancel compensated above).
        StepStatus::Failed if step.on_failure == OnFailure::WaitForOperator => {
            Next::Finish(SagaStatus::Failed)
        }
        _ => Next::BeginCompensation,
    }
}

fn backward(saga: &SagaView) -> Next {
    let todo = saga.steps.iter().enumerate().rev().find(|(_, s)| {
        // A step left `running` (its executor died, then the saga was cancelled) may have done
        // part of its work: compensate it too (compensations treat "gone" as done).
        !s.pivot
            && matches!(
                s.status,
                StepStatus::Completed | StepStatus::Compensating | StepStatus::Running
            )
    });
    match todo {
        Some((i, _)) => Next::Compensate(i),
        None if saga.cancel_requested => Next::Finish(SagaStatus::Cancelled),
        None => Next::Finish(SagaStatus::Compensated),
    }
}

/// How a step is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The step gives up once this much time passed since its first attempt.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
            deadline: Duration::from_secs(30 * 60),
        }
    }
}

impl RetryPolicy {
    /// No retry at all.
    pub const NONE: RetryPolicy = RetryPolicy {
        max_attempts: 1,
        initial_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
        deadline: Duration::from_secs(24 * 3600),
    };

    /// The ceiling of the wait before attempt `attempt + 1` (attempt counts from 1):
    /// `initial × 2^(attempt-1)`, capped.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// "Equal jitter": half the ceiling plus a random share of the other half, so waits grow
    /// and never collapse to zero. `unit` is a random number in [0, 1).
    pub fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        let c = self.ceiling(attempt);
        c / 2 + c.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
    }

    /// Whether another attempt is allowed after `attempts` tries, `elapsed` since the first.
    pub fn may_retry(&self, attempts: u32, elapsed: Duration, wait: Duration) -> bool {
        attempts < self.max_attempts && elapsed + wait < self.deadline
    }
}

#[cfg(test)]
mod tests;
