//! Inventory sync and drift detection end to end: a real coordinator talking to the
//! DigitalOcean simulator, on SQLite and PostgreSQL; the races that the database must settle
//! (two detections, two coordinators) on PostgreSQL.

mod cli;
mod metrics;
mod race;
mod settle;
mod sync;

use std::time::Duration;

use berth_proto::v1 as pb;
use berth_tests::cluster::Bearer;
use berth_tests::dosim::{DoSim, SimConfig};
use berth_tests::{TestCoordinator, TestDb};
use serde_json::Value;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Long enough for any saga against the simulator's fast timings, even on a loaded machine.
pub const WAIT: Duration = Duration::from_secs(60);

pub type DriftClient =
    pb::drift_service_client::DriftServiceClient<InterceptedService<Channel, Bearer>>;

pub async fn sim() -> DoSim {
    DoSim::start(SimConfig::fast())
        .await
        .expect("the simulator starts")
}

/// A coordinator on `db` pointed at `sim`, with the periodic jobs off: tests sync on demand.
pub async fn coordinator(db: &TestDb, sim: &DoSim) -> TestCoordinator {
    TestCoordinator::start_with_digitalocean_and(db, sim, |c| {
        c.inventory.sync_interval_secs = 0;
    })
    .await
}

pub async fn drift_as(c: &TestCoordinator, token: &str) -> DriftClient {
    pb::drift_service_client::DriftServiceClient::with_interceptor(
        c.channel().await,
        Bearer::new(token),
    )
}

pub async fn drift(c: &TestCoordinator) -> DriftClient {
    drift_as(c, &c.admin_token).await
}

/// Syncs the inventory and detects drift.
pub async fn sync(c: &TestCoordinator) -> pb::SyncInventoryResponse {
    drift(c)
        .await
        .sync_inventory(pb::SyncInventoryRequest {
            skip_detection: false,
        })
        .await
        .expect("sync the inventory")
        .into_inner()
}

pub async fn record_spec(c: &TestCoordinator, rid: &str, spec: Value) -> pb::DesiredSpec {
    drift(c)
        .await
        .record_desired_spec(pb::RecordDesiredSpecRequest {
            resource_id: rid.to_owned(),
            spec_json: spec.to_string(),
        })
        .await
        .expect("record a desired spec")
        .into_inner()
}

/// Drift of `rid` in `statuses` (empty: open), newest first.
pub async fn list(c: &TestCoordinator, rid: &str, statuses: &[&str]) -> Vec<pb::Drift> {
    drift(c)
        .await
        .list_drift(pb::ListDriftRequest {
            statuses: statuses.iter().map(|s| (*s).to_owned()).collect(),
            resource_id: rid.to_owned(),
            field: String::new(),
            page: None,
        })
        .await
        .expect("list drift")
        .into_inner()
        .drift
}

pub async fn history(c: &TestCoordinator, rid: &str) -> Vec<pb::ResourceEvent> {
    drift(c)
        .await
        .resource_history(pb::ResourceHistoryRequest {
            resource_id: rid.to_owned(),
            page: Some(pb::PageRequest {
                page_size: 500,
                page_token: String::new(),
            }),
        })
        .await
        .expect("resource history")
        .into_inner()
        .events
}

/// The kinds of a resource's events, oldest first.
pub async fn event_kinds(c: &TestCoordinator, rid: &str) -> Vec<String> {
    history(c, rid).await.into_iter().map(|e| e.kind).collect()
}

pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

pub fn rid(droplet: u64) -> String {
    format!("do:droplet:{droplet}")
}

/// The desired spec of `rid` as the store holds it.
pub async fn spec_of(c: &TestCoordinator, rid: &str) -> (serde_json::Map<String, Value>, i64) {
    let s = c
        .store()
        .get_desired_spec(rid)
        .await
        .expect("read the spec")
        .expect("a spec is recorded");
    (s.spec, s.spec_version)
}
