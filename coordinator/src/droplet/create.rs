//! `CreateDroplet` (adopt a droplet carrying the saga's tag, else create one; compensation
//! destroys it) and `WaitDropletActive` (until the droplet is `active` with a public IPv4).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::digitalocean::{
    ActionId, ActionStatus, Deleted, DropletId, Patience, find_droplets_by_tag,
};
use crate::saga::{RetryPolicy, Step, StepCtx, StepError};

use super::poll::{OnCancel, do_error, pause, wait_action};
use super::{DropletRef, ProvisionInputs, checkpoint, cloud, own_output, saga_tag, save};

/// Creates are retried after a lost answer (the tag lookup then adopts); waits are long.
const CREATE_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 8,
    initial_backoff: Duration::from_secs(1),
    max_backoff: Duration::from_secs(30),
    deadline: Duration::from_secs(20 * 60),
};

const WAIT_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 6,
    initial_backoff: Duration::from_secs(2),
    max_backoff: Duration::from_secs(60),
    deadline: Duration::from_secs(60 * 60),
};

/// What `CreateDroplet` remembers between attempts.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CreateCheckpoint {
    droplet_id: Option<u64>,
    create_action_id: Option<u64>,
    /// A create request went out and may have taken effect.
    #[serde(default)]
    create_sent: bool,
    #[serde(default)]
    adopted: bool,
    /// Droplets this saga destroyed: they linger in tag listings for a while, and must never
    /// be adopted.
    #[serde(default)]
    destroyed: Vec<u64>,
}

pub(crate) struct CreateDroplet {
    pub inputs: ProvisionInputs,
}

/// The secret (see `saga::secrets`) that holds the droplet's cloud-init user data.
const USER_DATA: &str = "user_data";

impl CreateDroplet {
    /// The user data to create with: sealed in the saga's secrets when the inputs say it was
    /// given (`user_data_bytes`).
    async fn user_data(&self, ctx: &StepCtx) -> Result<Option<String>, StepError> {
        if self.inputs.user_data_bytes.is_none() {
            return Ok(self.inputs.user_data.clone());
        }
        match ctx.deps.store.saga_secret(&ctx.saga_id, USER_DATA).await {
            Ok(Some(u)) => Ok(Some(u)),
            Ok(None) => Err(StepError::permanent(
                "the saga's user_data is gone (it is dropped once its droplet exists); start a \
                 new provision with the user data again",
            )),
            Err(e) => Err(StepError::retryable(format!(
                "cannot read the user data: {e}"
            ))),
        }
    }

    fn output(&self, ctx: &StepCtx, cp: &CreateCheckpoint) -> Value {
        json!({
            "droplet_id": cp.droplet_id,
            "name": self.inputs.name,
            "tag": saga_tag(&ctx.saga_id),
            "create_action_id": cp.create_action_id,
            "adopted": cp.adopted,
        })
    }

    /// Destroys `id` and remembers it as destroyed by this saga.
    async fn destroy(
        ctx: &mut StepCtx,
        cp: &mut CreateCheckpoint,
        id: DropletId,
    ) -> Result<(), StepError> {
        let cloud = cloud(ctx)?;
        let gone = cloud
            .api
            .destroy_droplet(id)
            .await
            .map_err(|e| do_error(&format!("cannot destroy droplet {id}"), &e))?;
        if !cp.destroyed.contains(&id.0) {
            cp.destroyed.push(id.0);
        }
        save(ctx, cp).await?;
        let how = if gone == Deleted::AlreadyGone {
            "was already gone"
        } else {
            "destroyed"
        };
        ctx.progress(
            &format!("droplet {id} {how}"),
            &json!({ "phase": "destroy" }),
        )
        .await
    }

