//! `DropletService`: provision, destroy, snapshot and resize droplets by starting their sagas
//! (the request's idempotency key passed through), and list the droplet inventory.

use berth_proto::v1 as pb;
use serde::Serialize;
use tonic::{Request, Response, Status};

use std::sync::Arc;

use crate::auth::Principal;
use crate::digitalocean::DropletId;
use crate::droplet::Cloud;
use crate::droplet::{DestroyInputs, ProvisionInputs, ResizeInputs, SnapshotInputs};
use crate::error::ApiError;
use crate::saga::Engine;
use crate::store::{CloudResource, ResourceFilter};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 500;

#[derive(Clone, Debug)]
pub struct DropletsService {
    pub engine: Engine,
    /// DigitalOcean, when `[digitalocean]` is configured; without it only the inventory can
    /// be listed.
    pub cloud: Option<Arc<Cloud>>,
}

impl DropletsService {
    /// Starts a saga of `kind` with `inputs`.
    async fn start(
        &self,
        caller: &Principal,
        kind: &str,
        inputs: &impl Serialize,
        key: &str,
    ) -> Result<Response<pb::SagaRef>, Status> {
        if self.cloud.is_none() {
            return Err(ApiError::FailedPrecondition(
                "digitalocean is not configured on this coordinator: add a [digitalocean] \
                 section (api_url, provisioning_token_file) to its config and restart it"
                    .into(),
            )
            .into());
        }
        Ok(Response::new(
            super::start_saga(&self.engine, caller, kind, inputs, key).await?,
        ))
    }
}

impl DropletsService {
    /// Refuses a droplet DigitalOcean does not have, so that a typo or a second destroy is
    /// `NOT_FOUND`, not a saga that starts with nothing to do. A retry with the idempotency
    /// key of a destroy already started gets that saga, whatever became of the droplet.
    async fn check_exists(&self, id: u64, key: &str) -> Result<(), Status> {
        let Some(cloud) = &self.cloud else {
            return Ok(()); // `start` says what is missing
        };
        let store = self.engine.store();
        if !key.is_empty()
            && store
                .saga_id_by_key(key)
                .await
                .map_err(ApiError::from)?
                .is_some()
        {
            return Ok(());
        }
        match cloud.api.get_droplet(DropletId(id)).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => {}
            // DigitalOcean unreachable or refusing: the saga retries and reports it.
            Err(_) => return Ok(()),
        }
        let known = store
            .get_resource(&crate::droplet::resource_id(DropletId(id)))
            .await
            .map_err(ApiError::from)?
            .is_some();
        let what = if known {
            "no longer exists at DigitalOcean (the inventory knew it): nothing to destroy"
        } else {
            "does not exist: DigitalOcean does not know it and the inventory never saw it"
        };
        Err(ApiError::NotFound(format!(
            "droplet {id} {what}; `berth droplet list` shows the droplets there are"
        ))
        .into())
    }
}

fn droplet_pb(r: CloudResource) -> pb::Droplet {
    pb::Droplet {
        droplet_id: r.provider_id.parse().unwrap_or_default(),
        name: r.name,
        region: r.region.unwrap_or_default(),
        size_slug: r.size_slug.unwrap_or_default(),
        image: r.image.unwrap_or_default(),
        status: r.status,
        public_ipv4: r.public_ipv4.unwrap_or_default(),
        tags: r.tags,
        last_seen_ms: r.last_seen_ms,
        deleted: r.deleted_at_ms.is_some(),
    }
}

#[tonic::async_trait]
impl pb::droplet_service_server::DropletService for DropletsService {
    async fn provision_droplet(
        &self,
        req: Request<pb::ProvisionDropletRequest>,
    ) -> Result<Response<pb::SagaRef>, Status> {
        let caller = super::principal(&req)?;
        let r = req.into_inner();
        let inputs = ProvisionInputs {
            name: r.name,
            region: r.region,
            size_slug: r.size_slug,
            image: r.image,
            ssh_keys: r.ssh_keys,
            tags: r.tags,
            user_data: (!r.user_data.is_empty()).then_some(r.user_data),
            user_data_bytes: None,
        };
        self.start(&caller, "droplet.provision", &inputs, &r.idempotency_key)
            .await
    }

    async fn destroy_droplet(
        &self,
        req: Request<pb::DestroyDropletRequest>,
    ) -> Result<Response<pb::SagaRef>, Status> {
        let caller = super::principal(&req)?;
        let r = req.into_inner();
        self.check_exists(r.droplet_id, &r.idempotency_key).await?;
        let inputs = DestroyInputs {
            droplet_id: r.droplet_id,
            force: false,
        };
        self.start(&caller, "droplet.destroy", &inputs, &r.idempotency_key)
            .await
    }

    async fn snapshot_droplet(
        &self,
        req: Request<pb::SnapshotDropletRequest>,
    ) -> Result<Response<pb::SagaRef>, Status> {
        let caller = super::principal(&req)?;
        let r = req.into_inner();
        let inputs = SnapshotInputs {
            droplet_id: r.droplet_id,
            label: (!r.label.is_empty()).then_some(r.label),
        };
        self.start(&caller, "droplet.snapshot", &inputs, &r.idempotency_key)
            .await
    }

    async fn resize_droplet(
        &self,
        req: Request<pb::ResizeDropletRequest>,
    ) -> Result<Response<pb::SagaRef>, Status> {
        let caller = super::principal(&req)?;
        let r = req.into_inner();
        let inputs = ResizeInputs {
            droplet_id: r.droplet_id,
            size_slug: r.size_slug,
            disk: r.disk,
        };
        self.start(&caller, "droplet.resize", &inputs, &r.idempotency_key)
            .await
    }

    /// The inventory, whether or not `[digitalocean]` is configured (it reads only the store).
    async fn list_droplets(
        &self,
        req: Request<pb::ListDropletsRequest>,
    ) -> Result<Response<pb::ListDropletsResponse>, Status> {
        let r = req.into_inner();
        let page = r.page.unwrap_or_default();
        let limit = match page.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let after_id = match page.page_token.as_str() {
            "" => None,
            t if t.starts_with("do:droplet:") => Some(t.to_owned()),
            _ => {
                return Err(ApiError::InvalidArgument(
                    "page_token is not one this server gave".into(),
                )
                .into());
            }
        };
        let tag = (!r.tag.is_empty()).then_some(r.tag);
        if let Some(t) = &tag
            && !crate::droplet::is_tag(t)
        {
            return Err(ApiError::InvalidArgument(format!(
                "tag {t:?} is not valid: use letters, digits, ':', '-' and '_'"
            ))
            .into());
        }
        let filter = ResourceFilter {
            kind: Some("droplet".into()),
            tag: tag.clone(),
            include_deleted: r.include_deleted,
            after_id,
            limit: i64::from(limit) + 1,
        };
        let mut rows = self
            .engine
            .store()
            .list_resources(&filter)
            .await
            .map_err(ApiError::from)?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_page_token = if more {
            rows.last()
                .map(|r| r.resource_id.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        // The tag filter matches in SQL loosely; keep exact matches only.
        let droplets = rows
            .into_iter()
            .filter(|r| tag.as_ref().is_none_or(|t| r.tags.contains(t)))
            .map(droplet_pb)
            .collect();
        Ok(Response::new(pb::ListDropletsResponse {
            droplets,
            next_page_token,
        }))
    }
}
