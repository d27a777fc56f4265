//! Durable sagas: ordered steps with compensation, persisted in the store, run by exactly one
//! coordinator at a time under a fenced lease. `core` decides; `engine` claims and starts sagas,
//! holding each as a `claim`; `drive` carries out `core`'s decisions for one saga; `step` is
//! what a step is, `kinds` is the registry of saga kinds.

mod claim;
pub mod core;
mod drive;
pub mod engine;
pub mod kinds;
pub mod operator;
pub mod secrets;
pub mod step;

pub use self::core::{OnFailure, RetryPolicy, SagaStatus, StepStatus};
pub(crate) use claim::LEASE_LOSS_CAUSES;
pub use engine::{CiCaps, Engine, EngineConfig, StartError, StartedBy};
pub use kinds::{KindError, Registry};
pub use operator::{Action, ActionError};
pub use step::{Deps, Step, StepCtx, StepError, StepErrorKind};
