//! `HostService`: the hosts table, with a live description asked of an online host's agent.

use std::time::SystemTime;

use berth_proto::v1 as pb;
use berth_shared::HostId;
use berth_shared::time::unix_ms;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::hub::Hub;
use crate::store::{HostRecord, Store};

#[derive(Clone, Debug)]
pub struct HostsService {
    pub store: Store,
    pub hub: Hub,
    pub heartbeat_timeout_ms: i64,
}

impl HostsService {
    fn to_pb(&self, h: HostRecord, now_ms: i64) -> pb::Host {
        let online = h.is_online(now_ms, self.heartbeat_timeout_ms);
        pb::Host {
            host_id: h.host_id,
            hostname: h.hostname,
            agent_version: h.agent_version,
            docker_version: h.docker_version,
            capabilities: h.capabilities,
            first_seen_ms: h.first_seen_ms,
            last_heartbeat_ms: h.last_heartbeat_ms,
            online,
            connected_to: if online {
                h.connected_to.unwrap_or_default()
            } else {
                String::new()
            },
            warm_root_free_bytes: h.warm_root_free_bytes.map(|b| b.max(0) as u64),
        }
    }
}

#[tonic::async_trait]
impl pb::host_service_server::HostService for HostsService {
    async fn list_hosts(
        &self,
        _req: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        let now = unix_ms(SystemTime::now());
        let hosts = self.store.list_hosts().await.map_err(ApiError::from)?;
        let hosts = hosts.into_iter().map(|h| self.to_pb(h, now)).collect();
        Ok(Response::new(pb::ListHostsResponse { hosts }))
    }

    async fn get_host(
        &self,
        req: Request<pb::GetHostRequest>,
    ) -> Result<Response<pb::HostDetail>, Status> {
        let host_id = HostId::new(req.into_inner().host_id).map_err(ApiError::from)?;
        let record = self
            .store
            .get_host(host_id.as_str())
            .await
            .map_err(ApiError::from)?;
        let host = self.to_pb(record, unix_ms(SystemTime::now()));
        let (description, description_error) = if !host.online {
            (None, "host is offline".to_owned())
        } else {
            match self.hub.describe_host(host_id.as_str()).await {
                Ok(d) => (Some(d), String::new()),
                Err(e) => (None, e.to_string()),
            }
        };
        Ok(Response::new(pb::HostDetail {
            host: Some(host),
            description,
            description_error,
        }))
    }
}
