//! `ResizeDroplet`: power off, resize, power on, waiting for each action. Each phase and
//! action id is checkpointed, so a restart resumes polling the action it left; before posting
//! an action the droplet is read, so one that already took effect is not posted again.
//! Without `disk` the resize is undone by resizing back; with it (permanent), it is a pivot.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::digitalocean::{ActionId, ActionStatus, DropletAction, DropletId, DropletStatus};
use crate::saga::{RetryPolicy, Step, StepCtx, StepError};

use super::poll::{OnCancel, do_error, post_action, wait_action};
use super::{Cloud, DropletRef, checkpoint, cloud, own_output, save};

const RESIZE_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 10,
    initial_backoff: Duration::from_secs(2),
    max_backoff: Duration::from_secs(60),
    deadline: Duration::from_secs(2 * 3600),
};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    #[default]
    PowerOff,
    Resize,
    PowerOn,
    Done,
}

/// One pass: to `size`, through the phases.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Leg {
    size: String,
    disk: bool,
    phase: Phase,
    /// The action of the current phase, once posted.
    action_id: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ResizeCheckpoint {
    /// Read before anything was done.
    from_size: Option<String>,
    was_off: bool,
    forward: Leg,
    /// Compensation's pass back to `from_size`.
    undo: Option<Leg>,
}

pub(crate) struct ResizeDroplet {
    pub droplet: DropletRef,
    pub size_slug: String,
    pub disk: bool,
}

/// Which resize a call works on: the step's own, or its compensation's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Forward,
    Undo,
}

/// Whether the droplet's state is known to need the current phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Read just before, or the previous action of this run just completed.
    Known,
    /// Read it before acting.
    Unread,
}

fn leg(cp: &mut ResizeCheckpoint, way: Way) -> &mut Leg {
    match way {
        Way::Undo => cp.undo.get_or_insert_with(Leg::default),
        Way::Forward => &mut cp.forward,
    }
}

/// Drives one leg to `Done`. Cancels are honoured only before the first action is posted.
/// With `State::Known` the droplet's state is not read again first.
async fn drive(
    ctx: &mut StepCtx,
    cloud: &Cloud,
    id: DropletId,
    cp: &mut ResizeCheckpoint,
    way: Way,
    mut state: State,
) -> Result<(), StepError> {
    loop {
        let l = leg(cp, way).clone();
        let next = match l.phase {
            Phase::PowerOff => Phase::Resize,
            Phase::Resize => Phase::PowerOn,
            Phase::PowerOn | Phase::Done => Phase::Done,
        };
        let action = match l.phase {
            Phase::Done => return Ok(()),
            Phase::PowerOff => DropletAction::PowerOff,
            Phase::Resize => DropletAction::Resize {
                size: l.size.clone(),
                disk: l.disk,
            },
            Phase::PowerOn => DropletAction::PowerOn,
        };
        let mut just_posted = false;
        if l.action_id.is_none() {
            // Has it already happened (an action posted before a crash, or nothing to do)?
            let done = if state == State::Known {
                cp.was_off && matches!(l.phase, Phase::PowerOff | Phase::PowerOn)
            } else {
                let d = cloud
                    .api
                    .get_droplet(id)
                    .await
                    .map_err(|e| do_error(&format!("cannot read droplet {id}"), &e))?;
                match l.phase {
                    Phase::PowerOff => d.status == DropletStatus::Off,
                    Phase::Resize => d.size_slug == l.size,
                    Phase::PowerOn => cp.was_off || d.status == DropletStatus::Active,
                    Phase::Done => true,
                }
            };
            if done {
                leg(cp, way).phase = next;
                save(ctx, cp).await?;
                continue;
            }
            let first = way == Way::Forward && l.phase == Phase::PowerOff;
            if first {
                ctx.check_cancelled()?;
            }
            let on_cancel = if first {
                OnCancel::Stop
            } else {
                OnCancel::SeeItThrough
            };
            let posted = post_action(ctx, cloud, id, &action, on_cancel)
                .await
                .map_err(|e| {
                    let what = format!("cannot {} droplet {id}", action.kind().replace('_', " "));
                    do_error(&what, &e)
                })?;
            leg(cp, way).action_id = Some(posted.id.0);
            save(ctx, cp).await?;
            ctx.progress(
                &format!(
                    "{} of droplet {id} started (action {})",
                    action.kind(),
                    posted.id
                ),
                &json!({ "phase": action.kind() }),
            )
            .await?;
            just_posted = true;
        }
        let action_id = ActionId(leg(cp, way).action_id.expect("posted above"));
        let what = format!("the {} of droplet {id}", action.kind());
        let waited = wait_action(
            ctx,
            cloud,
            action_id,
            &what,
            cloud.pace.action_timeout,
            just_posted,
            OnCancel::SeeItThrough,
        )
        .await?;
        leg(cp, way).action_id = None;
        if waited.action.status == ActionStatus::Errored {
            save(ctx, cp).await?;
            return Err(errored(ctx, cloud, id, cp, way, &what, action_id).await);
        }
        leg(cp, way).phase = next;
        save(ctx, cp).await?;
        state = State::Known;
    }
}