    /// The droplets carrying the saga's tag that this saga did not destroy, oldest first.
    async fn tagged(
        ctx: &StepCtx,
        cp: &CreateCheckpoint,
        patience: Patience,
    ) -> Result<Vec<DropletId>, StepError> {
        let cloud = cloud(ctx)?;
        let tag = saga_tag(&ctx.saga_id);
        let found = find_droplets_by_tag(&*cloud.api, &tag, patience)
            .await
            .map_err(|e| do_error(&format!("cannot list droplets tagged {tag}"), &e))?;
        let mut ids: Vec<DropletId> = found
            .into_iter()
            .map(|d| d.id)
            .filter(|id| !cp.destroyed.contains(&id.0))
            .collect();
        ids.sort();
        Ok(ids)
    }
}

#[async_trait::async_trait]
impl Step for CreateDroplet {
    fn name(&self) -> &'static str {
        "create_droplet"
    }

    fn retry(&self) -> RetryPolicy {
        CREATE_RETRY
    }

    async fn execute(&self, ctx: &mut StepCtx) -> Result<Value, StepError> {
        let cloud = cloud(ctx)?;
        let mut cp: CreateCheckpoint = checkpoint(ctx);
        if cp.droplet_id.is_some() {
            return Ok(self.output(ctx, &cp));
        }
        // Adopt first: an earlier attempt may have created the droplet and died before
        // recording it. Listings lag creates, so look patiently when a create went out.
        let patience = if cp.create_sent {
            cloud.pace.lookup
        } else {
            Patience::ONCE
        };
        let found = Self::tagged(ctx, &cp, patience).await?;
        if let Some((first, extra)) = found.split_first() {
            cp.droplet_id = Some(first.0);
            cp.adopted = true;
            save(ctx, &cp).await?;
            ctx.progress(
                &format!("adopted droplet {first}, which an earlier attempt created"),
                &json!({ "phase": "adopt" }),
            )
            .await?;
            // A create sent twice made two: keep the oldest, destroy the others.
            for id in extra {
                Self::destroy(ctx, &mut cp, *id).await?;
            }
            return Ok(self.output(ctx, &cp));
        }
        ctx.check_cancelled()?;
        let user_data = self.user_data(ctx).await?;
        cp.create_sent = true;
        save(ctx, &cp).await?;
        let request = self
            .inputs
            .create_request(&saga_tag(&ctx.saga_id), user_data);
        match cloud.api.create_droplet(&request).await {
            Ok(created) => {
                cp.droplet_id = Some(created.droplet.id.0);
                cp.create_action_id = created.action_id.map(|a| a.0);
                save(ctx, &cp).await?;
                // The droplet exists: its user data is needed no more.
                if let Err(e) = ctx
                    .deps
                    .store
                    .drop_saga_secret(&ctx.saga_id, USER_DATA)
                    .await
                {
                    tracing::warn!(saga_id = ctx.saga_id, error = %e, "cannot drop the user data");
                }
                ctx.progress(
                    &format!("created droplet {}", created.droplet.id),
                    &json!({ "phase": "create" }),
                )
                .await?;
                Ok(self.output(ctx, &cp))
            }
            Err(e) if e.may_have_applied() => Err(StepError::retryable(format!(
                "the create may have reached digitalocean ({e}); the next attempt looks for the \
                 droplet by its tag before creating again"
            ))),
            Err(e) => {
                // Surely not created: no need to look patiently next time.
                cp.create_sent = false;
                save(ctx, &cp).await?;
                Err(do_error("cannot create the droplet", &e))
            }
        }
    }

    async fn compensate(&self, ctx: &mut StepCtx) -> Result<(), StepError> {
        let mut cp: CreateCheckpoint = checkpoint(ctx);
        if cp.droplet_id.is_none() {
            cp.droplet_id = own_output(ctx)["droplet_id"].as_u64();
        }
        let mut ids: Vec<DropletId> = cp.droplet_id.map(DropletId).into_iter().collect();
        if cp.create_sent && ids.is_empty() {
            let patience = cloud(ctx)?.pace.lookup;
            ids = Self::tagged(ctx, &cp, patience).await?;
        }
        for id in ids {
            if !cp.destroyed.contains(&id.0) {
                Self::destroy(ctx, &mut cp, id).await?;
            }
        }
        Ok(())
    }
}

