//! The step that follows each archive create: the configured retention for the app, applied
//! now that a newer good archive exists. It never fails its saga: the archive is made either
//! way, so a store that cannot be pruned is reported in the step's output and the logs, and
//! the next archive (or `berth archive prune`) tries again.

use std::sync::Arc;
use std::time::SystemTime;

use berth_shared::AppName;
use berth_shared::archive::{RetentionError, RetentionPolicy, parse_timezone};
use berth_shared::time::unix_ms;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Catalog, PruneMode};
use crate::saga::{Step, StepCtx, StepError};

/// An `archive.create` saga's own retention rules (a schedule's), in its inputs as
/// `retention`; rules left out fall back to the coordinator's `[archive]` defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionInputs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_secs: Option<u64>,
    /// IANA zone the tiers count in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

impl RetentionInputs {
    /// The `retention` of a saga's inputs, if any; refused when it is not well formed.
    pub fn of(inputs: &Value) -> Result<Option<RetentionInputs>, String> {
        match inputs.get("retention") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                let r: RetentionInputs =
                    serde_json::from_value(v.clone()).map_err(|e| format!("retention: {e}"))?;
                r.policy().map_err(|e| format!("retention: {e}"))?;
                Ok(Some(r))
            }
        }
    }

    pub fn policy(&self) -> Result<RetentionPolicy, RetentionError> {
        Ok(RetentionPolicy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within_secs: self.keep_within_secs,
            timezone: self.timezone.as_deref().map(parse_timezone).transpose()?,
        })
    }
}

/// `archive_retention`: prunes the saga's app with its own rules (a schedule's) over the
/// coordinator's retention defaults. After a run that found its source unchanged, it first
/// records that the matched archive covers this run (`archive_covers`).
#[derive(Debug, Clone, Copy)]
pub struct RetentionStep;

#[async_trait::async_trait]
impl Step for RetentionStep {
    fn name(&self) -> &'static str {
        "archive_retention"
    }

    async fn execute(&self, ctx: &mut StepCtx) -> Result<Value, StepError> {
        let app = ctx.inputs["app"]
            .as_str()
            .and_then(|a| AppName::new(a).ok())
            .ok_or_else(|| StepError::permanent("the saga's inputs name no valid app"))?;
        let Some(catalog) = ctx.deps.get::<Arc<Catalog>>().cloned() else {
            return Ok(json!({ "skipped": "this coordinator has no archive store" }));
        };
        // A run that found its source unchanged made no archive: the one it matched stands
        // for this run in the tiers it would have filled.
        if let Some(since) = ctx
            .outputs
            .first()
            .and_then(|o| o["unchanged_since"].as_str())
        {
            let at = unix_ms(SystemTime::now());
            if let Err(e) = ctx
                .deps
                .store
                .add_archive_cover(&ctx.saga_id, since, at)
                .await
            {
                return Err(StepError::retryable(format!(
                    "cannot record the unchanged run: {e}"
                )));
            }
        }
        // Checked when the saga started.
        let own = RetentionInputs::of(&ctx.inputs)
            .ok()
            .flatten()
            .and_then(|r| r.policy().ok())
            .unwrap_or_default();
        if own.or(catalog.config().retention()).is_empty() {
            return Ok(json!({
                "skipped": "no retention configured ([archive] keep_last, keep_daily, … keep_within_secs)"
            }));
        }
        let now = unix_ms(SystemTime::now()) / 1000;
        match catalog.prune(Some(&app), own, PruneMode::Delete, now).await {
            Ok(outcome) => Ok(json!({
                "deleted": outcome
                    .deleted
                    .iter()
                    .map(|e| e.key.id().to_string())
                    .collect::<Vec<_>>(),
                "kept": outcome.kept.len(),
            })),
            Err(e) => {
                let error = crate::error::chain(&e);
                tracing::warn!(app = %app, error, "retention after the archive failed; \
                    the next archive or `berth archive prune` will try again");
                Ok(json!({ "error": error }))
            }
        }
    }

    /// Deleted archives cannot come back; the step is the saga's last, so nothing after it
    /// can fail and ask for this.
    async fn compensate(&self, _ctx: &mut StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}
