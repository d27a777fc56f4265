//! `WarmService`: warm snapshots and restores as sagas run by the host's agent, and the list
//! of warm snapshots asked of the agents.

use berth_proto::v1 as pb;
use serde_json::{Map, Value, json};
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::hub::Hub;
use crate::saga::Engine;
use crate::store::Store;

#[derive(Clone, Debug)]
pub struct WarmsService {
    pub engine: Engine,
    pub hub: Hub,
    pub store: Store,
    /// A host whose last heartbeat is older than this is offline and not asked.
    pub heartbeat_timeout_ms: i64,
}

/// The saga inputs naming the host and the app; the saga kind checks them.
fn target_inputs(t: Option<pb::AppTarget>, wait_secs: u32) -> Result<Map<String, Value>, ApiError> {
    let t = t.ok_or_else(|| {
        ApiError::InvalidArgument("target is missing: give host_id, app and domain or stack".into())
    })?;
    let mut m = Map::new();
    m.insert("host_id".into(), json!(t.host_id));
    m.insert("app".into(), json!(t.app));
    m.insert("domain".into(), json!(t.domain));
    if !t.stack.is_empty() {
        m.insert("stack".into(), json!(t.stack));
    }
    if wait_secs > 0 {
        m.insert("wait_undeployed_secs".into(), json!(wait_secs));
    }
    Ok(m)
}

/// The `warm.snapshot` saga's inputs for a request (also what a schedule's run starts with).
pub(crate) fn snapshot_inputs(r: &pb::WarmSnapshotRequest) -> Result<Map<String, Value>, ApiError> {
    let mut inputs = target_inputs(r.target.clone(), r.wait_undeployed_secs)?;
    if !r.commit.is_empty() {
        inputs.insert("commit".into(), json!(r.commit));
    }
    if !r.version.is_empty() {
        inputs.insert("version".into(), json!(r.version));
    }
    if r.no_spare {
        inputs.insert("no_spare".into(), json!(true));
    }
    Ok(inputs)
}

#[tonic::async_trait]
impl pb::warm_service_server::WarmService for WarmsService {
    async fn warm_snapshot(
        &self,
        req: Request<pb::WarmSnapshotRequest>,
    ) -> Result<Response<pb::SagaRef>, Status> {
        let caller = super::principal(&req)?;
        let r = req.into_inner();
        let inputs = snapshot_inputs(&r)?;
        Ok(Response::new(
            super::start_saga(
                &self.engine,
                &caller,
                "warm.snapshot",
                &inputs,
                &r.idempotency_key,
            )
            .await?,
        ))
    }

    async fn warm_restore(
        &self,
        req: Request<pb::WarmRestoreRequest>,
    ) -> Result<Response<pb::SagaRef>, Status> {
        let caller = super::principal(&req)?;
        let r = req.into_inner();
        let inputs = target_inputs(r.target, r.wait_undeployed_secs)?;
        super::check_restore_scope(&caller, &inputs)?;
        Ok(Response::new(
            super::start_saga(
                &self.engine,
                &caller,
                "warm.restore",
                &inputs,
                &r.idempotency_key,
            )
            .await?,
        ))
    }

    async fn list_warm_snapshots(
        &self,
        req: Request<pb::ListWarmSnapshotsRequest>,
    ) -> Result<Response<pb::ListWarmSnapshotsResponse>, Status> {
        let r = req.into_inner();
        if !r.app.is_empty() {
            berth_shared::AppName::new(r.app.as_str()).map_err(ApiError::from)?;
        }
        let hosts: Vec<String> = if r.host_id.is_empty() {
            // Every online host, whichever replica holds its stream.
            let all = self.store.list_hosts().await.map_err(ApiError::from)?;
            let now = berth_shared::time::unix_ms(std::time::SystemTime::now());
            all.into_iter()
                .filter(|h| h.is_online(now, self.heartbeat_timeout_ms))
                .map(|h| h.host_id)
                .collect()
        } else {
            let host = berth_shared::HostId::new(r.host_id.as_str()).map_err(ApiError::from)?;
            self.store
                .get_host(host.as_str())
                .await
                .map_err(ApiError::from)?;
            vec![host.to_string()]
        };
        let mut snapshots = Vec::new();
        for host in hosts {
            let mut found = self
                .hub
                .list_warm_snapshots(&host, &r.app)
                .await
                .map_err(ApiError::from)?;
            for s in &mut found {
                s.host_id.clone_from(&host);
            }
            snapshots.extend(found);
        }
        Ok(Response::new(pb::ListWarmSnapshotsResponse { snapshots }))
    }
}
