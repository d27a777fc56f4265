//! The step that follows each archive create: the configured retention for the app, applied
//! now that a newer good archive exists. It never fails its saga: the archive is made either
//! way, so a store that cannot be pruned is reported in the step's output and the logs, and
//! the next archive (or `berth archive prune`) tries again.

use std::sync::Arc;
use std::time::SystemTime;

use berth_shared::AppName;
use berth_shared::archive::RetentionPolicy;
use berth_shared::time::unix_ms;
use serde_json::{Value, json};

use super::{Catalog, PruneMode};
use crate::saga::{Step, StepCtx, StepError};

/// `archive_retention`: prunes the saga's app with the coordinator's retention defaults.
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
        if catalog.config().retention().is_empty() {
            return Ok(json!({
                "skipped": "no retention configured ([archive] keep_last, keep_daily, … keep_within_secs)"
            }));
        }
        let now = unix_ms(SystemTime::now()) / 1000;
        match catalog
            .prune(
                Some(&app),
                RetentionPolicy::default(),
                PruneMode::Delete,
                now,
            )
            .await
        {
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
