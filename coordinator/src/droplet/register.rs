//! The steps that keep the inventory in step with the cloud: `RegisterDroplet` (inventory row
//! and desired spec), `DestroyDroplet` (the pivot; marks the row deleted), `UpdateDesiredSize`
//! (after a resize), and `Fail` (a drill's deliberate failure).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::digitalocean::{Deleted, DropletId, NotFoundIsNone};
use crate::saga::step::now_ms;
use crate::saga::{RetryPolicy, Step, StepCtx, StepError};
use crate::store::Writer;

use super::poll::{OnCancel, do_error, pause};
use super::{
    Cloud, DropletRef, MANAGED_TAG, checkpoint, cloud, observed, own_output, resource_id, save,
};

const STORE_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 6,
    initial_backoff: Duration::from_millis(500),
    max_backoff: Duration::from_secs(10),
    deadline: Duration::from_secs(10 * 60),
};

const DESTROY_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 10,
    initial_backoff: Duration::from_secs(1),
    max_backoff: Duration::from_secs(60),
    deadline: Duration::from_secs(60 * 60),
};

fn writer(ctx: &StepCtx) -> Writer<'_> {
    Writer {
        fence: Some(ctx.fence()),
        saga_id: Some(&ctx.saga_id),
        now_ms: now_ms(),
    }
}

fn store_error(what: &str, e: crate::store::StoreError) -> StepError {
    let e = StepError::from(e);
    StepError {
        message: format!("{what}: {}", e.message),
        ..e
    }
}

pub(crate) struct RegisterDroplet {
    pub droplet: DropletRef,
    /// The desired spec: `{size_slug, region, image}` as asked for.
    pub spec: Map<String, Value>,
    /// Who records it, for the history (`saga:droplet.provision`).
    pub recorded_by: &'static str,
}

#[async_trait::async_trait]
impl Step for RegisterDroplet {
    fn name(&self) -> &'static str {
        "register_droplet"
    }

    fn retry(&self) -> RetryPolicy {
        STORE_RETRY
    }

    async fn execute(&self, ctx: &mut StepCtx) -> Result<Value, StepError> {
        let cloud = cloud(ctx)?;
        let id = self.droplet.resolve(ctx)?;
        let droplet = cloud
            .api
            .get_droplet(id)
            .await
            .map_err(|e| do_error(&format!("cannot read droplet {id}"), &e))?;
        let seen = observed(&droplet);
        let (_, spec) = ctx
            .deps
            .store
            .register_resource(writer(ctx), &seen, &self.spec, self.recorded_by)
            .await
            .map_err(|e| store_error("cannot register the droplet", e))?;
        Ok(json!({
            "droplet_id": id.0,
            "resource_id": seen.resource_id,
            "public_ipv4": seen.public_ipv4,
            "spec": spec.spec,
            "spec_version": spec.spec_version,
        }))
    }

    async fn compensate(&self, ctx: &mut StepCtx) -> Result<(), StepError> {
        let id = self.droplet.resolve(ctx)?;
        ctx.deps
            .store
            .unregister_resource(writer(ctx), &resource_id(id))
            .await
            .map_err(|e| store_error("cannot unregister the droplet", e))?;
        Ok(())
    }
}

pub(crate) struct DestroyDroplet {
    pub droplet: DropletRef,
    /// Destroy even without the `managed-by-berth` tag.
    pub force: bool,
}

impl DestroyDroplet {
    /// Reads the droplet until it answers 404 (a destroyed droplet stays readable for a few
    /// seconds), within the lookup patience. True once gone.
    async fn confirm_gone(ctx: &StepCtx, cloud: &Cloud, id: DropletId) -> Result<bool, StepError> {
        for attempt in 0..cloud.pace.lookup.attempts {
            if attempt > 0 {
                pause(
                    ctx,
                    cloud.pace.lookup.interval.min(cloud.pace.poll),
                    OnCancel::SeeItThrough,
                )
                .await?;
            }
            let read = cloud.api.get_droplet(id).await.found();
            match read {
                Ok(None) => return Ok(true),
                Ok(Some(_)) => {}
                Err(e) => return Err(do_error(&format!("cannot read droplet {id}"), &e)),
            }
        }
        Ok(false)
    }
}

