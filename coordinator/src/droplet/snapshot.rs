//! `CreateDropletSnapshot`: a snapshot under a name unique to the saga, adopted if an earlier
//! attempt made it; the action is checkpointed and polled, then the snapshot found in the
//! droplet's listing (which lags the action). Compensation deletes it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::digitalocean::{
    ActionId, ActionStatus, DoErrorKind, DropletAction, DropletId, DropletSnapshot, ImageKind,
    Patience, SnapshotId,
};
use crate::saga::{RetryPolicy, Step, StepCtx, StepError};

use super::poll::{OnCancel, do_error, pause, post_action, wait_action};
use super::{Cloud, DropletRef, checkpoint, cloud, own_output, save, snapshot_name};

/// Snapshots of big droplets take an hour and more.
const SNAPSHOT_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 8,
    initial_backoff: Duration::from_secs(2),
    max_backoff: Duration::from_secs(120),
    deadline: Duration::from_secs(3 * 3600),
};

#[derive(Debug, Default, Serialize, Deserialize)]
struct SnapshotCheckpoint {
    /// A snapshot action went out and may have taken effect before its id was recorded.
    #[serde(default)]
    posting: bool,
    action_id: Option<u64>,
    snapshot_id: Option<u64>,
    /// Snapshots of this name this saga deleted (duplicates, compensation): deleted ones stay
    /// listed for a while and must not be picked again.
    #[serde(default)]
    deleted: Vec<u64>,
}

pub(crate) struct CreateDropletSnapshot {
    pub droplet: DropletRef,
    pub label: Option<String>,
}

/// Looks for the snapshot `name` of droplet `id` (type `snapshot`, not deleted by this saga),
/// listing again while none shows, within `patience`. Without a name match, a single snapshot
/// created when the action started is taken. Duplicates (an action posted twice) are deleted,
/// keeping the one made by `started_at`'s action, else the oldest.
async fn find(
    ctx: &mut StepCtx,
    cloud: &Cloud,
    cp: &mut SnapshotCheckpoint,
    id: DropletId,
    name: &str,
    started_at: Option<DateTime<Utc>>,
    patience: Patience,
) -> Result<Option<DropletSnapshot>, StepError> {
    let mut found = Vec::new();
    for attempt in 1..=patience.attempts {
        if attempt > 1 {
            pause(ctx, patience.interval, OnCancel::SeeItThrough).await?;
        }
        let listed: Vec<DropletSnapshot> = cloud
            .api
            .list_droplet_snapshots(id)
            .await
            .map_err(|e| do_error(&format!("cannot list the snapshots of droplet {id}"), &e))?
            .into_iter()
            .filter(|s| s.kind == ImageKind::Snapshot && !cp.deleted.contains(&s.id))
            .collect();
        found = listed.iter().filter(|s| s.name == name).cloned().collect();
        if found.is_empty()
            && let Some(at) = started_at
        {
            let same_time: Vec<_> = listed.into_iter().filter(|s| s.created_at == at).collect();
            if same_time.len() == 1 {
                found = same_time;
            }
        }
        if !found.is_empty() {
            break;
        }
    }
    found.sort_by_key(|s| (Some(s.created_at) != started_at, s.created_at, s.id));
    let mut found = found.into_iter();
    let keep = found.next();
    for extra in found {
        delete(ctx, cloud, cp, extra.id).await?;
    }
    Ok(keep)
}

async fn delete(
    ctx: &mut StepCtx,
    cloud: &Cloud,
    cp: &mut SnapshotCheckpoint,
    snapshot: u64,
) -> Result<(), StepError> {
    cloud
        .api
        .delete_snapshot(&SnapshotId::from(snapshot))
        .await
        .map_err(|e| do_error(&format!("cannot delete snapshot {snapshot}"), &e))?;
    if !cp.deleted.contains(&snapshot) {
        cp.deleted.push(snapshot);
    }
    save(ctx, cp).await?;
    ctx.progress(
        &format!("deleted snapshot {snapshot}"),
        &json!({ "phase": "delete" }),
    )
    .await
}

impl CreateDropletSnapshot {
    fn output(id: DropletId, name: &str, cp: &SnapshotCheckpoint, s: &DropletSnapshot) -> Value {
        json!({
            "droplet_id": id.0,
            "snapshot_id": s.id,
            "snapshot_name": name,
            "action_id": cp.action_id,
            "size_gigabytes": s.size_gigabytes,
            "created_at": s.created_at,
        })
    }
}

