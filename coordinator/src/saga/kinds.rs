//! The registry of saga kinds (name → typed inputs → steps) and the demo steps used by tests
//! and demos: `noop`, `sleep`, `fail`, `flaky` (fails N times, then succeeds), `record`
//! (a fenced, countable side effect), `destroy_like` (a pivot) and `fail_compensate`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::core::RetryPolicy;
use super::step::{Step, StepCtx, StepError, now_ms};

/// Builds a saga's steps from its JSON inputs, checking them.
pub type BuildSteps = fn(&Value) -> Result<Vec<Arc<dyn Step>>, String>;

/// Why a start request was refused before anything was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    #[error("unknown saga kind {kind:?}; known kinds: {known}")]
    Unknown { kind: String, known: String },
    #[error("inputs of a {kind} saga are not valid JSON: {message}")]
    NotJson { kind: String, message: String },
    #[error("invalid inputs for a {kind} saga: {message}")]
    Invalid { kind: String, message: String },
}

/// Every saga kind this coordinator can run.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, BuildSteps>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds.keys()).finish()
    }
}

impl Registry {
    /// Registers the `demo` kind, whose steps sleep, fail and record on request: for tests
    /// and demos only (`[sagas] demo = true`).
    /// The kinds registered, in name order.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }

    pub fn enable_demo(&mut self) {
        self.register("demo", build_demo);
    }

    pub fn register(&mut self, kind: &'static str, build: BuildSteps) {
        self.kinds.insert(kind, build);
    }

    /// Parses `inputs` and builds the steps of a `kind` saga.
    pub fn build(
        &self,
        kind: &str,
        inputs: &str,
    ) -> Result<(Value, Vec<Arc<dyn Step>>), KindError> {
        let build = self.kinds.get(kind).ok_or_else(|| KindError::Unknown {
            kind: kind.to_owned(),
            known: self.kinds.keys().copied().collect::<Vec<_>>().join(", "),
        })?;
        let text = if inputs.trim().is_empty() {
            "{}"
        } else {
            inputs
        };
        let value: Value = serde_json::from_str(text).map_err(|e| KindError::NotJson {
            kind: kind.to_owned(),
            message: e.to_string(),
        })?;
        let steps = build(&value).map_err(|message| KindError::Invalid {
            kind: kind.to_owned(),
            message,
        })?;
        Ok((value, steps))
    }
}

/// Inputs of a `demo` saga: the steps to run, in order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoInputs {
    steps: Vec<DemoStep>,
    /// Call each step's `execute` and `compensate` this many times in a row (default 1): a
    /// test of idempotence, as a crash between a side effect and its record would cause.
    #[serde(default = "one")]
    repeat: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case", deny_unknown_fields)]
enum DemoStep {
    Noop,
    Sleep {
        ms: u64,
        /// How long its compensation takes (default: instant).
        #[serde(default)]
        compensate_ms: u64,
    },
    Fail,
    Flaky {
        failures: u32,
    },
    Record,
    DestroyLike,
    FailCompensate,
}

fn build_demo(inputs: &Value) -> Result<Vec<Arc<dyn Step>>, String> {
    let inputs: DemoInputs = serde_json::from_value(inputs.clone()).map_err(|e| e.to_string())?;
    if inputs.steps.is_empty() {
        return Err("`steps` is empty; give at least one step".into());
    }
    let repeat = inputs.repeat.clamp(1, 10);
    Ok(inputs
        .steps
        .into_iter()
        .map(|step| Arc::new(Demo { step, repeat }) as Arc<dyn Step>)
        .collect())
}

/// A demo step, run `repeat` times per call.
struct Demo {
    step: DemoStep,
    repeat: u32,
}

#[async_trait::async_trait]
impl Step for Demo {
    fn name(&self) -> &'static str {
        self.step.name()
    }
    fn pivot(&self) -> bool {
        self.step.pivot()
    }
    fn retry(&self) -> RetryPolicy {
        self.step.retry()
    }
    async fn execute(&self, ctx: &mut StepCtx) -> Result<Value, StepError> {
        let mut out = self.step.execute(ctx).await?;
        for _ in 1..self.repeat {
            out = self.step.execute(ctx).await?;
        }
        Ok(out)
    }
    async fn compensate(&self, ctx: &mut StepCtx) -> Result<(), StepError> {
        for _ in 0..self.repeat {
            self.step.compensate(ctx).await?;
        }
        Ok(())
    }
}

