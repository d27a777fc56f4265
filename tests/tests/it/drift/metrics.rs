//! A coordinator process reports open drift per field to Prometheus (`berth_drift_open`).

use std::time::Duration;

use berth_proto::v1 as pb;
use berth_tests::cloud::{digitalocean_toml, fast_droplets, write_token};
use berth_tests::cluster::Bearer;
use berth_tests::process::{CoordinatorProcess, SagaTiming, admin_token};
use berth_tests::{TestDb, eventually};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{rid, sim};

async fn scrape(port: u16) -> Option<String> {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    conn.read_to_string(&mut body).await.ok()?;
    Some(body)
}

async fn wait_for_line(port: u16, line: &str) {
    eventually(Duration::from_secs(30), line, || async {
        scrape(port).await?.lines().any(|l| l == line).then_some(())
    })
    .await;
}

#[tokio::test]
async fn open_drift_is_a_gauge_per_field() {
    let db = TestDb::sqlite();
    let sim = sim().await;
    let id = sim.seed_droplets(1, &[])[0];
    let token = admin_token(&db.url).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = write_token(&sim, dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let extra = format!(
        "metrics_listen = \"127.0.0.1:{port}\"\n\n[inventory]\nsync_interval_secs = 0\n{}",
        digitalocean_toml(&sim, &token_file, &fast_droplets())
    );
    let p = CoordinatorProcess::start_with("drift-metrics", &db.url, SagaTiming::default(), &extra)
        .await;
    let channel = tonic::transport::Endpoint::from_shared(p.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut d = pb::drift_service_client::DriftServiceClient::with_interceptor(
        channel,
        Bearer::new(&token),
    );
    let sync = pb::SyncInventoryRequest::default();
    let first = d.sync_inventory(sync).await;
    first.unwrap_or_else(|e| panic!("{e:?}: {}", p.log()));
    d.record_desired_spec(pb::RecordDesiredSpecRequest {
        resource_id: rid(id),
        spec_json: json!({"size_slug": "s-8vcpu-16gb", "region": "fra1"}).to_string(),
    })
    .await
    .unwrap();
    let found = d.sync_inventory(sync).await.unwrap().into_inner();
    assert_eq!(found.drift_open, 2);
    wait_for_line(port, "berth_drift_open{field=\"size_slug\"} 1").await;
    wait_for_line(port, "berth_drift_open{field=\"region\"} 1").await;

    let open = d
        .list_drift(pb::ListDriftRequest {
            field: "size_slug".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .drift;
    d.accept_drift(pb::DriftIdRequest {
        drift_id: open[0].drift_id.clone(),
        reason: String::new(),
    })
    .await
    .unwrap();
    wait_for_line(port, "berth_drift_open{field=\"size_slug\"} 0").await;
    wait_for_line(port, "berth_inventory_syncs_total{outcome=\"ok\"} 2").await;
}
