//! The step that ends each `archive.verify` saga: the agent's verdict recorded in
//! `archive_checks` (the authority retention consults), and for a failed archive the label
//! [`VERIFY_FAILED_LABEL`] added to its metadata in the bucket, for people and other tools.
//! A verify that could not run never reaches this step: its agent step failed.

use std::sync::Arc;

use berth_shared::archive::ArchiveId;
use serde_json::{Value, json};

use super::Catalog;
use crate::saga::{Step, StepCtx, StepError};
use crate::store::ArchiveCheck;

/// The label a failed verification adds to an archive's metadata.
pub const VERIFY_FAILED_LABEL: &str = "verify-failed";

/// Longest problem text kept (the agent names an entry, which an archive controls).
const MAX_PROBLEM: usize = 2048;

/// `problem` as it is kept and shown: control characters escaped (an entry's name comes from
/// the archive, and no control character reaches a terminal) and at most [`MAX_PROBLEM`]
/// bytes.
fn clean(problem: &str) -> String {
    let mut p = String::with_capacity(problem.len().min(MAX_PROBLEM));
    for c in problem.chars() {
        if p.len() >= MAX_PROBLEM {
            p.push('…');
            break;
        }
        if c.is_control() {
            p.extend(c.escape_default());
        } else {
            p.push(c);
        }
    }
    p
}

/// `archive_check`: records the verdict of the `archive_verify` step before it.
#[derive(Debug, Clone, Copy)]
pub struct CheckStep;

#[async_trait::async_trait]
impl Step for CheckStep {
    fn name(&self) -> &'static str {
        "archive_check"
    }

    async fn execute(&self, ctx: &mut StepCtx) -> Result<Value, StepError> {
        let uuid = ctx.inputs["uuid"]
            .as_str()
            .and_then(|u| ArchiveId::new(u).ok())
            .ok_or_else(|| StepError::permanent("the saga's inputs name no valid uuid"))?;
        let host_id = ctx.inputs["host_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let verdict = ctx.outputs.first().cloned().unwrap_or(Value::Null);
        let Some(ok) = verdict["ok"].as_bool() else {
            return Err(StepError::permanent(
                "the archive_verify step's output has no `ok`; the agent is too old or the \
                 output was damaged",
            ));
        };
        let problem = verdict["problem"].as_str().map(clean);
        let check = ArchiveCheck {
            uuid: uuid.to_string(),
            saga_id: ctx.saga_id.clone(),
            host_id,
            checked_at_ms: berth_shared::time::unix_ms(std::time::SystemTime::now()),
            ok,
            problem: problem.clone(),
        };
        ctx.deps
            .store
            .record_archive_check(ctx.fence(), &check)
            .await?;
        if ok {
            // A host without the identity of an encrypted archive checked its stored
            // checksum only.
            let checksum_only = verdict["checksum_only"].as_bool().unwrap_or(false);
            return Ok(json!({ "ok": true, "checksum_only": checksum_only }));
        }
        tracing::warn!(
            saga_id = ctx.saga_id,
            uuid = %uuid,
            problem = problem.as_deref().unwrap_or(""),
            "archive failed verification; retention no longer counts it as good"
        );
        // Queued after the verdict: a crash between the two repeats the step, and the alert's
        // id (the saga's) queues it once.
        let alert = crate::alert::alert(
            "archive.verify_failed",
            format!("archive.verify_failed:{}", ctx.saga_id),
            format!(
                "archive {uuid} failed verification on {}: {}",
                check.host_id,
                problem.as_deref().unwrap_or("no detail")
            ),
            json!({ "uuid": uuid.to_string(), "host_id": check.host_id, "saga_id": ctx.saga_id }),
        );
        ctx.deps
            .store
            .queue_alert(&alert, check.checked_at_ms)
            .await?;
        let labelled = match ctx.deps.get::<Arc<Catalog>>() {
            None => json!("this coordinator has no archive store"),
            Some(catalog) => match catalog.label_failed(&uuid).await {
                Ok(true) => json!(VERIFY_FAILED_LABEL),
                Ok(false) => json!("the archive has no metadata to label"),
                // The database row is what counts; the label is a courtesy, retried by the
                // next verify.
                Err(e) => {
                    let error = crate::error::chain(&e);
                    tracing::warn!(uuid = %uuid, error, "cannot label the failed archive");
                    json!({ "error": error })
                }
            },
        };
        Ok(json!({ "ok": false, "problem": problem, "label": labelled }))
    }

    /// A record of what was found stays true whatever happens after.
    async fn compensate(&self, _ctx: &mut StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn problems_are_kept_without_control_characters_and_bounded() {
        assert_eq!(
            super::clean("archive entry \"a\u{1b}[2Jb\nc\" is refused"),
            "archive entry \"a\\u{1b}[2Jb\\nc\" is refused"
        );
        let long = super::clean(&"x".repeat(10_000));
        assert!(long.len() <= super::MAX_PROBLEM + 3 && long.ends_with('…'));
    }
}