/// Demo steps retry fast so tests and demos do not wait.
const DEMO_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 4,
    initial_backoff: Duration::from_millis(20),
    max_backoff: Duration::from_millis(200),
    deadline: Duration::from_secs(60),
};

#[async_trait::async_trait]
impl Step for DemoStep {
    fn name(&self) -> &'static str {
        match self {
            DemoStep::Noop => "noop",
            DemoStep::Sleep { .. } => "sleep",
            DemoStep::Fail => "fail",
            DemoStep::Flaky { .. } => "flaky",
            DemoStep::Record => "record",
            DemoStep::DestroyLike => "destroy_like",
            DemoStep::FailCompensate => "fail_compensate",
        }
    }

    fn pivot(&self) -> bool {
        matches!(self, DemoStep::DestroyLike)
    }

    fn retry(&self) -> RetryPolicy {
        DEMO_RETRY
    }

    async fn execute(&self, ctx: &mut StepCtx) -> Result<Value, StepError> {
        match self {
            DemoStep::Noop => Ok(Value::Null),
            DemoStep::Sleep { ms, .. } => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(*ms)) => Ok(json!({ "slept_ms": ms })),
                    _ = ctx.cancel.cancelled() => Err(StepError::cancelled()),
                }
            }
            DemoStep::Fail => Err(StepError::permanent("failed on purpose (demo step `fail`)")),
            DemoStep::Flaky { failures } if ctx.attempt <= *failures => {
                Err(StepError::retryable(format!(
                    "failing on purpose, attempt {} of {} planned failures",
                    ctx.attempt, failures
                )))
            }
            DemoStep::Flaky { .. } => Ok(json!({ "attempts": ctx.attempt })),
            DemoStep::Record | DemoStep::DestroyLike => {
                let store = ctx.deps.store.clone();
                store
                    .record_test_effect(ctx.fence(), ctx.step_index as i64, "execute", now_ms())
                    .await?;
                Ok(json!({ "recorded": true }))
            }
            DemoStep::FailCompensate => Ok(Value::Null),
        }
    }

    async fn compensate(&self, ctx: &mut StepCtx) -> Result<(), StepError> {
        match self {
            DemoStep::Sleep { compensate_ms, .. } => {
                tokio::time::sleep(Duration::from_millis(*compensate_ms)).await;
                Ok(())
            }
            DemoStep::Record => {
                let store = ctx.deps.store.clone();
                store
                    .record_test_effect(ctx.fence(), ctx.step_index as i64, "compensate", now_ms())
                    .await?;
                Ok(())
            }
            DemoStep::FailCompensate => Err(StepError::permanent(
                "compensation fails on purpose (demo step `fail_compensate`)",
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_is_registered_only_when_enabled() {
        let err = Registry::default()
            .build("demo", r#"{"steps":[{"step":"noop"}]}"#)
            .err()
            .unwrap();
        assert!(matches!(err, KindError::Unknown { .. }), "{err}");
    }

    #[test]
    fn demo_inputs_are_checked_precisely() {
        let mut r = Registry::default();
        r.enable_demo();
        let (_, steps) = r
            .build(
                "demo",
                r#"{"steps":[{"step":"noop"},{"step":"destroy_like"}]}"#,
            )
            .unwrap();
        assert_eq!(
            steps.iter().map(|s| s.name()).collect::<Vec<_>>(),
            ["noop", "destroy_like"]
        );
        assert!(steps[1].pivot() && !steps[0].pivot());

        let err = r.build("nope", "{}").err().unwrap().to_string();
        assert!(
            err.contains("unknown saga kind \"nope\"") && err.contains("demo"),
            "{err}"
        );
        let err = r.build("demo", "{").err().unwrap().to_string();
        assert!(err.contains("not valid JSON"), "{err}");
        let err = r.build("demo", "{}").err().unwrap().to_string();
        assert!(err.contains("missing field `steps`"), "{err}");
        let err = r
            .build("demo", r#"{"steps":[{"step":"sleep"}]}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("missing field `ms`"), "{err}");
        let err = r
            .build("demo", r#"{"steps":[{"step":"sleep","ms":"x"}]}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("invalid type"), "{err}");
        let err = r
            .build("demo", r#"{"steps":[]}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("empty"), "{err}");
    }
}