/// What `WaitDropletActive` remembers: when the wait began (its deadline counts from there).
#[derive(Debug, Default, Serialize, Deserialize)]
struct WaitCheckpoint {
    since_ms: i64,
}

pub(crate) struct WaitDropletActive {
    pub droplet: DropletRef,
    /// The `CreateDroplet` step whose create action to follow, if any.
    pub create_step: Option<usize>,
}

#[async_trait::async_trait]
impl Step for WaitDropletActive {
    fn name(&self) -> &'static str {
        "wait_droplet_active"
    }

    fn retry(&self) -> RetryPolicy {
        WAIT_RETRY
    }

    /// First the create action (one call per poll, and an `errored` create is seen at once),
    /// then the droplet until it shows a public IPv4 (usually the first look).
    async fn execute(&self, ctx: &mut StepCtx) -> Result<Value, StepError> {
        let cloud = cloud(ctx)?;
        let id = self.droplet.resolve(ctx)?;
        let resumed = ctx.checkpoint.is_some();
        let mut cp: WaitCheckpoint = checkpoint(ctx);
        let now = crate::saga::step::now_ms();
        if !resumed {
            cp.since_ms = now;
            save(ctx, &cp).await?;
        }
        let timeout = cloud.pace.active_timeout;
        let left = timeout.saturating_sub(Duration::from_millis((now - cp.since_ms).max(0) as u64));
        let deadline = Instant::now() + left;
        let started = Instant::now();
        let action = self
            .create_step
            .and_then(|i| ctx.outputs.get(i))
            .and_then(|o| o.get("create_action_id"))
            .and_then(Value::as_u64)
            .map(ActionId);
        let mut polls = 0;
        let mut look_now = resumed;
        if let Some(action) = action {
            let waited = wait_action(
                ctx,
                &cloud,
                action,
                "the droplet's create",
                left,
                !resumed,
                OnCancel::Stop,
            )
            .await?;
            polls += waited.polls;
            if waited.action.status == ActionStatus::Errored {
                return Err(StepError::permanent(format!(
                    "digitalocean failed to create droplet {id} (its create action {action} \
                     errored); the saga destroys it"
                )));
            }
            look_now = true;
        }
        let mut said = String::new();
        loop {
            if !look_now {
                pause(ctx, cloud.pace.poll, OnCancel::Stop).await?;
            }
            look_now = false;
            polls += 1;
            match cloud.api.get_droplet(id).await {
                Ok(d) if d.is_ready() => {
                    let ip = d.public_ipv4().map(|ip| ip.to_string());
                    ctx.progress(
                        &format!("droplet {id} is active at {}", ip.as_deref().unwrap_or("?")),
                        &json!({ "phase": "active" }),
                    )
                    .await?;
                    return Ok(json!({
                        "droplet_id": id.0,
                        "status": "active",
                        "public_ipv4": ip,
                        "polls": polls,
                        "waited_ms": started.elapsed().as_millis() as u64,
                    }));
                }
                Ok(d) => {
                    let now = format!("droplet {id} is {:?}, waiting", d.status).to_lowercase();
                    if now != said {
                        ctx.progress(&now, &json!({ "phase": "waiting" })).await?;
                        said = now;
                    }
                }
                // Reads of a just-created droplet can 404 for a while.
                Err(e) if e.is_not_found() => {
                    let grace = cloud.pace.lookup.interval * cloud.pace.lookup.attempts;
                    if started.elapsed() > grace {
                        return Err(StepError::permanent(format!(
                            "droplet {id} does not exist (was it destroyed outside berth?)"
                        )));
                    }
                }
                Err(e) => return Err(do_error(&format!("cannot read droplet {id}"), &e)),
            }
            if Instant::now() >= deadline {
                return Err(StepError::permanent(format!(
                    "droplet {id} is not active with a public ipv4 {}s after the wait began; \
                     the saga destroys it (raise [droplets] active_timeout_secs if digitalocean \
                     is this slow)",
                    timeout.as_secs()
                )));
            }
        }
    }

    async fn compensate(&self, _ctx: &mut StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}
