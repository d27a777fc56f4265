//! Operator actions on a saga: cancel, retry from the failed step, skip a step, resume
//! compensation, abandon. Each is checked against the saga's state first and, when allowed,
//! applied as a fresh claim (the epoch goes up, so no stale owner can write afterwards).

use super::engine::Engine;
use super::step::now_ms;
use crate::store::{NewEvent, SagaRow, StepRow, StoreError};
use berth_shared::saga::{EventKind, SagaStatus, StepStatus};

/// Why an operator action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("{0}")]
    Refused(String),
    #[error("step {index} does not exist; the saga has {count} steps")]
    NoSuchStep { index: u32, count: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::error::ServiceError for ActionError {
    fn error_code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode;
        match self {
            ActionError::Refused(_) => ErrorCode::FailedPrecondition,
            ActionError::NoSuchStep { .. } => ErrorCode::InvalidArgument,
            ActionError::Store(s) => s.error_code(),
        }
    }

    fn public_message(&self) -> String {
        match self {
            ActionError::Store(s) => s.public_message(),
            e => e.to_string(),
        }
    }
}

/// An operator action on one saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Cancel,
    Retry,
    Skip(u32),
    ResumeCompensation,
    Abandon,
}

impl Engine {
    /// Applies an operator action; `reason` goes into the saga's history.
    pub async fn act(&self, id: &str, action: Action, reason: &str) -> Result<(), ActionError> {
        match action {
            Action::Cancel => self.cancel(id, reason).await,
            Action::Retry => self.retry(id, reason).await,
            Action::Skip(index) => self.skip(id, index, reason).await,
            Action::ResumeCompensation => self.resume_compensation(id, reason).await,
            Action::Abandon => self.abandon(id, reason).await,
        }
    }

    async fn load(&self, id: &str) -> Result<(SagaRow, Vec<StepRow>), ActionError> {
        let saga = self.store().get_saga(id).await?;
        let steps = self.store().get_steps(id).await?;
        Ok((saga, steps))
    }

    /// Asks the saga to stop: before a pivot it compensates and ends `cancelled`; after a
    /// pivot the request is refused.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<(), ActionError> {
        let (saga, steps) = self.load(id).await?;
        if saga.status.is_final() {
            return Err(ActionError::Refused(format!(
                "saga {id} is already {}; nothing to cancel",
                saga.status
            )));
        }
        if let Some(p) = steps
            .iter()
            .find(|s| s.pivot && s.status == StepStatus::Completed)
        {
            return Err(ActionError::Refused(format!(
                "cannot cancel saga {id}: its pivot step {} ({}) completed, so it can only go forward",
                p.step_idx, p.name
            )));
        }
        if !self.store().request_cancel(id, reason, now_ms()).await? {
            return Err(ActionError::Refused(format!(
                "saga {id} finished before the cancel arrived"
            )));
        }
        self.notify();
        Ok(())
    }

    /// Runs a failed (or paused) saga again from its failed step.
    pub async fn retry(&self, id: &str, reason: &str) -> Result<(), ActionError> {
        let (saga, steps) = self.load(id).await?;
        let st = saga.status;
        if !matches!(st, SagaStatus::Failed | SagaStatus::Paused) {
            return Err(ActionError::Refused(format!(
                "only a failed or paused saga can be retried; saga {id} is {st}"
            )));
        }
        let reset: Vec<(i64, StepStatus)> = steps
            .iter()
            .filter(|s| matches!(s.status, StepStatus::Failed | StepStatus::Cancelled))
            .map(|s| (s.step_idx, StepStatus::Pending))
            .collect();
        self.transition(
            id,
            st,
            SagaStatus::Running,
            &reset,
            EventKind::OperatorRetry,
            reason,
        )
        .await
    }

    /// Skips a step of a failed or paused saga (marks it skipped and goes on), or gives up
    /// compensating a step of a saga whose compensation failed.
    pub async fn skip(&self, id: &str, index: u32, reason: &str) -> Result<(), ActionError> {
        let (saga, steps) = self.load(id).await?;
        let step = steps.get(index as usize).ok_or(ActionError::NoSuchStep {
            index,
            count: steps.len(),
        })?;
        let st = saga.status;
        let (allowed_step, next) = match st {
            SagaStatus::Failed | SagaStatus::Paused => (
                matches!(
                    step.status,
                    StepStatus::Failed
                        | StepStatus::Cancelled
                        | StepStatus::Pending
                        | StepStatus::Running
                ),
                SagaStatus::Running,
            ),
            SagaStatus::CompensationFailed => (
                step.status == StepStatus::Compensating,
                SagaStatus::Compensating,
            ),
            _ => {
                return Err(ActionError::Refused(format!(
                    "steps can be skipped only in a failed, paused or compensation_failed saga; saga {id} is {st}"
                )));
            }
        };
        if !allowed_step {
            return Err(ActionError::Refused(format!(
                "step {index} ({}) is {}; it cannot be skipped now",
                step.name, step.status
            )));
        }
        self.transition(
            id,
            st,
            next,
            &[(index as i64, StepStatus::Skipped)],
            EventKind::OperatorSkip,
            reason,
        )
        .await
    }

    /// Resumes compensation of a saga in `compensation_failed` (or a paused one).
    pub async fn resume_compensation(&self, id: &str, reason: &str) -> Result<(), ActionError> {
        let (saga, _) = self.load(id).await?;
        let st = saga.status;
        if !matches!(st, SagaStatus::CompensationFailed | SagaStatus::Paused) {
            return Err(ActionError::Refused(format!(
                "compensation can be resumed only for a compensation_failed or paused saga; saga {id} is {st}"
            )));
        }
        self.transition(
            id,
            st,
            SagaStatus::Compensating,
            &[],
            EventKind::OperatorResumeCompensation,
            reason,
        )
        .await
    }

    /// Gives a saga up: nothing more runs. Any live owner is fenced off, and a step it had in
    /// flight is marked `abandoned` (its clock stops): nothing will finish or undo it.
    pub async fn abandon(&self, id: &str, reason: &str) -> Result<(), ActionError> {
        let (saga, steps) = self.load(id).await?;
        let st = saga.status;
        if matches!(
            st,
            SagaStatus::Completed
                | SagaStatus::Compensated
                | SagaStatus::Cancelled
                | SagaStatus::Abandoned
        ) {
            return Err(ActionError::Refused(format!(
                "saga {id} is already {st}; nothing to abandon"
            )));
        }
        let in_flight: Vec<(i64, StepStatus)> = steps
            .iter()
            .filter(|s| matches!(s.status, StepStatus::Running | StepStatus::Compensating))
            .map(|s| (s.step_idx, StepStatus::Abandoned))
            .collect();
        self.transition(
            id,
            st,
            SagaStatus::Abandoned,
            &in_flight,
            EventKind::OperatorAbandon,
            reason,
        )
        .await
    }

    async fn transition(
        &self,
        id: &str,
        from: SagaStatus,
        to: SagaStatus,
        steps: &[(i64, StepStatus)],
        kind: EventKind,
        reason: &str,
    ) -> Result<(), ActionError> {
        let message = if reason.is_empty() {
            to.as_str()
        } else {
            reason
        };
        let event = NewEvent::saga(kind, message);
        if !self
            .store()
            .operator_transition(id, from, to, steps, event, now_ms())
            .await?
        {
            return Err(ActionError::Refused(format!(
                "saga {id} changed while the action was applied; look again"
            )));
        }
        tracing::info!(saga_id = id, action = %kind, %to, "operator action");
        self.notify();
        Ok(())
    }
}
