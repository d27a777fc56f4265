//! DigitalOcean API v2: the narrow trait (`DoApi`) that sagas and the inventory use, its reqwest
//! implementation (`HttpDoApi`: one fair rate limiter per token, retries, typed errors), the
//! models, and the adopt-before-create lookups. Reference: `shared/reference/digitalocean/`.
//!
//! Architecture Invariant: only this module talks to DigitalOcean, and no token leaves it
//! (never logged, never in an error or `Debug` output).

mod config;
mod error;
mod limiter;
mod lookup;
mod model;
mod operations;
mod retry;
mod token;
mod transport;

use async_trait::async_trait;

pub use config::{ClientSettings, DigitalOceanConfig};
pub use error::{DoApiError, DoErrorKind, Failure, NotFoundIsNone};
pub use limiter::{LimiterStats, RateBudget, RateLimiter};
pub use lookup::{Patience, find_droplet_snapshot, find_droplets_by_tag};
pub use model::{
    Account, Action, ActionId, ActionStatus, CreateDroplet, CreatedDroplet, Deleted, Droplet,
    DropletAction, DropletId, DropletSnapshot, DropletStatus, ImageKind, ImageRef, ImageSpec,
    NetworkV4, Networks, RegionRef, ResourceType, Snapshot, SnapshotId, SshKey, Tag, TagResource,
};
pub use operations::PER_PAGE;
pub use retry::{Idempotency, RateHeaders, RetryPolicy};
pub use token::{Token, TokenError, TokenPurpose, Tokens};
pub use transport::{ClientStats, HttpDoApi, SetupError};

/// What Berth asks of DigitalOcean. Reads use the `read` token, writes the `provisioning`
/// token. Every method retries what is safe to retry (see [`RetryPolicy`]) and fails with a
/// [`DoApiError`] whose kind says what to do next.
#[async_trait]
pub trait DoApi: Send + Sync + std::fmt::Debug {
    /// `POST /v2/droplets` (202): the droplet (still `new`, no address yet) and its create
    /// action. Never resent after an ambiguous failure (`may_have_applied`): look the droplet up
    /// by its saga tag before creating again.
    async fn create_droplet(&self, request: &CreateDroplet) -> Result<CreatedDroplet, DoApiError>;

    /// `GET /v2/droplets/{id}`. Can 404 for a short while right after a create.
    async fn get_droplet(&self, id: DropletId) -> Result<Droplet, DoApiError>;

    /// Every droplet carrying `tag`, all pages. Can miss a droplet created seconds ago.
    async fn list_droplets_by_tag(&self, tag: &str) -> Result<Vec<Droplet>, DoApiError>;

    /// Every droplet the token can see, all pages (the inventory sync).
    async fn list_droplets(&self) -> Result<Vec<Droplet>, DoApiError>;

    /// `DELETE /v2/droplets/{id}`; already gone is `Deleted::AlreadyGone`, not an error. The
    /// droplet can still be read for a few seconds after.
    async fn destroy_droplet(&self, id: DropletId) -> Result<Deleted, DoApiError>;

    /// `POST /v2/droplets/{id}/actions` (201). A droplet runs one action at a time: another one
    /// running gives `DoApiError::Conflict` (retry once it finished).
    async fn droplet_action(
        &self,
        id: DropletId,
        action: &DropletAction,
    ) -> Result<Action, DoApiError>;

    /// `GET /v2/droplets/{d}/actions/{a}`. Prefer [`DoApi::get_action`]: this one has been seen
    /// answering `completed_at: null` for a completed action.
    async fn get_droplet_action(
        &self,
        droplet: DropletId,
        action: ActionId,
    ) -> Result<Action, DoApiError>;

    /// `GET /v2/actions/{id}`: what to poll.
    async fn get_action(&self, id: ActionId) -> Result<Action, DoApiError>;

    /// `GET /v2/droplets/{id}/snapshots`, all pages: snapshots and backups (see `kind`).
    async fn list_droplet_snapshots(
        &self,
        id: DropletId,
    ) -> Result<Vec<DropletSnapshot>, DoApiError>;

    /// `GET /v2/snapshots?resource_type=droplet`, all pages.
    async fn list_snapshots(&self) -> Result<Vec<Snapshot>, DoApiError>;

    /// `GET /v2/snapshots/{id}`.
    async fn get_snapshot(&self, id: &SnapshotId) -> Result<Snapshot, DoApiError>;

    /// `DELETE /v2/snapshots/{id}`; already gone is `Deleted::AlreadyGone`.
    async fn delete_snapshot(&self, id: &SnapshotId) -> Result<Deleted, DoApiError>;

    /// `POST /v2/tags` (201).
    async fn create_tag(&self, name: &str) -> Result<Tag, DoApiError>;

    /// `POST /v2/tags/{tag}/resources` (204). The tag must exist (404 otherwise); see
    /// [`DoApi::ensure_tagged`].
    async fn tag_resources(&self, tag: &str, resources: &[TagResource]) -> Result<(), DoApiError>;

    /// `GET /v2/account`.
    async fn get_account(&self) -> Result<Account, DoApiError>;

    /// Snapshot a droplet under `name`; the action carries no image id (see
    /// [`find_droplet_snapshot`]).
    async fn snapshot(&self, id: DropletId, name: &str) -> Result<Action, DoApiError> {
        let action = DropletAction::Snapshot {
            name: name.to_owned(),
        };
        self.droplet_action(id, &action).await
    }

    /// Resize a droplet that is off; `disk: true` grows the disk for good.
    async fn resize(&self, id: DropletId, size: &str, disk: bool) -> Result<Action, DoApiError> {
        let action = DropletAction::Resize {
            size: size.to_owned(),
            disk,
        };
        self.droplet_action(id, &action).await
    }

    async fn power_off(&self, id: DropletId) -> Result<Action, DoApiError> {
        self.droplet_action(id, &DropletAction::PowerOff).await
    }

    async fn power_on(&self, id: DropletId) -> Result<Action, DoApiError> {
        self.droplet_action(id, &DropletAction::PowerOn).await
    }

    async fn shutdown(&self, id: DropletId) -> Result<Action, DoApiError> {
        self.droplet_action(id, &DropletAction::Shutdown).await
    }

    /// Tags resources, creating the tag first when DigitalOcean says it does not exist.
    async fn ensure_tagged(&self, tag: &str, resources: &[TagResource]) -> Result<(), DoApiError> {
        match self.tag_resources(tag, resources).await {
            Err(e) if e.is_not_found() => {
                self.create_tag(tag).await?;
                self.tag_resources(tag, resources).await
            }
            other => other,
        }
    }
}

/// Tag names: letters, digits, `:`, `-`, `_`; at most 255 characters. Checked before a name
/// goes into a URL path.
pub fn check_tag_name(op: &'static str, tag: &str) -> Result<(), DoApiError> {
    let ok = !tag.is_empty()
        && tag.len() <= 255
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(DoApiError::local(
            op,
            DoErrorKind::Validation,
            format!("invalid tag name {tag:?}: use letters, digits, ':', '-' and '_'"),
        ))
    }
}
