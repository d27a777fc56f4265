//! Droplet sagas: the steps that create, wait for, register, snapshot, resize and destroy
//! DigitalOcean droplets, and the saga kinds made of them (`droplet.provision`,
//! `droplet.destroy`, `droplet.snapshot`, `droplet.resize`, and `droplet.drill` for rehearsing
//! failures).
//!
//! DigitalOcean has no idempotency key, so every step that makes something names it after its
//! saga (the tag `berth-saga-<saga id>`, the snapshot name `berth-snap-<droplet>-<saga id>`),
//! checkpoints each handle (droplet id, action id) as soon as it has it, and on every attempt
//! looks for what an earlier attempt may have made before making it again.
//!
//! Architecture Invariant: a droplet step leaves nothing behind when it fails: the engine
//! compensates completed steps only, so a step that fails after making something undoes it
//! itself, or keeps going until it can report it.

mod config;
mod create;
mod inputs;
mod poll;
mod register;
mod resize;
mod sagas;
mod snapshot;

use std::sync::Arc;

use serde_json::Value;

use crate::digitalocean::{DoApi, Droplet, DropletId, DropletStatus};
use crate::saga::{StepCtx, StepError};
use crate::store::ObservedResource;

pub use config::{DropletConfig, Pace};
pub use inputs::{
    DestroyInputs, DrillInputs, DrillStep, ProvisionInputs, ResizeInputs, SnapshotInputs, is_tag,
};
pub use sagas::{ADMIN_KINDS, register};

/// The tag on every droplet Berth creates.
pub const MANAGED_TAG: &str = "managed-by-berth";
/// The prefix of the tag that ties a droplet to the saga that created it.
pub const SAGA_TAG_PREFIX: &str = "berth-saga-";

/// What droplet steps use at run time: the DigitalOcean client and the pace of their waits.
#[derive(Clone, Debug)]
pub struct Cloud {
    pub api: Arc<dyn DoApi>,
    pub pace: Pace,
}

impl Cloud {
    pub fn new(api: Arc<dyn DoApi>, pace: Pace) -> Self {
        Cloud { api, pace }
    }
}

/// The tag of the droplets a saga creates. The whole saga id, not its first 8 characters:
/// saga ids are uuid v7, whose first 8 hex digits are a timestamp shared by every saga
/// started within the same minute.
pub fn saga_tag(saga_id: &str) -> String {
    format!("{SAGA_TAG_PREFIX}{saga_id}")
}

/// The deterministic name of a saga's snapshot of a droplet.
pub fn snapshot_name(droplet: DropletId, saga_id: &str, label: Option<&str>) -> String {
    match label {
        Some(l) => format!("berth-snap-{droplet}-{saga_id}-{l}"),
        None => format!("berth-snap-{droplet}-{saga_id}"),
    }
}

/// The inventory id of a droplet.
pub fn resource_id(droplet: DropletId) -> String {
    format!("do:droplet:{droplet}")
}

/// Which droplet a step works on: given in the inputs, or made by an earlier step of the
/// saga (read from that step's output, `droplet_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropletRef {
    Id(DropletId),
    FromStep(usize),
}

impl DropletRef {
    pub(crate) fn resolve(&self, ctx: &StepCtx) -> Result<DropletId, StepError> {
        match *self {
            DropletRef::Id(id) => Ok(id),
            DropletRef::FromStep(i) => ctx
                .outputs
                .get(i)
                .and_then(|o| o.get("droplet_id"))
                .and_then(Value::as_u64)
                .map(DropletId)
                .ok_or_else(|| {
                    StepError::permanent(format!(
                        "step {i} left no droplet_id in its output; was it skipped?"
                    ))
                }),
        }
    }
}

/// The step's checkpoint from an earlier attempt, or the default when it saved none.
pub(crate) fn checkpoint<T: for<'de> serde::Deserialize<'de> + Default>(ctx: &StepCtx) -> T {
    ctx.checkpoint
        .clone()
        .and_then(|c| serde_json::from_value(c).ok())
        .unwrap_or_default()
}

/// The step's own output, for its compensation: the handles it reported when it completed.
/// (Read it rather than the checkpoint, which can be stale in a compensation that runs under
/// the same claim as the execute.)
pub(crate) fn own_output(ctx: &StepCtx) -> Value {
    ctx.outputs
        .get(ctx.step_index)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Saves a checkpoint under the step's claim.
pub(crate) async fn save(ctx: &mut StepCtx, cp: &impl serde::Serialize) -> Result<(), StepError> {
    ctx.save_checkpoint(serde_json::to_value(cp).expect("checkpoints serialize"))
        .await
}

/// The client and pace, or a permanent error saying how to configure them.
pub(crate) fn cloud(ctx: &StepCtx) -> Result<Arc<Cloud>, StepError> {
    ctx.deps.get::<Arc<Cloud>>().cloned().ok_or_else(|| {
        StepError::permanent(
            "digitalocean is not configured on this coordinator: add a [digitalocean] section \
             with a provisioning_token_file to its config, restart it, then retry the saga",
        )
    })
}

fn status_text(s: DropletStatus) -> &'static str {
    match s {
        DropletStatus::New => "new",
        DropletStatus::Active => "active",
        DropletStatus::Off => "off",
        DropletStatus::Archive => "archive",
        DropletStatus::Unknown => "unknown",
    }
}

/// The image as the inventory and the desired spec name it: its slug, else its id.
pub fn image_text(d: &Droplet) -> Option<String> {
    d.image
        .slug
        .clone()
        .or_else(|| d.image.id.map(|id| id.to_string()))
}

/// A droplet as the inventory records it.
pub fn observed(d: &Droplet) -> ObservedResource {
    ObservedResource {
        resource_id: resource_id(d.id),
        provider: "digitalocean".into(),
        kind: "droplet".into(),
        provider_id: d.id.to_string(),
        name: d.name.clone(),
        region: Some(d.region.slug.clone()).filter(|r| !r.is_empty()),
        size_slug: Some(d.size_slug.clone()).filter(|s| !s.is_empty()),
        image: image_text(d),
        status: status_text(d.status).to_owned(),
        tags: d.tags.clone(),
        public_ipv4: d.public_ipv4().map(|ip| ip.to_string()),
        attributes: serde_json::to_value(d).unwrap_or(Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags_are_valid_for_digitalocean() {
        let saga = "0190a1b2-c3d4-7e5f-8a9b-0123456789ab";
        let tag = saga_tag(saga);
        assert!(inputs::is_tag(&tag), "{tag}");
        assert_eq!(
            snapshot_name(DropletId(7), saga, Some("nightly")),
            "berth-snap-7-0190a1b2-c3d4-7e5f-8a9b-0123456789ab-nightly"
        );
        assert_eq!(resource_id(DropletId(7)), "do:droplet:7");
    }
}
