//! Per connection and per token: the server announces its stream cap, a token's watch streams
//! are capped (RESOURCE_EXHAUSTED naming the cap), and an unknown token repeated costs the
//! database at most a couple of lookups.

use std::time::Duration;

use berth_proto::v1 as pb;
use berth_shared::Role;
use berth_tests::assert_contains;
use berth_tests::process::{CoordinatorProcess, SagaTiming};
use berth_tests::{TestCoordinator, TestDb, eventually};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// The SETTINGS_MAX_CONCURRENT_STREAMS a coordinator announces, read with a raw HTTP/2
/// client once the answer to one call proves the server's settings arrived.
async fn announced_stream_cap(c: &TestCoordinator) -> usize {
    let tcp = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    let (mut client, mut conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let request = http::Request::post(format!("{}/grpc.health.v1.Health/Check", c.url()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (answer, mut body) = client.send_request(request, false).unwrap();
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    tokio::select! {
        r = answer => { r.expect("an answer to the health check"); }
        r = &mut conn => panic!("connection ended first: {r:?}"),
    }
    conn.max_concurrent_send_streams()
}

#[tokio::test]
async fn a_connection_may_open_only_the_configured_number_of_streams() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start_with(&db, None, |config| {
        config.limits.max_streams_per_connection = 7;
    })
    .await;
    assert_eq!(announced_stream_cap(&c).await, 7);
    // The default caps too (HTTP/2 alone sets no limit).
    let d = TestCoordinator::start(&db).await;
    assert_eq!(announced_stream_cap(&d).await, 100);
}

#[tokio::test]
async fn a_token_may_hold_only_so_many_watch_streams() {
    let db = TestDb::sqlite();
    let c = TestCoordinator::start_with(&db, None, |config| {
        config.limits.max_watches_per_token = 2;
    })
    .await;
    let saga = c.start_demo(json!([{"step": "sleep", "ms": 60000}])).await;
    let ci = c.token(Role::Ci, None).await;
    let watch = |token: String| {
        let c = &c;
        let saga = saga.clone();
        async move {
            c.sagas_as(&token)
                .await
                .watch_saga(pb::WatchSagaRequest {
                    saga_id: saga,
                    after_seq: 0,
                })
                .await
        }
    };
    let first = watch(ci.clone()).await.expect("first watch");
    let _second = watch(ci.clone()).await.expect("second watch");
    let refused = watch(ci.clone())
        .await
        .expect_err("a third watch is refused");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_contains(refused.message(), "max_watches_per_token = 2");
    // Another token has its own share.
    let _other = watch(c.admin_token.clone())
        .await
        .expect("another token watches");
    // A closed stream gives its slot back.
    drop(first);
    eventually(Duration::from_secs(10), "the slot to come back", || async {
        watch(ci.clone()).await.ok()
    })
    .await;
}

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

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

#[tokio::test]
async fn an_unknown_token_repeated_costs_at_most_a_couple_of_lookups() {
    let db = TestDb::sqlite();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let extra = format!("metrics_listen = \"127.0.0.1:{port}\"");
    let p =
        CoordinatorProcess::start_with("negative", &db.url, SagaTiming::default(), &extra).await;
    let unknown = format!("berth_{}", "ab".repeat(32));
    let mut hosts = {
        let channel = tonic::transport::Endpoint::from_shared(p.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        pb::host_service_client::HostServiceClient::with_interceptor(
            channel,
            berth_tests::cluster::Bearer::new(&unknown),
        )
    };
    for _ in 0..200 {
        let refused = hosts
            .list_hosts(pb::ListHostsRequest {})
            .await
            .expect_err("an unknown token is refused");
        assert_eq!(refused.code(), Code::Unauthenticated);
    }
    let text = scrape(port).await.expect("metrics");
    let queries = metric(&text, "berth_token_queries_total")
        .unwrap_or_else(|| panic!("no berth_token_queries_total in:\n{text}"));
    assert!(
        queries <= 2,
        "200 calls with one unknown token cost {queries} token queries"
    );
    assert_eq!(metric(&text, "berth_token_unknown_cached_total"), Some(199));
    // The token's text never reaches the log.
    assert!(!p.log().contains(&unknown), "{}", p.log());
}