#[async_trait::async_trait]
impl Step for CreateDropletSnapshot {
    fn name(&self) -> &'static str {
        "create_droplet_snapshot"
    }

    fn retry(&self) -> RetryPolicy {
        SNAPSHOT_RETRY
    }

    async fn execute(&self, ctx: &mut StepCtx) -> Result<Value, StepError> {
        let cloud = cloud(ctx)?;
        let id = self.droplet.resolve(ctx)?;
        let name = snapshot_name(id, &ctx.saga_id, self.label.as_deref());
        let mut cp: SnapshotCheckpoint = checkpoint(ctx);
        let mut just_posted = false;
        if cp.action_id.is_none() {
            // Adopt: an earlier attempt may have made it (or posted the action) and died.
            let patience = if cp.posting {
                cloud.pace.lookup
            } else {
                Patience::ONCE
            };
            if let Some(s) = find(ctx, &cloud, &mut cp, id, &name, None, patience).await? {
                cp.snapshot_id = Some(s.id);
                save(ctx, &cp).await?;
                ctx.progress(
                    &format!("adopted snapshot {} ({name})", s.id),
                    &json!({ "phase": "adopt" }),
                )
                .await?;
                return Ok(Self::output(id, &name, &cp, &s));
            }
            ctx.check_cancelled()?;
            let earlier_post = cp.posting;
            cp.posting = true;
            save(ctx, &cp).await?;
            let action = DropletAction::Snapshot { name: name.clone() };
            // After a post that may have reached DigitalOcean, a busy droplet may be busy with
            // that very snapshot: no waiting to post again here; the engine retries, and the
            // next attempt looks for the snapshot first.
            let posted = if earlier_post {
                cloud.api.droplet_action(id, &action).await
            } else {
                post_action(ctx, &cloud, id, &action, OnCancel::Stop).await
            };
            match posted {
                Ok(a) => {
                    cp.action_id = Some(a.id.0);
                    save(ctx, &cp).await?;
                    ctx.progress(
                        &format!("snapshot {name} started (action {})", a.id),
                        &json!({ "phase": "snapshot" }),
                    )
                    .await?;
                    just_posted = true;
                }
                Err(e)
                    if e.may_have_applied()
                        || earlier_post && e.kind() == DoErrorKind::Conflict =>
                {
                    return Err(StepError::retryable(format!(
                        "the snapshot action may have reached digitalocean ({e}); the next \
                         attempt looks for {name} before posting again"
                    )));
                }
                Err(e) => {
                    ctx.check_cancelled()?;
                    cp.posting = false;
                    save(ctx, &cp).await?;
                    return Err(do_error(&format!("cannot snapshot droplet {id}"), &e));
                }
            }
        }
        let action = ActionId(cp.action_id.expect("set above"));
        // Not cancellable from here: the snapshot is coming; once found, compensation deletes it.
        let waited = wait_action(
            ctx,
            &cloud,
            action,
            "the snapshot",
            cloud.pace.action_timeout,
            just_posted,
            OnCancel::SeeItThrough,
        )
        .await?;
        if waited.action.status == ActionStatus::Errored {
            cp.posting = false;
            cp.action_id = None;
            save(ctx, &cp).await?;
            return Err(StepError::permanent(format!(
                "digitalocean failed the snapshot of droplet {id} (action {action} errored); no \
                 snapshot was made: retry the saga to try again"
            )));
        }
        let started_at = waited.action.started_at;
        match find(
            ctx,
            &cloud,
            &mut cp,
            id,
            &name,
            started_at,
            cloud.pace.lookup,
        )
        .await?
        {
            Some(s) => {
                cp.snapshot_id = Some(s.id);
                save(ctx, &cp).await?;
                ctx.progress(
                    &format!("snapshot {} ({name}) is listed", s.id),
                    &json!({ "phase": "found" }),
                )
                .await?;
                Ok(Self::output(id, &name, &cp, &s))
            }
            None => Err(StepError::retryable(format!(
                "snapshot {name} is not listed yet although its action {action} completed; \
                 looking again"
            ))),
        }
    }

    async fn compensate(&self, ctx: &mut StepCtx) -> Result<(), StepError> {
        let cloud = cloud(ctx)?;
        let id = self.droplet.resolve(ctx)?;
        let mut cp: SnapshotCheckpoint = checkpoint(ctx);
        if cp.snapshot_id.is_none() {
            cp.snapshot_id = own_output(ctx)["snapshot_id"].as_u64();
        }
        let snapshot = match cp.snapshot_id {
            Some(s) => Some(s),
            None if cp.posting || cp.action_id.is_some() => {
                let name = snapshot_name(id, &ctx.saga_id, self.label.as_deref());
                let patience = cloud.pace.lookup;
                find(ctx, &cloud, &mut cp, id, &name, None, patience)
                    .await?
                    .map(|s| s.id)
            }
            None => None,
        };
        if let Some(s) = snapshot
            && !cp.deleted.contains(&s)
        {
            delete(ctx, &cloud, &mut cp, s).await?;
        }
        Ok(())
    }
}
