//! What a saga step is: a type with a stable name, `execute` and `compensate`, a retry policy
//! and a pivot flag; and the context it runs in.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use berth_shared::saga::EventKind;

use berth_shared::time::unix_ms;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::core::RetryPolicy;
use crate::store::{Fence, NewEvent, Store, StoreError};

/// Why a step's `execute` or `compensate` did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub kind: StepErrorKind,
    pub message: String,
}

/// What the engine does about a step error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepErrorKind {
    /// Try again after a backoff, within the step's retry policy.
    Retryable,
    /// Give up at once (validation errors, things that will not change by waiting).
    Permanent,
    /// Cancelled by an operator; the engine compensates.
    Cancelled,
    /// The claim on the saga was lost; stop and write nothing more.
    LeaseLost,
}

impl StepError {
    pub fn retryable(message: impl Into<String>) -> Self {
        StepError {
            kind: StepErrorKind::Retryable,
            message: message.into(),
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        StepError {
            kind: StepErrorKind::Permanent,
            message: message.into(),
        }
    }
    pub fn cancelled() -> Self {
        StepError {
            kind: StepErrorKind::Cancelled,
            message: "cancelled by an operator".into(),
        }
    }
    pub fn lease_lost() -> Self {
        StepError {
            kind: StepErrorKind::LeaseLost,
            message: "the claim on the saga was lost".into(),
        }
    }
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::LeaseLost { .. } => StepError {
                kind: StepErrorKind::LeaseLost,
                message: e.to_string(),
            },
            other => StepError::retryable(other.to_string()),
        }
    }
}

/// What steps may use: the store, and whatever each kind of step was given at start (the
/// DigitalOcean client, the archive catalog, how agent steps wait), looked up by type so the
/// engine names none of the modules that implement steps. A step that finds its part missing
/// fails with a message saying how to configure it.
#[derive(Clone)]
pub struct Deps {
    pub store: Store,
    parts: Arc<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Deps {
    pub fn new(store: Store) -> Self {
        Deps {
            store,
            parts: Arc::default(),
        }
    }

    /// These deps and `part`, replacing one of the same type.
    pub fn with<T: Any + Send + Sync>(mut self, part: T) -> Self {
        Arc::make_mut(&mut self.parts).insert(TypeId::of::<T>(), Arc::new(part));
        self
    }

    /// The part of type `T`, if it was given.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.parts.get(&TypeId::of::<T>())?.downcast_ref()
    }
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps")
            .field("parts", &self.parts.len())
            .finish_non_exhaustive()
    }
}

/// A step's view of its saga while it runs.
pub struct StepCtx {
    pub saga_id: String,
    pub step_index: usize,
    pub epoch: i64,
    /// The saga's inputs, as given at start.
    pub inputs: Arc<Value>,
    /// Outputs of the steps before this one (`Null` where a step was skipped).
    pub outputs: Arc<Vec<Value>>,
    /// This step's checkpoint from an earlier attempt, if it saved one.
    pub checkpoint: Option<Value>,
    /// How many times `execute` (or `compensate`) has been called, this call included.
    pub attempt: u32,
    /// Fires when an operator cancels the saga or the claim is lost.
    pub cancel: CancellationToken,
    /// Fires when the claim is lost (before `cancel` fires too): stop and write nothing, but
    /// do not call off work that the next owner will pick up.
    pub lease_lost: CancellationToken,
    pub deps: Deps,
    pub(crate) fence: Fence,
}

impl std::fmt::Debug for StepCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepCtx")
            .field("saga_id", &self.saga_id)
            .field("step_index", &self.step_index)
            .field("epoch", &self.epoch)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl StepCtx {
    /// Saves a handle (droplet id, action id) so a restart resumes instead of redoing.
    pub async fn save_checkpoint(&mut self, value: Value) -> Result<(), StepError> {
        self.deps
            .store
            .save_checkpoint(
                &self.fence,
                self.step_index as i64,
                &value.to_string(),
                now_ms(),
            )
            .await?;
        self.checkpoint = Some(value);
        Ok(())
    }

    /// Appends a progress event to the saga's history (shown by `watch`).
    pub async fn progress(&self, message: &str, detail: &Value) -> Result<(), StepError> {
        let detail = detail.to_string();
        let event = NewEvent {
            kind: EventKind::StepProgress,
            step_idx: self.step_index as i64,
            message,
            detail: Some(&detail),
        };
        self.deps
            .store
            .append_event(&self.fence, event, now_ms())
            .await?;
        Ok(())
    }

    /// The claim this step runs under, for side effects that must be fenced.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Fails with `Cancelled` if the saga was cancelled; call between slow operations.
    pub fn check_cancelled(&self) -> Result<(), StepError> {
        if self.cancel.is_cancelled() {
            Err(StepError::cancelled())
        } else {
            Ok(())
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

/// A step of a saga. Every side effect must be idempotent per (saga, step): `execute` may be
/// called again after a crash (look up and adopt before creating), and so may `compensate`
/// (treat "already gone" as done).
#[async_trait::async_trait]
pub trait Step: Send + Sync {
    /// The stable name written in the ledger.
    fn name(&self) -> &'static str;

    /// Destroy-class steps are pivots: never compensated, and the saga fails forward after one.
    fn pivot(&self) -> bool {
        false
    }

    fn retry(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// What this step's failure does to the saga.
    fn on_failure(&self) -> super::core::OnFailure {
        super::core::OnFailure::Compensate
    }

    /// Runs on the agent of the saga's `host_id`, which must be known when the saga starts.
    fn runs_on_agent(&self) -> bool {
        false
    }

    async fn execute(&self, ctx: &mut StepCtx) -> Result<Value, StepError>;

    async fn compensate(&self, ctx: &mut StepCtx) -> Result<(), StepError>;
}
