//! Waiting on DigitalOcean: DigitalOcean errors as step errors, pauses that can honour a
//! cancel, polling an action to its end, and posting an action to a droplet that may be busy.

use std::time::Duration;

use tokio::time::Instant;

use crate::digitalocean::{
    Action, ActionId, ActionStatus, DoApiError, DoErrorKind, DropletAction, DropletId,
};
use crate::saga::{StepCtx, StepError};

use super::Cloud;

/// A DigitalOcean failure as a step error: busy, rate limited and transient failures are
/// retried by the engine; not found, rejected and unauthorized ones are not.
pub(crate) fn do_error(what: &str, e: &DoApiError) -> StepError {
    match e.kind() {
        DoErrorKind::Conflict | DoErrorKind::RateLimited | DoErrorKind::Transient => {
            StepError::retryable(format!("{what}: {e}"))
        }
        DoErrorKind::Unauthorized => StepError::permanent(format!(
            "{what}: {e}; check the [digitalocean] token files and the token's scopes"
        )),
        DoErrorKind::NotFound | DoErrorKind::Validation => {
            StepError::permanent(format!("{what}: {e}"))
        }
    }
}

/// What a cancel does to a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnCancel {
    /// The wait ends with a `Cancelled` error (nothing is under way that must be seen out).
    Stop,
    /// The wait goes on: something was started that the step must see to its end.
    SeeItThrough,
}

/// Sleeps `d`; a cancel ends the sleep with a `Cancelled` error when `on_cancel` says so.
pub(crate) async fn pause(
    ctx: &StepCtx,
    d: Duration,
    on_cancel: OnCancel,
) -> Result<(), StepError> {
    match on_cancel {
        OnCancel::Stop => tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = ctx.cancel.cancelled() => Err(StepError::cancelled()),
        },
        OnCancel::SeeItThrough => {
            tokio::time::sleep(d).await;
            Ok(())
        }
    }
}

/// How a wait for an action went.
#[derive(Debug, Clone)]
pub(crate) struct Waited {
    pub action: Action,
    /// `GET /v2/actions/{id}` calls made.
    pub polls: u32,
}

/// Polls `GET /v2/actions/{id}` every poll interval until the action is `completed` or
/// `errored` (an `errored` action is returned, not an error: the caller decides what it
/// means). `just_posted` waits one interval before the first look. Gives up after `timeout`.
pub(crate) async fn wait_action(
    ctx: &StepCtx,
    cloud: &Cloud,
    id: ActionId,
    what: &str,
    timeout: Duration,
    just_posted: bool,
    on_cancel: OnCancel,
) -> Result<Waited, StepError> {
    let deadline = Instant::now() + timeout;
    let mut polls = 0;
    let mut first = true;
    loop {
        if !first || just_posted {
            pause(ctx, cloud.pace.poll, on_cancel).await?;
        }
        first = false;
        let action = cloud
            .api
            .get_action(id)
            .await
            .map_err(|e| do_error(&format!("cannot read {what} (action {id})"), &e))?;
        polls += 1;
        match action.status {
            ActionStatus::Completed | ActionStatus::Errored => {
                return Ok(Waited { action, polls });
            }
            ActionStatus::InProgress | ActionStatus::Unknown => {}
        }
        if Instant::now() >= deadline {
            return Err(StepError::permanent(format!(
                "{what} (action {id}) still runs after {}s; giving up (raise the [droplets] \
                 timeouts if digitalocean is this slow)",
                timeout.as_secs()
            )));
        }
    }
}

/// Posts `action` to droplet `id`. A droplet runs one action at a time: while another runs
/// (422 "pending event"), waits and posts again, backing off from the poll interval, until
/// the action timeout. A failure that may have reached DigitalOcean is returned as is (the
/// caller must look before posting again).
pub(crate) async fn post_action(
    ctx: &StepCtx,
    cloud: &Cloud,
    id: DropletId,
    action: &DropletAction,
    on_cancel: OnCancel,
) -> Result<Action, DoApiError> {
    let deadline = Instant::now() + cloud.pace.action_timeout;
    let mut wait = cloud.pace.poll;
    loop {
        match cloud.api.droplet_action(id, action).await {
            Err(e) if e.kind() == DoErrorKind::Conflict && Instant::now() + wait < deadline => {
                tracing::debug!(droplet = %id, action = action.kind(), "droplet busy, posting later");
                if pause(ctx, wait, on_cancel).await.is_err() {
                    return Err(e);
                }
                wait = (wait * 2).min(cloud.pace.poll * 8);
            }
            other => return other,
        }
    }
}