/// An action errored. A failed power off or resize leaves the droplet at its old size: it is
/// powered back on if this step powered it off, and the step fails for good. A failed power
/// on is retried.
async fn errored(
    ctx: &mut StepCtx,
    cloud: &Cloud,
    id: DropletId,
    cp: &mut ResizeCheckpoint,
    way: Way,
    what: &str,
    action: ActionId,
) -> StepError {
    let phase = leg(cp, way).phase;
    match phase {
        Phase::PowerOn => {
            return StepError::retryable(format!("{what} (action {action}) errored; trying again"));
        }
        Phase::PowerOff | Phase::Done => {
            return StepError::permanent(format!(
                "{what} (action {action}) errored at digitalocean; the droplet was not resized"
            ));
        }
        Phase::Resize => {}
    }
    if !cp.was_off {
        leg(cp, way).phase = Phase::PowerOn;
        if let Err(e) = save(ctx, cp).await {
            return e;
        }
        if let Err(e) = Box::pin(drive(ctx, cloud, id, cp, way, State::Known)).await {
            return StepError::permanent(format!(
                "{what} (action {action}) errored, and powering the droplet back on failed too: \
                 {}",
                e.message
            ));
        }
    }
    StepError::permanent(format!(
        "{what} (action {action}) errored at digitalocean; the droplet keeps its old size{}",
        if cp.was_off {
            ""
        } else {
            " and was powered back on"
        }
    ))
}

impl ResizeDroplet {
    fn output(&self, id: DropletId, cp: &ResizeCheckpoint) -> Value {
        json!({
            "droplet_id": id.0,
            "from_size_slug": cp.from_size,
            "size_slug": self.size_slug,
            "disk": self.disk,
            "powered_on": !cp.was_off,
        })
    }
}

#[async_trait::async_trait]
impl Step for ResizeDroplet {
    fn name(&self) -> &'static str {
        "resize_droplet"
    }

    /// A disk resize cannot be undone.
    fn pivot(&self) -> bool {
        self.disk
    }

    fn retry(&self) -> RetryPolicy {
        RESIZE_RETRY
    }

    async fn execute(&self, ctx: &mut StepCtx) -> Result<Value, StepError> {
        let cloud = cloud(ctx)?;
        let id = self.droplet.resolve(ctx)?;
        let mut cp: ResizeCheckpoint = checkpoint(ctx);
        let mut state = State::Unread;
        if cp.from_size.is_none() {
            let d = cloud
                .api
                .get_droplet(id)
                .await
                .map_err(|e| do_error(&format!("cannot read droplet {id}"), &e))?;
            cp.from_size = Some(d.size_slug.clone());
            cp.was_off = d.status == DropletStatus::Off;
            cp.forward = Leg {
                size: self.size_slug.clone(),
                disk: self.disk,
                // Already at the size: nothing to power off.
                phase: if d.size_slug == self.size_slug {
                    Phase::Done
                } else {
                    Phase::PowerOff
                },
                action_id: None,
            };
            save(ctx, &cp).await?;
            state = State::Known;
        }
        drive(ctx, &cloud, id, &mut cp, Way::Forward, state).await?;
        Ok(self.output(id, &cp))
    }

    /// Resizes back to the size before (only without `disk`; with it the step is a pivot).
    async fn compensate(&self, ctx: &mut StepCtx) -> Result<(), StepError> {
        let mut cp: ResizeCheckpoint = checkpoint(ctx);
        if cp.from_size.is_none() {
            let out = own_output(ctx);
            cp.from_size = out["from_size_slug"].as_str().map(str::to_owned);
            cp.was_off = out["powered_on"] == false;
        }
        let Some(from) = cp.from_size.clone() else {
            return Ok(());
        };
        if from == self.size_slug || self.disk {
            return Ok(());
        }
        let cloud = cloud(ctx)?;
        let id = self.droplet.resolve(ctx)?;
        if cp.undo.is_none() {
            cp.undo = Some(Leg {
                size: from,
                disk: false,
                phase: Phase::PowerOff,
                action_id: None,
            });
            save(ctx, &cp).await?;
        }
        drive(ctx, &cloud, id, &mut cp, Way::Undo, State::Unread).await
    }
}
