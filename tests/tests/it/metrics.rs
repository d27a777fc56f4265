//! The Prometheus endpoint of a real coordinator process reports the saga metrics.

use std::time::Duration;

use berth_proto::v1 as pb;
use berth_tests::assert_contains;
use berth_tests::process::{CoordinatorProcess, SagaTiming, admin_token};
use berth_tests::{TestDb, eventually};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

#[tokio::test]
async fn saga_metrics_are_served_to_prometheus() {
    let db = TestDb::sqlite();
    let token = admin_token(&db.url).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let extra = format!("metrics_listen = \"127.0.0.1:{port}\"");
    let p = CoordinatorProcess::start_with("metrics", &db.url, SagaTiming::default(), &extra).await;
    let mut sagas = p.sagas(&token).await;
    for steps in [
        json!([{"step": "flaky", "failures": 1}]),
        json!([{"step": "noop"}, {"step": "fail"}]),
    ] {
        let inputs = json!({ "steps": steps }).to_string();
        sagas
            .start_saga(pb::StartSagaRequest {
                kind: "demo".into(),
                inputs_json: inputs,
                idempotency_key: String::new(),
            })
            .await
            .unwrap();
    }
    let text = eventually(
        Duration::from_secs(30),
        "the metrics to show both sagas finished",
        || async {
            let t = scrape(port).await?;
            (t.contains("berth_sagas_finished_total{status=\"completed\"} 1")
                && t.contains("berth_sagas_finished_total{status=\"compensated\"} 1"))
            .then_some(t)
        },
    )
    .await;
    assert_contains(&text, "berth_saga_step_retries_total{step=\"flaky\"} 1");
    assert_contains(&text, "berth_saga_step_seconds");
    assert_contains(&text, "berth_sagas_started_total{kind=\"demo\"} 2");
    assert_contains(&text, "berth_sagas{status=");
}