#[async_trait::async_trait]
impl Step for DestroyDroplet {
    fn name(&self) -> &'static str {
        "destroy_droplet"
    }

    fn pivot(&self) -> bool {
        true
    }

    fn retry(&self) -> RetryPolicy {
        DESTROY_RETRY
    }

    async fn execute(&self, ctx: &mut StepCtx) -> Result<Value, StepError> {
        let cloud = cloud(ctx)?;
        let id = self.droplet.resolve(ctx)?;
        let read = cloud
            .api
            .get_droplet(id)
            .await
            .found()
            .map_err(|e| do_error(&format!("cannot read droplet {id}"), &e))?;
        if let Some(d) = &read
            && !self.force
            && !d.tags.iter().any(|t| t == MANAGED_TAG)
        {
            return Err(StepError::permanent(format!(
                "droplet {id} ({}) does not carry the {MANAGED_TAG} tag: berth destroys only the \
                 droplets it manages (start a droplet.destroy saga with \"force\": true to \
                 destroy it anyway)",
                d.name
            )));
        }
        let deleted = cloud
            .api
            .destroy_droplet(id)
            .await
            .map_err(|e| do_error(&format!("cannot destroy droplet {id}"), &e))?;
        let already_gone = read.is_none() || deleted == Deleted::AlreadyGone;
        let confirmed = Self::confirm_gone(ctx, &cloud, id).await?;
        let detail = json!({ "already_gone": already_gone });
        ctx.deps
            .store
            .mark_resource_deleted(writer(ctx), &resource_id(id), &detail)
            .await
            .map_err(|e| store_error("cannot mark the droplet deleted", e))?;
        let message = if already_gone {
            format!("droplet {id} was already gone")
        } else {
            format!("droplet {id} destroyed")
        };
        ctx.progress(&message, &json!({ "phase": "destroyed" }))
            .await?;
        Ok(json!({
            "droplet_id": id.0,
            "already_gone": already_gone,
            "confirmed_gone": confirmed,
        }))
    }

    /// A pivot is never compensated: a destroyed droplet cannot come back.
    async fn compensate(&self, _ctx: &mut StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}

/// What `UpdateDesiredSize` remembers: the spec's size before it, so compensation (and a
/// re-run after a crash) restores the right one.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SizeCheckpoint {
    read: bool,
    registered: bool,
    previous: Option<Value>,
}

/// Records a resize in the droplet's desired spec (`size_slug`) and refreshes its inventory
/// row. A droplet Berth never registered has no spec: nothing is recorded.
pub(crate) struct UpdateDesiredSize {
    pub droplet: DropletRef,
    pub size_slug: String,
}

#[async_trait::async_trait]
impl Step for UpdateDesiredSize {
    fn name(&self) -> &'static str {
        "update_desired_size"
    }

    fn retry(&self) -> RetryPolicy {
        STORE_RETRY
    }

    async fn execute(&self, ctx: &mut StepCtx) -> Result<Value, StepError> {
        let id = self.droplet.resolve(ctx)?;
        let rid = resource_id(id);
        let mut cp: SizeCheckpoint = checkpoint(ctx);
        let store = ctx.deps.store.clone();
        if !cp.read {
            let spec = store
                .get_desired_spec(&rid)
                .await
                .map_err(|e| store_error("cannot read the desired spec", e))?;
            cp.registered = spec.is_some();
            cp.previous = spec.and_then(|s| s.spec.get("size_slug").cloned());
            cp.read = true;
            save(ctx, &cp).await?;
        }
        if !cp.registered {
            return Ok(json!({ "droplet_id": id.0, "recorded": false }));
        }
        let set = store
            .set_desired_field(
                writer(ctx),
                &rid,
                "size_slug",
                self.size_slug.clone().into(),
                "saga:droplet.resize",
            )
            .await
            .map_err(|e| store_error("cannot record the new size", e))?;
        // The live row too, so the inventory is right before the next sync.
        if let Ok(cloud) = cloud(ctx)
            && let Ok(d) = cloud.api.get_droplet(id).await
        {
            store
                .upsert_resource(writer(ctx), &observed(&d))
                .await
                .map_err(|e| store_error("cannot refresh the inventory row", e))?;
        }
        Ok(json!({
            "droplet_id": id.0,
            "recorded": set.is_some(),
            "previous_size_slug": cp.previous,
            "spec_version": set.map(|(_, s)| s.spec_version),
        }))
    }

    async fn compensate(&self, ctx: &mut StepCtx) -> Result<(), StepError> {
        let out = own_output(ctx);
        let previous = match out["previous_size_slug"].clone() {
            Value::Null => checkpoint::<SizeCheckpoint>(ctx).previous,
            v => Some(v),
        };
        let (true, Some(previous)) = (out["recorded"] == true, previous) else {
            return Ok(());
        };
        let rid = resource_id(self.droplet.resolve(ctx)?);
        ctx.deps
            .store
            .set_desired_field(
                writer(ctx),
                &rid,
                "size_slug",
                previous,
                "saga:compensation",
            )
            .await
            .map_err(|e| store_error("cannot restore the desired size", e))?;
        Ok(())
    }
}

/// Fails on purpose, so the steps before it are undone (`droplet.drill`).
pub(crate) struct Fail;

#[async_trait::async_trait]
impl Step for Fail {
    fn name(&self) -> &'static str {
        "fail"
    }

    fn retry(&self) -> RetryPolicy {
        RetryPolicy::NONE
    }

    async fn execute(&self, _ctx: &mut StepCtx) -> Result<Value, StepError> {
        Err(StepError::permanent(
            "failed on purpose (droplet.drill): the steps before this one are undone",
        ))
    }

    async fn compensate(&self, _ctx: &mut StepCtx) -> Result<(), StepError> {
        Ok(())
    }
}
